"""Rebuild the conformance fixtures deterministically:  python -m mlimg.fixturegen fixtures/

    python -m mlimg.fixturegen fixtures/            regenerate valid/ invalid/ compat/ (README.md is kept)
    python -m mlimg.fixturegen --check fixtures/    regenerate into a temporary folder and list what differs

valid/ cases come from every method registered in mlimg.codecs at run time, so
running it again after a method lands adds that method's cases. Which cases a
method gets is declared in one table, METHOD_CASES. Learned methods whose weights
are not installed are skipped with a note (and listed in fixtures/skipped.json).

The images are synthesised from seeds (mlimg.fixture_images), the files are
written by the public Pillow save path, and expected.json is measured by
decoding them with this package.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import re
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import codecs
from .fixture_defects import EXIF, ICC, XMP, base_pixels, compat_cases, invalid_cases
from .fixture_images import synth_pixels

GENERATED_DIRS = ("valid", "invalid", "compat")
SKIPPED_FILE = "skipped.json"

ODD_SIZES = ((1, 1), (1, 23), (23, 1), (17, 13), (257, 3))  # width x height
LEARNED_SIZES = ((1, 1), (23, 1), (17, 13))  # learned decoders are slow on CPU: fewer, smaller cases
LARGE_SIZE = (300, 200)
LEARNED_LARGE_SIZE = (96, 64)
OPTION_SIZE = (33, 29)  # option-family and metadata cases

# Methods whose decoder is integer-exact: fixtures carry the sha256 of the decoded pixels.
# Everything else (float networks) gets rmse + peak bounds against reference.png.
EXACT_METHODS = ("raw", "lossless", "kmeans", "vq", "pca")
FLOAT_BOUNDS = {"max_rmse": 1.0, "max_peak": 8}  # cross-machine float drift allowed for learned decoders


@dataclass(frozen=True)
class MethodCases:
    """The option families a method's fixtures cover (each at OPTION_SIZE, RGB where supported)."""

    option_sets: tuple[dict[str, Any], ...] = ()
    large_options: dict[str, Any] = field(default_factory=dict)
    large_size: tuple[int, int] = LARGE_SIZE
    older_versions: tuple[int, ...] = ()  # method versions decoders must still read (one case each)


_QUALITY_SPAN = ({"quality": 5}, {"quality": 95})
_FILTER_ON = ({"loop_filter": True},)  # an fLTR chunk (format 1.1) whatever it gains
_FILTER_BOTH = ({"loop_filter": True}, {"loop_filter": False})  # methods whose default is "auto"

# The one table: per method, the option families beyond the defaults.
# A registered method missing here gets the defaults plus quality 5 and 95 if it has a quality option.
METHOD_CASES: dict[str, MethodCases] = {
    "raw": MethodCases(large_size=(97, 61)),  # uncompressed: a big one would only cost bytes
    "kmeans": MethodCases(option_sets=_QUALITY_SPAN + (
        {"k": 2}, {"k": 256}, {"k": "auto"}, {"colorspace": "lab"}, {"dither": True}, {"sample": 256},
    ) + _FILTER_ON),
    "vq": MethodCases(option_sets=_QUALITY_SPAN + (
        {"codebook": 2}, {"block": 2}, {"block": 8}, {"init": "lbg"}, {"init": "random"}, {"mean_removed": True},
    ) + _FILTER_ON),
    "pca": MethodCases(option_sets=_QUALITY_SPAN + (
        {"block": 16}, {"subsampling": "4:4:4"}, {"basis": "full"}, {"mode": "rows"},
        {"mode": "rows", "variance": 0.5},
    ) + _FILTER_ON),
    "cae": MethodCases(option_sets=_QUALITY_SPAN + _FILTER_BOTH, large_size=LEARNED_LARGE_SIZE, older_versions=(1,)),
    "gmm": MethodCases(option_sets=_QUALITY_SPAN + _FILTER_BOTH, large_size=LEARNED_LARGE_SIZE, older_versions=(1,)),
    "gan": MethodCases(option_sets=_QUALITY_SPAN, large_size=LEARNED_LARGE_SIZE, older_versions=(1,)),
    "rnn": MethodCases(option_sets=_QUALITY_SPAN + ({"adaptive": False},) + _FILTER_BOTH, large_size=LEARNED_LARGE_SIZE,
                       older_versions=(1, 2, 3)),
    "lossless": MethodCases(),
}


