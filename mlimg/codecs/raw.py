"""The `raw` reference method: uncompressed pixels in RAWD chunks.

It exists so the whole save/open path can be tested without any learned or
entropy-coded method, and as the simplest example of the codec interface.
Layout (spec/methods/raw.md): the pixel bytes row-major with interleaved
channels, I;16 samples little-endian, split over one or more consecutive RAWD
chunks whose payloads are concatenated.
"""
from __future__ import annotations

import numpy as np

from .base import CHANNELS, ChunkSpec, Codec, CodecError, Encoded, pixel_shape

_DTYPES = {"L": np.uint8, "RGB": np.uint8, "RGBA": np.uint8, "I;16": np.dtype("<u2")}
_SPLIT = 1 << 30  # payload bytes per RAWD chunk; well under the container's chunk limit


class RawCodec(Codec):
    name = "raw"
    version = 1
    modes = ("L", "RGB", "RGBA", "I;16")
    chunk_specs = (
        ChunkSpec("RAWD", "pixel bytes, row-major, channels interleaved, I;16 little-endian; split over consecutive RAWD chunks"),
    )
    options = {}
    lossless = True
    bench_points = ({},)

    def encode(self, pixels, mode, opts):
        data = np.ascontiguousarray(pixels, dtype=_DTYPES[mode]).tobytes()
        pieces = [data[i : i + _SPLIT] for i in range(0, len(data), _SPLIT)] or [b""]
        return Encoded(chunks=[("RAWD", piece) for piece in pieces])

    def decode(self, header, chunks, truncated=False):
        if header.mode not in CHANNELS:
            raise CodecError(f"raw: unsupported mode {header.mode!r}")
        shape = pixel_shape(header.mode, header.width, header.height)
        itemsize = np.dtype(_DTYPES[header.mode]).itemsize
        expected = int(np.prod(shape)) * itemsize
        payloads = [data for chunk_type, data in chunks if chunk_type == "RAWD"]
        found = sum(len(p) for p in payloads)  # checked before joining: never allocate from a bad size
        if found != expected:
            why = " (file truncated)" if truncated else ""
            raise CodecError(
                f"chunk 'RAWD': {found} pixel bytes, expected {expected} for {header.width}x{header.height} {header.mode}{why}"
            )
        pixels = np.frombuffer(b"".join(payloads), dtype=_DTYPES[header.mode]).reshape(shape)
        return pixels.astype(np.uint16 if header.mode == "I;16" else np.uint8)  # native byte order

    def describe(self, header, chunks):
        return {"raw_chunks": sum(1 for chunk_type, _ in chunks if chunk_type == "RAWD")}
