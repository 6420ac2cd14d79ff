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

Method version 3 (`split`) codes each plane in two halves, checkerboard anchors
((y + x) even) first, and gives every bit a phase as well: 0 for an anchor, 1 + the number
of its 4 neighbours in its own plane that are 1 (all anchors, already decoded; outside the
plane and inactive positions read 0) for the other half. Iterations with few bits per plane,
where the contexts above know least, gain most: Kodak files with the shipped weights (and
their version-3 prior) are 4-24 % smaller at quality 14, 1-12 % at 42, 0.7-5.5 % at 70
(tools/rnn_split_gain.py).

  split context = (c * 6 + phase) * 126 + (context mod 126)       (C * 756 contexts)

Each context holds two integer counts (bit 0, bit 1), initialised from a prior table stored
in the weights (or zeros; with `split`, from the weights' version-3 prior, or where they
have none every phase from the same version-2 prior) and increased after each plane
(half-plane with `split`) by its bits; when a context's total
exceeds RESCALE both counts are halved (integer, rounding up). A second, channel-free table
(context mod 126, or mod 756 with `split`) is kept the same way; a bit is coded with the sum
of its two count pairs, so statistics carry over from plane to plane immediately. The range
coder sees probabilities computed from these integers only (entropy.probs_from_counts), so
decoding is bit-exact on any machine.
"""
from __future__ import annotations

import numpy as np

from ..entropy import CategoricalReader, CategoricalWriter, probs_from_counts
from .checkerboard import anchor_mask, cross4

RESCALE = 1 << 12  # halve a context's counts beyond this total: keeps it adaptive
PRIOR_TOTAL = 64  # a stored prior context is scaled to at most this many observations
SHARED = 126  # contexts per channel; the channel-free table has this many
PHASES = 6  # split coding: anchor, or a non-anchor with 0..4 of its 4 neighbours equal to 1


def context_count(channels: int) -> int:
    """Contexts of the prior table (and of version 1-2 coding)."""
    return channels * SHARED


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


def split_contexts(ctx: np.ndarray, plane: np.ndarray, coded_anchors: np.ndarray) -> np.ndarray:
    """Version-3 contexts (h*w,) of one plane from its plane_contexts `ctx`: the phase is 0
    on the anchors and 1 + the number of 4-neighbours equal to 1 elsewhere, reading `plane`
    (h, w) only at `coded_anchors` (the active anchors): everything else counts as 0."""
    ones = cross4(np.where(coded_anchors, plane, 0).astype(np.int32))
    return with_phase(ctx, np.where(anchor_mask(*plane.shape), 0, 1 + ones).ravel())


def with_phase(ctx: np.ndarray, phase) -> np.ndarray:
    """plane_contexts' contexts -> version-3 contexts with the given phase(s)."""
    return (ctx // SHARED * PHASES + phase) * SHARED + ctx % SHARED


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

    Two integer tables: per context (K, 2), and per context without its channel (126 or,
    with `split`, 756 rows), so what one channel's plane teaches helps the next plane at
    once. A bit's probability comes from the sum of its two count pairs.
    """

    def __init__(self, channels: int, prior: np.ndarray | None = None, split: bool = False,
                 split_prior: np.ndarray | None = None):
        self.split = split
        self.per_channel = SHARED * (PHASES if split else 1)
        k = channels * self.per_channel
        if split and split_prior is not None:  # version 3 with its own measured prior
            split_prior = np.asarray(split_prior, dtype=np.int64)
            if split_prior.shape != (k, 2):
                raise ValueError(f"split context prior has shape {split_prior.shape}, expected {(k, 2)}")
            self.counts = split_prior.copy()
            self.shared = _scale(split_prior.reshape(channels, self.per_channel, 2).sum(axis=0))
        elif prior is not None:
            prior = np.asarray(prior, dtype=np.int64)
            if prior.shape != (context_count(channels), 2):
                raise ValueError(f"context prior has shape {prior.shape}, expected {(context_count(channels), 2)}")
            phases = self.per_channel // SHARED
            self.counts = np.repeat(prior.reshape(channels, 1, SHARED, 2), phases, axis=1).reshape(k, 2)
            self.shared = np.tile(_scale(prior.reshape(channels, SHARED, 2).sum(axis=0)), (phases, 1))
        else:
            self.counts = np.zeros((k, 2), np.int64)
            self.shared = np.zeros((self.per_channel, 2), np.int64)
        # A stored prior may hold rows over RESCALE: the first update then halves them
        # wherever they are, later ones only look at the rows they touch.
        self._check_all = bool((self.counts.sum(axis=1) > RESCALE).any())

    def probs(self, ctx: np.ndarray) -> np.ndarray:
        n = self.per_channel
        if ctx.size > 64:  # (for a handful of bits the direct lookup below is cheaper)
            r0, r1 = int(ctx.min()), int(ctx.max()) + 1
            block = r0 // n * n
            if r1 <= block + n:  # one channel's contexts (a plane or half-plane): the
                # probabilities of the rows they span, then a lookup; the same float64 values
                rows = self.counts[r0:r1] + self.shared[r0 - block : r1 - block]
                return probs_from_counts(rows)[ctx - r0]
        return probs_from_counts(self.counts[ctx] + self.shared[ctx % n])

    def update(self, ctx: np.ndarray, bits: np.ndarray) -> None:
        """Add the bits to their contexts' counts, then halve every row over RESCALE."""
        if not ctx.size:
            return
        n = self.per_channel
        pair = ctx * 2 + bits  # (context, bit) -> one bincount per table instead of two masked ones
        r0, r1 = int(ctx.min()), int(ctx.max()) + 1
        block = r0 // n * n
        if not self._check_all and r1 <= block + n:
            # One channel's contexts (a plane or half-plane): only the rows they span can grow,
            # and every other row is already at most RESCALE, so the rule needs only those
            # rows of both tables (views).
            pairs = ((self.counts[r0:r1], pair - 2 * r0), (self.shared[r0 - block : r1 - block], pair - 2 * r0))
        else:
            pairs = ((self.counts, pair), (self.shared, pair % (2 * n)))
        self._check_all = False
        for table, index in pairs:
            table += np.bincount(index, minlength=table.size).reshape(table.shape)
            halve_full_rows(table)


def halve_full_rows(table: np.ndarray) -> None:
    """In place: every count pair whose total exceeds RESCALE is halved, rounding up."""
    big = table.sum(axis=1) > RESCALE
    if big.any():
        table[big] = (table[big] + 1) // 2


def _scale(counts: np.ndarray, total: int = PRIOR_TOTAL) -> np.ndarray:
    """Scale each row down (integer floor) to at most `total` observations."""
    n = counts.sum(axis=1, keepdims=True)
    return np.where(n > total, counts * total // np.maximum(n, 1), counts)


def encode_iteration(t: int, bits: np.ndarray, prev: np.ndarray | None, counts: ContextCounts,
                     active: np.ndarray | None = None) -> bytes:
    """Range-code iteration t's bits (C, h, w) of 0/1; updates counts. One stream per iteration.

    active: None (all positions) or an (h, w) bool map of the positions that code this
    iteration; the others are not coded, and read as 0 wherever a context looks at them.
    With counts.split (version 3) each plane is coded as anchors, then the other half."""
    writer = CategoricalWriter()
    halves = _halves(bits.shape[1:], active, counts.split)
    for c in range(bits.shape[0]):
        ctx = plane_contexts(t, c, prev, bits)
        if counts.split:
            ctx = split_contexts(ctx, bits[c], halves[0])
        symbols = bits[c].ravel().astype(np.int32)
        for half in halves:
            where = half.ravel()
            if where.any():
                k, sym = ctx[where], np.ascontiguousarray(symbols[where])
                writer.encode_rows(sym, counts.probs(k))
                counts.update(k, sym)
    return writer.finish()


def _halves(shape: tuple[int, int], active: np.ndarray | None, split: bool) -> list[np.ndarray]:
    """The (h, w) bool masks of the positions coded together, in order: all active ones,
    or (split) the active anchors, then the other active ones."""
    active = np.ones(shape, bool) if active is None else np.asarray(active, bool)
    if not split:
        return [active]
    anchors = anchor_mask(*shape)
    return [anchors & active, ~anchors & active]


def decode_iteration(t: int, data: bytes, shape: tuple[int, int, int], prev: np.ndarray | None,
                     counts: ContextCounts, active: np.ndarray | None = None) -> np.ndarray:
    """Inverse of encode_iteration: (C, h, w) uint8 bits, 0 where not active. ValueError on a
    malformed stream."""
    reader = CategoricalReader(data)
    bits = np.zeros(shape, np.uint8)
    halves = _halves(shape[1:], active, counts.split)
    for c in range(shape[0]):
        ctx = plane_contexts(t, c, prev, bits)
        for i, half in enumerate(halves):
            where = half.ravel()
            if not where.any():
                continue
            if not counts.split:
                k = ctx[where]
            elif i == 0:  # the anchors: phase 0
                k = with_phase(ctx[where], 0)
            else:  # the other half's phases need this plane's decoded anchors (half 0)
                k = split_contexts(ctx, bits[c], halves[0])[where]
            symbols = reader.decode_rows(counts.probs(k))
            if symbols.size != k.size or symbols.min(initial=0) < 0 or symbols.max(initial=0) > 1:
                raise ValueError("range decoder returned malformed symbols")
            bits[c].reshape(-1)[where] = symbols
            counts.update(k, symbols)
    return bits


def prior_counts(samples: list[np.ndarray], split: bool = False) -> np.ndarray:
    """Prior table (K, 2) int32 from bit arrays (T, C, h, w): the counts the context model
    reaches on them (with `split`: version 3's contexts, K = C * 756), each context scaled
    down to at most PRIOR_TOTAL observations."""
    channels = samples[0].shape[1]
    total = np.zeros((context_count(channels) * (PHASES if split else 1), 2), np.int64)
    for sample in samples:
        prev = None
        anchors = anchor_mask(*sample.shape[2:])
        for t in range(sample.shape[0]):
            cur = sample[t]
            for c in range(channels):
                ctx = plane_contexts(t, c, prev, cur)
                if split:
                    ctx = split_contexts(ctx, cur[c], anchors)
                bits = cur[c].ravel()
                total[:, 1] += np.bincount(ctx[bits == 1], minlength=total.shape[0])
                total[:, 0] += np.bincount(ctx[bits == 0], minlength=total.shape[0])
            prev = cur
    return _scale(total).astype(np.int32)
