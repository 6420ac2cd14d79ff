"""Entropy coding for the pca method: parametric magnitude tables over one range-coded stream.

Every integer the pca method stores goes through `Writer` / `Reader`, a thin
wrapper over one range-coded stream (mlimg/entropy.py; decode order = encode order).

Signed integers are coded as a magnitude token, an optional escape and a sign:
  token t in 0..ESC      t < ESC is the magnitude itself; t == ESC means "ESC or more"
  escape (t == ESC)      n = bit_length(m - ESC) as a uniform symbol in 0..31, then
                         the n-1 bits below the leading one as uniform bits
  sign (m > 0)           one uniform bit, 1 = negative

The token distribution is a zero-inflated geometric law with two 16-bit integer
parameters (z, r): P(0) ~ z / 2^16 and P(t+1) / P(t) ~ r / 2^16 for t >= 1; the
escape token takes the geometric tail. Frequencies are computed with integer
arithmetic only and turned into float64 probabilities by one division, so the
decoder's tables are bit-identical on every machine (see mlimg/entropy.py).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..entropy import CategoricalReader, CategoricalWriter

ESC = 48  # tokens 0..ESC-1 are literal magnitudes
_ONE = 1 << 16
_G1 = 1 << 30  # fixed-point start of the geometric run


class CodingError(ValueError):
    """The range-coded stream is inconsistent (raised by Reader; the codec names the chunk)."""


@lru_cache(maxsize=4096)
def token_probs(z: int, r: int) -> np.ndarray:
    """Probabilities of tokens 0..ESC for table parameters (z, r), from integers only."""
    g = np.zeros(ESC, dtype=np.int64)  # g[t-1] for magnitudes t = 1..ESC-1, then the tail
    v = _G1
    for t in range(ESC - 1):
        g[t] = max(v, 1)
        v = (v * r) >> 16
    tail = (max(v, 1) * _ONE) // max(_ONE - r, 1)  # sum of the remaining geometric run
    g[ESC - 1] = max(tail, 1)
    total = int(g.sum())
    counts = np.empty(ESC + 1, dtype=np.int64)
    counts[0] = z * (total >> 16) + 1
    counts[1:] = ((_ONE - z) * g) >> 16
    counts = np.maximum(counts, 1)
    return counts / counts.sum()


def fit_table(magnitudes: np.ndarray) -> tuple[int, int]:
    """Integer (z, r) fitted to non-negative magnitudes (maximum-likelihood for the model)."""
    m = np.asarray(magnitudes, dtype=np.int64).ravel()
    return fit_tables(np.zeros(m.size, dtype=np.int64), m, 1)[0]


def fit_tables(table_ids: np.ndarray, magnitudes: np.ndarray, n_tables: int) -> dict[int, tuple[int, int]]:
    """(z, r) for every table id that has values: z from the zero rate, r from the mean non-zero size."""
    ids = np.asarray(table_ids, dtype=np.int64).ravel()
    m = np.asarray(magnitudes, dtype=np.int64).ravel()
    n = np.bincount(ids, minlength=n_tables)
    nz = np.bincount(ids, weights=m > 0, minlength=n_tables)
    excess = np.bincount(ids, weights=np.where(m > 0, np.minimum(m, ESC) - 1, 0), minlength=n_tables)
    out = {}
    for t in np.flatnonzero(n):
        z = int(np.clip(round(_ONE * (n[t] - nz[t] + 0.25) / (n[t] + 0.5)), 1, _ONE - 1))
        mean = excess[t] / nz[t] if nz[t] else 0.0
        r = int(np.clip(round(_ONE * mean / (mean + 1.0)), 1, _ONE - 16))
        out[int(t)] = (z, r)
    return out


class Writer:
    def __init__(self):
        self._writer = CategoricalWriter()

    def symbols(self, values, probs: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=np.int32).ravel()
        if values.size:
            self._writer.encode(values, probs)

    def uints(self, values, bits: int) -> None:
        """Unsigned integers below 2^bits as uniform bytes (most significant first)."""
        values = np.asarray(values, dtype=np.int64).ravel()
        for shift in range(((bits + 7) // 8 - 1) * 8, -1, -8):
            self.symbols((values >> shift) & 255, _uniform(256))

    def signed(self, values, table: tuple[int, int]) -> None:
        """Signed integers with one (z, r) table: tokens, escapes, signs."""
        values = np.asarray(values, dtype=np.int64).ravel()
        mags = np.abs(values)
        self.symbols(np.minimum(mags, ESC), token_probs(*table))
        self._escapes(mags[mags >= ESC] - ESC)
        self.symbols(values[values != 0] < 0, _uniform(2))

    def magnitudes(self, mags: np.ndarray, probs: np.ndarray) -> None:
        """Magnitudes with one probability row per value (probs: (N, ESC+1)); no signs."""
        mags = np.asarray(mags, dtype=np.int64).ravel()
        if mags.size:
            self._writer.encode_rows(np.minimum(mags, ESC), probs)
        self._escapes(mags[mags >= ESC] - ESC)

    def signs(self, values: np.ndarray) -> None:
        """Signs of the non-zero values, 1 = negative."""
        values = np.asarray(values).ravel()
        self.symbols(values[values != 0] < 0, _uniform(2))

    def _escapes(self, rest: np.ndarray) -> None:
        if not rest.size:
            return
        nbits = _bit_length(rest)
        self.symbols(nbits, _uniform(32))
        for b in range(int(nbits.max()) - 2, -1, -1):  # bits below the leading one
            sel = nbits > b + 1
            self.symbols((rest[sel] >> b) & 1, _uniform(2))

    def finish(self) -> bytes:
        return self._writer.finish()


class Reader:
    def __init__(self, data: bytes):
        try:
            self._reader = CategoricalReader(data)
        except ValueError as exc:
            raise CodingError(str(exc)) from None

    def symbols(self, n: int, probs: np.ndarray) -> np.ndarray:
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        try:
            out = self._reader.decode(probs, int(n))
        except Exception as exc:  # constriction reports exhausted/corrupt streams in its own types
            raise CodingError(f"range decoder failed: {exc}") from None
        return np.asarray(out, dtype=np.int64)

    def uints(self, n: int, bits: int) -> np.ndarray:
        out = np.zeros(n, dtype=np.int64)
        for _ in range((bits + 7) // 8):
            out = (out << 8) | self.symbols(n, _uniform(256))
        return out

    def signed(self, n: int, table: tuple[int, int]) -> np.ndarray:
        mags = self.symbols(n, token_probs(*table))
        esc = mags == ESC
        if esc.any():
            mags[esc] = ESC + self._escapes(int(esc.sum()))
        neg = self.symbols(int((mags != 0).sum()), _uniform(2)).astype(bool)
        signs = np.ones(n, dtype=np.int64)
        idx = np.flatnonzero(mags)
        signs[idx[neg]] = -1
        return mags * signs

    def magnitudes(self, probs: np.ndarray) -> np.ndarray:
        """Inverse of Writer.magnitudes: one value per probability row."""
        if not len(probs):
            return np.zeros(0, dtype=np.int64)
        try:
            mags = self._reader.decode_rows(probs)
        except Exception as exc:
            raise CodingError(f"range decoder failed: {exc}") from None
        mags = np.asarray(mags, dtype=np.int64)
        esc = mags == ESC
        if esc.any():
            mags[esc] = ESC + self._escapes(int(esc.sum()))
        return mags

    def apply_signs(self, values: np.ndarray) -> np.ndarray:
        """Read the signs of the non-zero entries of `values` (any shape) and apply them."""
        flat = values.reshape(-1).copy()
        idx = np.flatnonzero(flat)
        neg = self.symbols(idx.size, _uniform(2)).astype(bool)
        flat[idx[neg]] *= -1
        return flat.reshape(values.shape)

    def _escapes(self, n: int) -> np.ndarray:
        nbits = self.symbols(n, _uniform(32))
        rest = np.where(nbits > 0, 1, 0).astype(np.int64)
        for b in range(int(nbits.max()) - 2, -1, -1):
            sel = nbits > b + 1
            rest[sel] = (rest[sel] << 1) | self.symbols(int(sel.sum()), _uniform(2))
        return rest


def probs_matrix(tables: dict[int, tuple[int, int]], n: int) -> np.ndarray:
    """(n, ESC+1) probability rows indexed by table id; absent ids are NaN rows."""
    out = np.full((n, ESC + 1), np.nan)
    for t, params in tables.items():
        out[t] = token_probs(*params)
    return out


def write_tables(w: Writer, tables: list[tuple[int, int]]) -> None:
    flat = np.asarray(tables, dtype=np.int64).reshape(-1)
    w.uints(flat, 16)


def read_tables(rd: Reader, n: int) -> list[tuple[int, int]]:
    flat = rd.uints(2 * n, 16)
    if ((flat == 0) | (flat >= _ONE)).any():
        raise CodingError("model table parameter out of range")
    return [(int(a), int(b)) for a, b in flat.reshape(-1, 2)]


def _bit_length(v: np.ndarray) -> np.ndarray:
    out = np.zeros(v.shape, dtype=np.int64)
    v = v.copy()
    while (v > 0).any():
        out += v > 0
        v >>= 1
    return out


@lru_cache(maxsize=8)
def _uniform(n: int) -> np.ndarray:
    return np.full(n, 1.0 / n)
