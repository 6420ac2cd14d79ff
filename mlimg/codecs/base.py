"""The interface every compression method implements.

A codec turns a numpy array into chunks and back. It never sees Pillow objects
and never touches file framing (signature, lengths, CRCs): that is the
container's job. The plugin glues the two together.

Pixel arrays:
  mode "L"     -> (H, W)    uint8
  mode "I;16"  -> (H, W)    uint16
  mode "RGB"   -> (H, W, 3) uint8
  mode "RGBA"  -> (H, W, 4) uint8
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


# Samples per pixel of each supported mode (the array layouts in the module docstring).
CHANNELS = {"L": 1, "RGB": 3, "RGBA": 4, "I;16": 1}


def pixel_shape(mode: str, width: int, height: int) -> tuple[int, ...]:
    """The numpy shape of a mode's pixel array: (H, W) for one channel, else (H, W, C)."""
    channels = CHANNELS[mode]
    return (height, width) if channels == 1 else (height, width, channels)


@dataclass(frozen=True)
class ChunkSpec:
    """One chunk type a codec owns: its 4-letter name and payload layout (for the spec)."""

    type: str  # 4 ASCII letters; an upper-case first letter means critical
    layout: str  # one-line description of the payload, mirrored in spec/MLIMG.md

    @property
    def critical(self) -> bool:
        return self.type[0].isupper()


@dataclass(frozen=True)
class Option:
    """A save option: its default, a validator and a sentence for error messages."""

    default: Any
    check: Callable[[Any], Any]  # returns the normalised value or raises ValueError
    valid: str  # human-readable list of valid values, e.g. "2..256 or 'auto'"


def int_in(lo: int, hi: int, allow_none: bool = False) -> Callable[[Any], Any]:
    """Option check: an integer (not a bool) in lo..hi, or None when allowed."""

    def check(v):
        if v is None and allow_none:
            return None
        if isinstance(v, bool) or int(v) != v or not lo <= int(v) <= hi:
            raise ValueError(v)
        return int(v)

    return check


def one_of(*choices) -> Callable[[Any], Any]:
    """Option check: one of the given values."""

    def check(v):
        if v not in choices:
            raise ValueError(v)
        return v

    return check


def boolean(v) -> bool:
    """Option check: True/False (0/1 accepted, as the CLI's k=v parsing may give)."""
    if v in (True, False, 0, 1):
        return bool(v)
    raise ValueError(v)


def optional_str(v):
    """Option check: None or a string (e.g. a model id)."""
    if v is not None and not isinstance(v, str):
        raise ValueError(v)
    return v


@dataclass
class Encoded:
    """What encode() returns."""

    chunks: list[tuple[str, bytes]]  # codec chunks in file order (type, payload)
    info: dict[str, Any] = field(default_factory=dict)  # goes to im.info after save
    model: tuple[str, bytes] | None = None  # (model id, sha256 of weights) for learned codecs
    # The pixels a decoder of these chunks makes, computed from what the encoder already knows
    # (the loop filter fits to them); None: the plugin decodes the chunks.
    reconstruct: Callable[[], Any] | None = None  # () -> uint8 pixels as decode() returns them


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    mode: str
    method: str
    method_version: int


class CodecError(OSError):
    """A codec found its chunks inconsistent or corrupt (message names the chunk)."""


class Codec:
    """Base class. Subclasses set the class attributes and implement encode/decode."""

    name: str = ""
    version: int = 1
    modes: tuple[str, ...] = ("L", "RGB", "RGBA")
    chunk_specs: tuple[ChunkSpec, ...] = ()
    options: dict[str, Option] = {}
    # Learned codecs: the model id they need; plugin writes/validates the MODL chunk.
    needs_model: bool = False
    # True where the encoder's choices come from float linear algebra (LAPACK eigenvectors,
    # k-means, BLAS sums) whose last bits differ between CPUs: its files may differ between
    # machines, while any file decodes identically everywhere (fixturegen.compare_trees).
    float_encoder: bool = False
    # True for methods that reproduce pixels exactly (benchmarked against PNG/WebP/JXL lossless).
    lossless: bool = False
    # The container's adaptive loop filter (fLTR; plugin save option loop_filter=) when the
    # save call does not choose: "auto" (written when it pays) or False.
    loop_filter_default: str | bool = False
    # Save-option sets that trace this method's rate-distortion curve in `mlimg bench`,
    # lowest rate first. Every lossy codec has a "quality" option (1..100, monotone in rate).
    bench_points: tuple[dict[str, Any], ...] = tuple({"quality": q} for q in (5, 15, 30, 50, 70, 85, 95))

    def validate_options(self, mode: str, opts: dict[str, Any]) -> dict[str, Any]:
        """Fill defaults, normalise values; ValueError names the valid choices."""
        if mode not in self.modes:
            raise ValueError(
                f"method {self.name!r} does not support mode {mode!r}; valid modes: {', '.join(self.modes)}"
            )
        unknown = sorted(set(opts) - set(self.options))
        if unknown:
            valid = ", ".join(sorted(self.options)) or "(none)"
            raise ValueError(f"unknown option(s) {', '.join(unknown)} for method {self.name!r}; valid options: {valid}")
        out = {}
        for key, opt in self.options.items():
            value = opts.get(key, opt.default)
            try:
                out[key] = opt.check(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"invalid {key}={value!r} for method {self.name!r}: valid is {opt.valid}") from exc
        return out

    def encode(self, pixels, mode: str, opts: dict[str, Any]) -> Encoded:  # pragma: no cover - interface
        raise NotImplementedError

    def decode(self, header: Header, chunks: list[tuple[str, bytes]], **decode_opts):  # pragma: no cover
        """Return the pixel array for header.mode. Raise CodecError (an OSError) on corrupt data."""
        raise NotImplementedError

    def bench_report(self, images: list) -> str | None:
        """Optional method-specific Markdown section for `mlimg bench` (e.g. an ablation)."""
        return None

    def describe(self, header: Header, chunks: list[tuple[str, bytes]]) -> dict[str, Any]:
        """Cheap facts for im.info / `mlimg info` without decoding pixels (e.g. palette size)."""
        return {}

    def draft(self, header: Header, chunks: list[tuple[str, bytes]], size: tuple[int, int]) -> tuple[dict[str, Any], int] | None:
        """Pillow's draft(): a cheaper decode for an image of at least `size` (w, h).

        Returns (decode options, scale): the plugin decodes with those options and box-averages
        the pixels by `scale` (2, 4 or 8). None (the default): this method has no cheaper decode.
        """
        return None
