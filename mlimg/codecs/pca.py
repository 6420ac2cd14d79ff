"""The `pca` method: principal components fitted to each image (spec/methods/pca.md).

mode="blocks" (default): per-image KLT over B x B patches in YCbCr, a transform
coder (pca_blocks). mode="rows": the source documents' row-PCA per channel
(pca_rows). Both store everything they need (bases, means, coefficients) as
integers in range-coded chunks (pca_coding). Alpha goes to an ALPH chunk (alpha.py).

Chunks, in file order: PHDR (parameters), PBAS (blocks: bases), PCOF (coefficients;
rows: means, components and coefficients), ALPH (RGBA only).
"""
from __future__ import annotations

import struct

import numpy as np

from .alpha import ALPHA_CHUNK, decode_alpha, encode_alpha
from .base import ChunkSpec, Codec, CodecError, Encoded, Header, Option, int_in, one_of

_BLOCKS, _ROWS = 0, 1
_BLOCK_HDR = struct.Struct(">BBBBBHHB")  # mode, block, 4:2:0?, full basis?, precision, steps, offset
_ROWS_HDR = struct.Struct(">BH")  # mode, quantiser step (1/16 units)


def _variance(v):
    if v is None:
        return None
    if isinstance(v, bool) or not 0.0 < float(v) < 1.0:
        raise ValueError(v)
    return float(v)


def _block(v):
    if isinstance(v, bool) or v not in (8, 16):
        raise ValueError(v)
    return int(v)


class PCACodec(Codec):
    float_encoder = True  # LAPACK eigenvectors of float sums pick the bases
    name = "pca"
    version = 1
    modes = ("L", "RGB", "RGBA")
    chunk_specs = (
        ChunkSpec("PHDR", "pca parameters: mode (blocks/rows), block size, subsampling, basis kind, steps, components per plane"),
        ChunkSpec("PBAS", "blocks mode: quantised KLT bases per plane group, range-coded"),
        ChunkSpec("PCOF", "quantised coefficients (rows mode: also mean rows and components), range-coded with context tables"),
        ALPHA_CHUNK,
    )
    options = {
        "mode": Option("blocks", one_of("blocks", "rows"), "'blocks' or 'rows'"),
        "quality": Option(75, int_in(1, 100), "an integer 1..100"),
        "block": Option(8, _block, "8 or 16 (blocks mode)"),
        "subsampling": Option("auto", one_of("auto", "4:2:0", "4:4:4"),
                              "'auto' (4:4:4 from quality 80), '4:2:0' or '4:4:4' (blocks mode)"),
        "basis": Option("separable", one_of("separable", "full"), "'separable' or 'full' (blocks mode)"),
        "variance": Option(None, _variance, "None (from quality) or a number 0 < v < 1 (rows mode)"),
    }
    loop_filter_default = "auto"  # fLTR: +0.5-0.9 dB at 0.15-1.5 bpp on Kodak (README "Loop filter")
    bench_points = tuple({"quality": q} for q in (8, 20, 35, 50, 65, 75, 85))  # ~0.15..3 bpp on Kodak

    # ------------------------------------------------------------------ encode
    def encode(self, pixels, mode, opts):
        from . import pca_blocks, pca_rows

        pixels = np.asarray(pixels, dtype=np.uint8)
        colour = pixels[..., :3] if mode == "RGBA" else pixels
        colour_mode = "RGB" if mode == "RGBA" else mode
        if opts["mode"] == "rows":
            variance, step16 = pca_rows.params_for_quality(opts["quality"])
            if opts["variance"] is not None:
                variance = opts["variance"]
            channels = [colour] if colour_mode == "L" else [colour[..., i] for i in range(3)]
            payload, counts = pca_rows.encode_channels(channels, variance, step16)
            head = _ROWS_HDR.pack(_ROWS, step16) + struct.pack(f">{len(counts)}H", *counts)
            chunks = [("PHDR", head), ("PCOF", payload)]
            info = {"pca_mode": "rows", "pca_variance": variance, "pca_components": counts}
        else:
            sub = opts["subsampling"]
            if sub == "auto":
                sub = "4:4:4" if opts["quality"] >= pca_blocks.AUTO_444_QUALITY else "4:2:0"
            params = pca_blocks.params_for_quality(
                opts["quality"], opts["block"], sub == "4:2:0" and colour_mode != "L", opts["basis"] == "full")
            planes = pca_blocks.to_planes(colour, colour_mode, params.subsample)
            basis, coef, keep = pca_blocks.encode_planes(planes, params)
            head = _BLOCK_HDR.pack(_BLOCKS, params.block, params.subsample, params.full_basis,
                                   params.precision, *params.step16, params.recon16)
            head += struct.pack(f">{len(keep)}H", *keep)
            chunks = [("PHDR", head), ("PBAS", basis), ("PCOF", coef)]
            info = {"pca_mode": "blocks", "pca_components": keep}
        if mode == "RGBA":
            chunks.append(("ALPH", encode_alpha(pixels[..., 3])))
        return Encoded(chunks=chunks, info=info)

    # ------------------------------------------------------------------ decode
    def decode(self, header: Header, chunks):
        from . import pca_blocks, pca_rows
        from .pca_coding import CodingError

        found = _collect(header, chunks)
        h, w = header.height, header.width
        colour_mode = "RGB" if header.mode == "RGBA" else header.mode
        head = _parse_header(found["PHDR"], colour_mode)
        try:
            if head["mode"] == _ROWS:
                chans = pca_rows.decode_channels(found["PCOF"], h, w, head["counts"], head["step16"])
                out = chans[0] if colour_mode == "L" else np.stack(chans, axis=-1)
            else:
                params = head["params"]
                shapes = pca_blocks.plane_shapes(h, w, colour_mode, params.subsample)
                planes = pca_blocks.decode_planes(found["PBAS"], found["PCOF"], shapes, head["counts"], params)
                out = pca_blocks.from_planes16(planes, h, w, colour_mode, params.subsample)
        except CodingError as exc:
            text = str(exc) if str(exc).startswith("chunk ") else f"chunk 'PCOF': {exc}"
            raise CodecError(f"pca: {text}") from None
        except (ValueError, IndexError, OverflowError) as exc:
            raise CodecError(f"pca: chunk 'PCOF': corrupt coefficient data ({exc})") from None
        if header.mode == "RGBA":
            alpha = decode_alpha(found["ALPH"], h, w)
            out = np.concatenate([out, alpha[:, :, None]], axis=2)
        return out

    def bench_report(self, images) -> str:
        from .pca_report import report

        return report(self, images)

    def describe(self, header: Header, chunks):
        for ctype, payload in chunks:
            if ctype == "PHDR":
                try:
                    head = _parse_header(payload, "RGB" if header.mode == "RGBA" else header.mode)
                except CodecError:
                    return {}
                info = {"pca_mode": "rows" if head["mode"] == _ROWS else "blocks",
                        "pca_components": head["counts"]}
                if head["mode"] == _BLOCKS:
                    p = head["params"]
                    info.update(pca_block=p.block, pca_subsampling="4:2:0" if p.subsample else "4:4:4",
                                pca_basis="full" if p.full_basis else "separable")
                return info
        return {}


