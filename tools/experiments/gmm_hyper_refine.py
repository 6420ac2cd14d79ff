"""Experiment: choose gmm's hyper-latent z per image for the latent y the encoder has fixed
(mlimg/nn/hyper_refine.py), at several step counts and step sizes.

    python tools/experiments/gmm_hyper_refine.py 1,30,70 kodim01,kodim08,kodim15,kodim23 5:0.1 20:0.05

z only sets the probabilities y is coded with, so a better z is pure rate. For each image,
quality and STEPS:LR: the coded HLAT + GLAT bytes with the shipped integer model, h_a's z
against the chosen one, and the time the choice took (two threads). Prints the mean change
per quality. Run from the repository root; TRAINING.md ("Choosing the hyper-latent per image")
has the results.
"""
import sys
import time

import numpy as np
import torch
from PIL import Image

from mlimg.codecs import gmm as G
from mlimg.codecs.cae import _pad, _to_rgb_float, encoder_latent
from mlimg.nn import store
from mlimg.nn.hyper_refine import refine_hyper

torch.set_num_threads(2)
loaded = store.load(store.default_model("gmm"), "gmm")
net, shipped = loaded.net, G._entropy_model(loaded)
QUALITIES = [int(q) for q in sys.argv[1].split(",")]
NAMES = sys.argv[2].split(",")
VARIANTS = [(int(s), float(lr)) for s, lr in (v.split(":") for v in sys.argv[3:])]


def coded(y, z, q):
    z = z[0].numpy().astype(np.int64)
    return len(G._pack_hyper(z, shipped.t["z_prior"])) + len(G._pack_latent(y, z, q, shipped))


changes, times = {}, {}
for name in NAMES:
    x = _pad(_to_rgb_float(np.asarray(Image.open(f"../shared/data/kodak/{name}.png").convert("RGB")), "RGB"))
    for q in QUALITIES:
        position = G.gain_position(q, net.log_gain.shape[0], G.GmmCodec.version)
        y = np.clip(np.round(encoder_latent(net, x, position, 0)), -32768, 32767).astype(np.int64)
        yt = torch.from_numpy(y.astype(np.float32))[None]
        with torch.no_grad():
            z = net.h_a(yt)
        base = coded(y, torch.round(z), q)
        line = [f"{name} q{q}: h_a {base} B"]
        for steps, lr in VARIANTS:
            t0 = time.perf_counter()
            chosen = refine_hyper(net, yt, z, steps, lr)
            times.setdefault((steps, lr), []).append(time.perf_counter() - t0)
            size = coded(y, chosen, q)
            changes.setdefault((steps, lr, q), []).append(size / base - 1)
            line.append(f"{steps}:{lr} {size} B ({100 * (size / base - 1):+.2f} %)")
        print(", ".join(line), flush=True)
for steps, lr in VARIANTS:
    per_q = " / ".join(f"{100 * np.mean(changes[steps, lr, q]):+.2f}" for q in QUALITIES)
    print(f"{steps} steps, lr {lr}: mean change at quality {'/'.join(map(str, QUALITIES))}: {per_q} %, "
          f"median {np.median(times[steps, lr]):.2f} s")
