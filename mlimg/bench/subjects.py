"""What `mlimg bench` measures: mlimg methods and the anchor codecs, behind one interface.

A subject encodes an RGB Pillow image at one rate point (a dict of parameters)
to bytes, and decodes those bytes back to an (H, W, 3) uint8 array. mlimg
methods go through the public Pillow API exactly as users call it; anchors use
Pillow's own plugins (JPEG, WebP, AVIF, JPEG 2000, PNG) or imagecodecs (JPEG XL).

Subjects are rebuilt by name inside worker processes (`build`), so only names
and parameter dicts cross process boundaries.
"""
from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

# Default lossy anchors and the extra ones added when a method needs them.
DEFAULT_ANCHORS = ("jpeg", "webp", "avif", "jpeg2000", "jxl")
PALETTE_ANCHOR = "png-palette"  # compared with the kmeans method at equal palette size
LOSSLESS_ANCHORS = ("png", "webp-lossless", "jxl-lossless")

# Save-option names a palette method may use for its number of colours.
PALETTE_SIZE_KEYS = ("k", "colors", "n_colors", "palette_size", "palette")


def _pillow_bytes(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


def _pillow_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return np.asarray(im.convert("RGB") if im.mode != "RGB" else im)


def point_label(params: dict[str, Any]) -> str:
    """Short human-readable name of a rate point, e.g. 'quality=50'."""
    return ",".join(f"{k}={v}" for k, v in params.items()) or "default"


class Subject:
    """One codec under test. Subclasses set the attributes and implement encode/decode."""

    name: str = ""
    label: str = ""  # human-readable, shown in tables and plots
    kind: str = "anchor"  # "anchor" or "method"
    lossless: bool = False
    points: tuple[dict[str, Any], ...] = ()  # rate points, lowest rate first

    def unavailable(self) -> str | None:
        """Why this subject cannot run here (e.g. a missing optional package), else None."""
        return None

    def quality_points(self, qualities: list[int]) -> tuple[dict[str, Any], ...] | None:
        """Rate points for a user-given quality list, or None if this subject has no quality knob."""
        return None

    def encode(self, im: Image.Image, params: dict[str, Any]) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    def decode(self, data: bytes) -> np.ndarray:
        return _pillow_pixels(data)

    def describe(self) -> str:
        return self.label


class PillowAnchor(Subject):
    """A Pillow format swept over one save parameter; fixed parameters are added to every point."""

    def __init__(self, name, label, fmt, points, fixed=None, quality_key=None, feature=None):
        self.name, self.label, self.fmt = name, label, fmt
        self.points = tuple(points)
        self.fixed = dict(fixed or {})
        self.quality_key = quality_key
        self.feature = feature

    def unavailable(self) -> str | None:
        if self.feature:
            from PIL import features

            if not features.check(self.feature):
                return f"Pillow was built without {self.feature}"
        return None

    def quality_points(self, qualities):
        if self.quality_key is None:
            return None
        return tuple({self.quality_key: int(q)} for q in qualities)

    def encode(self, im, params):
        return _pillow_bytes(im, self.fmt, **self.fixed, **params)


class Jpeg2000Anchor(PillowAnchor):
    """OpenJPEG through Pillow: 9/7 wavelet, RGB->YCbCr transform (mct=1), swept by target bpp."""

    def __init__(self):
        bpps = (0.1, 0.15, 0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
        super().__init__(
            "jpeg2000", "JPEG 2000 (Pillow/OpenJPEG, 9/7, YCbCr)", "JPEG2000",
            [{"bpp": b} for b in bpps], feature="jpg_2000",
        )

    def encode(self, im, params):
        # OpenJPEG's rate is the ratio to the raw size (8 bits per sample).
        ratio = 8.0 * len(im.getbands()) / params["bpp"]
        # mct=1: without the colour transform Pillow codes R, G, B separately (~4 dB worse at 1 bpp).
        mct = 1 if im.mode == "RGB" else 0
        return _pillow_bytes(im, "JPEG2000", quality_mode="rates", quality_layers=[ratio], irreversible=True, mct=mct)


class PaletteAnchor(Subject):
    """Pillow quantize(k) (median cut) saved as an optimised palette PNG."""

    name, kind = PALETTE_ANCHOR, "anchor"
    label = "PNG palette (Pillow quantize + optimize)"
    points = tuple({"k": k} for k in (16, 64, 256))

    def encode(self, im, params):
        return _pillow_bytes(im.quantize(colors=int(params["k"])), "PNG", optimize=True)


def _imagecodecs_jxl():
    try:
        import imagecodecs
    except ImportError:
        return None
    jxl = getattr(imagecodecs, "JPEGXL", None)
    return imagecodecs if jxl is not None and jxl.available else None


class JxlAnchor(Subject):
    """libjxl through imagecodecs (optional extra `mlimg[jxl]`), effort 7, swept by distance."""

    def __init__(self, lossless: bool):
        self.lossless = lossless
        self.name = "jxl-lossless" if lossless else "jxl"
        self.label = "JPEG XL lossless (libjxl, effort 7)" if lossless else "JPEG XL (libjxl, effort 7)"
        distances = (25.0, 15.0, 10.0, 7.0, 5.0, 3.5, 2.5, 1.8, 1.2, 0.8, 0.5)
        self.points = ({"lossless": True},) if lossless else tuple({"distance": d} for d in distances)

    def unavailable(self):
        if _imagecodecs_jxl() is None:
            return "imagecodecs with JPEG XL support is not installed (pip install 'mlimg[jxl]')"
        return None

    def quality_points(self, qualities):
        # imagecodecs maps level (quality 0..100) to a butteraugli distance like cjxl -q.
        return None if self.lossless else tuple({"level": int(q)} for q in qualities)

    def encode(self, im, params):
        return bytes(_imagecodecs_jxl().jpegxl_encode(np.asarray(im), effort=7, **params))

    def decode(self, data):
        return np.asarray(_imagecodecs_jxl().jpegxl_decode(data))


def parse_variant(name: str) -> tuple[str, dict[str, Any]]:
    """'gmm:refine=20' -> ('gmm', {'refine': 20}): a method with fixed save options added to
    every rate point (numbers are parsed as int or float, anything else stays a string)."""
    method, *settings = name.split(":")
    fixed: dict[str, Any] = {}
    for item in settings:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"method variant {name!r}: expected METHOD:OPTION=VALUE[:OPTION=VALUE...]")
        for cast in (int, float, str):
            try:
                fixed[key] = cast(text)
                break
            except ValueError:
                continue
    return method, fixed


def check_variant(name: str) -> None:
    """ValueError (listing the valid values) for a variant whose options the method rejects."""
    from .. import codecs

    method, fixed = parse_variant(name)
    if fixed:
        codec = codecs.get(method)
        codec.validate_options("RGB", fixed)  # the bench images are RGB


class MlimgMethod(Subject):
    """An mlimg method, saved and opened through the registered Pillow plugin; a variant name
    such as 'gmm:refine=20' adds fixed save options to every rate point."""

    kind = "method"

    def __init__(self, name: str):
        from .. import codecs

        method, self.fixed = parse_variant(name)
        self.codec = codecs.get(method)
        self.method = method
        self.name = name
        self.label = f"mlimg {method} (v{self.codec.version})" + "".join(f", {k}={v}" for k, v in self.fixed.items())
        self.lossless = bool(self.codec.lossless)
        self.points = tuple(dict(p) for p in self.codec.bench_points) or ({},)

    def quality_points(self, qualities):
        if self.lossless or "quality" not in self.codec.options:
            return None
        return tuple({"quality": int(q)} for q in qualities)

    def encode(self, im, params):
        return _pillow_bytes(im, "MLIMG", method=self.method, **self.fixed, **params)


def _anchor_factories():
    return {
        "jpeg": lambda: PillowAnchor(
            "jpeg", "JPEG (Pillow libjpeg, 4:2:0)", "JPEG",
            [{"quality": q} for q in (3, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)],
            quality_key="quality",
        ),
        "webp": lambda: PillowAnchor(
            "webp", "WebP (Pillow libwebp, method 4)", "WEBP",
            [{"quality": q} for q in (0, 5, 10, 20, 30, 45, 60, 75, 85, 92, 96)],
            quality_key="quality", feature="webp",
        ),
        "avif": lambda: PillowAnchor(
            "avif", "AVIF (Pillow libavif, speed 6, 4:2:0)", "AVIF",
            [{"quality": q} for q in (5, 15, 25, 35, 45, 55, 65, 75, 85, 90)],
            quality_key="quality", feature="avif",
        ),
        "jpeg2000": Jpeg2000Anchor,
        "jxl": lambda: JxlAnchor(lossless=False),
        PALETTE_ANCHOR: PaletteAnchor,
        "png": lambda: PillowAnchor("png", "PNG (Pillow, optimize=True)", "PNG", [{}], fixed={"optimize": True}),
        "webp-lossless": lambda: PillowAnchor(
            # quality (= effort in lossless mode) 100 is ~20x slower than 80 for ~0.1 % smaller files.
            "webp-lossless", "WebP lossless (method 6)", "WEBP", [{}],
            fixed={"lossless": True, "method": 6}, feature="webp",
        ),
        "jxl-lossless": lambda: JxlAnchor(lossless=True),
    }


def anchor_names() -> list[str]:
    return list(_anchor_factories())


def method_names() -> list[str]:
    """Every registered mlimg method except 'raw' (which is not compression)."""
    from .. import codecs

    return [n for n in codecs.names() if n != "raw"]


def _mark_lossless(subject: Subject) -> Subject:
    if subject.name in LOSSLESS_ANCHORS:
        subject.lossless = True
    return subject


_cache: dict[str, Subject] = {}


def build(name: str) -> Subject:
    """The subject called name: an anchor name or an mlimg method name (cached per process)."""
    if name not in _cache:
        factories = _anchor_factories()
        if name in factories:
            _cache[name] = _mark_lossless(factories[name]())
        else:
            _cache[name] = MlimgMethod(name)
    return _cache[name]


def palette_size(params: dict[str, Any]) -> int | None:
    """The palette size a method's rate point asks for, if it names one."""
    for key in PALETTE_SIZE_KEYS:
        value = params.get(key)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return int(value)
    return None
