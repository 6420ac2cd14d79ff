"""How much could a richer context model save on the rnn's bits? Compares the shipped adaptive
context coder (nn/binary_context.py) with an in-sample logistic regression on a richer context
(the previous iteration's 32 bits at the position, this iteration's channels coded before, the
previous iteration's 4-neighbours in the same channel, channel and iteration): an optimistic
bound for a linear context model, iterations 2..16.

    python tools/rnn_bits_entropy.py kodim01 kodim23
"""
import sys

import numpy as np
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression

from mlimg.codecs.rnn import encode_bits
from mlimg.nn import store
from mlimg.nn.binary_context import ContextCounts, encode_iteration

torch.set_num_threads(1)
loaded = store.load(store.default_model("rnn"), "rnn")
for name in sys.argv[1:]:
    x = np.asarray(Image.open(f"../shared/data/kodak/{name}.png").convert("RGB"), np.float32) / 255
    bits = encode_bits(loaded.net, x, 16)  # T, C, h, w
    T, C, h, w = bits.shape
    counts = ContextCounts(C, loaded.tables.get("context_prior"))
    nbytes = 0
    for t in range(T):
        nbytes += len(encode_iteration(t, bits[t], bits[t - 1] if t else None, counts))
    coded = nbytes * 8 / bits.size
    # features per (t, c, y, x): prev iteration's C bits at (y,x); current iteration's channels < c (masked);
    # 4-neighbours (prev iteration, same channel), channel one-hot, iteration band
    b = bits.astype(np.float32) * 2 - 1
    rows, ys = [], []
    for t in range(1, T):
        P = b[t - 1].reshape(C, -1).T  # (hw, C)
        cur = b[t].reshape(C, -1).T
        pad = np.pad(b[t - 1], ((0, 0), (1, 1), (1, 1)), mode="edge")
        nb = (pad[:, :-2, 1:-1] + pad[:, 2:, 1:-1] + pad[:, 1:-1, :-2] + pad[:, 1:-1, 2:]).reshape(C, -1).T
        for c in range(C):
            masked = cur.copy()
            masked[:, c:] = 0
            onehot = np.zeros((P.shape[0], C), np.float32)
            onehot[:, c] = 1
            rows.append(np.concatenate([P, masked, nb[:, c : c + 1], P[:, c : c + 1] * onehot, onehot,
                                        np.full((P.shape[0], 1), t / 16)], 1))
            ys.append(bits[t, c].ravel())
    X, y = np.concatenate(rows), np.concatenate(ys)
    lr = LogisticRegression(max_iter=300, C=1.0).fit(X, y)
    p = np.clip(lr.predict_proba(X)[:, 1], 1e-6, 1 - 1e-6)
    ce = -np.mean(y * np.log2(p) + (1 - y) * np.log2(1 - p))
    print(f"{name}: coded {coded:.4f} bits/bit (context model, all 16 iterations); logistic in-sample bound t>=1: {ce:.4f} bits/bit", flush=True)
