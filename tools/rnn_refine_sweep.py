"""rnn bit refinement (`refine=`) swept over steps and Adam step sizes on the four 256 px Kodak
crops of tools/rnn_eval.py, with the default (or given) rnn weights.

    python tools/rnn_refine_sweep.py STEPS,LR [STEPS,LR ...] [--model ID]

Prints PSNR after iterations 1, 4 and 16 and the time (one thread). TRAINING.md ("rnn") quotes it.
"""
import argparse
import time
from pathlib import Path

import torch

from mlimg.codecs.rnn import decode_image
from mlimg.nn import store
from mlimg.nn.rnn_refine import encode_bits_refined
from rnn_eval import crops


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("settings", nargs="+", help="STEPS,LR (0,0: the encoder's own bits)")
    p.add_argument("--model", default=None)
    p.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    a = p.parse_args()
    torch.set_num_threads(1)
    net = store.load(a.model or store.default_model("rnn"), "rnn").net.eval()
    x = crops(a.kodak)
    for setting in a.settings:
        steps, lr = setting.split(",")
        t0 = time.time()
        psnr = {1: [], 4: [], 16: []}
        for crop in x:
            bits = encode_bits_refined(net, crop[None], 16, int(steps), float(lr))
            for n in psnr:
                rgb = torch.from_numpy(decode_image(net, bits[:n], 16, 16, fast=False)).permute(2, 0, 1) - 0.5
                mse = ((rgb.clamp(-0.5, 0.5) - crop) ** 2).mean()
                psnr[n].append(float(10 * torch.log10(1 / mse)))
        shown = " / ".join(f"{sum(v) / len(v):.2f}" for v in psnr.values())
        print(f"steps {steps}, lr {lr}: PSNR after 1 / 4 / 16 iterations {shown} dB, {time.time() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
