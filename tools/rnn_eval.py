"""rnn checkpoints, iteration by iteration, on four 256 px Kodak centre crops (hard bits, module path).

    python tools/rnn_eval.py RUN [RUN ...]          # PSNR after iterations 1, 2, 4, 8, 12, 16
    python tools/rnn_eval.py --diag RUN             # per iteration: residual, gain, code saturation, step size

RUN is a training run folder (checkpoint.safetensors + checkpoint.json). TRAINING.md ("rnn") quotes both.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mlimg.nn.rnn_models import RNNCodecNet, hard_binarise
from mlimg.train import load_checkpoint

IMAGES = ("kodim01", "kodim08", "kodim15", "kodim23")


def crops(kodak: Path) -> torch.Tensor:
    out = []
    for name in IMAGES:
        a = np.asarray(Image.open(kodak / f"{name}.png").convert("RGB"), np.float32) / 255
        h, w = a.shape[:2]
        out.append(a[h // 2 - 128 : h // 2 + 128, w // 2 - 128 : w // 2 + 128].transpose(2, 0, 1))
    return torch.from_numpy(np.stack(out)) - 0.5


def load(run: Path):
    net = RNNCodecNet(json.loads((run / "checkpoint.json").read_text())["config"])
    meta = load_checkpoint(run, net, None, "cpu")
    return net.eval(), meta["step"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    p.add_argument("--diag", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(1)
    x = crops(a.kodak)
    for run in a.runs:
        net, step = load(run)
        enc, dec = net.initial_states()
        recon, psnr = torch.zeros_like(x), []
        with torch.no_grad():
            for t in range(16):
                gain = net.block_gain(recon, t)
                code, enc = net.encode_step(x, recon, enc, t)
                new, dec = net.decode_step(hard_binarise(code), recon, dec, t)
                residual, moved, recon = (x - recon).abs().mean(), (new - recon).abs().mean(), new
                mse = ((recon.clamp(-0.5, 0.5) - x) ** 2).mean((1, 2, 3))
                psnr.append(float((10 * torch.log10(1 / mse)).mean()))
                if a.diag:
                    g = 1.0 if gain is None else float(gain.median())
                    print(f"t{t}: |residual| {residual:.4f} gain median {g:.1f} |code| {float(code.abs().mean()):.2f} "
                          f"share |code|>0.9 {float((code.abs() > 0.9).float().mean()):.2f} |step| {moved:.4f} "
                          f"PSNR {psnr[-1]:.2f}")
        print(f"{run} step {step}: " + " ".join(f"it{t + 1} {psnr[t]:.2f}" for t in (0, 1, 3, 7, 11, 15)))


if __name__ == "__main__":
    main()
