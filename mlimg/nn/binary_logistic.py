"""Learned logistic context model for the rnn codec's bits (method version 4).

The counting contexts of binary_context.py see one bit of the previous iteration and one of
the current one, and code the later iterations at 0.98-1.0 bits per bit: the binariser's
channels look independent one at a time. Jointly they are not. A logistic model over all C
bits the previous iteration sent at the same position, the bits of this iteration's channels
already coded there, and a few neighbours predicts each bit far better: on 8 Kodak images
(16 iterations, shipped weights) a logistic fit on other images gave 0.85-0.88 bits per bit
where version 3 codes 0.99 (ad-hoc measurements, TRAINING.md "rnn").

Every bit gets an integer logit from integer weights and features in {-1, 0, +1} (a bit b
reads 2b - 1; a position that is inactive, outside the plane or not yet decoded reads 0):

  z = W[min(t, 15), c] . (P_0..P_{C-1}, Q_0..Q_{C-1}, R, M, N, A, 1)

  P_k  bit (t-1, k) at the same position            Q_k  bit (t, k) for k < c, else 0
  R    bit (t-2, c)                                 M    sum of the 4 neighbours of (t-1, c)
  N    non-anchors: sum of the 4 neighbours in their own plane (decoded anchors); anchors 0
  A    1 for a non-anchor, 0 for an anchor

The logit is cut into BUCKETS quarter-logit buckets, and the bucket (with the iteration's
band, 0, 1, 2 (t < 4), 3 (t < 8) or 4, and the checkerboard half) is a context of adaptive
integer counts exactly as in binary_context.py: the counts start from a prior measured on training images, grow by each coded half-plane and
are halved beyond RESCALE. The counts calibrate the model to each image; the range coder sees
probabilities from integers only, so decoding is bit-exact on any machine (the sums are of
small integers, exact in float64 BLAS as in loop_filter.py).
"""
from __future__ import annotations

import numpy as np

from ..entropy import CategoricalReader, CategoricalWriter, probs_from_counts
from .binary_context import _halves as checkerboard_halves, _scale, halve_full_rows
from .checkerboard import anchor_mask, cross4

WEIGHT_SETS = 16  # one set of weights per iteration; iterations past 15 share the last
BANDS = 5  # iteration bands of the count contexts (counts carry over within a band)
BUCKETS = 64
WEIGHT_SHIFT = 8  # weights in units of 2**-8 logit
BUCKET_SHIFT = 6  # 2**6 weight units (a quarter logit) per bucket
MAX_WEIGHT = (1 << 15) - 1
PHASES = 2  # anchor, other half
CONTEXTS = BANDS * PHASES * BUCKETS


def band(t: int) -> int:
    return 0 if t == 0 else 1 if t == 1 else 2 if t < 4 else 3 if t < 8 else 4


def weight_set(t: int) -> int:
    return min(t, WEIGHT_SETS - 1)


def feature_count(channels: int) -> int:
    return 2 * channels + 5


def signs(bits: np.ndarray, active: np.ndarray | None) -> np.ndarray:
    """Bits 0/1 -> -1/+1 as float64, 0 where not active."""
    s = bits.astype(np.float64) * 2 - 1
    return s if active is None else s * active


def check_weights(weights: np.ndarray, channels: int) -> np.ndarray:
    weights = np.asarray(weights)
    want = (WEIGHT_SETS, channels, feature_count(channels))
    if weights.shape != want:
        raise ValueError(f"logistic context weights have shape {weights.shape}, expected {want}")
    if np.abs(weights.astype(np.int64)).max(initial=0) > MAX_WEIGHT:
        raise ValueError(f"logistic context weights exceed +-{MAX_WEIGHT}")
    return weights.astype(np.float64)


class LogisticCounts:
    """The adaptive counts (CONTEXTS, 2) shared by the coder and the decoder of one file."""

    def __init__(self, prior: np.ndarray | None = None):
        if prior is None:
            self.counts = np.zeros((CONTEXTS, 2), np.int64)
        else:
            prior = np.asarray(prior, dtype=np.int64)
            if prior.shape != (CONTEXTS, 2) or prior.min(initial=0) < 0:
                raise ValueError(f"logistic context prior has shape {prior.shape}, expected {(CONTEXTS, 2)}, non-negative")
            self.counts = prior.copy()
            halve_full_rows(self.counts)  # (a stored prior starts within the update rule's bound)

    def probs(self, ctx: np.ndarray) -> np.ndarray:
        return probs_from_counts(self.counts[ctx])

    def update(self, ctx: np.ndarray, bits: np.ndarray) -> None:
        if not ctx.size:
            return
        self.counts += np.bincount(ctx * 2 + bits, minlength=2 * CONTEXTS).reshape(CONTEXTS, 2)
        halve_full_rows(self.counts)


