"""Experiment: decoder-side dequantisation for gmm. y_hat = q + E[y - q | q, GMM params].

    python tools/experiments/gmm_dequantise.py QUALITY kodim01 kodim08 ...
(run from the repository root; Kodak in ../shared/data/kodak; TRAINING.md has the results)
"""
import sys, time
import numpy as np, torch
from PIL import Image
from scipy.stats import norm
from mlimg.nn import store
from mlimg.codecs.gmm import _entropy_model, gain_position
from mlimg.codecs.cae import _pad, _to_rgb_float, encoder_latent, synthesis_tiled
from mlimg.nn.checkerboard import anchor_mask
from mlimg.nn.integer import MEAN_FRAC_BITS, scale_table
from mlimg.nn.gmm_entropy import N_SCALES

torch.set_num_threads(1)
loaded = store.load(store.default_model("gmm"), "gmm")
net, ent = loaded.net, _entropy_model(loaded)
assert len(ent.group_channels) == 1, "written for checkerboard models without channel groups (gmm-v1-c8ee12a5 and earlier)"
scales = scale_table(N_SCALES)
M = net.M

def params(q, z):
    _, lh, lw = q.shape
    hyper = ent.hyper(z, lh, lw)
    W = np.zeros((M, lh * lw, ent.K)); MU = np.zeros_like(W); S = np.zeros_like(W)
    for anchors in (True, False):
        select = anchor_mask(lh, lw) if anchors else ~anchor_mask(lh, lw)
        pos = np.flatnonzero(select.ravel())
        hf = hyper.reshape(hyper.shape[0], -1)
        if anchors:
            ctx = ent.context_of_nothing(pos.size)
        else:
            ctx = ent.context(np.where(select[None], 0, q)).reshape(2 * M, -1)[:, pos].T
        feats = np.concatenate([hf[:, pos].T, ctx], axis=1)
        w, mq, si = ent.parameters(ent.first_layer(feats))
        n = pos.size
        W[:, pos] = w.reshape(n, M, -1).transpose(1, 0, 2) / w.sum(1).reshape(n, M, 1).transpose(1, 0, 2)
        MU[:, pos] = (mq / 2 ** MEAN_FRAC_BITS).reshape(n, M, -1).transpose(1, 0, 2)
        S[:, pos] = scales[si].reshape(n, M, -1).transpose(1, 0, 2)
    return W.reshape(M, lh, lw, -1), MU.reshape(M, lh, lw, -1), S.reshape(M, lh, lw, -1)

def cond_mean(q, W, MU, S):
    lo = (q[..., None] - 0.5 - MU) / S; hi = (q[..., None] + 0.5 - MU) / S
    dPhi = norm.cdf(hi) - norm.cdf(lo)
    dphi = norm.pdf(hi) - norm.pdf(lo)
    mass = W * dPhi
    num = (W * (MU * dPhi - S * dphi)).sum(-1)
    den = mass.sum(-1)
    m = np.where(den > 1e-12, num / np.maximum(den, 1e-300), q)
    return np.clip(m, q - 0.5, q + 0.5)

def psnr(a, b):
    return 10 * np.log10(1 / np.mean((a - b) ** 2))

if __name__ == "__main__":
    names = sys.argv[2:]
    quality = int(sys.argv[1])
    for name in names:
        img = np.asarray(Image.open(f"../shared/data/kodak/{name}.png").convert("RGB"))
        x = _pad(_to_rgb_float(img, "RGB"))
        pos = gain_position(quality, net.log_gain.shape[0], 2)
        y = encoder_latent(net, x, pos)
        q = np.round(y)
        with torch.inference_mode():
            z = np.round(net.h_a(torch.from_numpy(q.astype(np.float32))[None])[0].numpy()).astype(np.int64)
        W, MU, S = params(q.astype(np.int64), z)
        d = cond_mean(q, W, MU, S) - q
        err = y - q
        _, ig = net.gains(pos)
        ref = x[: img.shape[0], : img.shape[1]]
        out = {}
        for label, lat in (("round", q), ("deq", q + d), ("deq.5", q + 0.5 * d), ("oracle", y)):
            with torch.inference_mode():
                r = synthesis_tiled(net, lat.astype(np.float32), ig)[: img.shape[0], : img.shape[1]]
            r = np.clip(np.round(r * 255), 0, 255) / 255
            out[label] = psnr(r, ref)
        nz = q != 0
        print(name, quality, " ".join(f"{k} {v:.3f}" for k, v in out.items()),
              f"latent mse round {np.mean(err**2):.4f} deq {np.mean((err-d)**2):.4f} | corr {np.corrcoef(err.ravel(), d.ravel())[0,1]:.3f}", flush=True)
