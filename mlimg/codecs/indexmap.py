"""Context-modelled lossless coder for maps of integer indices (palette / codebook maps).

Shared by the ``kmeans`` and ``vq`` methods; the byte layout is specified in
spec/methods/kmeans.md ("Index map coding"). Decoding is vectorised: pixels are
coded in hierarchical interleaved passes (like Adam7 with every level), so every
pixel of a pass is predicted from pixels of earlier passes only, and a pass is
decoded with one range-coder call per context.

Prediction. Each index i has a vector (its palette colour or codeword). For every
index p the other indices are ranked by the squared distance of their vectors to
p's vector (p itself is rank 0); the pixel's predicted index comes from its four
neighbours from earlier passes (see _predict), and the coded symbol is the rank of
the true index in the predicted index's list. Smooth regions give rank 0,
textured regions small ranks. The context (27 classes) is how far (in rank)
the neighbours spread around the prediction and whether they agree with it.

Probabilities are per (pass group, context) histograms over rank bins stored in
the payload, so they are integer counts and decoding is bit-exact.
"""
from __future__ import annotations

import numpy as np

from ..entropy import CategoricalReader, CategoricalWriter
from .base import CodecError

N_CONTEXTS = 27
N_GROUPS = 6  # (diagonal, axial) passes x (step 1, step 2, step >= 4)
MAX_INDICES = 4096


# ---------------------------------------------------------------- byte helpers


def put_varint(out: bytearray, value: int) -> None:
    """Append an unsigned LEB128 integer."""
    value = int(value)
    if value < 0:
        raise ValueError("varint must be non-negative")
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


