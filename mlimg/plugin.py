"""Pillow glue: the MLIMG open/save handlers.

save: Image.save -> _save -> codec.validate_options -> codec.encode -> container.build
open: Image.open -> MlimgImageFile._open (header, chunk bytes, CRCs; no pixels)
      -> load() -> codec.decode -> pixels

The container knows framing, codecs know pixels; this module only routes
between them and Pillow, and decides which chunk goes where.
"""
from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageFile

from . import codecs, container
from .codecs.base import Codec, Header, pixel_shape

FORMAT = "MLIMG"
MIME = "image/x-mlimg"
EXTENSION = ".mlimg"
# The method used when save() is not given one: the best general-purpose lossy codec
# we ship today (per-image KLT blocks; see the README's results).
DEFAULT_METHOD = "pca"

_RAWMODES = {"L": "L", "RGB": "RGB", "RGBA": "RGBA", "I;16": "I;16"}  # I;16 raw is little-endian
_DTYPES = {"L": np.uint8, "RGB": np.uint8, "RGBA": np.uint8, "I;16": np.uint16}
# Keyword arguments that the plugin handles itself; every other save keyword is a method option.
_RATE_KEYS = ("target_bpp", "max_bytes")
_PILLOW_KEYS = ("format",)
# Decode keywords the plugin passes itself; users may not set them in decode_options.
_RESERVED_DECODE_KEYS = ("model", "truncated")
# Save and decode keyword of the container's adaptive loop filter (fLTR, loop_filter.py).
LOOP_FILTER_KEY = "loop_filter"
LOOP_FILTER_CHOICES = ("auto", True, False)
LOOP_FILTER_MODES = ("L", "RGB", "RGBA")


def _accept(prefix: bytes) -> bool:
    return prefix[: len(container.SIGNATURE)] == container.SIGNATURE


# ---------------------------------------------------------------- reading


@dataclass
class ChunkRoles:
    """The chunks of one file sorted by who consumes them."""

    codec_chunks: list[tuple[str, bytes]] = field(default_factory=list)
    metadata: dict[str, bytes] = field(default_factory=dict)  # Pillow info key -> payload
    model: tuple[str, bytes] | None = None
    loop_filter: bytes | None = None  # the fLTR payload
    skipped: list[str] = field(default_factory=list)  # unknown ancillary chunk types


def to_codec_header(header: container.FileHeader) -> Header:
    """The part of MHDR a codec sees."""
    return Header(header.width, header.height, header.mode, header.method, header.method_version)


def codec_for(header: container.FileHeader) -> Codec:
    """The codec that decodes this file; OSError if this decoder cannot."""
    if header.method not in codecs.names():
        raise container.ContainerError(
            f"unknown method {header.method!r} in MHDR; this decoder knows: {', '.join(codecs.names())}"
        )
    try:
        codec = codecs.get(header.method)
    except ImportError as exc:
        raise OSError(f"method {header.method!r} is registered but cannot be loaded: {exc}") from exc
    if header.method_version > codec.version:
        raise container.ContainerError(
            f"method {header.method!r} version {header.method_version} is newer than this decoder supports ({codec.version})"
        )
    if header.mode not in codec.modes:
        raise container.ContainerError(f"method {header.method!r} does not support mode {header.mode!r}")
    return codec


def sort_chunks(header: container.FileHeader, chunks: list[container.RawChunk], codec: Codec) -> ChunkRoles:
    """Assign each chunk to the container or the codec; an unknown critical chunk is an error."""
    metadata_types = {t: key for key, t in container.METADATA_CHUNKS.items()}
    codec_types = {spec.type for spec in codec.chunk_specs}
    roles = ChunkRoles()
    for chunk in chunks:
        if chunk.type in metadata_types:
            roles.metadata[metadata_types[chunk.type]] = chunk.data
        elif chunk.type == "MODL":
            roles.model = container.parse_model_payload(chunk.data, chunk.offset)
        elif chunk.type == "fLTR":
            roles.loop_filter = chunk.data
        elif chunk.type in codec_types:
            roles.codec_chunks.append((chunk.type, chunk.data))
        elif container.is_critical(chunk.type):
            raise container.ContainerError(
                f"chunk {chunk.type!r} at offset {chunk.offset}: unknown critical chunk "
                f"(not a container chunk and not one of method {header.method!r}'s)"
            )
        else:
            roles.skipped.append(chunk.type)
    if codec.needs_model and roles.model is None:
        raise container.ContainerError(f"method {header.method!r} needs a MODL chunk, none found")
    if not codec.needs_model and roles.model is not None:
        raise container.ContainerError(f"chunk 'MODL': method {header.method!r} uses no model")
    return roles


