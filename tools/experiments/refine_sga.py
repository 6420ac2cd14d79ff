"""Encoder-side refinement with stochastic Gumbel annealing (Yang et al. 2020) against the
straight-through kind (noisy rate, rounded distortion), gmm, same step budget. Both are now
the codec's (mlimg/nn/refine.py: `refine=` picks SGA from ANNEAL_FROM steps on).

    python tools/experiments/refine_sga.py kodim01:55 kodim08:12 kodim23:100 --steps 20
    python tools/experiments/refine_sga.py kodim01 kodim08 kodim15 kodim23 --curve 1,25,55,85,100 --steps 100 --lrs 0.03

SGA relaxes each latent value to a random mix of its floor and ceiling whose temperature
anneals towards hard rounding, and measures rate and distortion on that same relaxed value
(the shipped refinement measures the rate with uniform noise, the distortion rounded).
Prints the real coded bpp (chunks, no container) and PSNR of each variant, like
tools/refine_sweep.py; with --curve, the images' mean bpp and PSNR at each quality without
refinement and with SGA at the first --lrs value, and the BD-rate between the two curves.
Kodak images (each fits one tile).
"""
import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mlimg.codecs import gmm
from mlimg.codecs.cae import _pad, _to_rgb_float, analysis_tiled, synthesis_tiled
from mlimg.metrics import bd_rate
from mlimg.nn import store
from mlimg.nn.refine import refine_latent


def refine_sga(net, x, y, position, inv_gain, steps, lr):
    """SGA refinement, now the codec's own for long refinements (mlimg/nn/refine.py)."""
    return refine_latent(net, x, y, position, inv_gain, steps, lr=lr, anneal=True)


def analysed(net, x, quality):
    """(gain position, analysis latent, inverse gains) of padded image x at a quality."""
    position = gmm.gain_position(quality, net.log_gain.shape[0], gmm.GmmCodec.version)
    with torch.inference_mode():
        gain, inv_gain = net.gains(position)
        return position, analysis_tiled(net, x, gain), inv_gain


def coded(net, entropy, img, y, quality, inv_gain):
    """(bpp of the coded chunks, PSNR) of the float latent y, rounded, for image img."""
    h, w = img.shape[:2]
    y = np.clip(np.round(y), -32768, 32767)
    with torch.inference_mode():
        z = net.h_a(torch.from_numpy(y.astype(np.float32))[None])[0].numpy()
        out = synthesis_tiled(net, y.astype(np.float32), inv_gain)[:h, :w]
    y, z = y.astype(np.int64), np.clip(np.round(z), -32768, 32767).astype(np.int64)
    nbytes = len(gmm._pack_hyper(z, entropy.t["z_prior"])) + len(gmm._pack_latent(y, z, quality, entropy))
    mse = np.mean((np.clip(np.round(out * 255), 0, 255) - img) ** 2)
    return 8 * nbytes / (h * w), 10 * math.log10(255**2 / mse)


def curve(net, entropy, args):
    qualities = [int(q) for q in args.curve.split(",")]
    lr = float(args.lrs.split(",")[0])
    images = [np.asarray(Image.open(Path("../shared/data/kodak") / f"{n}.png").convert("RGB")) for n in args.cases]
    variants = {
        "plain": lambda net, x, y0, position, inv_gain: y0,
        "refine20": lambda net, x, y0, position, inv_gain: refine_latent(net, x, y0, position, inv_gain, 20, anneal=False),
        "sga": lambda net, x, y0, position, inv_gain: refine_sga(net, x, y0, position, inv_gain, args.steps, lr),
    }
    mean = {k: np.zeros((len(qualities), 2)) for k in variants}
    for i, quality in enumerate(qualities):
        for img in images:
            x = _pad(_to_rgb_float(img, "RGB"))
            position, y0, inv_gain = analysed(net, x, quality)
            for k, refine in variants.items():
                y = refine(net, x, y0, position, inv_gain)
                mean[k][i] += np.array(coded(net, entropy, img, y, quality, inv_gain)) / len(images)
        print(f"q{quality}: " + " | ".join(f"{k} {m[i][0]:.4f} bpp {m[i][1]:.3f} dB" for k, m in mean.items()), flush=True)
    for k in ("refine20", "sga"):
        bd = bd_rate(mean["plain"][:, 0], mean["plain"][:, 1], mean[k][:, 0], mean[k][:, 1])
        print(f"BD-rate of {k} against no refinement: {bd:+.1f} % (sga: {args.steps} steps, lr {lr})")

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cases", nargs="+", help="IMAGE:QUALITY")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--lrs", default="0.01,0.03")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--curve", help="Q,Q,...: cases are image names; mean curves and their BD-rate")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    loaded = store.load(store.default_model("gmm"), "gmm")
    net, entropy = loaded.net.eval(), gmm._entropy_model(loaded)
    if args.curve:
        return curve(net, entropy, args)
    for case in args.cases:
        name, quality = case.split(":")
        quality = int(quality)
        img = np.asarray(Image.open(Path("../shared/data/kodak") / f"{name}.png").convert("RGB"))
        x = _pad(_to_rgb_float(img, "RGB"))
        position, y0, inv_gain = analysed(net, x, quality)

        def measure(y):
            bpp, psnr = coded(net, entropy, img, y, quality, inv_gain)
            return f"{bpp:.4f} bpp {psnr:.3f} dB"

        print(f"{name} q{quality}: analysis {measure(y0)}", flush=True)
        t0 = time.time()
        print(f"  shipped refine {args.steps}: {measure(refine_latent(net, x, y0, position, inv_gain, args.steps, anneal=False))}"
              f" ({time.time() - t0:.0f} s)", flush=True)
        for lr in args.lrs.split(","):
            t0 = time.time()
            y = refine_sga(net, x, y0, position, inv_gain, args.steps, float(lr))
            print(f"  sga lr {lr} {args.steps}: {measure(y)} ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
