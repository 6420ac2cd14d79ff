"""Context-adaptive coding of cae's integer latent (method version 2).

Version 1 codes every latent channel with one static table, the factorised prior, which
is fitted to the latents of all gain levels at once and knows nothing of where in the
image a value lies. This model adds what Ballé et al. 2017 got from their context-adaptive
coder, in a form that decodes with a few vectorised calls per channel:

* tables per gain level: the export measures the latents of the trained encoder on
  training images at each gain position a quality reaches (cae.context_tables); a quality
  between two of them interpolates their tables;
* a context per value (`context_ids`): the activity predicted for it from the channels
  coded before (an integer linear model of log-magnitudes in 3x3 neighbourhoods, fitted at
  export: `ActivityPredictor`), and, for the second half of a checkerboard, the
  magnitudes of the four already-decoded neighbours in the same channel;
* adaptation: after each band of 8 latent rows the counts of that band's values grow,
  so the file's own statistics take over from the training ones.

Every probability comes from integer counts by float64 division (mlimg/entropy.py), so a
decoder on any machine rebuilds the coder's tables exactly. Normative text:
spec/methods/cae.md, "Context-adaptive latent coding".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .checkerboard import anchor_mask, cross4

ACTIVITY_BUCKETS = 7  # activity bucket = number of a channel's 6 edges <= its predicted activity
NEIGHBOUR_EDGES = (1, 3)  # second checkerboard half: 1 + number of edges <= neighbour sum (1..3)
CONTEXTS = ACTIVITY_BUCKETS * (len(NEIGHBOUR_EDGES) + 2)  # 7 x 4 = 28
LOG_SCALE = 256  # the log table holds round(LOG_SCALE * ln(1 + v))
WEIGHT_BITS = 12  # fractional bits of the activity predictor's integer weights
MAX_WEIGHT = 1 << 20  # |weight| bound: every product sum stays far inside int64
BAND_ROWS = 8  # latent rows per adaptation band
INCREMENT = 512  # what one coded value adds to its count (a stored row sums to < 2**16)
TABLE_TOTAL = (1 << 16) - 1  # an exported table row sums to at most this (stored as uint16)
QUALITY_STEPS = 99  # quality 1..100 spans the stored rows in 99 steps


def to_symbols(q: np.ndarray, r: int) -> np.ndarray:
    """Values of one channel -> symbols: v + r for |v| <= r, else the escape 2r + 1."""
    return np.where(np.abs(q) > r, 2 * r + 1, q + r)


def magnitudes(symbols: np.ndarray, r: int) -> np.ndarray:
    """|value| capped at r + 1 (all an escape symbol tells), from symbols 0..2r+1."""
    s = np.asarray(symbols, np.int64)
    return np.where(s == 2 * r + 1, r + 1, np.abs(s - r))


def _box3(plane: np.ndarray) -> np.ndarray:
    """Sum over the 3x3 neighbourhood inside the plane (outside counts 0)."""
    p = np.pad(plane, 1)
    h, w = plane.shape
    return sum(p[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3))


@dataclass(frozen=True)
class ContextModel:
    """The stored integers of the context model (weights file tensors `cdf.context_*`).

    tables (P, CONTEXTS, sum of 2 r_c + 2) uint16: counts per gain position, channel, context;
    ranges (M,): r_c; weights (M, M + 1): row c predicts channel c's activity from the
    log-magnitude features of channels 0..c-1 (columns >= c are not used), column M is the
    bias; edges (M, ACTIVITY_BUCKETS - 1): bucket boundaries per channel; log_table: the
    feature of a 3x3 magnitude sum v (clamped to its last entry).
    """

    ranges: np.ndarray
    weights: np.ndarray
    edges: np.ndarray
    log_table: np.ndarray
    tables: np.ndarray | None = None

    NAMES = {"tables": "context_tables", "ranges": "context_ranges", "weights": "context_weights",
             "edges": "context_edges", "log_table": "context_log"}

    @classmethod
    def from_tables(cls, tables: dict) -> ContextModel | None:
        """The model in a weights file's integer tables, or None when it has none."""
        if not all(name in tables for name in cls.NAMES.values()):
            return None
        return cls(**{field: np.asarray(tables[name]) for field, name in cls.NAMES.items()})

    def as_tables(self) -> dict:
        return {name: getattr(self, field) for field, name in self.NAMES.items()}

    def problem(self, channels: int, rows: int) -> str | None:
        """What makes the model unfit for `channels` latent channels and `rows` gain positions."""
        widths = 2 * self.ranges.astype(np.int64) + 2
        shapes = {"ranges": (channels,), "weights": (channels, channels + 1),
                  "edges": (channels, ACTIVITY_BUCKETS - 1), "tables": (rows, CONTEXTS, int(widths.sum()))}
        for field, shape in shapes.items():
            if getattr(self, field).shape != shape:
                return f"{self.NAMES[field]} has shape {getattr(self, field).shape}, expected {shape}"
        if self.ranges.min() < 1 or self.log_table.ndim != 1 or self.log_table.size < 1:
            return "context_ranges or context_log out of range"
        if np.abs(self.weights.astype(np.int64)).max() > MAX_WEIGHT:
            return f"context_weights exceed {MAX_WEIGHT}"
        return None

    def counts(self, quality: int) -> list[np.ndarray]:
        return level_tables(self.tables, self.ranges, quality)


