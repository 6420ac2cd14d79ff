"""Experiment: a per-image least-squares correction of gmm's last synthesis layer, sent in the file.

    python tools/experiments/gmm_feature_correction.py 1,30,70,100 kodim01,kodim15,kodim23

The encoder would fit, against the original, a 1x1 map from the synthesis's last hidden features
(Nf channels at half resolution) to the 12 sub-pixel outputs of its last layer, quantise it
(2**-S steps on features scaled by a power of two each; order-k Exp-Golomb bits, plus 4 bits of
exponent per feature) and send it. Printed per point: the unquantised in-sample bound, then the
best quantised fit with the adaptive loop filter refitted after it, scored as the loop filter
scores itself (PSNR gain minus DB_PER_LOG_RATE * ln(1 + bytes / file bytes)) against the loop
filter alone. Run from the repository root; TRAINING.md has the results.
"""
import math
import sys

import numpy as np
import torch
from PIL import Image

from mlimg import loop_filter as LF
from mlimg.codecs import gmm as G
from mlimg.codecs.cae import _pad, _to_rgb_float, encoder_latent
from mlimg.metrics import psnr
from mlimg.nn import store

torch.set_num_threads(2)
loaded = store.load(store.default_model("gmm"), "gmm")
net, ent = loaded.net, G._entropy_model(loaded)


for name in sys.argv[2].split(","):
    original = np.asarray(Image.open(f"../shared/data/kodak/{name}.png").convert("RGB"))
    px, (H, W) = original.astype(np.float64), original.shape[:2]
    x = _pad(_to_rgb_float(original, "RGB"))
    for q in map(int, sys.argv[1].split(",")):
        position = G.gain_position(q, net.log_gain.shape[0], G.GmmCodec.version)
        y = np.round(encoder_latent(net, x, position, 0))
        with torch.inference_mode():
            yt = torch.from_numpy(y.astype(np.float32))[None]
            z = torch.round(net.h_a(yt))
            file_bytes = len(G._pack_latent(y.astype(np.int64), z[0].numpy().astype(np.int64), q, ent)) + 300  # HLAT, container
            _, inv_gain = net.gains(position)
            hidden = net.g_s[:-1](yt * inv_gain.view(1, -1, 1, 1))
            out = net.g_s[-1](hidden)[0].numpy().transpose(1, 2, 0)[:H, :W] * 255
        base = np.clip(np.round(out), 0, 255).astype(np.uint8)
        plain = LF.choose(base, original, file_bytes)
        plain_score = plain.score if plain else 0.0
        h2, w2 = H // 2, W // 2
        f = hidden[0].numpy()[:, :h2, :w2].reshape(hidden.shape[1], -1).astype(np.float64)
        exponent = np.round(np.log2(f.std(axis=1) + 1e-6))
        F = np.concatenate([f / 2.0 ** exponent[:, None], np.ones((1, f.shape[1]))])
        R = ((px - out) / 255).reshape(h2, 2, w2, 2, 3).transpose(4, 1, 3, 0, 2).reshape(12, -1)
        gram, cross = F @ F.T, F @ R.T
        n = F.shape[0]

        def corrected(A):
            corr = (A.T @ F).reshape(3, 2, 2, h2, w2).transpose(3, 1, 4, 2, 0).reshape(H, W, 3) * 255
            return np.clip(np.round(out + corr), 0, 255).astype(np.uint8)

        bound = psnr(corrected(np.linalg.solve(gram, cross)), px)
        best = None
        for S in (6, 7, 8, 9, 10):
            for ridge in (0.0, 1e-4, 1e-3, 1e-2):
                A = np.round(np.linalg.solve(gram + ridge * np.trace(gram) / n * np.eye(n), cross) * 2 ** S)
                values = [int(v) for v in A.ravel()]
                k = min(range(12), key=lambda k: LF._golomb_bits(values, k))
                side = (LF._golomb_bits(values, k) + 7) // 8 + (n - 1) // 2 + 4 + 12  # coefficients, exponents, header, chunk
                new = corrected(A / 2 ** S)
                refit = LF.choose(new, original, file_bytes + side)
                final = LF.apply(new, refit.filt) if refit else new
                lf_bytes = len(refit.payload) + 12 if refit else 0
                score = psnr(final, px) - psnr(base, px) - LF.DB_PER_LOG_RATE * math.log1p((side + lf_bytes) / file_bytes)
                if best is None or score > best[0]:
                    best = (score, S, ridge, side, psnr(final, px))
        print(f"{name} q{q} ({file_bytes} B): synthesis {psnr(base, px):.3f} dB, unquantised bound {bound:.3f}; loop filter alone "
              f"score {plain_score:+.3f} dB; correction (S={best[1]}, ridge {best[2]}, {best[3]} B) + loop filter {best[4]:.3f} dB, "
              f"score {best[0]:+.3f} dB: {best[0] - plain_score:+.3f} dB against the loop filter alone", flush=True)
