"""Thin layer over constriction's range coder, shared by the codecs.

Bit-exactness rule: every probability the coder sees is computed from integers
(counts) by IEEE-754 float64 division, which is correctly rounded and therefore
identical on every machine; constriction then quantises those floats
deterministically. Never feed it probabilities that came out of a neural
network or a library whose float path may differ between machines.
"""
from __future__ import annotations

import numpy as np

_MAX_SYMBOLS = 1 << 30  # guard against absurd sizes claimed by a corrupt file


def _coder():
    import constriction  # local import: keeps `import mlimg` light

    return constriction


def probs_from_counts(counts) -> np.ndarray:
    """Counts (..., K) of non-negative integers -> float64 probabilities (..., K).

    Adds one to every count so no symbol has zero probability.
    """
    c = np.asarray(counts, dtype=np.int64) + 1
    return c / c.sum(axis=-1, keepdims=True)


def encode_categorical(symbols, probs) -> bytes:
    """Range-code integer symbols; probs is (K,) for all symbols or (N, K) one row per symbol."""
    cs = _coder()
    symbols = np.ascontiguousarray(symbols, dtype=np.int32).ravel()
    probs = np.asarray(probs, dtype=np.float64)
    if symbols.size == 0:
        return b""
    if probs.ndim == 1:
        model = cs.stream.model.Categorical(probs, perfect=False)
        enc = cs.stream.queue.RangeEncoder()
        enc.encode(symbols, model)
    else:
        model = cs.stream.model.Categorical(perfect=False)
        enc = cs.stream.queue.RangeEncoder()
        enc.encode(symbols, model, np.ascontiguousarray(probs))
    return enc.get_compressed().astype("<u4").tobytes()


def decode_categorical(data: bytes, probs, count: int | None = None) -> np.ndarray:
    """Inverse of encode_categorical. With 1-D probs pass the symbol count."""
    cs = _coder()
    probs = np.asarray(probs, dtype=np.float64)
    n = count if probs.ndim == 1 else probs.shape[0]
    if n is None or n < 0 or n > _MAX_SYMBOLS:
        raise ValueError(f"bad symbol count {n}")
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    if len(data) % 4:
        raise ValueError("range-coded payload length is not a multiple of 4")
    words = np.frombuffer(data, dtype="<u4").copy() if data else np.zeros(0, np.uint32)
    dec = cs.stream.queue.RangeDecoder(words)
    if probs.ndim == 1:
        out = dec.decode(cs.stream.model.Categorical(probs, perfect=False), n)
    else:
        out = dec.decode(cs.stream.model.Categorical(perfect=False), np.ascontiguousarray(probs))
    return np.asarray(out, dtype=np.int32)


class CategoricalWriter:
    """One range-coded stream holding many segments, each coded with its own 1-D distribution.

    Lets a codec adapt its models between segments (the reader rebuilds the same
    probabilities from the symbols it has decoded so far) without a length field per segment.
    """

    def __init__(self):
        self._enc = _coder().stream.queue.RangeEncoder()

    def encode(self, symbols, probs) -> None:
        symbols = np.ascontiguousarray(symbols, dtype=np.int32).ravel()
        if symbols.size:
            model = _coder().stream.model.Categorical(np.asarray(probs, dtype=np.float64), perfect=False)
            self._enc.encode(symbols, model)

    def encode_rows(self, symbols, probs) -> None:
        """One symbol per row of probs (N, K): each symbol with its own distribution."""
        symbols = np.ascontiguousarray(symbols, dtype=np.int32).ravel()
        if symbols.size:
            model = _coder().stream.model.Categorical(perfect=False)
            self._enc.encode(symbols, model, np.ascontiguousarray(probs, dtype=np.float64))

    def finish(self) -> bytes:
        return self._enc.get_compressed().astype("<u4").tobytes()  # little-endian words everywhere


class CategoricalReader:
    """Inverse of CategoricalWriter: decode the segments in the order they were written."""

    def __init__(self, data: bytes):
        if len(data) % 4:
            raise ValueError("range-coded payload length is not a multiple of 4")
        cs = _coder()
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32) if data else np.zeros(0, np.uint32)
        self._dec = cs.stream.queue.RangeDecoder(words)

    def decode(self, probs, count: int) -> np.ndarray:
        if count < 0 or count > _MAX_SYMBOLS:
            raise ValueError(f"bad symbol count {count}")
        if count == 0:
            return np.zeros(0, dtype=np.int32)
        model = _coder().stream.model.Categorical(np.asarray(probs, dtype=np.float64), perfect=False)
        return np.asarray(self._dec.decode(model, count), dtype=np.int32)

    def decode_rows(self, probs) -> np.ndarray:
        """Inverse of CategoricalWriter.encode_rows: one symbol per row of probs (N, K)."""
        probs = np.ascontiguousarray(probs, dtype=np.float64)
        if probs.shape[0] == 0:
            return np.zeros(0, dtype=np.int32)
        model = _coder().stream.model.Categorical(perfect=False)
        return np.asarray(self._dec.decode(model, probs), dtype=np.int32)