class ActivityPredictor:
    """Per channel, the activity bucket of every position, predicted from the channels
    already coded (coder and decoder get the same integers).

    The products are integers; when every possible sum stays below 2**53 they are computed
    as float64 (BLAS, about 3x faster on large images), which is then exact in any
    summation order; otherwise in int64."""

    def __init__(self, model: ContextModel, h: int, w: int):
        self.model = model
        self.shape = (h, w)
        weights = model.weights.astype(np.int64)
        self.log_table = model.log_table.astype(np.int64)
        bound = int(np.abs(weights).sum(axis=1).max(initial=0)) * int(np.abs(self.log_table).max(initial=0))
        self.dtype = np.float64 if bound < 2**53 else np.int64
        self.weights = weights.astype(self.dtype)
        self.features = np.zeros((weights.shape[0], h * w), self.dtype)

    def bucket(self, c: int) -> np.ndarray:
        activity = (self.weights[c, :c] @ self.features[:c] + self.weights[c, -1]).astype(np.int64)
        edges = self.model.edges[c].astype(np.int64)
        return (edges[:, None] <= activity[None, :]).sum(axis=0).reshape(self.shape)  # how many edges <= it

    def push(self, c: int, mags: np.ndarray) -> None:
        box = np.minimum(_box3(mags), self.log_table.size - 1)
        self.features[c] = self.log_table[box].ravel()


def context_ids(activity_bucket: np.ndarray, mags: np.ndarray | None) -> np.ndarray:
    """Contexts (h, w) of one channel: for the anchors (mags None) activity * 4; for the
    other half, with the channel's anchor magnitudes (non-anchors 0), activity * 4 + 1..3."""
    if mags is None:
        return activity_bucket * 4
    n = cross4(mags)
    return activity_bucket * 4 + 1 + np.searchsorted(np.asarray(NEIGHBOUR_EDGES), n, side="right")


def level_tables(tables: np.ndarray, ranges: np.ndarray, quality: int) -> list[np.ndarray]:
    """Stored tables (P >= 2 rows, CONTEXTS, sum of 2 r_c + 2) -> the int64 counts
    (CONTEXTS, 2 r_c + 2) of each channel c for `quality`: the two rows around it,
    interpolated in integers (every count stays >= 1)."""
    levels = tables.shape[0]
    lo, f = divmod((quality - 1) * (levels - 1), QUALITY_STEPS)
    if lo == levels - 1:
        lo, f = levels - 2, QUALITY_STEPS
    a, b = tables[lo].astype(np.int64), tables[lo + 1].astype(np.int64)
    mixed = (a * (QUALITY_STEPS - f) + b * f) // QUALITY_STEPS
    return np.split(mixed, np.cumsum(2 * np.asarray(ranges, np.int64) + 2)[:-1], axis=1)


def _walk(model: ContextModel, quality: int, shape: tuple[int, int, int], code) -> None:
    """The coding order shared by coder and decoder: channel by channel; in each, the
    anchors, then the other half; in each half, bands of BAND_ROWS rows, whose symbols
    `code(probabilities (n, S_c), channel, flat positions)` codes or decodes and returns.
    The channel's counts grow by the band's symbols before the next band."""
    channels, h, w = shape
    counts = model.counts(quality)
    activity = ActivityPredictor(model, h, w)
    anchors = anchor_mask(h, w)
    # flat positions of each (half, band), the same for every channel
    bands = [[np.flatnonzero(half[y0 : y0 + BAND_ROWS]) + y0 * w for y0 in range(0, h, BAND_ROWS)]
             for half in (anchors, ~anchors)]
    for c in range(channels):
        bucket = activity.bucket(c)
        table, r = counts[c], int(model.ranges[c])
        mags = np.zeros((h, w), np.int64)
        for first, half_bands in zip((True, False), bands):
            ctx = context_ids(bucket, None if first else mags).ravel()
            for where in half_bands:
                k = ctx[where]
                probs = table / table.sum(axis=1, keepdims=True)
                sym = code(probs[k], c, where)
                table += INCREMENT * np.bincount(k * table.shape[1] + sym, minlength=table.size).reshape(table.shape)
                mags.ravel()[where] = magnitudes(sym, r)
        activity.push(c, mags)


