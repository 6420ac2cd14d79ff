"""The `lossless` method: learned interpolative prediction + context-adaptive range coding.

Every pixel is reproduced bit for bit (L, RGB, RGBA, I;16). Colour planes are coded
in the order G, R, B(, A) so the later ones are predicted from the earlier ones.
The pass structure, the per-image least-squares models and the token coding live
in lossless_geometry / lossless_model / lossless_tokens; lossless_coder runs them.
Chunk layout: spec/methods/lossless.md.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

from .base import ChunkSpec, Codec, CodecError, Encoded, Header

FORMAT_VERSION = 1
_LAYOUT = {  # mode -> (bits per sample, coding order of the source channels)
    "L": (8, (0,)),
    "I;16": (16, (0,)),
    "RGB": (8, (1, 0, 2)),
    "RGBA": (8, (1, 0, 2, 3)),
}
_HEAD = struct.Struct("<BBB")  # format version, plane count, bits per sample
_CHECK = struct.Struct("<III")  # CRC-32 of the pixels, token stream bytes, raw bit stream bytes
_CHUNKS = ("LLHD", "LLTK", "LLRB")


def _pixel_crc(pixels: np.ndarray) -> int:
    data = np.ascontiguousarray(pixels)
    if data.dtype.itemsize > 1:
        data = data.astype(data.dtype.newbyteorder("<"))
    return zlib.crc32(data.tobytes())


def _as_planes(pixels: np.ndarray, order) -> list[np.ndarray]:
    arr = pixels if pixels.ndim == 3 else pixels[:, :, None]
    return [arr[:, :, ch].astype(np.int64).ravel() for ch in order]


def _encode_stack(pixels: np.ndarray, bits: int, order) -> tuple[bytes, bytes, bytes]:
    from .lossless_coder import encode_planes

    height, width = pixels.shape[:2]
    params, tokens, raw = encode_planes(_as_planes(pixels, order), bits, height, width)
    head = _HEAD.pack(FORMAT_VERSION, len(order), bits) + bytes(order) + _CHECK.pack(_pixel_crc(pixels), len(tokens), len(raw))
    return head + params, tokens, raw


def _decode_stack(head: bytes, tokens: bytes, raw: bytes, height: int, width: int, bits: int, order, dtype, chunk: str):
    """Rebuild the pixel array (H, W) or (H, W, C); CodecError names `chunk` when the header is wrong."""
    from .lossless_coder import VarintReader, decode_planes

    fixed = _HEAD.size + len(order) + _CHECK.size
    if len(head) < fixed:
        raise CodecError(f"chunk {chunk!r}: {len(head)} bytes, too short for the lossless header")
    version, n_planes, got_bits = _HEAD.unpack_from(head)
    if version != FORMAT_VERSION:
        raise CodecError(f"chunk {chunk!r}: unknown lossless format version {version}")
    if n_planes != len(order) or got_bits != bits or tuple(head[_HEAD.size : _HEAD.size + n_planes]) != tuple(order):
        raise CodecError(f"chunk {chunk!r}: planes/bit depth/channel order do not match the image mode")
    crc, n_tokens, n_raw = _CHECK.unpack_from(head, _HEAD.size + n_planes)
    if (n_tokens, n_raw) != (len(tokens), len(raw)):
        raise CodecError(
            f"chunks 'LLTK'/'LLRB': {len(tokens)}/{len(raw)} bytes, {chunk!r} says {n_tokens}/{n_raw} (truncated or damaged)"
        )
    params = VarintReader(head, fixed)
    try:
        planes = decode_planes(n_planes, bits, height, width, params, tokens, raw)
    except (ValueError, IndexError, OverflowError, AssertionError) as exc:  # constriction asserts on some garbage
        raise CodecError(f"chunks 'LLTK'/'LLRB': corrupt lossless data ({exc})") from exc
    if params.pos != len(head):
        raise CodecError(f"chunk {chunk!r}: {len(head) - params.pos} unused bytes after the model parameters")
    out = np.empty((height, width, n_planes), dtype)
    for plane, ch in zip(planes, order):
        out[:, :, ch] = plane.reshape(height, width)
    out = out[:, :, 0] if n_planes == 1 else out
    if _pixel_crc(out) != crc:
        raise CodecError("chunks 'LLTK'/'LLRB': decoded pixels fail the CRC-32 stored in 'LLHD' (corrupt data)")
    return out


def encode_plane(plane: np.ndarray) -> bytes:
    """One uint8/uint16 plane -> self-contained bytes (for other codecs, e.g. alpha)."""
    plane = np.asarray(plane)
    if plane.ndim != 2 or plane.dtype not in (np.uint8, np.uint16):
        raise ValueError("encode_plane wants a 2-D uint8 or uint16 array")
    head, tokens, raw = _encode_stack(plane, plane.dtype.itemsize * 8, (0,))
    return struct.pack("<II", len(head), len(tokens)) + head + tokens + raw


def decode_plane(data: bytes, height: int, width: int, dtype) -> np.ndarray:
    """Inverse of encode_plane; CodecError (an OSError) on corrupt data."""
    dtype = np.dtype(dtype)
    if len(data) < 8:
        raise CodecError("lossless plane: data too short")
    n_head, n_tokens = struct.unpack_from("<II", data)
    if 8 + n_head + n_tokens > len(data):
        raise CodecError("lossless plane: section lengths exceed the data")
    head = data[8 : 8 + n_head]
    tokens = data[8 + n_head : 8 + n_head + n_tokens]
    raw = data[8 + n_head + n_tokens :]
    return _decode_stack(head, tokens, raw, height, width, dtype.itemsize * 8, (0,), dtype, "lossless plane")


class LosslessCodec(Codec):
    name = "lossless"
    version = 1
    modes = ("L", "RGB", "RGBA", "I;16")
    chunk_specs = (
        ChunkSpec("LLHD", "format version, plane count, bit depth, channel order, CRC-32 of the pixels, model weights (varints)"),
        ChunkSpec("LLTK", "range-coded residual tokens, all planes and passes (u32 little-endian words)"),
        ChunkSpec("LLRB", "raw low bits of large residuals, MSB first"),
    )
    options = {}
    lossless = True
    bench_points = ({},)

    def encode(self, pixels, mode, opts):
        bits, order = _LAYOUT[mode]
        pixels = np.asarray(pixels, dtype=np.uint16 if bits == 16 else np.uint8)
        head, tokens, raw = _encode_stack(pixels, bits, order)
        return Encoded(chunks=[("LLHD", head), ("LLTK", tokens), ("LLRB", raw)])

    def decode(self, header: Header, chunks):
        if header.mode not in _LAYOUT:
            raise CodecError(f"lossless: unsupported mode {header.mode!r}")
        found = [t for t, _ in chunks if t in _CHUNKS]
        if found != list(_CHUNKS):
            raise CodecError(f"lossless: expected chunks {', '.join(_CHUNKS)} once each in that order, found {found}")
        data = {t: d for t, d in chunks if t in _CHUNKS}
        bits, order = _LAYOUT[header.mode]
        dtype = np.uint16 if bits == 16 else np.uint8
        return _decode_stack(data["LLHD"], data["LLTK"], data["LLRB"], header.height, header.width, bits, order, dtype, "LLHD")

    def describe(self, header, chunks):
        return {"lossless_bytes": sum(len(d) for t, d in chunks if t in _CHUNKS)}
