"""Deadzone rounding for cae (encoder only): round |y| - delta instead of |y|, and the BD-rate of
each delta against plain rounding over quality 1..100 on eight Kodak images (shipped weights,
version 2 coding; bpp from the LATN payload plus 60 bytes of container).

    python tools/cae_deadzone_check.py 0.1 0.03 -0.1
"""
import sys

import numpy as np
import torch
from PIL import Image
from mlimg.nn import store
from mlimg.codecs import cae as C
from mlimg.codecs.base import Header
from mlimg.metrics import bd_rate, bd_psnr
torch.set_num_threads(1)
L = store.load(store.default_model("cae"), "cae"); net, tables = L.net, L.tables
NL = net.log_gain.shape[0]
context = C.context_model(tables, NL, 2)
imgs = [np.asarray(Image.open(f"../shared/data/kodak/kodim{i:02d}.png").convert("RGB")) for i in (1, 4, 8, 13, 15, 19, 21, 23)]
QS = (1, 12, 25, 40, 55, 70, 85, 100)
def curve(delta):
    rates, psnrs = [], []
    for quality in QS:
        pos = C.gain_position(quality, NL, 2)
        b = p = 0
        for img in imgs:
            x = C._pad(img.astype(np.float32) / 255)
            y = C.encoder_latent(net, x, pos)
            q = (np.sign(y) * np.floor(np.abs(y) + 0.5 - delta)).astype(np.int32)
            payload = C._pack_latent(q, quality, tables["prior"], context)
            with torch.inference_mode():
                _, ig = net.gains(pos)
                rec = C.synthesis_tiled(net, q, ig)[: img.shape[0], : img.shape[1]]
            out = np.clip(np.round(rec * 255), 0, 255)
            b += (len(payload) + 60) * 8 / img.shape[0] / img.shape[1]
            p += 10 * np.log10(255**2 / np.mean((out - img) ** 2))
        rates.append(b / len(imgs)); psnrs.append(p / len(imgs))
    return np.array(rates), np.array(psnrs)
base = curve(0.0)
print("delta 0:", np.round(base[0], 3), np.round(base[1], 2), flush=True)
for d in map(float, sys.argv[1:]):
    r, p = curve(d)
    print(f"delta {d}: BD-rate {bd_rate(base[0], base[1], r, p):+.2f} %  BD-PSNR {bd_psnr(base[0], base[1], r, p):+.3f} dB", np.round(r, 3), np.round(p, 2), flush=True)
