"""cae's annealed refinement with the rate it optimises measured two ways: the training's
factorised prior (what cae's refinement used before 2026-11-28) and the context coder's own
tables (`TableRate`, mlimg/nn/refine.py, what it uses now), through the codec (whole files,
loop filter on).

    python tools/experiments/cae_refine_rate.py 100 0.03 kodim01:55 kodim08:12
    python tools/experiments/cae_refine_rate.py 50 0.03 kodim01 kodim08 kodim15 kodim23 --curve 1,25,55,85,100

Prints bpp of the file and PSNR per case: no refinement, STEPS steps with the prior's rate,
STEPS steps with the tables' rate (STEPS >= 50: annealed). With --curve, only no refinement
and the tables' rate, the images' mean at each quality and the BD-rate between the curves.
"""
import argparse
import io
import time

import numpy as np
import torch
from PIL import Image

import mlimg  # noqa: F401  (registers the format)
from mlimg.metrics import bd_rate
from mlimg.nn import refine


def coded(img, quality, steps, prior_rate: bool):
    """(bpp of the file, PSNR, seconds) of img saved with refine=steps."""
    real = refine.TableRate
    if prior_rate:  # the codec then falls back to the network's own relaxed_bits
        refine.TableRate = lambda model, quality: None
    try:
        start = time.perf_counter()
        buf = io.BytesIO()
        img.save(buf, format="MLIMG", method="cae", quality=quality, refine=steps)
        seconds = time.perf_counter() - start
    finally:
        refine.TableRate = real
    out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).astype(np.float64)
    mse = np.mean((out - np.asarray(img).astype(np.float64)) ** 2)
    return 8 * len(buf.getvalue()) / (img.size[0] * img.size[1]), 10 * np.log10(255**2 / mse), seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("steps", type=int)
    parser.add_argument("lr", type=float, help="the annealed kind's first step size (the codec's: 0.03)")
    parser.add_argument("cases", nargs="+", help="kodimNN:QUALITY, or kodimNN with --curve")
    parser.add_argument("--curve", help="comma-separated qualities")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    refine.ANNEAL_LEARNING_RATE = args.lr

    def load(name):
        return Image.open(f"../shared/data/kodak/{name}.png").convert("RGB")

    if not args.curve:
        for case in args.cases:
            name, quality = case.split(":")
            img = load(name)
            for label, steps, prior in (("none", 0, False), ("prior", args.steps, True), ("tables", args.steps, False)):
                bpp, psnr, seconds = coded(img, int(quality), steps, prior)
                print(f"{name} q{quality} {label:6s} {steps:3d} steps: {bpp:.4f} bpp {psnr:.3f} dB ({seconds:.0f} s)", flush=True)
        return
    images = [load(name) for name in args.cases]
    curves = {0: [], args.steps: []}
    for quality in [int(q) for q in args.curve.split(",")]:
        for steps, points in curves.items():
            points.append(np.mean([coded(img, quality, steps, False)[:2] for img in images], axis=0))
        print(f"q{quality}: " + " | ".join(f"{s} steps {p[-1][0]:.4f} bpp {p[-1][1]:.3f} dB" for s, p in curves.items()), flush=True)
    plain, refined = np.array(curves[0]), np.array(curves[args.steps])
    print(f"BD-rate of {args.steps} steps (tables' rate, lr {args.lr}) against none: "
          f"{bd_rate(plain[:, 0], plain[:, 1], refined[:, 0], refined[:, 1]):+.1f} %")


if __name__ == "__main__":
    main()
