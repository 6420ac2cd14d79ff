"""Residual symbols of the lossless coder: tokens, raw bits, and the adaptive token models.

A residual e (wrapped into [-2**(B-1), 2**(B-1))) is zig-zag mapped to u >= 0 and
split into a token that is range coded and raw bits that are stored verbatim:

  u < 16          token u, no raw bits
  u >= 16         n = floor(log2 u), token 16 + 4*(n-4) + the two bits below the
                  leading one, then the n-2 remaining low bits raw (MSB first)

Tokens are coded per context class with counts learned from the symbols already
coded in that class (same plane), refreshed in blocks that double in size, so the
decoder rebuilds every distribution from integers it has decoded.
"""
from __future__ import annotations

import numpy as np

from ..entropy import CategoricalReader, CategoricalWriter, probs_from_counts

DIRECT = 16  # tokens below this are the value itself
FIRST_BLOCK = 32  # symbols in the first block of a class
MAX_BLOCK = 1 << 11  # later blocks double up to this size
COUNT_LIMIT = 1 << 13  # counts are halved past this total so models keep adapting


def token_count(bits: int) -> int:
    return DIRECT + 4 * (bits - 4)


def wrap(diff: np.ndarray, bits: int) -> np.ndarray:
    half = 1 << (bits - 1)
    return ((diff + half) & ((1 << bits) - 1)) - half


def to_tokens(residual: np.ndarray):
    """Signed residuals -> (tokens, raw values, raw bit counts)."""
    u = np.where(residual >= 0, 2 * residual, -2 * residual - 1).astype(np.int64)
    n = np.frexp(np.maximum(u, 1).astype(np.float64))[1].astype(np.int64) - 1  # exact floor(log2 u)
    big = u >= DIRECT
    nraw = np.where(big, n - 2, 0)
    mant = (u >> np.maximum(n - 2, 0)) & 3
    tokens = np.where(big, DIRECT + 4 * (n - 4) + mant, u)
    raw = np.where(big, u & ((np.int64(1) << nraw) - 1), 0)
    return tokens, raw, nraw


