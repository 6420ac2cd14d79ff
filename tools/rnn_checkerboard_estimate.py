"""Ideal adaptive code length of rnn bits (16 iterations, every block): the shipped context model
(nn/binary_context.py) against the same model with a same-plane checkerboard split (the second
half also sees how many of its 4 neighbours in its own plane are 1).

    python tools/rnn_checkerboard_estimate.py kodim23 kodim08
"""
import sys

import numpy as np
import torch
from PIL import Image
from mlimg.codecs.rnn import encode_bits
from mlimg.nn import store
from mlimg.nn import binary_context as bc
torch.set_num_threads(2)
loaded = store.load(store.default_model("rnn"), "rnn")
prior = loaded.tables.get("context_prior")

def code_len(bits, split):
    """Ideal adaptive code length in bits; split adds the same-plane checkerboard contexts."""
    T, C, h, w = bits.shape
    nsub = 6 if split else 1
    K = C * 126
    counts = np.zeros((K * nsub, 2), np.int64)
    shared = np.zeros((126 * nsub, 2), np.int64)
    if prior is not None:
        for j in range(nsub):
            counts[j * K:(j + 1) * K] = prior
            shared[j * 126:(j + 1) * 126] = bc._scale(prior.reshape(C, 126, 2).sum(0))
    yy, xx = np.mgrid[:h, :w]; anchor = ((yy + xx) % 2 == 0).ravel()
    total = 0.0
    for t in range(T):
        prev = bits[t - 1] if t else None
        for c in range(C):
            ctx = bc.plane_contexts(t, c, prev, bits[t])
            b = bits[t, c].ravel().astype(np.int64)
            if split:
                p = np.pad(bits[t, c].astype(np.int64), 1)
                nb = (p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]).ravel()
                sub = np.where(anchor, 0, 1 + nb)  # 0 anchor, 1..5 non-anchor with 0..4 ones
                groups = [anchor, ~anchor]
            else:
                sub = np.zeros_like(b); groups = [np.ones_like(anchor)]
            for g in groups:
                k = ctx[g] + sub[g] * K; ks = ctx[g] % 126 + sub[g] * 126
                n = counts[k] + shared[ks] + 1
                pr = n[np.arange(k.size), b[g]] / n.sum(1)
                total -= np.log2(pr).sum()
                for table, idx in ((counts, k), (shared, ks)):
                    table += np.bincount(idx * 2 + b[g], minlength=table.size).reshape(table.shape)
                    big = table.sum(1) > bc.RESCALE
                    table[big] = (table[big] + 1) // 2
    return total

for name in sys.argv[1:]:
    x = np.asarray(Image.open(f"../shared/data/kodak/{name}.png").convert("RGB"), np.float32) / 255
    bits = encode_bits(loaded.net, x, 16)
    a, b = code_len(bits, False), code_len(bits, True)
    print(name, "bits/bit shipped %.4f  +checkerboard %.4f  (%+.2f %%)" % (a / bits.size, b / bits.size, (b / a - 1) * 100), flush=True)
