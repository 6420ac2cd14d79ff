"""`mlimg conformance [FIXTURES] [--decoder "CMD {in} {out}"]`: check a decoder against fixtures/.

Without --decoder it checks this package through Pillow, the way a user opens a
file: valid/ and compat/ cases must decode to the expected size, mode, chunk
list, info keys and pixels; invalid/ cases must raise the expected error class
with the expected message fragment.

With --decoder it checks any external program (protocol in fixtures/README.md):
the command is run once per case with {in} replaced by the .mlimg path and {out}
by a PNG path to write. Valid and compat cases must exit 0 and write a PNG with
the expected pixels; invalid cases must exit non-zero (a crash by signal or a
timeout is a failure).

Prints a table (case, expected, got, verdict) and returns 1 if any case fails.
"""
from __future__ import annotations

import io
import json
import shlex
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

KINDS = ("valid", "compat", "invalid")
PASS, FAIL = "pass", "FAIL"


@dataclass(frozen=True)
class Case:
    kind: str
    name: str
    folder: Path
    expected: dict

    @property
    def input(self) -> Path:
        return self.folder / "input.mlimg"

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class Result:
    case: Case
    expected: str
    got: str
    ok: bool


def default_fixtures() -> Path:
    """./fixtures if present, else the fixtures/ folder beside the installed package source."""
    here = Path("fixtures")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parent.parent / "fixtures"


def load_cases(root: Path, pattern: str | None = None) -> list[Case]:
    cases = []
    for kind in KINDS:
        for folder in sorted((root / kind).glob("*")) if (root / kind).is_dir() else ():
            if not (folder / "expected.json").is_file():
                continue
            if pattern and pattern not in f"{kind}/{folder.name}":
                continue
            cases.append(Case(kind, folder.name, folder, json.loads((folder / "expected.json").read_text())))
    return cases


def expectation(case: Case) -> str:
    exp = case.expected
    if case.kind == "invalid":
        return f"{exp['error']} ~{exp['message_contains']!r}"
    tol = exp["tolerance"]
    pixels = "exact" if tol["class"] == "exact" else f"rmse<={tol['max_rmse']} peak<={tol['max_peak']}"
    return f"{exp['width']}x{exp['height']} {exp['mode']} {pixels}"


# ---------------------------------------------------------------- pixel comparison


def reference_pixels(case: Case) -> np.ndarray:
    from PIL import Image

    from .fixturegen import image_array

    with Image.open(case.folder / "reference.png") as im:
        return image_array(im)


def compare_pixels(case: Case, mode: str, pixels: np.ndarray) -> tuple[bool, str]:
    """Judge decoded pixels against expected.json (shape, then sha256 or rmse/peak)."""
    from .fixturegen import pixel_sha256

    exp = case.expected
    if mode != exp["mode"]:
        return False, f"mode {mode}"
    channels = {"L": 1, "I;16": 1, "RGB": 3, "RGBA": 4}[exp["mode"]]
    shape = (exp["height"], exp["width"]) + (() if channels == 1 else (channels,))
    if pixels.shape != shape:
        return False, f"shape {pixels.shape}"
    tol = exp["tolerance"]
    if tol["class"] == "exact":
        digest = pixel_sha256(pixels, mode)
        if digest == tol["sha256"]:
            return True, "exact"
        diff = np.abs(pixels.astype(np.int64) - reference_pixels(case).astype(np.int64))
        return False, f"sha256 differs ({int((diff > 0).sum())} samples off, peak {int(diff.max())})"
    err = pixels.astype(np.float64) - reference_pixels(case).astype(np.float64)
    rmse, peak = float(np.sqrt(np.mean(err**2))), int(np.abs(err).max())
    ok = rmse <= tol["max_rmse"] and peak <= tol["max_peak"]
    return ok, f"rmse {rmse:.3f} peak {peak}"


# ---------------------------------------------------------------- this package


def check_internal(case: Case) -> Result:
    from PIL import Image

    import mlimg  # noqa: F401  (registers the plugin)

    from .fixturegen import image_array

    want = expectation(case)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(case.input, formats=["MLIMG"]) as im:
                facts = _header_mismatch(case, im)
                im.load()
                mode, pixels = im.mode, image_array(im)
    except (SyntaxError, OSError, ValueError, Image.DecompressionBombError) as exc:
        return _judge_error(case, want, exc)
    except Exception as exc:  # noqa: BLE001 - anything else is a decoder bug, reported as a failure
        return Result(case, want, f"crash {type(exc).__name__}: {exc}"[:120], False)
    if case.kind == "invalid":
        return Result(case, want, "decoded without error", False)
    if facts:
        return Result(case, want, facts, False)
    ok, got = compare_pixels(case, mode, pixels)
    return Result(case, want, got, ok)


def _header_mismatch(case: Case, im) -> str:
    """What open() reports that contradicts expected.json, or '' (valid/compat cases only)."""
    if case.kind == "invalid":
        return ""
    exp = case.expected
    if im.size != (exp["width"], exp["height"]):
        return f"size {im.size[0]}x{im.size[1]}"
    for key in ("format_version", "method", "method_version"):
        if im.info.get(key) != exp[key]:
            return f"{key} {im.info.get(key)!r}"
    chunks = [chunk_type for chunk_type, _ in im.info.get("chunks", [])]
    if chunks != exp["chunks"]:
        return f"chunks {' '.join(chunks)}"
    missing = sorted(set(exp["info_keys"]) - set(im.info))
    if missing:
        return f"info lacks {', '.join(missing)}"
    return ""


