"""Experiment: decoder-side self-ensemble for gmm (test-time augmentation, as in super-resolution).

    python tools/experiments/gmm_self_ensemble.py kodim01,kodim15,kodim23

Decodes the encoder's rounded latent as it is and flipped (horizontally, vertically, both) or
transposed, flips each result back and averages them. Prints, per quality, the mean PSNR of the
plain decode and each other decode's and average's difference to it (no loop filter). Run from
the repository root; TRAINING.md ("Tried on the shipped gmm without training") has the result.
"""
import sys

import numpy as np
import torch
from PIL import Image

from mlimg.codecs import gmm as G
from mlimg.codecs.cae import _pad, _to_rgb_float, encoder_latent
from mlimg.metrics import psnr
from mlimg.nn import store

torch.set_num_threads(2)
net = store.load(store.default_model("gmm"), "gmm").net
VIEWS = {"h": ((-1,), False), "v": ((-2,), False), "hv": ((-1, -2), False), "t": ((), True)}
results = {}
for name in sys.argv[1].split(","):
    image = np.asarray(Image.open(f"../shared/data/kodak/{name}.png").convert("RGB"))
    x = _pad(_to_rgb_float(image, "RGB"))
    for q in (1, 30, 70, 100):
        position = G.gain_position(q, net.log_gain.shape[0], G.GmmCodec.version)
        y = np.round(encoder_latent(net, x, position, 0)).astype(np.float32)
        _, inv_gain = net.gains(position)
        yt = torch.from_numpy(y)[None] * inv_gain.view(1, -1, 1, 1)
        outs = {}
        with torch.no_grad():
            outs["plain"] = net.g_s(yt)
            for view, (dims, transpose) in VIEWS.items():
                t = yt.transpose(-1, -2) if transpose else yt.flip(dims)
                out = net.g_s(t)
                outs[view] = out.transpose(-1, -2) if transpose else out.flip(dims)
        outs["plain+h"] = (outs["plain"] + outs["h"]) / 2
        outs["plain+h+v+hv"] = (outs["plain"] + outs["h"] + outs["v"] + outs["hv"]) / 4

        def score(t):
            pixels = np.clip(np.round(t[0].permute(1, 2, 0).numpy()[: image.shape[0], : image.shape[1]] * 255), 0, 255)
            return psnr(image, pixels.astype(np.uint8))

        base = score(outs["plain"])
        for view, out in outs.items():
            results.setdefault((q, view), []).append(base if view == "plain" else score(out) - base)
for (q, view), values in sorted(results.items()):
    print(f"quality {q} {view}: " + (f"{np.mean(values):.3f} dB PSNR" if view == "plain" else f"{np.mean(values):+.3f} dB"))
