"""A whole benchmark run: choose subjects and rate points, measure, aggregate, write the outputs."""
from __future__ import annotations

import csv
import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import published as published_curves
from . import subjects
from .aggregate import Curve, build_curve, compressai_json
from .images import TestImage, resolve_images, spread
from .plots import rd_plot
from .report import RunInfo, render
from .runner import run_tasks

QUICK_POINTS = 4  # the fewest points a cubic Bjøntegaard fit accepts


@dataclass
class Settings:
    images: str | None = None  # folder, "builtin", or None for the default
    methods: list[str] | None = None  # None = every registered method
    anchors: list[str] | None = None  # None = the default anchors (+ the ones methods need)
    qualities: list[int] | None = None
    method_qualities: list[int] | None = None  # for mlimg methods only; wins over qualities
    jobs: int = 1
    out: str = "bench-out"
    published: str | None = None
    quick: bool = False
    limit: int | None = None
    bd_mode: str = "cubic"
    auc_window: tuple[float, float] = (0.25, 1.0)
    progress: bool = True
    plots: bool = True
    reports: bool = True  # the methods' own bench_report sections
    command: str = "mlimg bench"


@dataclass
class Result:
    summary: str
    curves: dict[str, Curve]
    rows: list[dict[str, Any]]
    files: list[Path] = field(default_factory=list)


def _check_names(kind: str, names: list[str], valid: list[str]) -> None:
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"unknown {kind} {', '.join(unknown)}; valid {kind}: {', '.join(valid) or '(none)'}")