def _collect(header: Header, chunks) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for ctype, payload in chunks:
        if ctype not in ("PHDR", "PBAS", "PCOF", "ALPH"):
            raise CodecError(f"pca: unexpected chunk {ctype!r}")
        if ctype in found:
            raise CodecError(f"pca: chunk {ctype!r} appears twice")
        found[ctype] = bytes(payload)
    needed = ["PHDR", "PCOF"] + (["ALPH"] if header.mode == "RGBA" else [])
    if "PHDR" in found and found["PHDR"][:1] == bytes([_BLOCKS]):
        needed.append("PBAS")
    for ctype in needed:
        if ctype not in found:
            raise CodecError(f"pca: chunk {ctype!r} is missing")
    if header.mode not in ("L", "RGB", "RGBA"):
        raise CodecError(f"pca: chunk 'PHDR': mode {header.mode!r} is not supported")
    return found


def _parse_header(data: bytes, colour_mode: str) -> dict:
    """Validate PHDR against the image mode; CodecError names what is wrong."""
    from .pca_blocks import BlockParams

    n_planes = 1 if colour_mode == "L" else 3
    if not data:
        raise CodecError("pca: chunk 'PHDR' is empty")
    if data[0] == _ROWS:
        if len(data) != _ROWS_HDR.size + 2 * n_planes:
            raise CodecError(f"pca: chunk 'PHDR' has {len(data)} bytes, rows mode needs {_ROWS_HDR.size + 2 * n_planes}")
        _, step16 = _ROWS_HDR.unpack_from(data)
        counts = list(struct.unpack_from(f">{n_planes}H", data, _ROWS_HDR.size))
        if step16 == 0:
            raise CodecError("pca: chunk 'PHDR': quantiser step is 0")
        return {"mode": _ROWS, "step16": step16, "counts": counts}
    if data[0] != _BLOCKS:
        raise CodecError(f"pca: chunk 'PHDR': unknown mode {data[0]}")
    if len(data) != _BLOCK_HDR.size + 2 * n_planes:
        raise CodecError(f"pca: chunk 'PHDR' has {len(data)} bytes, blocks mode needs {_BLOCK_HDR.size + 2 * n_planes}")
    _, block, sub, full, precision, s_luma, s_chroma, recon = _BLOCK_HDR.unpack_from(data)
    counts = list(struct.unpack_from(f">{n_planes}H", data, _BLOCK_HDR.size))
    problems = []
    if block not in (8, 16):
        problems.append(f"block size {block} (valid: 8, 16)")
    if sub > 1 or full > 1 or (sub and colour_mode == "L"):
        problems.append("bad subsampling/basis flag")
    if not 6 <= precision <= 10:
        problems.append(f"basis precision {precision} (valid: 6..10)")
    if s_luma == 0 or s_chroma == 0 or recon >= 16:
        problems.append("bad quantiser step or reconstruction offset")
    if problems:
        raise CodecError("pca: chunk 'PHDR': " + "; ".join(problems))
    params = BlockParams(block, bool(sub), bool(full), precision, (s_luma, s_chroma), recon)
    return {"mode": _BLOCKS, "params": params, "counts": counts}
