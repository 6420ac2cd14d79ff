"""Context-adaptive coding of cae's integer latent (method version 2).

Version 1 codes every latent channel with one static table, the factorised prior, which
is fitted to the latents of all gain levels at once and knows nothing of where in the
image a value lies. This model adds what Ballé et al. 2017 got from their context-adaptive
coder, in a form that decodes with a few vectorised calls per channel:

* tables per gain level: the export measures the latents of the trained encoder on
  training images at each gain position a quality reaches (cae.context_tables); a quality
  between two of them interpolates their tables;
* a context per value (`context_ids`): the local activity of the 8 channels coded just
  before (3x3 neighbourhood), and, for the second half of a checkerboard, the magnitudes
  of the four already-decoded neighbours in the same channel;
* adaptation: after each band of 8 latent rows the counts of that band's values grow,
  so the file's own statistics take over from the training ones.

Every probability comes from integer counts by float64 division (mlimg/entropy.py), so a
decoder on any machine rebuilds the coder's tables exactly. Normative text:
spec/methods/cae.md, "Context-adaptive latent coding".
"""
from __future__ import annotations

import numpy as np

ACTIVITY_CHANNELS = 8  # channels before c whose magnitudes form c's activity
ACTIVITY_EDGES = (1, 2, 5, 10, 20, 40)  # activity bucket = number of edges <= activity (0..6)
NEIGHBOUR_EDGES = (1, 3)  # second checkerboard half: 1 + number of edges <= neighbour sum (1..3)
CONTEXTS = (len(ACTIVITY_EDGES) + 1) * (len(NEIGHBOUR_EDGES) + 2)  # 7 x 4 = 28
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


def _cross4(plane: np.ndarray) -> np.ndarray:
    """Sum of the 4 neighbours inside the plane (outside counts 0)."""
    p = np.pad(plane, 1)
    return p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]


def anchor_mask(h: int, w: int) -> np.ndarray:
    """First checkerboard half: positions with y + x even."""
    yy, xx = np.mgrid[:h, :w]
    return (yy + xx) % 2 == 0


class ActivityTracker:
    """The running 3x3 activity of the last ACTIVITY_CHANNELS channels (coder and decoder)."""

    def __init__(self, h: int, w: int):
        self.boxes: list[np.ndarray] = []
        self.total = np.zeros((h, w), np.int64)

    def bucket(self) -> np.ndarray:
        return np.searchsorted(np.asarray(ACTIVITY_EDGES), self.total, side="right")

    def push(self, mags: np.ndarray) -> None:
        box = _box3(mags)
        self.boxes.append(box)
        self.total += box
        if len(self.boxes) > ACTIVITY_CHANNELS:
            self.total -= self.boxes.pop(0)


def context_ids(activity_bucket: np.ndarray, mags: np.ndarray | None) -> np.ndarray:
    """Contexts (h, w) of one channel: for the anchors (mags None) activity * 4; for the
    other half, with the channel's anchor magnitudes (non-anchors 0), activity * 4 + 1..3."""
    if mags is None:
        return activity_bucket * 4
    n = _cross4(mags)
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


def _walk(counts: list[np.ndarray], ranges: np.ndarray, shape: tuple[int, int, int], code) -> None:
    """The coding order shared by coder and decoder: channel by channel; in each, the
    anchors, then the other half; in each half, bands of BAND_ROWS rows, whose symbols
    `code(probabilities (n, S_c), channel, flat positions)` codes or decodes and returns.
    The channel's counts grow by the band's symbols before the next band."""
    channels, h, w = shape
    activity = ActivityTracker(h, w)
    anchors = anchor_mask(h, w)
    for c in range(channels):
        bucket = activity.bucket()
        table, r = counts[c], int(ranges[c])
        mags = np.zeros((h, w), np.int64)
        for half in (anchors, ~anchors):
            ctx = context_ids(bucket, None if half is anchors else mags).ravel()
            for y0 in range(0, h, BAND_ROWS):
                where = np.flatnonzero(half[y0 : y0 + BAND_ROWS]) + y0 * w
                k = ctx[where]
                probs = table / table.sum(axis=1, keepdims=True)
                sym = code(probs[k], c, where)
                table += INCREMENT * np.bincount(k * table.shape[1] + sym, minlength=table.size).reshape(table.shape)
                mags.ravel()[where] = magnitudes(sym, r)
        activity.push(mags)


def encode_latent(q: np.ndarray, counts: list[np.ndarray], ranges: np.ndarray) -> tuple[np.ndarray, bytes]:
    """Integer latent (M, h, w) -> (escaped values in (c, y, x) order, range-coded stream).
    `counts` from level_tables (adapted in place)."""
    from ..entropy import CategoricalWriter

    flat = q.reshape(q.shape[0], -1).astype(np.int64)
    symbols = [to_symbols(flat[c], int(r)) for c, r in enumerate(ranges)]
    writer = CategoricalWriter()

    def code(probs, c, where):
        sym = symbols[c][where]
        writer.encode_rows(sym, probs)
        return sym

    _walk(counts, ranges, q.shape, code)
    escaped = np.abs(flat) > np.asarray(ranges, np.int64)[:, None]
    return flat[escaped], writer.finish()


def decode_latent(stream: bytes, escaped: np.ndarray, counts: list[np.ndarray], ranges: np.ndarray,
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

    _walk(counts, ranges, shape, code)
    r = np.asarray(ranges, np.int64)[:, None]
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


def measure_counts(latents: list[np.ndarray], ranges: np.ndarray) -> np.ndarray:
    """Counts (CONTEXTS, sum of 2 r_c + 2) of symbols per channel and context over integer
    latents (M, h, w) of one gain level: what an export turns into that level's tables."""
    widths = 2 * np.asarray(ranges, np.int64) + 2
    offsets = np.concatenate([[0], np.cumsum(widths)[:-1]])
    total = np.zeros((CONTEXTS, int(widths.sum())), np.int64)
    for q in latents:
        _, h, w = q.shape
        activity = ActivityTracker(h, w)
        anchors = anchor_mask(h, w)
        for c, r in enumerate(ranges):
            bucket = activity.bucket()
            sym = to_symbols(q[c].astype(np.int64), int(r))
            mags = magnitudes(sym, int(r))
            ctx = np.where(anchors, context_ids(bucket, None), context_ids(bucket, np.where(anchors, mags, 0)))
            np.add.at(total, (ctx.ravel(), offsets[c] + sym.ravel()), 1)
            activity.push(mags)
    return total


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
