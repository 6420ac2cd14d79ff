"""Compare gan run checkpoints: mean PSNR and high-frequency ratio (realism 1) on eight
Kodak images (kodim02, 05, ..., 23) at gain positions, plus an enlarged crop sheet.

    python tools/gan_compare.py runs/gan,runs/gan-other --positions -1.2,0,1.3 --sheet sheet.png

Positions: -1.2 / 0 / 1.3 are about 0.15 / 0.2 / 0.3 bpp with gmm-v1-66045a96. The sheet shows
original | gmm | each run at the first position, four 128 px crops (smooth and textured areas)
enlarged 2x: look at it for patterns a person would call broken.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mlimg.metrics import high_frequency_ratio, psnr
from mlimg.nn import store
from mlimg.train_gan import load_gan_checkpoint

IMAGES = [f"kodim{i:02d}" for i in range(2, 25, 3)]
CROPS = [("kodim23", 130, 300), ("kodim03", 60, 420), ("kodim14", 300, 300), ("kodim08", 100, 300)]  # name, y, x


def decode(net, img: np.ndarray, position: float, generator: bool) -> np.ndarray:
    """Round trip at a gain position: a gan net's generator at realism 1, or a gmm net's g_s."""
    h, w = img.shape[:2]
    x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float() / 255
    x = torch.nn.functional.pad(x, (0, -w % 64, 0, -h % 64), mode="replicate")
    if generator:
        out = net.decode_latent(x, position, 1.0)
    else:
        g, ig = net.gains(position)
        out = net.g_s(torch.round(net.g_a(x) * g.view(1, -1, 1, 1)) * ig.view(1, -1, 1, 1))
    return out[0, :, :h, :w].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", help="comma-separated gan run folders (checkpoint.json + checkpoint.safetensors)")
    parser.add_argument("--positions", default="-1.2,0,1.3")
    parser.add_argument("--kodak", default="../shared/data/kodak")
    parser.add_argument("--sheet", default=None, help="write the crop sheet PNG here")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = args.runs.split(",")
    positions = [float(p) for p in args.positions.split(",")]
    nets = {r: load_gan_checkpoint(Path(r), torch.device("cpu"), 1e-4)[0].eval() for r in runs}
    scores = {(r, p): [] for r in runs for p in positions}
    with torch.no_grad():
        for name in IMAGES:
            img = np.asarray(Image.open(Path(args.kodak) / f"{name}.png").convert("RGB"))
            for r, net in nets.items():
                for p in positions:
                    rec = decode(net, img, p, generator=True)
                    scores[(r, p)].append((psnr(img, rec), high_frequency_ratio(img, rec)))
        for r in runs:
            cells = [np.mean(scores[(r, p)], axis=0) for p in positions]
            print(f"{r}: PSNR {' / '.join(f'{c[0]:.2f}' for c in cells)} dB, "
                  f"HF ratio {' / '.join(f'{c[1]:.2f}' for c in cells)} at positions {args.positions}")
        if args.sheet:
            gmm = store.load(store.default_model("gmm"), "gmm").net
            rows, side = [], 128
            for name, cy, cx in CROPS:
                img = np.asarray(Image.open(Path(args.kodak) / f"{name}.png").convert("RGB"))
                recs = [decode(gmm, img, positions[0], generator=False)]
                recs += [decode(net, img, positions[0], generator=True) for net in nets.values()]
                rows.append(np.concatenate([a[cy:cy + side, cx:cx + side] for a in [img] + recs], axis=1))
            sheet = np.concatenate(rows, axis=0)
            Image.fromarray(sheet).resize((sheet.shape[1] * 2, sheet.shape[0] * 2), Image.NEAREST).save(args.sheet)
            print(f"wrote {args.sheet}")


if __name__ == "__main__":
    main()
