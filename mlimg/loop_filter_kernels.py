"""Compiled inner loop of the loop filter's decoder side (numba, cached on disk): per pixel,
the class's integer coefficients times the integer features, summed in int64, rounded by an
arithmetic shift; the same numbers as spec/MLIMG.md section 14, without the encoder's large
feature matrices (2-4x faster on a Kodak image). Imported lazily: numba loads only when a
file with an fLTR chunk is decoded."""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def filter_band(z, cls, coefficients, shift, own, cross, margin):
    """z (C, h + 2 margin, w + 2 margin) int32: a band of the image with its context, edges
    replicated; cls (h, w) int64 classes; coefficients (C, classes, features) int64;
    own / cross (taps, 2) int64 offsets (dy, dx). Returns the filtered (h, w, C) uint8."""
    channels, hp, wp = z.shape
    h, w = cls.shape
    out = np.empty((h, w, channels), np.uint8)
    half = np.int64(1) << (shift - 1)
    own_off = own[:, 0] * wp + own[:, 1]  # offsets in the flattened plane
    cross_off = cross[:, 0] * wp + cross[:, 1]
    flat = z.reshape(channels, hp * wp)
    for c in range(channels):
        zc = flat[c]
        for y in range(h):
            row = (y + margin) * wp + margin
            for x in range(w):
                pos = row + x
                coef = coefficients[c, cls[y, x]]
                p = np.int64(zc[pos])
                acc = np.int64(0)
                for t in range(own_off.size):
                    o = own_off[t]
                    acc += coef[t] * (np.int64(zc[pos + o]) + zc[pos - o] - 2 * p)
                f = own_off.size
                for other in range(channels):
                    if other == c:
                        continue
                    zo = flat[other]
                    q = np.int64(zo[pos])
                    acc += coef[f] * (q - p)
                    f += 1
                    for t in range(cross_off.size):
                        o = cross_off[t]
                        acc += coef[f] * (np.int64(zo[pos + o]) + zo[pos - o] - 2 * q)
                        f += 1
                acc += coef[f]  # the bias
                v = p + ((acc + half) >> shift)
                out[y, x, c] = min(max(v, 0), 255)
    return out