def _judge_error(case: Case, want: str, exc: BaseException) -> Result:
    got = f"{type(exc).__name__}: {exc}"
    if case.kind != "invalid":
        return Result(case, want, got[:120], False)
    exp = case.expected
    cls_ok = _error_matches(exp["error"], exc)
    text_ok = exp["message_contains"].lower() in str(exc).lower()
    return Result(case, want, got[:120], cls_ok and text_ok)


def _error_matches(expected: str, exc: BaseException) -> bool:
    from PIL import Image, UnidentifiedImageError

    classes = {
        "UnidentifiedImageError": UnidentifiedImageError,
        "DecompressionBombError": Image.DecompressionBombError,
        "OSError": OSError,
        "SyntaxError": SyntaxError,
        "ValueError": ValueError,
    }
    return isinstance(exc, classes.get(expected, ()))


# ---------------------------------------------------------------- an external decoder


def check_external(case: Case, command: str, timeout: float) -> Result:
    from PIL import Image

    from .fixturegen import image_array

    want = "reject (exit != 0)" if case.kind == "invalid" else expectation(case)
    with tempfile.TemporaryDirectory(prefix="mlimg-conformance-") as tmp:
        out = Path(tmp) / "out.png"
        argv = [part.replace("{in}", str(case.input)).replace("{out}", str(out)) for part in shlex.split(command)]
        try:
            proc = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return Result(case, want, f"timeout after {timeout:g} s", False)
        except OSError as exc:
            return Result(case, want, f"cannot run decoder: {exc}", False)
        if proc.returncode < 0:
            return Result(case, want, f"killed by signal {-proc.returncode}", False)
        if case.kind == "invalid":
            return Result(case, want, f"exit {proc.returncode}", proc.returncode != 0)
        if proc.returncode != 0:
            tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            return Result(case, want, f"exit {proc.returncode} {tail[0]}"[:120], False)
        try:
            with Image.open(io.BytesIO(out.read_bytes())) as im:
                im.load()
                mode, pixels = im.mode, image_array(im)
        except (OSError, SyntaxError, ValueError) as exc:
            return Result(case, want, f"no readable PNG at {{out}}: {exc}"[:120], False)
    ok, got = compare_pixels(case, mode, pixels)
    return Result(case, want, got, ok)


# ---------------------------------------------------------------- reporting


def run_cases(cases: list[Case], check: Callable[[Case], Result]) -> list[Result]:
    return [check(case) for case in cases]


def format_table(results: list[Result]) -> str:
    header = ("case", "expected", "got", "verdict")
    rows = [(r.case.label, r.expected, r.got, PASS if r.ok else FAIL) for r in results]
    widths = [min(60, max(len(header[i]), *(len(row[i]) for row in rows))) for i in range(3)] if rows else [4, 8, 3]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths + [0])).rstrip()]
    for row in rows:
        lines.append("  ".join(cell[:w].ljust(w) if i < 3 else cell for i, (cell, w) in
                               enumerate(zip(row, widths + [0]))).rstrip())
    return "\n".join(lines)


def add_arguments(parser) -> None:
    parser.add_argument("fixtures", nargs="?", default=None,
                        help="fixtures folder with valid/ invalid/ compat/ (default: ./fixtures)")
    parser.add_argument("--decoder", metavar="CMD", default=None,
                        help='external decoder command, e.g. "mydec {in} {out}" (default: this package)')
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per case for --decoder (default 60)")
    parser.add_argument("-k", "--filter", default=None, metavar="TEXT", help="only cases whose kind/name contain TEXT")
    parser.add_argument("--failures-only", action="store_true", help="print only failing rows (and the summary)")


def run(args) -> int:
    root = Path(args.fixtures) if args.fixtures else default_fixtures()
    cases = load_cases(root, args.filter)
    if not cases:
        print(f"mlimg conformance: no cases found under {root}", file=sys.stderr)
        return 1
    if args.decoder:
        if "{in}" not in args.decoder or "{out}" not in args.decoder:
            print("mlimg conformance: --decoder must contain {in} and {out}", file=sys.stderr)
            return 2
        results = run_cases(cases, lambda case: check_external(case, args.decoder, args.timeout))
    else:
        results = run_cases(cases, check_internal)
    shown = [r for r in results if not r.ok] if args.failures_only else results
    if shown:
        print(format_table(shown))
    failed = sum(not r.ok for r in results)
    by_kind = {kind: sum(r.case.kind == kind for r in results) for kind in KINDS}
    print(f"\n{len(results) - failed}/{len(results)} passed ({', '.join(f'{n} {k}' for k, n in by_kind.items())}); "
          f"{failed} failed; decoder: {args.decoder or 'mlimg (this package)'}; fixtures: {root}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """`python -m mlimg.conformance ...`, the same as `mlimg conformance ...`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mlimg.conformance", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