def raw_bit_counts(tokens: np.ndarray) -> np.ndarray:
    tokens = tokens.astype(np.int64)
    return np.where(tokens >= DIRECT, (tokens - DIRECT) // 4 + 2, 0)


def from_tokens(tokens: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Inverse of to_tokens: signed residuals."""
    tokens = tokens.astype(np.int64)
    big = tokens >= DIRECT
    n = (tokens - DIRECT) // 4 + 4
    u = np.where(big, (np.int64(1) << np.where(big, n, 0)) | (((tokens - DIRECT) & 3) << np.maximum(n - 2, 0)) | raw, tokens)
    return np.where(u & 1, -((u + 1) >> 1), u >> 1)


class BitWriter:
    def __init__(self):
        self._values: list[np.ndarray] = []
        self._nbits: list[np.ndarray] = []

    def write(self, values: np.ndarray, nbits: np.ndarray) -> None:
        self._values.append(np.asarray(values, np.int64))
        self._nbits.append(np.asarray(nbits, np.int64))

    def finish(self) -> bytes:
        if not self._values:
            return b""
        values, nbits = np.concatenate(self._values), np.concatenate(self._nbits)
        keep = nbits > 0
        values, nbits = values[keep], nbits[keep]
        if values.size == 0:
            return b""
        width = int(nbits.max())
        shifts = nbits[:, None] - 1 - np.arange(width)[None, :]
        bits = (values[:, None] >> np.maximum(shifts, 0)) & 1
        return np.packbits(bits[shifts >= 0].astype(np.uint8)).tobytes()


class BitReader:
    def __init__(self, data: bytes):
        self._bits = np.unpackbits(np.frombuffer(data, np.uint8))  # uint8: 1/8 of the memory of int64
        self._pos = 0

    def read(self, nbits: np.ndarray) -> np.ndarray:
        nbits = np.asarray(nbits, np.int64)
        total = int(nbits.sum())
        if self._pos + total > self._bits.size:
            raise ValueError("raw bits run past the end of the chunk")
        out = np.zeros(nbits.size, np.int64)
        if total == 0:
            return out
        width = int(nbits.max())
        starts = self._pos + np.cumsum(nbits) - nbits
        offsets = np.arange(width)[None, :]
        valid = offsets < nbits[:, None]
        idx = np.where(valid, starts[:, None] + offsets, 0)
        weights = np.where(valid, np.int64(1) << np.maximum(nbits[:, None] - 1 - offsets, 0), 0)
        out = (self._bits[idx] * weights).sum(axis=1)
        self._pos += total
        return out

    def check_end(self) -> None:
        """Only the zero padding of the last byte may be left over."""
        if self._bits.size - self._pos >= 8 or self._bits[self._pos :].any():
            raise ValueError("raw bits left over after the last pass")


def _blocks(counts_row: np.ndarray, n: int):
    """Block boundaries for n symbols of one class; sizes follow the counts seen so far."""
    seen = int(counts_row.sum())
    start = 0
    while start < n:
        size = min(max(FIRST_BLOCK, seen), MAX_BLOCK)
        stop = min(n, start + size)
        yield start, stop
        seen += stop - start
        start = stop


def _update(counts_row: np.ndarray, symbols: np.ndarray) -> None:
    counts_row += np.bincount(symbols, minlength=counts_row.size)[: counts_row.size]
    if counts_row.sum() > COUNT_LIMIT:
        counts_row[:] = (counts_row + 1) >> 1


def encode_classes(writer: CategoricalWriter, counts: np.ndarray, tokens: np.ndarray, classes: np.ndarray) -> None:
    """Code tokens class by class (ascending class id, pass order inside a class), adapting counts."""
    order = np.argsort(classes, kind="stable")
    bounds = np.searchsorted(classes[order], np.arange(counts.shape[0] + 1))
    for k in range(counts.shape[0]):
        syms = tokens[order[bounds[k] : bounds[k + 1]]]
        for a, b in _blocks(counts[k], syms.size):
            writer.encode(syms[a:b], probs_from_counts(counts[k]))
            _update(counts[k], syms[a:b])


class TokenBudget:
    """Fail-fast guard of the decoder: can the token stream still hold the symbols left to decode?

    Range coding a symbol of (quantised) probability q costs at least -log2(q) bits of the
    stream (the coder's range shrinks by that factor and gains 32 bits per word it reads), and
    the decoder reads at most a couple of words past the stored ones (zero padding). The
    quantised q exceeds the float probability p the counts give by far less than SLACK_P, so
    -log2(min(1, p + SLACK_P)) summed over the decoded symbols is a lower bound of the bits
    they used, and every symbol still to come costs at least the cost of the likeliest symbol
    any count state allows (counts never sum past COUNT_LIMIT when a block starts). A valid
    stream always fits; the garbage read from a stream that ran out (or a claimed image size
    far beyond what the stream holds) does not, and is caught early.
    """

    SLACK_P = 2.0 ** -12
    SLACK_BITS = 256  # covers the two-word state, the padding words and rounding

    def __init__(self, n_bytes: int, bits: int, symbols: int):
        k = token_count(bits)
        self.available = 8 * n_bytes + self.SLACK_BITS
        self.min_cost = -np.log2(min(1.0, (COUNT_LIMIT + 1) / (COUNT_LIMIT + k) + self.SLACK_P))
        self.spent = 0.0
        self.left = symbols

    def check(self) -> None:
        if self.spent + self.left * self.min_cost > self.available:
            raise ValueError(
                f"token stream exhausted: {self.available - self.SLACK_BITS} bits cannot hold the symbols "
                f"decoded so far plus the {self.left} still to come"
            )

    def spend(self, probs: np.ndarray, symbols: np.ndarray) -> None:
        cost = -np.log2(np.minimum(1.0, probs + self.SLACK_P))
        self.spent += float(np.bincount(symbols, minlength=probs.size)[: probs.size] @ cost)
        self.left -= symbols.size
        self.check()


def decode_classes(reader: CategoricalReader, counts: np.ndarray, classes: np.ndarray,
                   budget: TokenBudget | None = None) -> np.ndarray:
    order = np.argsort(classes, kind="stable")
    bounds = np.searchsorted(classes[order], np.arange(counts.shape[0] + 1))
    tokens = np.zeros(classes.size, np.int64)
    for k in range(counts.shape[0]):
        where = order[bounds[k] : bounds[k + 1]]
        for a, b in _blocks(counts[k], where.size):
            probs = probs_from_counts(counts[k])
            syms = reader.decode(probs, b - a)
            if budget is not None:
                budget.spend(probs, syms)
            tokens[where[a:b]] = syms
            _update(counts[k], syms)
    return tokens