@dataclass(frozen=True)
class ValidCase:
    method: str
    mode: str
    size: tuple[int, int]
    options: dict[str, Any]
    metadata: bool = False
    method_version: int | None = None  # None: the current writer; else an older version's

    @property
    def name(self) -> str:
        parts = [self.method, self.mode.replace(";", ""), f"{self.size[0]}x{self.size[1]}"]
        parts += [f"{k}-{_slug(v)}" for k, v in sorted(self.options.items())]
        if self.metadata:
            parts.append("metadata")
        if self.method_version is not None:
            parts.append(f"v{self.method_version}")
        return "-".join(parts)

    @property
    def seed(self) -> int:
        """Stable per case (not Python's salted hash())."""
        return int.from_bytes(hashlib.sha256(self.name.encode()).digest()[:4], "big")


def _slug(value: Any) -> str:
    return str(value).replace(":", "").replace(".", "p").replace(" ", "")


def cases_for(method: str) -> list[ValidCase]:
    codec = codecs.get(method)
    table = METHOD_CASES.get(method)
    if table is None:
        table = MethodCases(option_sets=_QUALITY_SPAN if "quality" in codec.options else (),
                            large_size=LEARNED_LARGE_SIZE if codec.needs_model else LARGE_SIZE)
    main_mode = "RGB" if "RGB" in codec.modes else codec.modes[0]
    sizes = LEARNED_SIZES if codec.needs_model else ODD_SIZES
    cases = [ValidCase(method, mode, size, {}) for mode in codec.modes for size in sizes]
    cases.append(ValidCase(method, main_mode, table.large_size, dict(table.large_options)))
    cases += [ValidCase(method, main_mode, OPTION_SIZE, dict(opts)) for opts in table.option_sets]
    cases.append(ValidCase(method, main_mode, OPTION_SIZE, {}, metadata=True))
    cases += [ValidCase(method, main_mode, OPTION_SIZE, {"quality": 5}, method_version=v) for v in table.older_versions]
    return cases


@contextlib.contextmanager
def _writer_version(method: str, version: int | None):
    """Encode as the writer of an older method version (the codec reads its own `version`)."""
    codec_class = type(codecs.get(method))
    if version is None:
        yield
        return
    saved = codec_class.__dict__.get("version")
    codec_class.version = version
    try:
        yield
    finally:
        if saved is None:
            del codec_class.version
        else:
            codec_class.version = saved


def installed_models(method: str) -> list[str]:
    from .nn import store

    return store.model_ids(method)


# ---------------------------------------------------------------- decoding helpers shared with the runner


def pixel_sha256(pixels: np.ndarray, mode: str) -> str:
    """sha256 of the decoded samples, row-major, channels interleaved, I;16 little-endian."""
    dtype = "<u2" if mode == "I;16" else np.uint8
    return hashlib.sha256(np.ascontiguousarray(pixels, dtype=dtype).tobytes()).hexdigest()


def image_array(im: Image.Image) -> np.ndarray:
    return np.asarray(im).astype(np.uint16 if im.mode in ("I;16", "I") else np.uint8)


