"""Experiment: what the fixed-point entropy model of gmm costs over its float model, and which
precision constant it comes from.

    python tools/experiments/gmm_integer_precision.py 1,30,70,100 kodim01,kodim08,kodim15,kodim23 "MEAN_FRAC_BITS=6" "A_BITS=10"

For each Kodak image and quality: the float model's bits on the rounded latent, the integer
model's ideal bits (-log2 of its probabilities, escapes at their 16 raw bits) and the coded GLAT
bytes; then, for each variant (keyword=value of N_SCALES, MEAN_FRAC_BITS, A_BITS, W_BITS, LO, HI),
the GLAT bytes with integer tables re-exported from the same float network at those constants.
Run from the repository root; TRAINING.md ("The fixed-point entropy model's cost") has the results.
"""
import sys

import numpy as np
import torch
from PIL import Image

import mlimg.nn.gmm_entropy as ge
import mlimg.nn.integer as gi
from mlimg.codecs import gmm as G
from mlimg.codecs.cae import _pad, _to_rgb_float, encoder_latent
from mlimg.nn import models, store

torch.set_num_threads(2)
loaded = store.load(store.default_model("gmm"), "gmm")
net, shipped = loaded.net, G._entropy_model(loaded)
QUALITIES = [int(q) for q in sys.argv[1].split(",")]
NAMES = sys.argv[2].split(",")
DEFAULTS = dict(N_SCALES=ge.N_SCALES, MEAN_FRAC_BITS=gi.MEAN_FRAC_BITS, A_BITS=ge.A_BITS, W_BITS=ge.W_BITS, LO=0.11, HI=64.0)


def ideal_bits(ent, y, z):
    """(-log2 p summed over the latent, escapes at 16 bits each, number of escapes)."""
    hyper, flat, total, escapes = ent.hyper(z, *y.shape[1:]), y.reshape(y.shape[0], -1), 0.0, 0
    shared = {}
    for anchors, group in ent.passes():
        chans = ent.group_channels[group]
        for pos, centre, probs in ent.pass_blocks(hyper, y, anchors, group, shared):
            offset = flat[chans][:, pos].T.ravel() - centre
            outside = np.abs(offset) > ge.WINDOW
            symbols = np.where(outside, 2 * ge.WINDOW + 1, offset + ge.WINDOW)
            total += -np.log2(probs[np.arange(symbols.size), symbols]).sum() + 16 * outside.sum()
            escapes += int(outside.sum())
    return total, escapes


points = []
for name in NAMES:
    pixels = np.asarray(Image.open(f"../shared/data/kodak/{name}.png").convert("RGB"))
    x = _pad(_to_rgb_float(pixels, "RGB"))
    for q in QUALITIES:
        position = G.gain_position(q, net.log_gain.shape[0], G.GmmCodec.version)
        y = np.clip(np.round(encoder_latent(net, x, position, 0)), -32768, 32767)
        with torch.inference_mode():
            yt = torch.from_numpy(y.astype(np.float32))[None]
            zt = torch.round(net.h_a(yt))
            w, m, s = net.mixture(net.h_s(zt), yt)
            float_bits = -torch.log2(models.gmm_likelihood(yt, w, m, s)).sum().item()
        y, z = y.astype(np.int64), zt[0].numpy().astype(np.int64)
        ideal, escapes = ideal_bits(shipped, y, z)
        coded = 8 * len(G._pack_latent(y, z, q, shipped))
        print(f"{name} q{q}: float {float_bits / 8:.0f} B, integer ideal {ideal / 8:.0f} B ({100 * (ideal / float_bits - 1):+.2f} %, "
              f"{escapes} escapes), GLAT {coded / 8:.0f} B ({100 * (coded / float_bits - 1):+.2f} %)", flush=True)
        points.append((q, y, z, coded // 8))


def rebuild(constants):
    ge.N_SCALES, ge.A_BITS, ge.W_BITS = constants["N_SCALES"], constants["A_BITS"], constants["W_BITS"]
    ge.MEAN_FRAC_BITS = gi.MEAN_FRAC_BITS = constants["MEAN_FRAC_BITS"]
    table = gi.scale_table
    ge.scale_table = lambda n: table(n, constants["LO"], constants["HI"])
    config = net.config
    return ge.IntegerEntropyModel(ge.export_tables(net), net.M, net.K, config.get("groups"), config.get("order"))


base = [b for *_, b in points]
for spec in ["N_SCALES=%d" % DEFAULTS["N_SCALES"]] + sys.argv[3:]:
    constants = dict(DEFAULTS, **{k: type(DEFAULTS[k])(v) for k, v in (kv.split("=") for kv in spec.split(","))})
    ent = rebuild(constants)
    sizes = [len(G._pack_latent(y, z, q, ent)) for q, y, z, _ in points]
    per_point = [round(100 * (a / b - 1), 2) for a, b in zip(sizes, base)]
    print(f"{spec:40s} GLAT {sum(sizes)} B, {100 * (sum(sizes) / sum(base) - 1):+.2f} % against the shipped tables; per point {per_point}", flush=True)