def encode_latent(q: np.ndarray, model: ContextModel, quality: int) -> tuple[np.ndarray, bytes]:
    """Integer latent (M, h, w) -> (escaped values in (c, y, x) order, range-coded stream)."""
    from ..entropy import CategoricalWriter

    ranges = model.ranges
    flat = q.reshape(q.shape[0], -1).astype(np.int64)
    symbols = [to_symbols(flat[c], int(r)) for c, r in enumerate(ranges)]
    writer = CategoricalWriter()

    def code(probs, c, where):
        sym = symbols[c][where]
        writer.encode_rows(sym, probs)
        return sym

    _walk(model, quality, q.shape, code)
    escaped = np.abs(flat) > np.asarray(ranges, np.int64)[:, None]
    return flat[escaped], writer.finish()


def decode_latent(stream: bytes, escaped: np.ndarray, model: ContextModel, quality: int,
                  shape: tuple[int, int, int]) -> np.ndarray:
    """Inverse of encode_latent: the latent (M, h, w) int64. ValueError on a malformed
    stream or an escape count that does not match."""
    from ..entropy import CategoricalReader

    reader = CategoricalReader(stream)
    out = np.zeros((shape[0], shape[1] * shape[2]), np.int64)

    def code(probs, c, where):
        sym = np.asarray(reader.decode_rows(probs), np.int64)
        if sym.size != where.size or sym.min(initial=0) < 0 or sym.max(initial=0) >= probs.shape[1]:
            raise ValueError("range decoder returned malformed symbols")
        out[c, where] = sym
        return sym

    _walk(model, quality, shape, code)
    r = np.asarray(model.ranges, np.int64)[:, None]
    outside = out == 2 * r + 1
    if int(outside.sum()) != escaped.size:
        raise ValueError(f"{int(outside.sum())} escape symbols decoded, the header lists {escaped.size}")
    out -= r
    out[outside] = escaped
    return out.reshape(shape)


def channel_ranges(latents: list[np.ndarray], margin: float = 1.25, cap: int = 127) -> np.ndarray:
    """Per channel r_c: the largest |value| the training latents reached (all levels), with a
    margin, at least 2 and at most `cap`. Values beyond it are escapes."""
    peak = np.max([np.abs(q.astype(np.int64)).reshape(q.shape[0], -1).max(axis=1) for q in latents], axis=0)
    return np.clip(np.ceil(peak * margin).astype(np.int64), 2, cap)


def contexts(q: np.ndarray, model: ContextModel) -> np.ndarray:
    """The context id (M, h, w) of every value of the integer latent q (M, h, w): what the
    coder uses, before any adaptation. `model` needs no tables."""
    _, h, w = q.shape
    activity = ActivityPredictor(model, h, w)
    anchors = anchor_mask(h, w)
    out = np.empty(q.shape, np.int64)
    for c, r in enumerate(model.ranges):
        bucket = activity.bucket(c)
        mags = magnitudes(to_symbols(q[c].astype(np.int64), int(r)), int(r))
        out[c] = np.where(anchors, context_ids(bucket, None), context_ids(bucket, np.where(anchors, mags, 0)))
        activity.push(c, mags)
    return out


def measure_counts(latents: list[np.ndarray], model: ContextModel) -> np.ndarray:
    """Counts (CONTEXTS, sum of 2 r_c + 2) of symbols per channel and context over integer
    latents (M, h, w) of one gain level: what an export turns into that level's tables.
    `model` needs no tables yet."""
    ranges = model.ranges
    widths = 2 * np.asarray(ranges, np.int64) + 2
    offsets = np.concatenate([[0], np.cumsum(widths)[:-1]])
    total = np.zeros((CONTEXTS, int(widths.sum())), np.int64)
    for q in latents:
        ctx = contexts(q, model)
        for c, r in enumerate(ranges):
            sym = to_symbols(q[c].astype(np.int64), int(r))
            np.add.at(total, (ctx[c].ravel(), offsets[c] + sym.ravel()), 1)
    return total