def png_bytes(pixels: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    image = Image.fromarray(pixels.astype(np.uint16) if mode == "I;16" else pixels)
    assert image.mode == mode, (image.mode, mode)
    image.save(buf, format="PNG", optimize=False, compress_level=9)
    return buf.getvalue()


def decode_bytes(data: bytes) -> tuple[Image.Image, np.ndarray]:
    image = Image.open(io.BytesIO(data), formats=["MLIMG"])
    image.load()
    return image, image_array(image)


def _dump(obj: dict) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


# ---------------------------------------------------------------- the three kinds of fixture


def build_valid(case: ValidCase) -> dict[str, bytes]:
    """The files of one valid/ case: input.mlimg, expected.json, reference.png."""
    width, height = case.size
    source = synth_pixels(case.mode, width, height, case.seed)
    image = Image.fromarray(source)
    save_args: dict[str, Any] = dict(case.options)
    if case.metadata:
        save_args.update(exif=b"Exif\x00\x00" + EXIF, icc_profile=ICC, xmp=XMP)
    buf = io.BytesIO()
    with _writer_version(case.method, case.method_version):
        image.save(buf, format="MLIMG", method=case.method, **save_args)
    data = buf.getvalue()
    decoded_image, decoded = decode_bytes(data)
    if case.method_version is not None and decoded_image.info["method_version"] != case.method_version:
        raise RuntimeError(f"case {case.name}: written as method version {decoded_image.info['method_version']}")
    expected = _expected_common(case.name, "valid", data, decoded_image)
    expected.update(options=case.options, seed=case.seed, metadata=case.metadata)
    err = decoded.astype(np.float64) - source.astype(np.float64)
    expected["distortion_vs_source"] = {  # informative: how lossy the method was on this image
        "rmse": round(float(np.sqrt(np.mean(err**2))), 4),
        "peak": int(np.abs(err).max()),
    }
    if case.method in EXACT_METHODS:
        expected["tolerance"] = {"class": "exact", "sha256": pixel_sha256(decoded, case.mode)}
    else:
        expected["tolerance"] = {"class": "rmse", **FLOAT_BOUNDS}
    return {"input.mlimg": data, "expected.json": _dump(expected), "reference.png": png_bytes(decoded, case.mode)}


def _expected_common(name: str, kind: str, data: bytes, decoded: Image.Image) -> dict[str, Any]:
    info = decoded.info
    return {
        "case": name,
        "kind": kind,
        "format_version": info["format_version"],
        "method": info["method"],
        "method_version": info["method_version"],
        "width": decoded.width,
        "height": decoded.height,
        "mode": decoded.mode,
        "chunks": [chunk_type for chunk_type, _ in info["chunks"]],
        "info_keys": sorted(k for k in info if k != "mlimg_save"),
        "bytes": len(data),
    }


def build_compat(oddity) -> dict[str, bytes]:
    decoded_image, decoded = decode_bytes(oddity.data)
    expected = _expected_common(oddity.name, "compat", oddity.data, decoded_image)
    expected["why"] = oddity.why
    source = base_pixels()
    if not np.array_equal(decoded, source):
        raise RuntimeError(f"compat case {oddity.name}: decoded pixels differ from the base image")
    expected["tolerance"] = {"class": "exact", "sha256": pixel_sha256(decoded, decoded_image.mode)}
    return {"input.mlimg": oddity.data, "expected.json": _dump(expected),
            "reference.png": png_bytes(decoded, decoded_image.mode)}


def build_invalid(defect) -> dict[str, bytes]:
    """Confirms this decoder rejects the file as declared, then writes input + expected."""
    error = decode_error(defect.data)
    if error is None:
        raise RuntimeError(f"invalid case {defect.name}: this decoder accepted it")
    if type(error).__name__ != defect.error and not (defect.error == "OSError" and isinstance(error, OSError)):
        raise RuntimeError(f"invalid case {defect.name}: expected {defect.error}, got {type(error).__name__}: {error}")
    if defect.fragment.lower() not in str(error).lower():
        raise RuntimeError(f"invalid case {defect.name}: message {str(error)!r} lacks {defect.fragment!r}")
    expected = {
        "case": defect.name,
        "kind": "invalid",
        "why": defect.why,
        "error": defect.error,
        "message_contains": defect.fragment,
        "message": _stable_message(error),  # informative: what this decoder says
        "bytes": len(defect.data),
    }
    return {"input.mlimg": defect.data, "expected.json": _dump(expected)}


def _stable_message(error: BaseException) -> str:
    """The message without object addresses ("<_io.BytesIO object at 0x7f...>"), so reruns match."""
    return re.sub(r"<[\w.]+ object at 0x[0-9a-fA-F]+>", "<file>", str(error))


def decode_error(data: bytes) -> BaseException | None:
    """The exception Image.open(...).load() raises for these bytes, or None if it decodes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            decode_bytes(data)
    except (SyntaxError, OSError, ValueError, Image.DecompressionBombError) as exc:
        return exc
    return None


# ---------------------------------------------------------------- driver


def generate(out_dir: Path, log=print) -> dict[str, str]:
    """Write all fixtures under out_dir (replacing valid/ invalid/ compat/); returns skipped case -> reason."""
    import mlimg  # noqa: F401  (registers the Pillow plugin)

    out_dir = Path(out_dir)
    for sub in GENERATED_DIRS:
        if (out_dir / sub).exists():
            shutil.rmtree(out_dir / sub)
    skipped: dict[str, str] = {}
    models: dict[str, list[str]] = {}
    for method in codecs.names():
        codec = codecs.get(method)
        if codec.needs_model:
            models[method] = installed_models(method)
            if not models[method]:
                skipped[method] = "learned method without installed weights (mlimg/weights/registry.json)"
                log(f"note: skipping method {method!r}: no weights installed")
                continue
        for case in cases_for(method):
            try:
                files = build_valid(case)
            except (ValueError, OSError, RuntimeError) as exc:
                skipped[case.name] = f"{type(exc).__name__}: {exc}"
                log(f"note: skipping {case.name}: {type(exc).__name__}: {exc}")
                continue
            _write(out_dir / "valid" / case.name, files)
    for defect in invalid_cases(models):
        _write(out_dir / "invalid" / defect.name, build_invalid(defect))
    for oddity in compat_cases():
        _write(out_dir / "compat" / oddity.name, build_compat(oddity))
    (out_dir / SKIPPED_FILE).write_bytes(_dump(skipped))
    return skipped


def _write(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def compare_trees(generated: Path, committed: Path) -> list[str]:
    """Differences between two fixture trees, one line per case/file.

    input.mlimg and expected.json must match byte for byte; reference.png is compared
    by its pixels (PNG bytes depend on the zlib build). Cases of the `rmse` class, and cases
    of methods whose encoder is float linear algebra (`Codec.float_encoder`: pca, vq, kmeans),
    come from encoders whose bytes may differ between machines: such a case counts as current
    when today's decoder still passes it (same model, same layout).
    """
    problems = []
    made, have = _generated_files(Path(generated)), _generated_files(Path(committed))
    problems += [f"{n}: missing from the committed fixtures" for n in sorted(made - have)]
    problems += [f"{n}: committed but no longer generated" for n in sorted(have - made)]
    drifting: dict[str, bool] = {}  # machine-dependent case folder -> committed case still passes
    for rel in sorted(made & have):
        new, old = (Path(generated) / rel).read_bytes(), (Path(committed) / rel).read_bytes()
        if new == old:
            continue
        if rel.endswith(".png") and _same_png(new, old):
            continue
        folder = str(Path(rel).parent)
        if _machine_dependent(Path(committed) / folder):
            if folder not in drifting:
                drifting[folder] = _still_passes(Path(committed) / folder)
            if drifting[folder]:
                continue
        problems.append(f"{rel}: differs from what the generator makes today")
    return problems


def _machine_dependent(folder: Path) -> bool:
    """Whether a committed case's bytes may legitimately differ on another machine."""
    try:
        expected = json.loads((folder / "expected.json").read_text())
        if expected["tolerance"]["class"] == "rmse":
            return True
        return expected.get("method") in codecs.names() and codecs.get(expected["method"]).float_encoder
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _still_passes(folder: Path) -> bool:
    from .conformance import Case, check_internal

    case = Case(folder.parent.name, folder.name, folder, json.loads((folder / "expected.json").read_text()))
    return check_internal(case).ok


def _generated_files(root: Path) -> set[str]:
    """Relative paths of everything the generator owns under a fixtures folder."""
    files = {str(p.relative_to(root)) for sub in GENERATED_DIRS for p in (root / sub).rglob("*") if p.is_file()}
    return files | ({SKIPPED_FILE} if (root / SKIPPED_FILE).exists() else set())


def _same_png(a: bytes, b: bytes) -> bool:
    ia, ib = Image.open(io.BytesIO(a)), Image.open(io.BytesIO(b))
    return ia.mode == ib.mode and np.array_equal(image_array(ia), image_array(ib))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlimg.fixturegen", description=__doc__.splitlines()[0])
    parser.add_argument("fixtures", nargs="?", default="fixtures", help="fixtures folder (default: fixtures)")
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on differences")
    args = parser.parse_args(argv)
    target = Path(args.fixtures)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp), log=lambda *_: None)
            problems = compare_trees(Path(tmp), target)
        for line in problems:
            print(line)
        print(f"{len(problems)} difference(s)" if problems else "fixtures match the generator")
        return 1 if problems else 0
    target.mkdir(parents=True, exist_ok=True)
    skipped = generate(target)
    counts = {sub: len(list((target / sub).iterdir())) for sub in GENERATED_DIRS}
    print(f"wrote {counts['valid']} valid, {counts['invalid']} invalid, {counts['compat']} compat cases "
          f"to {target} ({len(skipped)} skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
