"""Per-channel range coding of an integer tensor with stored factorised frequency tables.

Shared by cae's latent (LATN) and gmm/gan's hyper-latent (HLAT): table row c codes the
values -R..R of channel c plus an escape symbol (last column) whose value is stored raw
as i16 beside the stream. Channel by channel, raster order inside a channel.
"""
from __future__ import annotations

import numpy as np

from .base import CodecError


def pack_channels(q: np.ndarray, freqs: np.ndarray) -> tuple[np.ndarray, bytes]:
    """(channels, ...) integers -> (escaped values in symbol order, range-coded stream)."""
    from ..entropy import CategoricalWriter
    from ..nn.integer import freqs_to_probs

    flat = q.reshape(q.shape[0], -1)
    r = (freqs.shape[1] - 2) // 2
    outside = np.abs(flat) > r
    symbols = np.where(outside, freqs.shape[1] - 1, flat + r)
    probs = freqs_to_probs(freqs)
    writer = CategoricalWriter()
    for c in range(flat.shape[0]):
        writer.encode(symbols[c], probs[c])
    return flat[outside], writer.finish()


def read_escapes(kind: str, payload: bytes, offset: int, count: int, total: int) -> tuple[np.ndarray, int]:
    """`count` i16 BE escapes at `offset` -> (values, offset after them); CodecError naming `kind`."""
    if count > total:
        raise CodecError(f"chunk {kind!r}: {count} escapes for only {total} values")
    end = offset + 2 * count
    if len(payload) < end:
        raise CodecError(f"chunk {kind!r}: truncated escape list ({len(payload)} bytes, need {end})")
    return np.frombuffer(payload, ">i2", count, offset).astype(np.int64), end


def unpack_channels(kind: str, stream: bytes, freqs: np.ndarray, per_channel: int, escaped: np.ndarray) -> np.ndarray:
    """Inverse of pack_channels: (channels, per_channel) int64; CodecError naming `kind`."""
    from ..entropy import CategoricalReader
    from ..nn.integer import freqs_to_probs

    r, escape = (freqs.shape[1] - 2) // 2, freqs.shape[1] - 1
    probs = freqs_to_probs(freqs)
    try:
        reader = CategoricalReader(stream)
        symbols = np.stack([reader.decode(probs[c], per_channel) for c in range(freqs.shape[0])]).astype(np.int64)
    except Exception as exc:  # constriction reports corrupt streams in several ways
        raise CodecError(f"chunk {kind!r}: corrupt range-coded data ({exc})") from None
    outside = symbols == escape
    if int(outside.sum()) != escaped.size:
        raise CodecError(f"chunk {kind!r}: {int(outside.sum())} escape symbols decoded, header says {escaped.size}")
    q = symbols - r
    q[outside] = escaped
    return q