def choose_subjects(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """The subject names to run (methods first) and the ones skipped with the reason."""
    methods = subjects.method_names() if settings.methods is None else list(settings.methods)
    _check_names("methods", [subjects.parse_variant(m)[0] for m in methods], subjects.method_names())
    for name in methods:
        subjects.check_variant(name)
    explicit = settings.anchors is not None
    anchors = list(settings.anchors) if explicit else []
    _check_names("anchors", anchors, subjects.anchor_names())
    skipped: dict[str, str] = {}
    runnable: list[str] = []
    loaded = []
    for name in methods:
        try:
            loaded.append(subjects.build(name))
        except Exception as exc:  # a broken method module must not stop the benchmark
            skipped[name] = f"cannot load: {type(exc).__name__}: {exc}"
            continue
        runnable.append(name)
    if not explicit:
        # Methods bring the anchors they are judged against; with no methods, the lossy set.
        wanted = []
        if not loaded or any(not s.lossless for s in loaded):
            wanted += subjects.DEFAULT_ANCHORS
        if any(not s.lossless and any(subjects.palette_size(p) for p in s.points) for s in loaded):
            wanted.append(subjects.PALETTE_ANCHOR)
        if any(s.lossless for s in loaded):
            wanted += subjects.LOSSLESS_ANCHORS
        anchors = list(dict.fromkeys(wanted))
    for name in anchors:
        why = subjects.build(name).unavailable()
        if why:
            skipped[name] = why
        else:
            runnable.append(name)
    return runnable, skipped


def choose_points(name: str, settings: Settings) -> tuple[dict[str, Any], ...]:
    subject = subjects.build(name)
    points = subject.points
    qualities = settings.method_qualities if subject.kind == "method" and settings.method_qualities else settings.qualities
    if qualities:
        points = subject.quality_points(qualities) or points
    if settings.quick:
        points = tuple(spread(list(points), QUICK_POINTS))
    return tuple(points)


def environment() -> dict[str, str]:
    import os
    import sys

    import numpy
    import PIL

    env = {
        "Python": platform.python_version(),
        "Pillow": PIL.__version__,
        "numpy": numpy.__version__,
    }
    if "torch" in sys.modules:
        env["torch"] = sys.modules["torch"].__version__
    try:
        import imagecodecs

        env["libjxl"] = str(imagecodecs.jpegxl_version())
    except Exception:
        pass
    env["machine"] = f"{platform.machine()} × {os.cpu_count()} CPUs ({platform.system()})"
    return env


def _method_reports(names: list[str], images: list[TestImage]) -> dict[str, str]:
    """Each method's own Markdown section. It gets RGB Pillow images: np.asarray(im) gives the
    array, so code written for either arrays or images works."""
    from PIL import Image

    pictures = [Image.fromarray(im.pixels, "RGB") for im in images]
    reports = {}
    for name in names:
        subject = subjects.build(name)
        if subject.kind != "method" or subject.fixed:  # a variant's report is its method's
            continue
        try:
            text = subject.codec.bench_report(pictures)
        except Exception as exc:
            text = f"bench_report failed: `{type(exc).__name__}: {exc}`"
        if text:
            reports[name] = text
    return reports


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def run(settings: Settings) -> Result:
    import mlimg  # noqa: F401 - registers the MLIMG Pillow plugin

    started = time.perf_counter()
    images, source = resolve_images(settings.images, settings.quick, settings.limit)
    names, skipped = choose_subjects(settings)
    points = {name: choose_points(name, settings) for name in names}
    rows = run_tasks(images, points, jobs=settings.jobs, progress=settings.progress)

    out = Path(settings.out)
    curves = {}
    for name in names:
        subject = subjects.build(name)
        own = [r for r in rows if r["subject"] == name]
        curves[name] = build_curve(name, subject.label, subject.kind, subject.lossless, own, len(images))
    description = f"mlimg bench on {len(images)} image(s) from {source}"
    files = write_data(out, curves, rows, description)  # saved before the slower steps below
    published, published_dir = published_curves.load(settings.published)
    reports = _method_reports(names, images) if settings.reports else {}
    crop_sheet = _crop_sheet(out, names, images, files) if settings.plots else ""
    info = RunInfo(
        command=settings.command,
        image_source=source,
        image_names=[im.name for im in images],
        environment=environment(),
        bd_mode=settings.bd_mode,
        auc_window=settings.auc_window,
        published_dir=published_dir,
        skipped=skipped,
        reports_skipped=not settings.reports,
        seconds=time.perf_counter() - started,
        crop_sheet=crop_sheet,
    )
    summary = render(info, curves, published, published_curves.bd_keys(published), rows, points, reports)
    summary_path = out / "summary.md"
    summary_path.write_text(summary)
    files.append(summary_path)
    if settings.plots:
        files += write_plots(out, curves, published, f"{len(images)} image(s) from {Path(source).name}")
    return Result(summary, curves, rows, files)


CROP_SHEET_IMAGES = 3
CROP_SHEET_BPP = 0.2


def _crop_sheet(out: Path, names: list[str], images: list[TestImage], files: list[Path]) -> str:
    """gan vs gmm vs JPEG vs WebP crops at equal bytes (written when gan and gmm both run)."""
    if not {"gan", "gmm"} <= set(names):
        return ""
    from .cropsheet import CROP, build_sheet

    path = out / "crop_sheet.png"
    try:
        tiles = build_sheet(images[:CROP_SHEET_IMAGES], path, CROP_SHEET_BPP)
    except Exception as exc:  # the sheet is an extra: never lose the run's numbers over it
        return f"Crop sheet failed: {type(exc).__name__}: {exc}"
    files.append(path)
    lines = ["![crops at equal bytes](crop_sheet.png)", "",
             f"Most textured {CROP}×{CROP} crop of the first {len(images[:CROP_SHEET_IMAGES])} image(s); gan encoded "
             f"at target_bpp={CROP_SHEET_BPP} (realism 1), the others at the largest setting whose file is no bigger.", "",
             "| image | codec | bpp | PSNR | HF ratio |", "|---|---|---|---|---|"]
    lines += [f"| {t['image']} | {t['codec']}{'' if t['fits'] else ' (lowest setting, still bigger)'} | "
              f"{t['bpp']:.3f} | {t['psnr']:.2f} | {t['hf_ratio']:.2f} |" for t in tiles]
    return "\n".join(lines)


def write_data(out: Path, curves: dict[str, Curve], rows: list[dict[str, Any]], description: str) -> list[Path]:
    """One CompressAI-layout JSON per codec and rows.csv with every per-image measurement."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, curve in curves.items():
        path = out / f"{name.replace(':', '+')}.json"  # a variant 'gmm:refine=20' -> gmm+refine=20.json
        data = _json_safe(compressai_json(curve, f"{curve.label}; {description}"))
        path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
        files.append(path)
    rows_path = out / "rows.csv"
    _write_rows(rows_path, rows)
    return files + [rows_path]


def write_plots(out: Path, curves: dict[str, Curve], published: dict[str, Curve], title: str) -> list[Path]:
    lossy = [c for c in curves.values() if not c.lossless and c.params]
    files = []
    for metric, filename in (("psnr", "rd_psnr.png"), ("ms_ssim", "rd_msssim.png")):
        if lossy and rd_plot(out / filename, lossy, list(published.values()), metric, title):
            files.append(out / filename)
    return files
