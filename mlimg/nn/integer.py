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
