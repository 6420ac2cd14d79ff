"""Experiment: choose gmm's hyper-latent z per image for the latent y the encoder has fixed
(mlimg/nn/hyper_refine.py), at several step counts and step sizes.

    python tools/experiments/gmm_hyper_refine.py 5:0.1 20:0.05 --qualities 1,30,70 --images kodim01,kodim08,kodim15,kodim23
    python tools/experiments/gmm_hyper_refine.py 5:0.05 5:0.1 8:0.1 --rows docs/results/gmm-groups6/rows.csv

z only sets the probabilities y is coded with, so a better z is pure rate. For each image,
quality and STEPS:LR: the coded HLAT + GLAT bytes with the shipped integer model, h_a's z
against the chosen one, and the time the choice took (two threads); then the mean change per
quality. With --rows (a bench run's rows.csv made with h_a's z and the same weights): every
Kodak image at the bench's eight gmm qualities, and the BD-rate against published VTM of that
run with each variant's saved bytes taken off its files (the pixels do not change). Run from
the repository root; TRAINING.md ("Choosing the hyper-latent per image") has the results.
"""
import argparse
import csv
import json
import time

import numpy as np
import torch
from PIL import Image

from mlimg.codecs import gmm as G
from mlimg.codecs.cae import _pad, _to_rgb_float, encoder_latent
from mlimg.metrics import bd_rate
from mlimg.nn import store
from mlimg.nn.hyper_refine import refine_hyper

parser = argparse.ArgumentParser()
parser.add_argument("variants", nargs="+", help="STEPS:LR")
parser.add_argument("--qualities", default=",".join(str(p["quality"]) for p in G.GmmCodec.bench_points))
parser.add_argument("--images", default=",".join(f"kodim{i:02d}" for i in range(1, 25)))
parser.add_argument("--rows", default=None)
args = parser.parse_args()
torch.set_num_threads(2)
loaded = store.load(store.default_model("gmm"), "gmm")
net, shipped = loaded.net, G._entropy_model(loaded)
qualities = [int(q) for q in args.qualities.split(",")]
variants = [(int(s), float(lr)) for s, lr in (v.split(":") for v in args.variants)]


def coded(y, z, q):
    z = z[0].numpy().astype(np.int64)
    return len(G._pack_hyper(z, shipped.t["z_prior"])) + len(G._pack_latent(y, z, q, shipped))


saved, changes, times = {}, {}, {}
for name in args.images.split(","):
    x = _pad(_to_rgb_float(np.asarray(Image.open(f"../shared/data/kodak/{name}.png").convert("RGB")), "RGB"))
    for q in qualities:
        position = G.gain_position(q, net.log_gain.shape[0], G.GmmCodec.version)
        y = np.clip(np.round(encoder_latent(net, x, position, 0)), -32768, 32767).astype(np.int64)
        yt = torch.from_numpy(y.astype(np.float32))[None]
        with torch.no_grad():
            z = net.h_a(yt)
        base = coded(y, torch.round(z), q)
        line = [f"{name} q{q}: h_a {base} B"]
        for v in variants:
            t0 = time.perf_counter()
            chosen = refine_hyper(net, yt, z, *v)
            times.setdefault(v, []).append(time.perf_counter() - t0)
            size = coded(y, chosen, q)
            saved[(v, name, q)] = base - size
            changes.setdefault((v, q), []).append(size / base - 1)
            line.append(f"{v[0]}:{v[1]} {size} B ({100 * (size / base - 1):+.2f} %)")
        print(", ".join(line), flush=True)
for v in variants:
    per_q = " / ".join(f"{100 * np.mean(changes[v, q]):+.2f}" for q in qualities)
    print(f"{v[0]} steps, lr {v[1]}: mean change at quality {'/'.join(map(str, qualities))}: {per_q} %, "
          f"median {np.median(times[v]):.2f} s")
if args.rows:
    rows = [r for r in csv.DictReader(open(args.rows)) if r["subject"] == "gmm"]
    vtm = json.load(open("../shared/anchors/kodak/vtm.json"))["results"]
    for v in [None] + variants:
        rates, psnrs = [], []
        for point, q in enumerate(qualities):
            at = [r for r in rows if int(r["point"]) == point]
            rates.append(np.mean([(int(r["bytes"]) - (saved[(v, r["image"], q)] if v else 0)) * 8
                                  / (int(r["width"]) * int(r["height"])) for r in at]))
            psnrs.append(np.mean([float(r["psnr"]) for r in at]))
        label = "as measured (h_a's z)" if v is None else f"{v[0]} steps, lr {v[1]}"
        print(f"{label}: BD-rate against VTM {bd_rate(vtm['bpp'], vtm['psnr-rgb'], rates, psnrs):+.2f} %")
