"""Bytes of cae's latent under version 1's factorised coding and version 2's context-adaptive
coding (nn/latent_context.py), the same rounded latent for both, with the shipped weights.

    python tools/cae_coding_gain.py kodim01 kodim08 --qualities 1,25,50,75,100

The latent is taken at version 2's gain position of each quality; prints per quality the
summed bytes over the images (payload: stream + escaped values) and the change.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mlimg.codecs import cae
from mlimg.codecs.factorized import pack_channels
from mlimg.nn import store
from mlimg.nn.latent_context import ContextModel, encode_latent

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("images", nargs="+", help="Kodak names (kodim01) or paths")
parser.add_argument("--qualities", default="1,25,50,75,100")
parser.add_argument("--kodak", default="../shared/data/kodak")
args = parser.parse_args()
torch.set_num_threads(2)

loaded = store.load(store.default_model("cae"), "cae")
net, tables = loaded.net, loaded.tables
levels = net.log_gain.shape[0]
context = ContextModel.from_tables(tables)
totals = {}
for name in args.images:
    path = Path(name) if Path(name).exists() else Path(args.kodak) / f"{name}.png"
    x = cae._pad(np.asarray(Image.open(path).convert("RGB"), np.float32) / 255)
    for quality in map(int, args.qualities.split(",")):
        y = cae.encoder_latent(net, x, cae.gain_position(quality, levels, 2))
        q = np.clip(np.round(y), -32768, 32767).astype(np.int64)
        escaped, stream = pack_channels(q, tables["prior"])
        v1 = len(stream) + 2 * escaped.size
        escaped, stream = encode_latent(q, context, quality)
        v2 = len(stream) + 2 * escaped.size
        totals[quality] = totals.get(quality, np.zeros(2)) + (v1, v2)
for quality, (v1, v2) in totals.items():
    print(f"quality {quality:3d}: factorised {int(v1)} bytes, context-adaptive {int(v2)} bytes ({(v2 / v1 - 1) * 100:+.1f} %)")