def accepted_decode_options(codec: Codec) -> list[str] | None:
    """Names codec.decode accepts as keywords (plugin-reserved ones excluded); None = any."""
    params = inspect.signature(codec.decode).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [n for n, p in params.items() if p.kind in kinds and n not in ("header", "chunks")]


def _check_decode_options(codec: Codec, opts: dict[str, Any]) -> None:
    reserved = sorted(set(opts) & set(_RESERVED_DECODE_KEYS))
    if reserved:
        raise ValueError(f"decode option(s) {', '.join(reserved)} are set by the plugin, not by users")
    accepted = accepted_decode_options(codec)
    if accepted is None:
        return
    unknown = sorted(set(opts) - set(accepted))
    if unknown:
        valid = ", ".join(n for n in accepted if n not in _RESERVED_DECODE_KEYS) or "(none)"
        raise ValueError(
            f"unknown decode option(s) {', '.join(unknown)} for method {codec.name!r}; valid decode options: {valid}"
        )


class MlimgImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "mlimg machine-learned image"

    def _open(self) -> None:
        assert self.fp is not None
        header, consumed = container.read_header(self.fp)
        self._size = (header.width, header.height)
        self._mode = header.mode
        # Refuse decompression bombs before reading or allocating anything the header sized.
        # (Only the error here: Pillow's open() repeats the check and issues the warning.)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image._decompression_bomb_check(self.size)
        codec = codec_for(header)
        # Chunk bytes are read now (bounded by the file's own length) so CRCs are checked and
        # info is complete at open; pixels are decoded lazily in load().
        chunks, truncated, _ = container.read_chunks(self.fp.read(), consumed, allow_truncated=True)
        roles = sort_chunks(header, chunks, codec)
        self._header = header
        self._codec = codec
        self._roles = roles
        self._truncated = truncated
        self.decode_options: dict[str, Any] = {}
        self._draft: tuple[dict[str, Any], int] | None = None  # (decode options, scale) from draft()
        self._decoded: bytes | None = None
        self.info.update(self._describe(header, chunks, roles, codec, truncated))
        self.tile = [ImageFile._Tile(FORMAT, (0, 0, *self.size), 0, (self._take_decoded, _RAWMODES[header.mode]))]

    def draft(self, mode, size):
        """Like JpegImageFile.draft: when the method has a cheaper decode for images of at
        least `size` (codec.draft), decode that and shrink by its scale. `mode` is kept."""
        if not size or self._draft is not None or not self.tile or self._decoded is not None:
            return None
        header = self._header
        plan = self._codec.draft(to_codec_header(header), list(self._roles.codec_chunks), tuple(size))
        if plan is None:
            return None
        self._draft = plan
        scale = plan[1]
        self._size = (-(-header.width // scale), -(-header.height // scale))
        self.tile = [ImageFile._Tile(FORMAT, (0, 0, *self.size), 0, self.tile[0].args)]
        return self.mode, (0, 0, header.width / scale, header.height / scale)

    def load(self):
        if self.tile and self._decoded is None:
            # Decode before Pillow allocates the image, so a corrupt file costs no pixel memory.
            self._decoded = self._decode_pixels()
        return super().load()

    def _take_decoded(self) -> bytes:
        data, self._decoded = self._decoded, None
        return data

    @staticmethod
    def _describe(header, chunks, roles, codec, truncated) -> dict[str, Any]:
        codec_header = to_codec_header(header)
        info: dict[str, Any] = {}
        try:
            info.update(codec.describe(codec_header, roles.codec_chunks))
        except Exception:  # noqa: BLE001 - describe is best effort; load() reports real problems
            pass
        info.update(
            method=header.method,
            method_version=header.method_version,
            format_version=header.version_string,
            chunks=[("MHDR", len(container.build_header_payload(header)))]
            + [(c.type, len(c.data)) for c in chunks]
            + ([] if truncated else [("MEND", 0)]),
        )
        if roles.metadata.get("exif"):
            info["exif"] = b"Exif\x00\x00" + roles.metadata["exif"]  # Pillow's convention for info["exif"]
        for key in ("icc_profile", "xmp"):
            if key in roles.metadata:
                info[key] = roles.metadata[key]
        if roles.model is not None:
            info["model_id"] = roles.model[0]
        if roles.loop_filter is not None:
            info["loop_filter"] = True
        if roles.skipped:
            info["skipped_chunks"] = list(roles.skipped)
        if truncated:
            info["truncated"] = truncated
        return info

    def _decode_pixels(self) -> bytes:
        """Run the codec and return the pixel bytes in the tile's rawmode."""
        header, codec = self._header, self._codec
        if self._truncated and not ImageFile.LOAD_TRUNCATED_IMAGES:
            raise OSError(f"image file is truncated: {self._truncated}")
        opts = dict(self.decode_options)
        use_filter = opts.pop(LOOP_FILTER_KEY, None)
        if use_filter not in (None, True, False):
            raise ValueError(f"decode option loop_filter={use_filter!r}; valid: True, False")
        # The filter was fitted to the whole image at full quality: by default it is left off
        # when the decode is anything else (a truncated file, a draft, fewer iterations, ...).
        if use_filter is None:
            use_filter = not (self._truncated or self._draft is not None or opts)
        _check_decode_options(codec, opts)
        if self._draft is not None:  # the user's own decode options win over the draft's
            opts = {**self._draft[0], **opts}
        accepted = accepted_decode_options(codec)
        if self._roles.model is not None:
            opts["model"] = self._roles.model
        if self._truncated and (accepted is None or "truncated" in accepted):
            opts["truncated"] = True
        codec_header = to_codec_header(header)
        try:
            pixels = codec.decode(codec_header, list(self._roles.codec_chunks), **opts)
        except (OSError, ValueError, MemoryError):
            raise
        except Exception as exc:  # a codec must raise CodecError; never leak IndexError & co. to users
            raise OSError(f"method {header.method!r} could not decode the file: {type(exc).__name__}: {exc}") from exc
        shape = pixel_shape(header.mode, header.width, header.height)
        pixels = np.asarray(pixels)
        if pixels.shape != shape:
            raise OSError(f"method {header.method!r} decoded shape {pixels.shape}, expected {shape}")
        if use_filter and self._roles.loop_filter is not None:
            pixels = _apply_loop_filter(pixels, header.mode, self._roles.loop_filter)
        if self._draft is not None:
            pixels = box_reduce(pixels, self._draft[1])
        if header.mode == "I;16":
            return np.ascontiguousarray(pixels, dtype="<u2").tobytes()
        return np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()


def _apply_loop_filter(pixels: np.ndarray, mode: str, payload: bytes) -> np.ndarray:
    from . import loop_filter

    if mode not in LOOP_FILTER_MODES:
        raise container.ContainerError(f"chunk 'fLTR': mode {mode} has no loop filter (only {', '.join(LOOP_FILTER_MODES)})")
    filt = loop_filter.unpack(payload, 1 if mode == "L" else 3)
    return loop_filter.apply(pixels, filt)


def box_reduce(pixels: np.ndarray, scale: int) -> np.ndarray:
    """Mean of each scale x scale block (partial blocks at the edges: of the pixels they
    have), rounded; the output is ceil(h / scale) x ceil(w / scale), like Image.reduce."""
    h, w = pixels.shape[:2]
    sums = np.add.reduceat(np.add.reduceat(pixels.astype(np.float64), np.arange(0, h, scale), axis=0),
                           np.arange(0, w, scale), axis=1)
    rows = np.minimum(scale, h - np.arange(0, h, scale))
    cols = np.minimum(scale, w - np.arange(0, w, scale))
    area = np.outer(rows, cols).reshape(rows.size, cols.size, *([1] * (pixels.ndim - 2)))
    return np.round(sums / area).astype(pixels.dtype)


class _MlimgDecoder(ImageFile.PyDecoder):
    """Hands the codec's pixels to Pillow; tile args are (pixel source, rawmode)."""

    _pulls_fd = True

    def decode(self, buffer):
        source, rawmode = self.args
        self.set_as_raw(source(), rawmode)
        return -1, 0


# ---------------------------------------------------------------- saving


def _to_supported_mode(im: Image.Image) -> Image.Image:
    """Convert Pillow modes that map losslessly onto the four mlimg modes."""
    mode = im.mode
    if mode in container.MODE_CODES:
        return im
    if mode == "1":
        return im.convert("L")
    if mode == "P":
        return im.convert("RGBA" if "transparency" in im.info else "RGB")
    if mode in ("PA", "LA"):
        return im.convert("RGBA")
    if mode == "RGBX":
        return im.convert("RGB")
    if mode in ("I", "I;16L", "I;16B", "I;16N"):
        values = np.asarray(im)
        if values.size and (values.min() < 0 or values.max() > 0xFFFF):
            raise ValueError(f"mode {mode} image has values outside 0..65535; cannot save as I;16")
        return Image.fromarray(values.astype(np.uint16))  # 2-D uint16 -> mode I;16
    raise ValueError(
        f"cannot save mode {mode!r} as MLIMG; supported modes: {', '.join(container.MODE_CODES)} "
        "(1, P, PA, LA, RGBX, I and I;16B/L are converted)"
    )


def image_pixels(im: Image.Image) -> np.ndarray:
    """Pixel array in the codec convention for an image whose mode is one of MODE_CODES."""
    return np.ascontiguousarray(np.asarray(im), dtype=_DTYPES[im.mode])


def _metadata_chunks(im: Image.Image, info: dict[str, Any]) -> list[tuple[str, bytes]]:
    """Pop exif / icc_profile / xmp from the save keywords and turn them into chunks."""
    exif = info.pop("exif", None)
    if isinstance(exif, Image.Exif):
        exif = exif.tobytes()
    icc = info.pop("icc_profile", im.info.get("icc_profile"))  # like PNG: keep the image's own profile
    xmp = info.pop("xmp", None)
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    values = {"exif": exif, "icc_profile": icc, "xmp": xmp}
    out = []
    for key, value in values.items():
        if value is None:
            continue
        if not isinstance(value, (bytes, bytearray)):
            raise ValueError(f"{key}= must be bytes" + (" or Image.Exif" if key == "exif" else ""))
        value = bytes(value)
        if key == "exif" and value.startswith(b"Exif\x00\x00"):
            value = value[6:]  # stored as the bare TIFF structure, like PNG's eXIf
        if value:  # the spec forbids empty metadata chunks
            out.append((container.METADATA_CHUNKS[key], value))
    return out


def _byte_budget(width: int, height: int, target_bpp, max_bytes) -> int | None:
    if target_bpp is not None and max_bytes is not None:
        raise ValueError("give either target_bpp= or max_bytes=, not both")
    if target_bpp is not None:
        if isinstance(target_bpp, bool) or not isinstance(target_bpp, (int, float)) or not target_bpp > 0:
            raise ValueError(f"target_bpp must be a positive number, got {target_bpp!r}")
        return int(target_bpp * width * height / 8)
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        return max_bytes
    return None


def loop_filter_setting(codec: Codec, mode: str, value) -> str | bool:
    """The save option loop_filter= resolved for this method and mode; ValueError if invalid."""
    if value is None:
        return codec.loop_filter_default if mode in LOOP_FILTER_MODES else False
    if not any(value is c or (isinstance(c, str) and value == c) for c in LOOP_FILTER_CHOICES):
        raise ValueError(f"invalid loop_filter={value!r}: valid is None (the method's default), 'auto', True or False")
    if value is not False and (codec.lossless or mode not in LOOP_FILTER_MODES):
        raise ValueError(f"loop_filter={value!r}: the loop filter applies to lossy methods in modes "
                         f"{', '.join(LOOP_FILTER_MODES)}; method {codec.name!r}, mode {mode}")
    return value


def _loop_filter_chunk(codec: Codec, pixels: np.ndarray, mode: str, header: container.FileHeader,
                       encoded, file_bytes: int, setting) -> tuple[bytes | None, dict[str, Any]]:
    """Fit the filter to what a decoder makes of the encoded chunks (the encoder's reconstruction
    where the codec gives one, else a decode); None: it does not pay."""
    from . import loop_filter

    if encoded.reconstruct is not None:
        decoded = np.asarray(encoded.reconstruct())
    else:
        opts = {"model": encoded.model} if codec.needs_model else {}
        decoded = np.asarray(codec.decode(to_codec_header(header), list(encoded.chunks), **opts))
    choice = loop_filter.choose(decoded, pixels, file_bytes, force=setting is True)
    if choice is None:
        return None, {"loop_filter": None}
    filt = choice.filt
    return choice.payload, {"loop_filter": {"classes": f"{filt.activity_classes}x{filt.direction_classes}",
                                            "bytes": len(choice.payload), "gain_db": round(choice.gain_db, 3)}}


def encode_file(pixels: np.ndarray, mode: str, method: str, options: dict[str, Any],
                metadata: list[tuple[str, bytes]] = (), loop_filter=None) -> tuple[bytes, dict[str, Any]]:
    """Encode pixels with a method into a complete .mlimg file; returns (bytes, codec info).

    loop_filter: None (the method's default), "auto" (an fLTR chunk when it pays), True
    (always one), False (none)."""
    codec = codecs.get(method)
    setting = loop_filter_setting(codec, mode, loop_filter)
    opts = codec.validate_options(mode, options)
    encoded = codec.encode(pixels, mode, opts)
    owned = {spec.type for spec in codec.chunk_specs}
    stray = sorted({chunk_type for chunk_type, _ in encoded.chunks} - owned)
    if stray:  # a decoder would refuse such a file, so never write it
        raise RuntimeError(f"method {method!r} produced chunk(s) {', '.join(stray)} missing from its chunk_specs")
    if codec.needs_model and encoded.model is None:
        raise ValueError(f"method {method!r} needs a model but its encoder returned none")
    height, width = pixels.shape[:2]
    header = container.FileHeader(width, height, mode, method, codec.version)
    chunks = []
    if encoded.model is not None:
        chunks.append(("MODL", container.build_model_payload(*encoded.model)))
    chunks.extend(metadata)
    chunks.extend(encoded.chunks)
    data = container.build(header, chunks)
    info = {**encoded.info, "loop_filter": None}
    if setting:
        payload, filter_info = _loop_filter_chunk(codec, pixels, mode, header, encoded, len(data), setting)
        info.update(filter_info)
        if payload is not None:  # written after the method chunks, so a truncated file loses it first
            header = container.FileHeader(width, height, mode, method, codec.version, version=container.LOOP_FILTER_VERSION)
            data = container.build(header, [*chunks, ("fLTR", payload)])
    return data, info


def _encode_within(pixels, mode, method, options, metadata, budget: int, loop_filter=None):
    """Highest integer quality 1..100 whose whole file fits the byte budget (bisection)."""
    codec = codecs.get(method)
    if "quality" not in codec.options:
        raise ValueError(f"method {method!r} has no quality option, so target_bpp=/max_bytes= cannot be used")
    if "quality" in options:
        raise ValueError("quality= cannot be combined with target_bpp=/max_bytes= (they choose it)")
    results: dict[int, tuple[bytes, dict]] = {}

    def at(quality: int) -> tuple[bytes, dict]:
        if quality not in results:
            results[quality] = encode_file(pixels, mode, method, {**options, "quality": quality}, metadata, loop_filter)
        return results[quality]

    lo, hi = 1, 100
    if len(at(lo)[0]) > budget:
        data, info = at(lo)
        return data, info, {"quality": 1, "rate_note": f"even quality 1 needs {len(data)} bytes > budget {budget}"}
    while lo < hi:  # invariant: at(lo) fits
        mid = (lo + hi + 1) // 2
        if len(at(mid)[0]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    data, info = at(lo)
    return data, info, {"quality": lo}


def _save(im: Image.Image, fp, filename) -> None:
    info = dict(im.encoderinfo)
    method = info.pop("method", None)
    # lossless=True is Pillow's spelling (WebP, AVIF): a shortcut for method="lossless".
    if info.pop("lossless", False):
        if method not in (None, "lossless"):
            raise ValueError(f"lossless=True conflicts with method={method!r}; use one of them")
        method = "lossless"
    method = method or DEFAULT_METHOD
    codecs.get(method)  # ValueError naming the valid methods
    budget_keys = {k: info.pop(k, None) for k in _RATE_KEYS}
    loop_filter = info.pop(LOOP_FILTER_KEY, None)
    for key in _PILLOW_KEYS:
        info.pop(key, None)
    if not (1 <= im.width <= container.MAX_DIMENSION and 1 <= im.height <= container.MAX_DIMENSION):
        raise ValueError(f"image size {im.width}x{im.height} is outside 1..{container.MAX_DIMENSION}")
    metadata = _metadata_chunks(im, info)
    converted = _to_supported_mode(im)
    pixels = image_pixels(converted)
    budget = _byte_budget(converted.width, converted.height, **budget_keys)
    if budget is None:
        data, codec_info = encode_file(pixels, converted.mode, method, info, metadata, loop_filter)
        rate = {}
    else:
        data, codec_info, rate = _encode_within(pixels, converted.mode, method, info, metadata, budget, loop_filter)
    fp.write(data)
    # What the encoder decided (palette size, chosen quality...) is visible on the saved image.
    im.info.update(codec_info)
    im.info["mlimg_save"] = {
        "method": method,
        "bytes": len(data),
        "bpp": 8 * len(data) / (converted.width * converted.height),
        **rate,
    }


# ---------------------------------------------------------------- registration


def register() -> None:
    """Register the MLIMG format with Pillow; calling it again changes nothing."""
    Image.register_open(FORMAT, MlimgImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, EXTENSION)
    Image.register_mime(FORMAT, MIME)
    Image.register_decoder(FORMAT, _MlimgDecoder)
