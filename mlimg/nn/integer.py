"""Integer probability tables: the only numbers the range coder of a learned codec sees.

Float networks differ in the last bits between machines, thread counts and
BLAS builds, and a single flipped bit in a probability desynchronises a range
decoder. So the cae prior is evaluated ONCE, at weight-export time, and
stored as integer frequencies inside the weights file; encoder and decoder
derive every probability from those integers by float64 division (correctly
rounded IEEE-754, identical everywhere, see mlimg/entropy.py).
"""
from __future__ import annotations

import numpy as np

FREQ_BITS = 22  # each table row sums to 2**FREQ_BITS
LATENT_RANGE = 127  # symbols code values -R..R; one extra escape symbol for the rest


def pmf_to_freqs(pmf: np.ndarray, total_bits: int = FREQ_BITS) -> np.ndarray:
    """Float pmf rows (C, K) -> int64 frequencies, every entry >= 1, each row summing to 2**total_bits."""
    pmf = np.clip(np.asarray(pmf, np.float64), 0.0, None)
    pmf = pmf / pmf.sum(axis=1, keepdims=True)
    total = 1 << total_bits
    k = pmf.shape[1]
    freqs = 1 + np.floor(pmf * (total - k)).astype(np.int64)
    rows = np.arange(pmf.shape[0])
    freqs[rows, np.argmax(freqs, axis=1)] += total - freqs.sum(axis=1)
    return freqs


def factorized_freqs(prior, latent_range: int = LATENT_RANGE) -> np.ndarray:
    """Integer table (C, 2R+2) of a FactorizedPrior: values -R..R, then the escape symbol.

    Evaluated in float64 so the table is as accurate as the prior allows; the
    result is data (stored in the weights), never recomputed by a decoder.
    """
    import copy

    import torch

    prior64 = copy.deepcopy(prior).double()
    centres = torch.arange(-latent_range, latent_range + 1, dtype=torch.float64)
    with torch.no_grad():
        x = centres.view(1, 1, -1).repeat(prior64.channels, 1, 1)
        pmf = prior64.bin_probs(x)[:, 0, :].numpy()
    tail = np.clip(1.0 - pmf.sum(axis=1, keepdims=True), 0.0, None)
    return pmf_to_freqs(np.concatenate([pmf, tail], axis=1))


def freqs_to_probs(freqs: np.ndarray) -> np.ndarray:
    """Integer frequencies -> float64 probabilities by exact-rounded division (bit-identical everywhere)."""
    f = np.asarray(freqs, np.int64)
    return f / f.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------- fixed-point networks (gmm)
#
# The gmm decoder must compute its mixture parameters (which pick probability
# tables) identically everywhere. Its hyper-synthesis, context and
# entropy-parameter networks are therefore run on integers: weights are stored
# as integers w_int = round(w * 2**wbits), activations are integers in units of
# 2**-abits, and each layer is an integer matrix product followed by an
# arithmetic right shift. The products are evaluated as float64 matrix
# multiplications: every product and every partial sum is an integer below
# 2**53, so they are exact and the summation order (threads, BLAS, FMA) cannot
# change the result. int_matmul checks that bound before it multiplies.

_EXACT = float(1 << 53)


def quantize_weights(w: np.ndarray, bits: int) -> np.ndarray:
    """Float weights -> int64 fixed point with `bits` fractional bits (export time only)."""
    return np.round(np.asarray(w, np.float64) * (1 << bits)).astype(np.int64)


def int_matmul(a: np.ndarray, b: np.ndarray, b_float: np.ndarray | None = None, b_bound: float | None = None) -> np.ndarray:
    """Exact integer product a @ b of int64 matrices via float64; ValueError if it might not be exact.

    Callers that reuse b may pass its float64 copy and its largest column abs-sum (b_bound)."""
    a = np.asarray(a, np.int64)
    if b_bound is None:
        b_bound = float(np.abs(np.asarray(b, np.int64)).sum(axis=0).max(initial=0))
    bound = float(np.abs(a).max(initial=0)) * b_bound
    if bound >= _EXACT:
        raise ValueError(f"fixed-point product bound {bound:.3g} exceeds 2**53; activations or weights too large")
    if b_float is None:
        b_float = np.asarray(b, np.int64).astype(np.float64)
    return np.matmul(a.astype(np.float64), b_float).astype(np.int64)


def im2col(x: np.ndarray, k: int, stride: int, pad: int) -> tuple[np.ndarray, int, int]:
    """(C, H, W) -> (Ho*Wo, C*k*k) patches, zero padded; pure indexing, no arithmetic."""
    c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    ho = (h + 2 * pad - k) // stride + 1
    wo = (w + 2 * pad - k) // stride + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::stride, ::stride][:, :ho, :wo]
    return win.transpose(1, 2, 0, 3, 4).reshape(ho * wo, c * k * k), ho, wo


