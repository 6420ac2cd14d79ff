"""Experiment: ideal bits of gmm latents with per-channel (or global) scale factors / mean shrink.

    python tools/experiments/gmm_channel_scales.py QUALITY kodim01 kodim08 ...
(run from the repository root; Kodak in ../shared/data/kodak; TRAINING.md has the results)
"""
import sys
import numpy as np, torch
from PIL import Image
from scipy.stats import norm
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from gmm_dequantise import params, net, encoder_latent, _pad, _to_rgb_float, gain_position

def bits(q, W, MU, S, f=1.0):
    S = S * f
    lo = (q[..., None] - 0.5 - MU) / S; hi = (q[..., None] + 0.5 - MU) / S
    p = (W * (norm.cdf(hi) - norm.cdf(lo))).sum(-1)
    return -np.log2(np.maximum(p, 1e-9))

quality = int(sys.argv[1])
factors = np.exp(np.linspace(np.log(0.7), np.log(1.4), 15))
tot = {"base": 0, "global": 0, "chan": 0}
for name in sys.argv[2:]:
    img = np.asarray(Image.open(f"../shared/data/kodak/{name}.png").convert("RGB"))
    x = _pad(_to_rgb_float(img, "RGB"))
    pos = gain_position(quality, net.log_gain.shape[0], 2)
    q = np.round(encoder_latent(net, x, pos))
    with torch.inference_mode():
        z = np.round(net.h_a(torch.from_numpy(q.astype(np.float32))[None])[0].numpy()).astype(np.int64)
    W, MU, S = params(q.astype(np.int64), z)
    B = np.stack([bits(q, W, MU, S, f) for f in factors])  # (F, M, h, w)
    per_chan = B.sum(axis=(2, 3))  # (F, M)
    base = per_chan[7].sum(); glob = per_chan.sum(1).min(); chan = per_chan.min(0).sum() + 4 * q.shape[0]
    best = factors[per_chan.argmin(0)]
    print(name, quality, f"bits base {base:.0f} global {glob/base-1:+.2%} (f={factors[per_chan.sum(1).argmin()]:.2f}) per-channel {chan/base-1:+.2%} factors {np.percentile(best,[10,50,90]).round(2)}", flush=True)
    tot["base"] += base; tot["global"] += glob; tot["chan"] += chan
print("total", {k: f"{v/tot['base']-1:+.2%}" for k, v in tot.items()})
