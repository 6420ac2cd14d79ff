"""Lossless coding of an alpha plane beside a lossy colour codec (chunk ``ALPH``).

Used by every lossy method for RGBA images. Alpha planes are mostly constant with
edges, so the plane is coded as its 2-D difference
    e[y, x] = a[y, x] - a[y-1, x] - a[y, x-1] + a[y-1, x-1]   (mod 256, zero outside)
which is zero except at corners of edges and in gradients. Decoding is two
cumulative sums (fully vectorised). Rows of e that are all zero are flagged and
skipped; the remaining values are range-coded with a stored histogram.

Payload layout (spec/methods/alpha.md):
  u8 kind = 0: constant plane, followed by u8 value.
  u8 kind = 1: varint nsym (1..256), nsym varint counts of the zig-zag symbols,
               varint nrows (rows of e that are not all zero),
               then range-coded u32 LE words: H row flags (probabilities from the
               counts H-nrows, nrows), then nrows*W symbols (probabilities from
               the histogram).
"""
from __future__ import annotations

import numpy as np

from .base import ChunkSpec
from .indexmap import Reader, StreamDecoder, StreamEncoder, probs_from_counts_exact, put_varint

ALPHA_CHUNK = ChunkSpec("ALPH", "alpha plane, lossless: u8 kind; constant value or 2-D difference, range-coded")


def _zigzag(e: np.ndarray) -> np.ndarray:
    s = e.astype(np.int16)
    s = np.where(s >= 128, s - 256, s)  # mod-256 difference as signed -128..127
    return np.where(s >= 0, 2 * s, -2 * s - 1).astype(np.int64)


def _unzigzag(z: np.ndarray) -> np.ndarray:
    s = np.where(z % 2 == 0, z // 2, -(z + 1) // 2)
    return (s % 256).astype(np.uint8)


def encode_alpha(plane) -> bytes:
    """Code an (H, W) uint8 alpha plane losslessly."""
    a = np.asarray(plane, dtype=np.uint8)
    if a.ndim != 2:
        raise ValueError("alpha plane must be 2-D")
    if a.size == 0 or (a == a.flat[0]).all():
        return bytes([0, int(a.flat[0]) if a.size else 255])
    height, width = a.shape
    e = np.diff(np.diff(a.astype(np.int16), axis=0, prepend=0), axis=1, prepend=0) % 256
    flags = e.any(axis=1)
    sym = _zigzag(e[flags]).ravel()
    hist = np.bincount(sym)
    out = bytearray([1])
    put_varint(out, len(hist))
    for c in hist:
        put_varint(out, int(c))
    nrows = int(flags.sum())
    put_varint(out, nrows)
    enc = StreamEncoder()
    enc.encode(flags.astype(np.int32), probs_from_counts_exact([height - nrows, nrows]))
    enc.encode(sym, probs_from_counts_exact(hist))
    return bytes(out) + enc.bytes()


def decode_alpha(payload: bytes, height: int, width: int, chunk: str = "ALPH") -> np.ndarray:
    """Inverse of encode_alpha; CodecError on corrupt data."""
    r = Reader(payload, chunk)
    kind = r.u8()
    if kind == 0:
        value = r.u8()
        if r.pos != len(r.data):
            raise r.fail("trailing bytes after constant alpha")
        return np.full((height, width), value, dtype=np.uint8)
    if kind != 1:
        raise r.fail(f"unknown alpha coding kind {kind}")
    nsym = r.varint(256)
    if nsym == 0:
        raise r.fail("empty histogram")
    hist = np.array([r.varint(height * width) for _ in range(nsym)], dtype=np.int64)
    nrows = r.varint(height)
    if int(hist.sum()) != nrows * width:
        raise r.fail(f"histogram total {int(hist.sum())} does not match {nrows} rows of {width}")
    dec = StreamDecoder(r.rest(), chunk)
    flags = dec.decode(probs_from_counts_exact([height - nrows, nrows]), height).astype(bool)
    if int(flags.sum()) != nrows:
        raise r.fail("row flags disagree with the stored row count")
    e = np.zeros((height, width), dtype=np.uint8)
    e[flags] = _unzigzag(dec.decode(probs_from_counts_exact(hist), nrows * width)).reshape(nrows, width)
    # mod-256 cumulative sums undo the 2-D difference (uint8 arithmetic wraps)
    return np.cumsum(np.cumsum(e, axis=0, dtype=np.uint8), axis=1, dtype=np.uint8)
