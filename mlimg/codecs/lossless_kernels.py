"""Compiled per-pixel loops of the lossless coder (numba, cached on disk).

Encoder and decoder both call these, so predictions and context classes are
computed by the very same integer code on both sides. Imported lazily: numba
only loads when an image is actually coded.
"""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def predict(values, plane, flat, nbrs, n_own, near_cross, weights, groups, frac, maxval):
    """Integer prediction of every pixel of a pass (see lossless_model.predictor_features)."""
    n = flat.size
    out = np.empty(n, np.int64)
    rounding = np.int64(1) << (frac - 1)
    for i in range(n):
        w = weights[groups[i]]
        n0 = values[plane, nbrs[i, 0]]
        acc = np.int64(0)
        j = 0
        for k in range(1, n_own):
            acc += w[j] * (values[plane, nbrs[i, k]] - n0)
            j += 1
        for e in range(plane):
            q0 = values[e, nbrs[i, 0]]
            acc += w[j] * (values[e, flat[i]] - q0)
            j += 1
            for k in range(1, near_cross):
                acc += w[j] * (values[e, nbrs[i, k]] - q0)
                j += 1
        acc += w[j]  # constant feature
        p = n0 + ((acc + rounding) >> frac)
        out[i] = min(max(p, 0), maxval)
    return out


@numba.njit(cache=True, nogil=True)
def texture(values, plane, flat, nbrs, near):
    """Spread of the near neighbours in every decoded plane (groups the predictors)."""
    n = flat.size
    out = np.empty(n, np.int64)
    for i in range(n):
        act = np.int64(0)
        for e in range(plane + 1):
            lo = hi = values[e, nbrs[i, 0]]
            for k in range(1, near):
                v = values[e, nbrs[i, k]]
                lo = min(lo, v)
                hi = max(hi, v)
            act += hi - lo
            if e < plane:
                act += abs(values[e, flat[i]] - values[e, nbrs[i, 0]])
        out[i] = act
    return out


@numba.njit(cache=True, nogil=True)
def scale_features(values, errors, plane, flat, nbrs, near, pred):
    """Activity features whose blend estimates |residual|; the constant 1 last.

    plane 0: spread of the near neighbours around the prediction, their |residual|s,
    the |residual|s of the far neighbours; later planes add, for the earlier planes,
    |residual| at the pixel, their spread around the pixel and their near |residual|s.
    """
    n = flat.size
    width = 7 if plane > 0 else 4
    out = np.empty((n, width), np.int64)
    for i in range(n):
        spread = np.int64(0)
        nerr = np.int64(0)
        ferr = np.int64(0)
        for k in range(near):
            spread += abs(values[plane, nbrs[i, k]] - pred[i])
            nerr += errors[plane, nbrs[i, k]]
        for k in range(near, nbrs.shape[1]):
            ferr += errors[plane, nbrs[i, k]]
        out[i, 0] = spread
        out[i, 1] = nerr
        out[i, 2] = ferr
        if plane > 0:
            cerr = np.int64(0)
            grad = np.int64(0)
            cnerr = np.int64(0)
            for e in range(plane):
                cerr += errors[e, flat[i]]
                centre = values[e, flat[i]]
                for k in range(near):
                    grad += abs(values[e, nbrs[i, k]] - centre)
                    cnerr += errors[e, nbrs[i, k]]
            out[i, 3] = cerr
            out[i, 4] = grad
            out[i, 5] = cnerr
        out[i, width - 1] = 1
    return out