class Reader:
    """Bounds-checked reader over a chunk payload; errors name the chunk."""

    def __init__(self, payload: bytes, chunk: str):
        self.data = bytes(payload)
        self.pos = 0
        self.chunk = chunk

    def fail(self, what: str) -> CodecError:
        return CodecError(f"{self.chunk} chunk: {what}")

    def u8(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("payload truncated")
        self.pos += 1
        return self.data[self.pos - 1]

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail("payload truncated")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def varint(self, limit: int = 1 << 40) -> int:
        value = shift = 0
        while True:
            byte = self.u8()
            value |= (byte & 0x7F) << shift
            if value > limit:
                raise self.fail(f"value {value} exceeds limit {limit}")
            if not byte & 0x80:
                return value
            shift += 7

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out


# ------------------------------------------------------------- range coding


class StreamEncoder:
    """One range-coder stream that many (symbols, probabilities) groups append to."""

    def __init__(self):
        self._writer = CategoricalWriter()

    def encode(self, symbols, probs) -> None:
        if len(probs) > 1:  # a one-symbol alphabet carries no information
            self._writer.encode(symbols, probs)

    def bytes(self) -> bytes:
        return self._writer.finish()


class StreamDecoder:
    def __init__(self, data: bytes, chunk: str):
        if len(data) % 4:
            raise CodecError(f"{chunk} chunk: range-coded data length is not a multiple of 4")
        self._chunk = chunk
        self._reader = CategoricalReader(data)

    def decode(self, probs, count: int) -> np.ndarray:
        if count == 0 or len(probs) == 1:
            return np.zeros(int(count), np.int64)
        try:
            return self._reader.decode(probs, int(count)).astype(np.int64)
        except Exception as exc:  # constriction reports corrupt streams with assorted types
            raise CodecError(f"{self._chunk} chunk: corrupt range-coded data ({exc})") from exc


def probs_from_counts_exact(counts) -> np.ndarray:
    """Integer counts -> float64 probabilities by one correctly rounded division each."""
    c = np.asarray(counts, dtype=np.int64)
    total = int(c.sum())
    if total == 0:
        return np.full(c.shape, 1.0 / c.size)
    return c / float(total)


# ----------------------------------------------------------- rank bins


def rank_bins(k: int) -> np.ndarray:
    """Bin edges over ranks 0..k-1: 0,1,2,3,4,6,8,12,16,24,... ending at k."""
    edges = [0, 1, 2, 3, 4]
    while edges[-1] < k:
        x = edges[-1]
        edges.append(x + x // 2 if x & (x - 1) == 0 else 1 << x.bit_length())
    edges = [e for e in edges if e < k] + [k]
    return np.array(edges, dtype=np.int64)


def _bin_probs(bin_counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Rank probabilities: a bin's count spread uniformly over its ranks (integer ratio)."""
    widths = np.diff(edges)
    k = int(edges[-1])
    total = int(bin_counts.sum())
    which = np.repeat(np.arange(len(widths)), widths)
    if total == 0:
        return np.full(k, 1.0 / k)
    return bin_counts[which] / (widths[which] * total).astype(np.float64)


# ----------------------------------------------------------- the prediction


def rank_tables(vectors) -> tuple[np.ndarray, np.ndarray]:
    """order[p, r]: the index at rank r from p; rank[p, q]: inverse. Exact integer distances."""
    v = np.asarray(vectors, dtype=np.float64)
    k = v.shape[0]
    sq = (v * v).sum(axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (v @ v.T)  # integers < 2**53: exact in float64
    key = d2 * 2.0 + (1.0 - np.eye(k))  # p itself first among equal distances
    order = np.argsort(key, axis=1, kind="stable").astype(np.int64)
    rank = np.empty_like(order)
    rows = np.arange(k)[:, None]
    rank[rows, order] = np.arange(k, dtype=np.int32)[None, :]
    return order, rank


def _pair(c, h, n):
    """Neighbour coordinates c-h and c+h, each mirrored to the other side when outside."""
    m, p = c - h, c + h
    mv, pv = m >= 0, p < n
    return np.where(mv, m, p), np.where(pv, p, m), mv | pv


def _passes(height: int, width: int):
    """Yield (group, ys, xs, neighbour coordinate list) for every pass after pixel (0, 0)."""
    top = 1
    while top < max(height, width):
        top *= 2
    h = top // 2
    while h >= 1:
        scale = 0 if h == 1 else 1 if h == 2 else 2
        # diagonal pass: odd multiples of h on both axes, neighbours at (+-h, +-h)
        ys, xs = np.arange(h, height, 2 * h), np.arange(h, width, 2 * h)
        if ys.size and xs.size:
            y, x = np.meshgrid(ys, xs, indexing="ij")
            yu, yd, _ = _pair(y, h, height)
            xl, xr, _ = _pair(x, h, width)
            yield 2 * scale, (y, x), [(yu, xl), (yu, xr), (yd, xl), (yd, xr)]
        # axial pass: the remaining points of the step-h lattice, neighbours at distance h
        coords, nbrs = [], []
        for ys, xs in ((np.arange(0, height, 2 * h), np.arange(h, width, 2 * h)),
                       (np.arange(h, height, 2 * h), np.arange(0, width, 2 * h))):
            if not (ys.size and xs.size):
                continue
            y, x = np.meshgrid(ys, xs, indexing="ij")
            yu, yd, yok = _pair(y, h, height)
            xl, xr, xok = _pair(x, h, width)
            # an axis with no neighbour at all borrows the other axis' pair
            vert = [(np.where(yok, yu, y), np.where(yok, x, xl)), (np.where(yok, yd, y), np.where(yok, x, xr))]
            horz = [(np.where(xok, y, yu), np.where(xok, xl, x)), (np.where(xok, y, yd), np.where(xok, xr, x))]
            coords.append((y.ravel(), x.ravel()))
            nbrs.append([(a.ravel(), b.ravel()) for a, b in vert + horz])
        if coords:
            y = np.concatenate([c[0] for c in coords])
            x = np.concatenate([c[1] for c in coords])
            merged = [(np.concatenate([n[i][0] for n in nbrs]), np.concatenate([n[i][1] for n in nbrs])) for i in range(4)]
            yield 2 * scale + 1, (y, x), merged
        h //= 2


_ACTIVITY_EDGES = np.array([1, 2, 3, 5, 8, 12, 18, 27, 40, 60, 90, 140])


def _predict(imap, nbr_coords, rank, vectors):
    """Predicted index and context for every pixel of a pass, from already known pixels.

    The prediction is the neighbours' majority index when at least three agree,
    otherwise the neighbour whose vector is closest to the neighbours' mean (the
    medoid; first one on ties). The context is the summed rank of the four
    neighbours around the prediction (local activity, 13 buckets) and whether two
    or more neighbours equal the prediction.
    """
    n = np.ascontiguousarray(np.stack([imap[yy, xx].ravel() for yy, xx in nbr_coords]), dtype=np.int64)
    return _predict_kernel()(n, rank, vectors, _activity_lut(rank.shape[0]))


def _activity_lut(k: int) -> np.ndarray:
    return np.searchsorted(_ACTIVITY_EDGES, np.arange(4 * k), side="right").astype(np.int64)


_KERNEL = None


def _predict_kernel():
    """The per-pixel prediction loop, compiled once with numba (imported lazily)."""
    global _KERNEL
    if _KERNEL is None:
        import numba

        @numba.njit(cache=True, nogil=True)
        def kernel(n, rank, vectors, lut):
            count = n.shape[1]
            dims = vectors.shape[1]
            strong = len(_ACTIVITY_EDGES) + 1
            pred = np.empty(count, np.int64)
            ctx = np.empty(count, np.int64)
            for p in range(count):
                best, best_votes = 0, -1
                for i in range(4):
                    v = 0
                    for j in range(4):
                        v += n[j, p] == n[i, p]
                    if v > best_votes:
                        best, best_votes = i, v
                if best_votes < 3:  # medoid: closest to the mean, distances scaled by 4
                    best_d = -1
                    for i in range(4):
                        d = 0
                        for c in range(dims):
                            s = 0
                            for j in range(4):
                                s += vectors[n[j, p], c]
                            e = 4 * vectors[n[i, p], c] - s
                            d += e * e
                        if best_d < 0 or d < best_d:
                            best, best_d = i, d
                q = n[best, p]
                activity = 0
                agree = 0
                for j in range(4):
                    activity += rank[q, n[j, p]]
                    agree += n[j, p] == q
                pred[p] = q
                ctx[p] = 0 if agree == 4 else 1 + lut[activity] + strong * (agree >= 2)
            return pred, ctx

        _KERNEL = kernel
    return _KERNEL


# ---------------------------------------------------------------- public API


def encode_indexmap(imap, vectors) -> bytes:
    """Code an (H, W) map of indices 0..K-1; vectors (K, D) integers define similarity.

    Tries per-scale tables (6 pass groups) and one shared group, keeps the smaller:
    small maps cannot pay for many tables.
    """
    imap = np.asarray(imap, dtype=np.int64)
    k = len(vectors)
    if not 1 <= k <= MAX_INDICES:
        raise ValueError(f"index count {k} outside 1..{MAX_INDICES}")
    if imap.size and (imap.min() < 0 or imap.max() >= k):
        raise ValueError("index out of range")
    height, width = imap.shape
    _, rank = rank_tables(vectors)
    vecs = np.ascontiguousarray(vectors, dtype=np.int64)
    runs = []  # (group, ctx, symbols) in coding order
    for group, (y, x), nbrs in _passes(height, width):
        pred, ctx = _predict(imap, nbrs, rank, vecs)
        sym = rank[pred, imap[y, x].ravel()]
        for c in range(N_CONTEXTS):
            s = sym[ctx == c]
            if s.size:
                runs.append((group, c, s))
    first = imap[0, 0] if imap.size else None
    return min((_write(runs, first, k, shared) for shared in (False, True)), key=len)


def _write(runs, first, k: int, shared: bool) -> bytes:
    edges = rank_bins(k)
    n_groups = 1 if shared else N_GROUPS
    counts = np.zeros((n_groups, N_CONTEXTS, len(edges) - 1), dtype=np.int64)
    for group, c, s in runs:
        counts[0 if shared else group, c] += np.bincount(np.searchsorted(edges, s, side="right") - 1, minlength=len(edges) - 1)
    out = bytearray([n_groups])
    for row in counts.reshape(-1, counts.shape[-1]):
        nz = np.flatnonzero(row)
        used = int(nz[-1]) + 1 if nz.size else 0
        put_varint(out, used)
        for v in row[:used]:
            put_varint(out, int(v))
    enc = StreamEncoder()
    if first is not None:
        enc.encode([first], np.full(k, 1.0 / k))
    for group, c, s in runs:
        enc.encode(s, _bin_probs(counts[0 if shared else group, c], edges))
    return bytes(out) + enc.bytes()


def decode_indexmap(payload: bytes, height: int, width: int, vectors, chunk: str) -> np.ndarray:
    """Inverse of encode_indexmap; CodecError (naming chunk) on corrupt data."""
    k = len(vectors)
    if not 1 <= k <= MAX_INDICES:
        raise CodecError(f"{chunk} chunk: index count {k} outside 1..{MAX_INDICES}")
    r = Reader(payload, chunk)
    edges = rank_bins(k)
    nbins = len(edges) - 1
    n_groups = r.u8()
    if n_groups not in (1, N_GROUPS):
        raise r.fail(f"table group count {n_groups}, expected 1 or {N_GROUPS}")
    probs = {}
    for g in range(n_groups):
        for c in range(N_CONTEXTS):
            used = r.varint(nbins)
            row = np.zeros(nbins, dtype=np.int64)
            for i in range(used):
                row[i] = r.varint(1 << 32)
            probs[g, c] = _bin_probs(row, edges)
    dec = StreamDecoder(r.rest(), chunk)
    imap = np.zeros((height, width), dtype=np.int64)
    if imap.size == 0:
        return imap
    order, rank = rank_tables(vectors)
    vecs = np.ascontiguousarray(vectors, dtype=np.int64)
    imap[0, 0] = dec.decode(np.full(k, 1.0 / k), 1)[0]
    for group, (y, x), nbrs in _passes(height, width):
        pred, ctx = _predict(imap, nbrs, rank, vecs)
        sym = np.zeros(pred.shape, dtype=np.int64)
        for c in range(N_CONTEXTS):
            where = ctx == c
            n = int(np.count_nonzero(where))
            if n:
                sym[where] = dec.decode(probs[group % n_groups, c], n)
        imap[y, x] = order[pred, sym].reshape(np.shape(y))
    return imap
