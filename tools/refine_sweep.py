"""Step-size / step-count sweep of gmm's encoder-side refinement on one Kodak image.

    python tools/refine_sweep.py kodim01 55 0.01,20 0.005,20 0.02,20 0.01,10

Each LR,STEPS setting refines (straight-through, the kind below ANNEAL_FROM steps) the analysis latent of the image at that quality with the
shipped gmm weights (Adam, first step LR decayed linearly to 0) and prints the real file
bpp (entropy-coded chunks, without the container) and PSNR. TRAINING.md quotes the results.
"""
import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mlimg.codecs import gmm
from mlimg.codecs.cae import _pad, _to_rgb_float, analysis_tiled, synthesis_tiled
from mlimg.nn import store
from mlimg.nn.refine import refine_latent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("image", help="Kodak image name, e.g. kodim01")
    p.add_argument("quality", type=int)
    p.add_argument("settings", nargs="+", help="LR,STEPS")
    p.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    img = np.asarray(Image.open(args.kodak / f"{args.image}.png").convert("RGB"))
    loaded = store.load(store.default_model("gmm"), "gmm")
    net, entropy = loaded.net.eval(), gmm._entropy_model(loaded)
    x = _pad(_to_rgb_float(img, "RGB"))
    h, w = img.shape[:2]
    position = gmm.gain_position(args.quality, net.log_gain.shape[0], gmm.GmmCodec.version)
    with torch.inference_mode():
        gain, inv_gain = net.gains(position)
        y0 = analysis_tiled(net, x, gain)

    def measure(y):
        y = np.clip(np.round(y), -32768, 32767)
        with torch.inference_mode():
            z = net.h_a(torch.from_numpy(y.astype(np.float32))[None])[0].numpy()
            out = synthesis_tiled(net, y.astype(np.float32), inv_gain)[:h, :w]
        y, z = y.astype(np.int64), np.clip(np.round(z), -32768, 32767).astype(np.int64)
        nbytes = len(gmm._pack_hyper(z, entropy.t["z_prior"])) + len(gmm._pack_latent(y, z, args.quality, entropy))
        mse = np.mean((np.clip(np.round(out * 255), 0, 255) - img) ** 2)
        return f"{8 * nbytes / (h * w):.4f} bpp {10 * math.log10(255**2 / mse):.3f} dB"

    print(f"{args.image} quality {args.quality}: analysis {measure(y0)}", flush=True)
    for setting in args.settings:
        lr, steps = setting.split(",")
        t0 = time.time()
        y = refine_latent(net, x, y0, position, inv_gain, int(steps), lr=float(lr), anneal=False)
        print(f"  lr {lr} steps {steps}: {measure(y)} ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