class IterationModel:
    """The logit terms of one iteration that do not depend on its own bits, then each plane's
    contexts as its channels are coded. weights: float64 (WEIGHT_SETS, C, F) of integers."""

    def __init__(self, weights: np.ndarray, t: int, prev: np.ndarray | None, prev2: np.ndarray | None,
                 shape: tuple[int, int, int]):
        channels, h, w = shape
        self.band, self.channels = band(t), channels
        self.w = weights[weight_set(t)]  # (C, F)
        base = np.repeat(self.w[:, -1:], h * w, axis=1)  # the bias
        if prev is not None:  # signs of iteration t-1 (C, h, w)
            base += self.w[:, :channels] @ prev.reshape(channels, -1)
            base += self.w[:, 2 * channels + 1, None] * np.stack([cross4(p) for p in prev]).reshape(channels, -1)
        if prev2 is not None:
            base += self.w[:, 2 * channels, None] * prev2.reshape(channels, -1)
        self.base = base
        self.current = np.zeros(shape)  # signs of this iteration's coded planes

    def logits(self, c: int) -> np.ndarray:
        """(h*w,) logits of plane c without the non-anchor terms (exact integers)."""
        z = self.base[c]
        if c:
            z = z + self.w[c, self.channels:self.channels + c] @ self.current[:c].reshape(c, -1)
        return z

    def contexts(self, c: int, z: np.ndarray, where: np.ndarray, half: int,
                 anchor_signs: np.ndarray | None = None) -> np.ndarray:
        """Contexts of plane c's positions `where` (flat bool) of one half (0 anchors, 1 the
        others) from its logits z; the others' N term reads anchor_signs (h, w): the plane's
        decoded anchors, 0 elsewhere."""
        z = z[where]
        if half:
            n = cross4(anchor_signs).ravel()[where]
            z = z + self.w[c, 2 * self.channels + 2] * n + self.w[c, 2 * self.channels + 3]
        bucket = np.clip(np.floor(z / (1 << BUCKET_SHIFT)) + BUCKETS // 2, 0, BUCKETS - 1).astype(np.int64)
        return (self.band * PHASES + half) * BUCKETS + bucket

    def finish_plane(self, c: int, bits: np.ndarray, active: np.ndarray | None) -> None:
        self.current[c] = signs(bits, active)


def _halves(shape, active):
    """The two checkerboard halves' masks (as version 3 codes them), and the active map."""
    active = np.ones(shape, bool) if active is None else np.asarray(active, bool)
    return checkerboard_halves(shape, active, True), active


def iteration_contexts(weights, t, bits, prev, prev2, active):
    """Encoder side: (contexts, symbols) of each half-plane of iteration t in coding order.
    bits (C, h, w) 0/1; prev/prev2 signs (C, h, w) or None; active (h, w) bool or None."""
    model = IterationModel(weights, t, prev, prev2, bits.shape)
    halves, act = _halves(bits.shape[1:], active)
    out = []
    for c in range(bits.shape[0]):
        z = model.logits(c)
        plane_signs = signs(bits[c], act)
        for half, mask in enumerate(halves):
            where = mask.ravel()
            if not where.any():
                continue
            anchors = plane_signs * halves[0] if half else None
            out.append((model.contexts(c, z, where, half, anchors), bits[c].ravel()[where].astype(np.int32)))
        model.finish_plane(c, bits[c], act)
    return out


def encode_iteration(weights, t: int, bits: np.ndarray, prev, prev2, counts: LogisticCounts,
                     active: np.ndarray | None = None) -> bytes:
    """Range-code iteration t's bits (C, h, w) of 0/1 (one stream); updates counts.
    prev, prev2: signs of iterations t-1 and t-2 (signs(bits, active)) or None."""
    writer = CategoricalWriter()
    for ctx, sym in iteration_contexts(weights, t, bits, prev, prev2, active):
        writer.encode_rows(sym, counts.probs(ctx))
        counts.update(ctx, sym)
    return writer.finish()


def decode_iteration(weights, t: int, data: bytes, shape: tuple[int, int, int], prev, prev2,
                     counts: LogisticCounts, active: np.ndarray | None = None) -> np.ndarray:
    """Inverse of encode_iteration: (C, h, w) uint8 bits, 0 where not active. ValueError on a
    malformed stream."""
    reader = CategoricalReader(data)
    bits = np.zeros(shape, np.uint8)
    model = IterationModel(weights, t, prev, prev2, shape)
    halves, act = _halves(shape[1:], active)
    for c in range(shape[0]):
        z = model.logits(c)
        for half, mask in enumerate(halves):
            where = mask.ravel()
            if not where.any():
                continue
            anchors = signs(bits[c], halves[0]) if half else None
            ctx = model.contexts(c, z, where, half, anchors)
            symbols = reader.decode_rows(counts.probs(ctx))
            if symbols.size != ctx.size or symbols.min(initial=0) < 0 or symbols.max(initial=0) > 1:
                raise ValueError("range decoder returned malformed symbols")
            bits[c].reshape(-1)[where] = symbols
            counts.update(ctx, symbols)
        model.finish_plane(c, bits[c], act)
    return bits


# ---------------------------------------------------------------- fitting (export time)


def features(bits: np.ndarray, t: int, c: int) -> np.ndarray:
    """(positions, F) float features of plane (t, c) of uniform bits (T, C, h, w): the rows the
    weights W[weight_set(t), c] multiply (every position; anchors have N = A = 0)."""
    channels, h, w = bits.shape[1:]
    zero = np.zeros((channels, h, w))
    prev = signs(bits[t - 1], None) if t >= 1 else zero
    prev2 = signs(bits[t - 2, c], None) if t >= 2 else zero[0]
    this = signs(bits[t], None)
    anchors = anchor_mask(h, w)
    cur = np.where(np.arange(channels)[:, None, None] < c, this, 0)
    n = np.where(anchors, 0, cross4(this[c] * anchors))
    cols = [*prev.reshape(channels, -1), *cur.reshape(channels, -1), prev2.ravel(), cross4(prev[c]).ravel(),
            n.ravel(), (~anchors).ravel().astype(np.float64), np.ones(h * w)]
    return np.stack(cols, axis=1)


def fit_weights(samples: list[np.ndarray], max_rows: int = 200_000, seed: int = 0) -> np.ndarray:
    """Integer weights (WEIGHT_SETS, C, F) int32 by logistic regression (scikit-learn) on uniform
    bit arrays (T, C, h, w) of training images; at most max_rows random rows per (set, channel)."""
    from sklearn.linear_model import LogisticRegression

    channels = samples[0].shape[1]
    rng = np.random.default_rng(seed)
    out = np.zeros((WEIGHT_SETS, channels, feature_count(channels)), np.int32)
    for b in range(WEIGHT_SETS):
        ts = [t for t in range(samples[0].shape[0]) if weight_set(t) == b]
        for c in range(channels if ts else 0):  # (samples of few iterations leave bands at 0)
            x = np.concatenate([features(s, t, c) for s in samples for t in ts])
            y = np.concatenate([s[t, c].ravel() for s in samples for t in ts])
            if len(y) > max_rows:
                keep = rng.choice(len(y), max_rows, replace=False)
                x, y = x[keep], y[keep]
            if y.min() == y.max():
                continue
            fit = LogisticRegression(C=1.0, fit_intercept=False, max_iter=500).fit(x, y)
            out[b, c] = np.clip(np.round(fit.coef_[0] * (1 << WEIGHT_SHIFT)), -MAX_WEIGHT, MAX_WEIGHT)
    return out


def prior_counts(samples: list[np.ndarray], weights: np.ndarray, total: int = 256) -> np.ndarray:
    """Prior (CONTEXTS, 2) int32: the contexts' bit counts over uniform bit arrays (T, C, h, w),
    each context scaled down to at most `total` observations."""
    w = check_weights(weights, samples[0].shape[1])
    counts = np.zeros((CONTEXTS, 2), np.int64)
    for sample in samples:
        prev = prev2 = None
        for t in range(sample.shape[0]):
            for ctx, sym in iteration_contexts(w, t, sample[t], prev, prev2, None):
                counts += np.bincount(ctx * 2 + sym, minlength=2 * CONTEXTS).reshape(CONTEXTS, 2)
            prev2, prev = prev, signs(sample[t], None)
    return _scale(counts, total).astype(np.int32)