def code_lengths(counts: list[np.ndarray], escape_bits: float = 16.0) -> np.ndarray:
    """Bits (M, CONTEXTS, max width) of each symbol under per-channel counts (CONTEXTS, 2 r_c + 2),
    such as ContextModel.counts(quality), the tables before adaptation: the rate an encoder can
    optimise against (nn/refine.py). An escape costs its symbol plus `escape_bits` for the
    stored value; columns past a channel's width repeat its escape."""
    width = max(t.shape[1] for t in counts)
    out = np.empty((len(counts), CONTEXTS, width))
    for c, t in enumerate(counts):
        bits = -np.log2(t / t.sum(axis=1, keepdims=True))
        bits[:, -1] += escape_bits
        out[c, :, : t.shape[1]] = bits
        out[c, :, t.shape[1] :] = bits[:, -1:]
    return out


def tables_from_counts(counts: np.ndarray, ranges: np.ndarray, prior_pmf: np.ndarray, prior_weight: int = 8) -> np.ndarray:
    """Measured counts (L, CONTEXTS, sum of 2 r_c + 2) + the factorised prior's pmf (M, 2R+2,
    values -R..R then escape) -> uint16 tables of the same shape: every entry >= 1, each
    channel's row summing to at most TABLE_TOTAL. The prior, weighted as `prior_weight`
    observations, fills what the training images rarely reached."""
    big_r = (prior_pmf.shape[1] - 2) // 2
    out = np.zeros(counts.shape, np.uint16)
    start = 0
    for c, r in enumerate(np.asarray(ranges, np.int64)):
        width = 2 * int(r) + 2
        inside = prior_pmf[c, big_r - r : big_r + r + 1]
        prior = np.append(inside, prior_pmf[c].sum() - inside.sum())  # beyond +-r_c: the escape
        p = counts[:, :, start : start + width] + prior_weight * prior / prior.sum()
        p = p / p.sum(axis=-1, keepdims=True)
        out[:, :, start : start + width] = 1 + np.floor(p * (TABLE_TOTAL - width))
        start += width
    return out


def fit_activity(latents: list[np.ndarray], ranges: np.ndarray, ridge: float = 1.0) -> ContextModel:
    """The activity predictor (no tables yet) fitted to integer latents (M, h, w): per
    channel c, least squares of ln(1 + |q_c|) on the log features of channels 0..c-1,
    quantised to integers; its edges are the sevenths of its predictions on `latents`."""
    channels = latents[0].shape[0]
    ranges = np.asarray(ranges, np.int64)
    size = 9 * (int(ranges.max()) + 1) + 1  # the largest 3x3 sum of capped magnitudes, + 1
    log_table = np.round(LOG_SCALE * np.log1p(np.arange(size, dtype=np.float64))).astype(np.int64)
    rows = []
    for q in latents:
        mags = np.stack([magnitudes(to_symbols(q[c].astype(np.int64), int(r)), int(r)) for c, r in enumerate(ranges)])
        feats = np.stack([log_table[np.minimum(_box3(m), size - 1)] for m in mags]).reshape(channels, -1)
        rows.append(np.concatenate([feats / LOG_SCALE, np.ones((1, feats.shape[1])),
                                    np.log1p(mags.reshape(channels, -1))]).T)
    z = np.concatenate(rows)
    gram = z.T @ z  # [features, 1, targets]: every channel's normal equations are a block of it
    weights = np.zeros((channels, channels + 1), np.int64)
    for c in range(channels):
        cols = list(range(c)) + [channels]
        a = gram[np.ix_(cols, cols)] + ridge * np.eye(len(cols))
        coef = np.linalg.solve(a, gram[cols, channels + 1 + c])
        weights[c, :c] = np.round(coef[:c] * (1 << WEIGHT_BITS))
        weights[c, channels] = np.round(coef[c] * (1 << WEIGHT_BITS) * LOG_SCALE)
    weights = np.clip(weights, -MAX_WEIGHT, MAX_WEIGHT)
    features = np.round(z[:, :channels] * LOG_SCALE).astype(np.int64)
    activity = features @ np.tril(weights[:, :channels], -1).T + weights[:, channels]  # (n, M), row c uses c' < c
    sevenths = np.arange(1, ACTIVITY_BUCKETS) / ACTIVITY_BUCKETS
    edges = np.quantile(activity, sevenths, axis=0, method="lower").T.astype(np.int64)
    return ContextModel(ranges=ranges.astype(np.int32), weights=weights.astype(np.int32),
                        edges=edges.astype(np.int32), log_table=log_table.astype(np.int32))