def int_conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, shift: int, stride: int = 1, pad: int = 0) -> np.ndarray:
    """Integer conv: x (C, H, W) int64, w (O, C, k, k) int64, b (O,) int64 at the product's scale.

    Returns floor((conv(x, w) + b) / 2**shift) as int64 (O, Ho, Wo).
    """
    o, _, k, _ = w.shape
    cols, ho, wo = im2col(x, k, stride, pad)
    acc = int_matmul(cols, w.reshape(o, -1).T) + np.asarray(b, np.int64)
    return (acc >> shift).T.reshape(o, ho, wo)


def int_relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


# ---------------------------------------------------------------- gmm: parameters -> integer pmfs
#
# Tables computed once at export (float64) and stored; the functions below use
# only integer arithmetic on them, so every decoder builds identical frequencies.

MEAN_FRAC_BITS = 4  # means are quantised to 1/16
MIX_BITS = 16  # mixture weights and Gaussian table rows sum to 2**16


def scale_table(n: int = 64, lo: float = 0.11, hi: float = 64.0) -> np.ndarray:
    """Log-spaced Gaussian scales the integer entropy model can pick from."""
    return np.exp(np.linspace(np.log(lo), np.log(hi), n))


def scale_thresholds(scales: np.ndarray, frac_bits: int) -> np.ndarray:
    """Integer thresholds on a fixed-point log-scale: index = number of thresholds <= value."""
    mids = (np.log(scales[1:]) + np.log(scales[:-1])) / 2
    return np.round(mids * (1 << frac_bits)).astype(np.int64)


def exp_table(frac_bits: int, size: int = 1024) -> np.ndarray:
    """E[i] = round(2**16 * exp(-i / 2**frac_bits)), the integer softmax numerator."""
    return np.round(np.exp(-np.arange(size) / (1 << frac_bits)) * (1 << MIX_BITS)).astype(np.int64)


def gaussian_tables(scales: np.ndarray, half_width: int, bits: int = MIX_BITS) -> np.ndarray:
    """G[s, f, d + D]: integer mass (sum <= 2**bits) of N(f/16, scale_s^2) on the unit bin at offset d."""
    from math import erf, sqrt

    d = np.arange(-half_width, half_width + 1, dtype=np.float64)
    fracs = np.arange(1 << MEAN_FRAC_BITS) / (1 << MEAN_FRAC_BITS)
    cdf = np.vectorize(lambda t: 0.5 * (1 + erf(t / sqrt(2))))
    edges = d[None, None, :] - fracs[None, :, None]
    s = scales[:, None, None]
    pmf = cdf((edges + 0.5) / s) - cdf((edges - 0.5) / s)
    return np.floor(pmf * (1 << bits)).astype(np.int64)


def int_softmax(logits: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Integer logits (n, K) (fixed point matching `table`) -> weights (n, K) summing to 2**16 +- K."""
    logits = np.asarray(logits, np.int64)
    gap = np.clip(logits.max(axis=1, keepdims=True) - logits, 0, table.size - 1)
    num = table[gap]
    return (num << MIX_BITS) // num.sum(axis=1, keepdims=True)


def mixture_freqs(weights: np.ndarray, mean_q: np.ndarray, scale_idx: np.ndarray, tables: np.ndarray,
                  latent_range: int) -> np.ndarray:
    """Integer frequencies (n, 2R+2) of a K-component mixture per element: values -R..R, then escape.

    weights (n, K) integers, mean_q (n, K) means in 1/16 units, scale_idx (n, K) rows of `tables`.
    Every frequency is >= 1. Pure integer arithmetic.
    """
    half = (tables.shape[2] - 1) // 2
    mi = np.asarray(mean_q, np.int64) >> MEAN_FRAC_BITS
    mf = np.asarray(mean_q, np.int64) & ((1 << MEAN_FRAC_BITS) - 1)
    values = np.arange(-latent_range, latent_range + 1, dtype=np.int64)
    n, k = weights.shape
    out = np.ones((n, values.size + 1), np.int64)
    for j in range(k):
        offset = values[None, :] - mi[:, j : j + 1] + half  # (n, 2R+1) table columns
        inside = (offset >= 0) & (offset <= 2 * half)
        rows = tables[scale_idx[:, j], mf[:, j]]  # (n, 2D+1)
        mass = np.where(inside, np.take_along_axis(rows, np.clip(offset, 0, 2 * half), axis=1), 0)
        w = np.asarray(weights[:, j : j + 1], np.int64)
        out[:, :-1] += w * mass
        out[:, -1] += w[:, 0] * ((1 << MIX_BITS) - mass.sum(axis=1))
    return out
