"""Adaptive context model for the rnn codec's binary codes (a vectorised stand-in for the
paper's BinaryRNN), coded with constriction.

The bits of iteration t form `C` planes of h x w (one plane per binariser channel), coded
plane by plane, channel 0 first. Every bit of plane (t, c) gets its context from bits the
decoder already has, so a whole plane is coded in one vectorised call:

  c    the channel (0..C-1)
  pt   0 when t == 0; else 1 + 2*band(t) + b[t-1, c, y, x], band(t) = 0 (t<4), 1 (t<8), 2
  q    b[t, c-1, y, x] (the channel coded just before, same position); 2 when c == 0
  s    how many of the 4 neighbours (edge-replicated) of the reference plane are 1, 0..4;
       the reference plane is b[t-1, c] for t > 0, b[0, c-1] for t == 0 and c > 0; 5 for none

  context = ((c * 7 + pt) * 3 + q) * 6 + s          (C * 126 contexts)

Each context holds two integer counts (bit 0, bit 1), initialised from a prior table stored
in the weights (or zeros) and increased after each plane by that plane's bits; when a
context's total exceeds RESCALE both counts are halved (integer, rounding up). A second,
channel-free table (context mod 126) is kept the same way; a bit is coded with the sum
of its two count pairs, so statistics carry over from plane to plane immediately. The range
coder sees probabilities computed from these integers only (entropy.probs_from_counts), so
decoding is bit-exact on any machine.
"""
from __future__ import annotations

import numpy as np

RESCALE = 1 << 12  # halve a context's counts beyond this total: keeps it adaptive
PRIOR_TOTAL = 64  # a stored prior context is scaled to at most this many observations
SHARED = 126  # contexts per channel; the channel-free table has this many


def context_count(channels: int) -> int:
    return channels * 126


def _neighbour_ones(plane: np.ndarray) -> np.ndarray:
    """Number of 4-neighbours equal to 1 (edges replicated), 0..4."""
    p = plane.astype(np.int32)
    s = np.zeros_like(p)
    # Each neighbour by slicing, the clamped edge row/column counting itself (no np.pad: it
    # costs more than the sums on these small planes).
    s[1:] += p[:-1]
    s[0] += p[0]
    s[:-1] += p[1:]
    s[-1] += p[-1]
    s[:, 1:] += p[:, :-1]
    s[:, 0] += p[:, 0]
    s[:, :-1] += p[:, 1:]
    s[:, -1] += p[:, -1]
    return s


def plane_contexts(t: int, c: int, prev: np.ndarray | None, cur: np.ndarray) -> np.ndarray:
    """Context index (h*w,) for plane c of iteration t.

    prev: bits of iteration t-1 (C, h, w) or None when t == 0; cur: bits of iteration t
    (only channels < c are read).
    """
    h, w = cur.shape[1:]
    if t == 0:
        pt = np.zeros((h, w), np.int32)
        ref = cur[c - 1] if c > 0 else None
    else:
        band = 0 if t < 4 else 1 if t < 8 else 2
        pt = 1 + 2 * band + prev[c].astype(np.int32)
        ref = prev[c]
    q = cur[c - 1].astype(np.int32) if c > 0 else np.full((h, w), 2, np.int32)
    s = _neighbour_ones(ref) if ref is not None else np.full((h, w), 5, np.int32)
    return (((c * 7 + pt) * 3 + q) * 6 + s).ravel()


class ContextCounts:
    """The adaptive counts shared by the coder and the decoder of one file.

    Two integer tables: per context (K, 2), and per context without its channel (126, 2),
    so what one channel's plane teaches helps the next plane at once. A bit's probability
    comes from the sum of its two count pairs.
    """

    def __init__(self, channels: int, prior: np.ndarray | None = None):
        k = context_count(channels)
        if prior is not None:
            prior = np.asarray(prior, dtype=np.int64)
            if prior.shape != (k, 2):
                raise ValueError(f"context prior has shape {prior.shape}, expected {(k, 2)}")
            self.counts = prior.copy()
            self.shared = _scale(prior.reshape(channels, SHARED, 2).sum(axis=0))
        else:
            self.counts = np.zeros((k, 2), np.int64)
            self.shared = np.zeros((SHARED, 2), np.int64)

    def probs(self, ctx: np.ndarray) -> np.ndarray:
        from ..entropy import probs_from_counts

        if ctx.size and ctx.size > SHARED:
            block = ctx[0] // SHARED * SHARED
            local = ctx - block
            if local.min() >= 0 and local.max() < SHARED:  # one channel's contexts (a plane):
                # the probabilities of its 126 contexts, then a lookup; the same float64 values
                return probs_from_counts(self.counts[block : block + SHARED] + self.shared)[local]
        return probs_from_counts(self.counts[ctx] + self.shared[ctx % SHARED])

    def update(self, ctx: np.ndarray, bits: np.ndarray) -> None:
        pair = ctx * 2 + bits  # (context, bit) -> one bincount per table instead of two masked ones
        for table, index in ((self.counts, pair), (self.shared, pair % (2 * SHARED))):
            table += np.bincount(index, minlength=table.size).reshape(table.shape)
            big = table.sum(axis=1) > RESCALE
            if big.any():
                table[big] = (table[big] + 1) // 2


