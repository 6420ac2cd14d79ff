"""Experiment: encoder-side deadzone for gmm: q = round(y - delta*sign(y - mu)), mu the mixture mean
from the integer entropy model (anchors first, then non-anchors from the quantised anchors).
Actual coded bytes (HLAT + GLAT), PSNR through the synthesis (no loop filter).

    python tools/experiments/gmm_deadzone.py Q1,Q2,... D1,D2,... kodim01 kodim08 ...
(run from the repository root; Kodak in ../shared/data/kodak; TRAINING.md has the results)
"""
import sys
from pathlib import Path
import numpy as np, torch
from PIL import Image
from mlimg.codecs.gmm import gain_position, _pack_hyper, _pack_latent
from mlimg.codecs.cae import _pad, _to_rgb_float, encoder_latent, synthesis_tiled
from mlimg.nn.checkerboard import anchor_mask
sys.path.insert(0, str(Path(__file__).parent))
from gmm_dequantise import M, ent, net, params  # the shipped gmm, its integer mixture per element

def encode(y, delta):
    q0 = np.round(y)
    with torch.inference_mode():
        z = np.round(net.h_a(torch.from_numpy(q0.astype(np.float32))[None])[0].numpy()).astype(np.int64)
    _, lh, lw = y.shape
    q = q0.copy().reshape(M, -1); yf = y.reshape(M, -1)
    if delta:
        for anchors in (True, False):  # the non-anchors' means see the quantised anchors
            W, MU, _ = params(q.reshape(M, lh, lw).astype(np.int64), z)
            pos = np.flatnonzero((anchor_mask(lh, lw) if anchors else ~anchor_mask(lh, lw)).ravel())
            mu = (W * MU).sum(-1).reshape(M, -1)[:, pos]
            v = yf[:, pos]
            q[:, pos] = np.round(v - delta * np.sign(v - mu))
    q = q.reshape(M, lh, lw).astype(np.int64)
    nbytes = len(_pack_hyper(z, ent.t["z_prior"])) + len(_pack_latent(q, z, 50, ent))
    return q, nbytes

qualities = [int(v) for v in sys.argv[1].split(",")]
deltas = [float(v) for v in sys.argv[2].split(",")]
res = {}
for name in sys.argv[3:]:
    img = np.asarray(Image.open(f"../shared/data/kodak/{name}.png").convert("RGB"))
    x = _pad(_to_rgb_float(img, "RGB"))
    for quality in qualities:
        pos = gain_position(quality, net.log_gain.shape[0], 2)
        y = encoder_latent(net, x, pos)
        _, ig = net.gains(pos)
        for d in deltas:
            q, nbytes = encode(y, d)
            with torch.inference_mode():
                r = synthesis_tiled(net, q.astype(np.float32), ig)[: img.shape[0], : img.shape[1]]
            r = np.clip(np.round(r * 255), 0, 255)
            mse = np.mean((r - img) ** 2)
            bpp = nbytes * 8 / (img.shape[0] * img.shape[1])
            res.setdefault((quality, d), []).append((bpp, mse))
            print(name, quality, d, f"{bpp:.4f} bpp {10*np.log10(255**2/mse):.3f} dB", flush=True)
print("mean over images:")
for (quality, d), v in sorted(res.items()):
    v = np.array(v)
    print(quality, d, f"{v[:,0].mean():.4f} bpp {np.mean(10*np.log10(255**2/v[:,1])):.3f} dB")
