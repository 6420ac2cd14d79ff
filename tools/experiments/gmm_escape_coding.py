"""Experiment: what coding gmm's escaped latent values with Exp-Golomb bits instead of raw i16 would save.

    python tools/experiments/gmm_escape_coding.py docs/results/gmm-groups6/rows.csv

Values more than WINDOW from their element's centre are escaped and stored as 16-bit integers
in GLAT. For every Kodak image at the bench's eight gmm qualities this counts the escapes and
the bytes an order-k Exp-Golomb code of (|offset| - WINDOW - 1) plus a sign bit would save,
then recomputes the BD-rate against published VTM of a bench run made with the same weights
(its rows.csv) with those bytes taken off each file. Run from the repository root.
"""
import csv
import json
import sys

import numpy as np
import torch
from PIL import Image

from mlimg.codecs import gmm as G
from mlimg.codecs.cae import _pad, _to_rgb_float, encoder_latent
from mlimg.metrics import bd_rate
from mlimg.nn import store
from mlimg.nn.gmm_entropy import WINDOW

torch.set_num_threads(2)
loaded = store.load(store.default_model("gmm"), "gmm")
net, ent = loaded.net, G._entropy_model(loaded)
QUALITIES = [p["quality"] for p in G.GmmCodec.bench_points]
saved = {}  # (image, quality) -> bytes saved with k = 0..6


def exp_golomb_bits(e, k):
    return 2 * np.floor(np.log2(e / 2 ** k + 1)).astype(int) + k + 1


for i in range(1, 25):
    name = f"kodim{i:02d}"
    x = _pad(_to_rgb_float(np.asarray(Image.open(f"../shared/data/kodak/{name}.png").convert("RGB")), "RGB"))
    for q in QUALITIES:
        position = G.gain_position(q, net.log_gain.shape[0], G.GmmCodec.version)
        y = np.clip(np.round(encoder_latent(net, x, position, 0)), -32768, 32767).astype(np.int64)
        with torch.inference_mode():
            z = torch.round(net.h_a(torch.from_numpy(y.astype(np.float32))[None]))[0].numpy().astype(np.int64)
        hyper, flat, excess, shared = ent.hyper(z, *y.shape[1:]), y.reshape(y.shape[0], -1), [], {}
        for anchors, group in ent.passes():
            chans = ent.group_channels[group]
            for pos, centre, _ in ent.pass_blocks(hyper, y, anchors, group, shared):
                offset = flat[chans][:, pos].T.ravel() - centre
                excess.append(np.abs(offset[np.abs(offset) > WINDOW]) - WINDOW - 1)
        excess = np.concatenate(excess)
        saved[(name, q)] = [(16 * excess.size - (exp_golomb_bits(excess, k) + 1).sum()) / 8 for k in range(7)]
    print(name, "bytes saved (k = 3) at qualities", QUALITIES, [round(saved[(name, q)][3]) for q in QUALITIES], flush=True)

rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["subject"] == "gmm"]
vtm = json.load(open("../shared/anchors/kodak/vtm.json"))["results"]
for k in [None] + list(range(7)):
    rates, psnrs = [], []
    for point, q in enumerate(QUALITIES):
        at = [r for r in rows if int(r["point"]) == point]
        rates.append(np.mean([(int(r["bytes"]) - (saved[(r["image"], q)][k] if k is not None else 0)) * 8
                              / (int(r["width"]) * int(r["height"])) for r in at]))
        psnrs.append(np.mean([float(r["psnr"]) for r in at]))
    print("as measured" if k is None else f"Exp-Golomb k = {k}", "BD-rate against VTM",
          f"{bd_rate(vtm['bpp'], vtm['psnr-rgb'], rates, psnrs):+.2f} %")