def _scale(counts: np.ndarray) -> np.ndarray:
    """Scale each row down (integer floor) to at most PRIOR_TOTAL observations."""
    n = counts.sum(axis=1, keepdims=True)
    return np.where(n > PRIOR_TOTAL, counts * PRIOR_TOTAL // np.maximum(n, 1), counts)


def _coder():
    import constriction

    return constriction


def encode_iteration(t: int, bits: np.ndarray, prev: np.ndarray | None, counts: ContextCounts,
                     active: np.ndarray | None = None) -> bytes:
    """Range-code iteration t's bits (C, h, w) of 0/1; updates counts. One stream per iteration.

    active: None (all positions) or an (h, w) bool map of the positions that code this
    iteration; the others are not coded, and read as 0 wherever a context looks at them."""
    cs = _coder()
    enc = cs.stream.queue.RangeEncoder()
    model = cs.stream.model.Categorical(perfect=False)
    keep = None if active is None else np.asarray(active, bool).ravel()
    for c in range(bits.shape[0]):
        ctx = plane_contexts(t, c, prev, bits)
        symbols = np.ascontiguousarray(bits[c].ravel(), dtype=np.int32)
        if keep is not None:
            ctx, symbols = ctx[keep], symbols[keep]
        if ctx.size:
            enc.encode(symbols, model, np.ascontiguousarray(counts.probs(ctx)))
            counts.update(ctx, symbols)
    return enc.get_compressed().tobytes()


def decode_iteration(t: int, data: bytes, shape: tuple[int, int, int], prev: np.ndarray | None,
                     counts: ContextCounts, active: np.ndarray | None = None) -> np.ndarray:
    """Inverse of encode_iteration: (C, h, w) uint8 bits, 0 where not active. ValueError on a
    malformed stream."""
    if len(data) % 4:
        raise ValueError("range-coded data length is not a multiple of 4")
    cs = _coder()
    words = np.frombuffer(data, dtype="<u4").astype(np.uint32) if data else np.zeros(0, np.uint32)
    dec = cs.stream.queue.RangeDecoder(words)
    model = cs.stream.model.Categorical(perfect=False)
    bits = np.zeros(shape, np.uint8)
    keep = None if active is None else np.asarray(active, bool).ravel()
    for c in range(shape[0]):
        ctx = plane_contexts(t, c, prev, bits)
        if keep is not None:
            ctx = ctx[keep]
        if not ctx.size:
            continue
        symbols = np.asarray(dec.decode(model, np.ascontiguousarray(counts.probs(ctx))), dtype=np.int32)
        if symbols.size != ctx.size or symbols.min(initial=0) < 0 or symbols.max(initial=0) > 1:
            raise ValueError("range decoder returned malformed symbols")
        if keep is None:
            bits[c] = symbols.reshape(shape[1:])
        else:
            bits[c].reshape(-1)[keep] = symbols
        counts.update(ctx, symbols)
    return bits


def prior_counts(samples: list[np.ndarray]) -> np.ndarray:
    """Prior table (K, 2) int32 from bit arrays (T, C, h, w): the counts the context model
    reaches on them, each context scaled down to at most PRIOR_TOTAL observations."""
    channels = samples[0].shape[1]
    total = np.zeros((context_count(channels), 2), np.int64)
    for sample in samples:
        prev = None
        for t in range(sample.shape[0]):
            cur = sample[t]
            for c in range(channels):
                ctx = plane_contexts(t, c, prev, cur)
                bits = cur[c].ravel()
                total[:, 1] += np.bincount(ctx[bits == 1], minlength=total.shape[0])
                total[:, 0] += np.bincount(ctx[bits == 0], minlength=total.shape[0])
            prev = cur
    return _scale(total).astype(np.int32)
