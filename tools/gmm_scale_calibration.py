"""How much would per-file, per-channel offsets of the gmm scale index save? For each channel, the
ideal code length (-log2 p under the fixed-point entropy model) of the latent with every scale index
shifted by d in -3..2, the best d per channel against d = 0; no side information counted.

    python tools/gmm_scale_calibration.py
"""
import numpy as np
import torch
from PIL import Image
from mlimg.nn import store
from mlimg.codecs import gmm as G
from mlimg.codecs.cae import _pad, encoder_latent
from mlimg.nn.gmm_entropy import WINDOW, N_SCALES
torch.set_num_threads(2)
loaded = store.load(store.default_model("gmm"), "gmm"); net = loaded.net; ent = G._entropy_model(loaded)
assert len(ent.group_channels) == 1, "written for checkerboard models without channel groups (gmm-v1-c8ee12a5 and earlier)"
D = (-3, -2, -1, 0, 1, 2)
tot = {}
for quality in (1, 50, 100):
    for i in (1, 8, 15, 23):
        x = _pad(np.asarray(Image.open(f"../shared/data/kodak/kodim{i:02d}.png").convert("RGB"), np.float32) / 255)
        y = np.round(encoder_latent(net, x, G.gain_position(quality, net.log_gain.shape[0], 2)))
        with torch.inference_mode():
            z = np.round(net.h_a(torch.from_numpy(y.astype(np.float32))[None])[0].numpy()).astype(np.int64)
        y = y.astype(np.int64); M, lh, lw = y.shape
        hyper = ent.hyper(z, lh, lw); yf = y.reshape(M, -1)
        bits = np.zeros((len(D), M))
        rows, cols = np.mgrid[0:lh, 0:lw]
        for anchors in (True, False):
            select = ((rows + cols) % 2 == 0) if anchors else ((rows + cols) % 2 == 1)
            pos = np.flatnonzero(select.ravel())
            ctx = ent.context_of_nothing(pos.size) if anchors else ent.context(np.where(select[None], 0, y)).reshape(2 * M, -1)[:, pos].T
            feats = np.concatenate([hyper.reshape(hyper.shape[0], -1)[:, pos].T, ctx], axis=1)
            w, mq, si = ent.parameters(ent.first_layer(feats))
            vals = yf[:, pos].T.ravel()
            ch = np.tile(np.arange(M), pos.size)
            for j, d in enumerate(D):
                centre, probs = ent.probabilities(w, mq, np.clip(si + d, 0, N_SCALES - 1))
                off = vals - centre; sym = np.where(np.abs(off) > WINDOW, 2 * WINDOW + 1, off + WINDOW)
                b = -np.log2(probs[np.arange(sym.size), sym])
                bits[j] += np.bincount(ch, b, minlength=M)
        base = bits[D.index(0)].sum(); best = bits.min(0).sum()
        tot[quality] = tot.get(quality, np.zeros(2)) + (base, best)
    print(quality, "per-channel best scale offset saves %.2f %% (ideal, no side info)" % ((1 - tot[quality][1] / tot[quality][0]) * 100), flush=True)
