"""Adaptive iteration counts of the rnn codec (method version 2): which 16x16 blocks get how
many iterations, and the RNNM chunk that stores that map.

Blocks differ in how much each iteration buys: a flat sky is nearly done after a few, a
textured one keeps improving. Johnston et al. 2018 ("spatially adaptive bit rates") stop
coding a block once it is good enough; here the encoder picks each block's count n by
rate-distortion: the smallest value of  D_n + slope * C * n  over n = 1..T, where D_n is the
block's squared error (8-bit units, summed over RGB) after n iterations of a uniform pass and
C the bits per block per iteration. `quality` sets the slope. The decoder gives blocks past
their count bits of 0 and leaves their reconstruction as it was (spec/methods/rnn.md).

Measured on the 24 Kodak images with rnn-v1-5306f91a (`mlimg bench --methods
rnn,rnn:adaptive=0 ...`, README): BD-rate -22.5 % against the same model with one count
everywhere, about 1 dB more at 0.25-0.5 bpp; encoding takes the uniform pass on top.
"""
from __future__ import annotations

import math

import numpy as np

from ..entropy import CategoricalReader, CategoricalWriter, probs_from_counts

# quality 1 -> slope SLOPE_AT_1, quality 100 -> SLOPE_AT_100, log-linear between (squared
# 8-bit error per bit): at 1 nearly every block stops after one iteration, at 100 nearly
# every block takes all of them.
SLOPE_AT_1 = 16000.0
SLOPE_AT_100 = 4.0
MAP_STEP = 4  # what one coded count adds to its context: the map is short, so adapt fast


def slope_for_quality(quality: int) -> float:
    """quality 1..100 -> rate-distortion slope, strictly decreasing."""
    f = (quality - 1) / 99
    return math.exp(math.log(SLOPE_AT_1) * (1 - f) + math.log(SLOPE_AT_100) * f)


def choose_counts(errors: np.ndarray, slope: float, bits_per_block: int) -> np.ndarray:
    """errors (T+1, h, w): each block's squared error after 0..T iterations -> counts (h, w)
    in 1..T minimising error + slope * bits. Ties go to fewer iterations."""
    t = errors.shape[0] - 1
    cost = errors[1:] + slope * bits_per_block * np.arange(1, t + 1, dtype=np.float64)[:, None, None]
    return (np.argmin(cost, axis=0) + 1).astype(np.uint8)


def encode_counts(counts: np.ndarray, iterations: int) -> bytes:
    """Range-code the count map (h, w) of values 1..iterations, row by row; each count is
    coded with the adaptive statistics of counts that sat above a block with the same count."""
    if iterations == 1:  # every count is 1: nothing to code
        return b""
    writer = CategoricalWriter()
    table = np.zeros((iterations + 1, iterations), np.int64)
    above = np.full(counts.shape[1], iterations, np.int64)  # first row: the extra context
    for row in counts.astype(np.int64) - 1:
        writer.encode_rows(row, probs_from_counts(table[above]))
        np.add.at(table, (above, row), MAP_STEP)
        above = row
    return writer.finish()


def decode_counts(data: bytes, shape: tuple[int, int], iterations: int) -> np.ndarray:
    """Inverse of encode_counts. ValueError on a malformed stream."""
    if iterations == 1:
        if data:
            raise ValueError("a map of one iteration has no data")
        return np.ones(shape, np.uint8)
    reader = CategoricalReader(data)
    table = np.zeros((iterations + 1, iterations), np.int64)
    above = np.full(shape[1], iterations, np.int64)
    out = np.zeros(shape, np.uint8)
    for y in range(shape[0]):
        try:
            row = reader.decode_rows(probs_from_counts(table[above])).astype(np.int64)
        except AssertionError as exc:  # constriction asserts on some garbage streams
            raise ValueError(f"range-coded map is invalid: {exc}") from None
        if row.size != shape[1] or row.min(initial=0) < 0 or row.max(initial=0) >= iterations:
            raise ValueError("range decoder returned malformed counts")
        out[y] = row + 1
        np.add.at(table, (above, row), MAP_STEP)
        above = row
    return out
