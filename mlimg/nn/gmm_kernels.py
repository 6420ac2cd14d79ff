"""Compiled inner loop of the gmm entropy model (numba, cached on disk): mixture parameters ->
integer frequencies -> float64 probabilities. Integer arithmetic throughout, then one exact
IEEE division per entry, so encoder and decoder agree bit for bit on every machine.
Imported lazily: numba loads only when a gmm file is coded."""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def window_probs(weights, mean_q, scale_idx, gauss, frac_bits, gauss_bits, window, floor):
    """weights/mean_q/scale_idx (n, K) int64 (weights sum to about 2**16); gauss (S, F, W) int64
    Gaussian bin masses in units of 2**-gauss_bits. Products and sums stay below 2**53.

    Returns (centre (n,), probs (n, 2*window+2)): the probabilities of the values
    centre-window..centre+window and of the escape symbol (every other value), where
    centre is the integer mean of the heaviest component. Every frequency is >= floor.
    """
    n, k = weights.shape
    width = gauss.shape[2]
    half = (width - 1) // 2
    fmask = (1 << frac_bits) - 1
    total_mass = 1 << gauss_bits  # each Gaussian row sums to at most this
    nsym = 2 * window + 2
    centre = np.empty(n, np.int64)
    probs = np.empty((n, nsym), np.float64)
    freq = np.empty(nsym, np.int64)
    for i in range(n):
        best = 0
        for j in range(1, k):
            if weights[i, j] > weights[i, best]:
                best = j
        c = mean_q[i, best] >> frac_bits
        centre[i] = c
        for s in range(nsym):
            freq[s] = floor
        for j in range(k):
            w = weights[i, j]
            mi = mean_q[i, j] >> frac_bits
            mf = mean_q[i, j] & fmask
            si = scale_idx[i, j]
            inside = 0
            for s in range(2 * window + 1):
                col = c - window + s - mi + half
                if 0 <= col < width:
                    m = gauss[si, mf, col]
                    freq[s] += w * m
                    inside += m
            freq[nsym - 1] += w * (total_mass - inside)
        total = 0
        for s in range(nsym):
            total += freq[s]
        for s in range(nsym):
            probs[i, s] = freq[s] / total
    return centre, probs
