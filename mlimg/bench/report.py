"""summary.md: the tables a reader of `mlimg bench` sees."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import metrics
from .aggregate import Curve
from .subjects import PALETTE_ANCHOR, palette_size

RATES_OF_INTEREST = (0.25, 0.5, 1.0)
SPEED_REFERENCES = ("avif", "jpeg")


@dataclass
class RunInfo:
    command: str
    image_source: str
    image_names: list[str]
    environment: dict[str, str]
    bd_mode: str = "cubic"
    auc_window: tuple[float, float] = (0.25, 1.0)
    published_dir: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # subject -> why it did not run
    reports_skipped: bool = False
    seconds: float = math.nan
    crop_sheet: str = ""  # Markdown for the equal-size crop sheet, when one was written


def fmt(value: float, digits: int = 2, suffix: str = "") -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}{suffix}"


def _signed(value: float, digits: int, suffix: str) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:+.{digits}f}{suffix}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _bpp_range(curve: Curve) -> str:
    b = curve.bpp
    return f"{b.min():.3f}–{b.max():.3f}" if b.size else "n/a"


def rd_table(curves: list[Curve], info: RunInfo) -> str:
    lo, hi = info.auc_window
    header = ["codec", "points", "bpp range"]
    header += [f"PSNR@{r}" for r in RATES_OF_INTEREST] + [f"MS-SSIM@{r}" for r in RATES_OF_INTEREST]
    header += [f"PSNR AUC {lo}–{hi}", f"MS-SSIM AUC {lo}–{hi}"]
    rows = []
    for c in curves:
        row = [c.label, str(len(c.params)), _bpp_range(c)]
        row += [fmt(metrics.quality_at_rate(c.bpp, c.psnr, r)) for r in RATES_OF_INTEREST]
        row += [fmt(metrics.quality_at_rate(c.bpp, c.ms_ssim, r), 4) for r in RATES_OF_INTEREST]
        row += [fmt(metrics.rd_auc(c.bpp, c.psnr, lo, hi)), fmt(metrics.rd_auc(c.bpp, c.ms_ssim, lo, hi), 4)]
        rows.append(row)
    return _table(header, rows)


SHARPNESS_RATES = (0.15, 0.2, 0.3, 0.5)


def sharpness_table(curves: list[Curve]) -> str | None:
    """Top-octave luma energy of the reconstruction / the original's, interpolated at fixed rates."""
    rows = []
    for c in curves:
        hf = c.get("hf_ratio")
        if np.all(np.isnan(hf)):
            continue
        rows.append([c.label] + [fmt(metrics.quality_at_rate(c.bpp, hf, r)) for r in SHARPNESS_RATES])
    if not rows:
        return None
    return _table(["codec"] + [f"HF ratio@{r}" for r in SHARPNESS_RATES], rows)


def bd_table(curves: list[Curve], anchors: list[Curve], mode: str) -> str:
    """Rows: every run curve. Columns: every anchor (run and published). Cell: BD-rate / BD-PSNR."""
    header = ["codec vs →"] + [a.name if a.kind != "published" else f"{a.name.upper()} (published)" for a in anchors]
    rows = []
    for c in curves:
        row = [c.label]
        for a in anchors:
            if a is c:
                row.append("—")
                continue
            # "cubic" needs 4 points per curve; shorter curves fall back to pchip, marked with †.
            fit = "auto" if mode == "cubic" else mode
            rate = metrics.bd_rate(a.bpp, a.psnr, c.bpp, c.psnr, mode=fit)
            gain = metrics.bd_psnr(a.bpp, a.psnr, c.bpp, c.psnr, mode=fit)
            mark = "†" if mode == "cubic" and min(len(a.params), len(c.params)) < 4 and math.isfinite(rate) else ""
            row.append(f"{_signed(rate, 1, ' %')} / {_signed(gain, 2, ' dB')}{mark}")
        rows.append(row)
    return _table(header, rows)


def _ratio(value: float, reference: Curve | None, attr: str) -> str:
    if reference is None:
        return "n/a"
    base = getattr(reference, attr)
    if not (math.isfinite(value) and math.isfinite(base) and base > 0):
        return "n/a"
    ratio = value / base
    return f"{ratio:,.0f}×" if ratio >= 100 else f"{ratio:.3g}×"


def speed_table(curves: list[Curve], by_name: dict[str, Curve]) -> str:
    refs = {name: by_name.get(name) for name in SPEED_REFERENCES}
    header = ["codec", "median encode s", "median decode s"]
    header += [f"encode vs {n.upper()}" for n in SPEED_REFERENCES] + [f"decode vs {n.upper()}" for n in SPEED_REFERENCES]
    header += ["peak encode MiB", "peak decode MiB"]
    rows = []
    for c in curves:
        row = [c.label, fmt(c.median_encode_s, 4), fmt(c.median_decode_s, 4)]
        row += [_ratio(c.median_encode_s, refs[n], "median_encode_s") for n in SPEED_REFERENCES]
        row += [_ratio(c.median_decode_s, refs[n], "median_decode_s") for n in SPEED_REFERENCES]
        row += [fmt(c.peak_encode_mib, 1), fmt(c.peak_decode_mib, 1)]
        rows.append(row)
    return _table(header, rows)


def _good(rows: list[dict[str, Any]], subject: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["subject"] == subject and "error" not in r]


def lossless_table(methods: list[Curve], anchors: list[Curve], rows: list[dict[str, Any]], images: list[str]) -> str:
    """bpp per image for each lossless subject (its best rate point), wins and exactness."""
    subjects = methods + anchors
    best: dict[str, dict[str, float]] = {}
    exact: dict[str, bool] = {}
    for s in subjects:
        good = _good(rows, s.name)
        exact[s.name] = bool(good) and all(r["exact"] for r in good)
        per_point: dict[int, dict[str, float]] = {}
        for r in good:
            per_point.setdefault(r["point"], {})[r["image"]] = r["bpp"]
        complete = [p for p in per_point.values() if len(p) == len(images)]
        best[s.name] = min(complete, key=lambda p: sum(p.values())) if complete else {}
    header = ["image"] + [s.label for s in subjects]
    body = [[name] + [fmt(best[s.name].get(name, math.nan), 3) for s in subjects] for name in images]
    body.append(["**mean bpp**"] + [fmt(float(np.mean(list(best[s.name].values()))) if best[s.name] else math.nan, 3) for s in subjects])
    body.append(["exact round trip"] + ["yes" if exact[s.name] else "**NO**" for s in subjects])
    text = _table(header, body)
    for m in methods:
        wins = []
        for a in anchors:
            mine, theirs = best[m.name], best[a.name]
            n = sum(1 for im in images if im in mine and im in theirs and mine[im] < theirs[im])
            wins.append(f"{n}/{len(images)} vs {a.label}")
        text += f"\n\n{m.label} wins (smaller file): " + ", ".join(wins) + "."
    return text


def _point_means(rows, subject, index, n_images) -> dict[str, float] | None:
    good = [r for r in _good(rows, subject) if r["point"] == index]
    if len(good) < n_images:
        return None
    return {k: float(np.mean([r[k] for r in good])) for k in ("bpp", "psnr", "ms_ssim")}


def palette_table(method: str, method_points, anchor_points, rows, n_images) -> str | None:
    """kmeans (or any palette method) against Pillow quantize + PNG at the same palette size."""
    anchor_by_k = {p["k"]: i for i, p in enumerate(anchor_points)}
    body = []
    for i, params in enumerate(method_points):
        k = palette_size(params)
        if k is None or k not in anchor_by_k:
            continue
        mine = _point_means(rows, method, i, n_images)
        theirs = _point_means(rows, PALETTE_ANCHOR, anchor_by_k[k], n_images)
        if mine is None or theirs is None:
            continue
        body.append([
            str(k), fmt(mine["bpp"], 3), fmt(mine["psnr"]), fmt(mine["ms_ssim"], 4),
            fmt(theirs["bpp"], 3), fmt(theirs["psnr"]), fmt(theirs["ms_ssim"], 4),
            _signed(100 * (mine["bpp"] / theirs["bpp"] - 1), 1, " %"), _signed(mine["psnr"] - theirs["psnr"], 2, " dB"),
        ])
    if not body:
        return None
    header = ["k", f"{method} bpp", f"{method} PSNR", f"{method} MS-SSIM", "png-palette bpp", "png-palette PSNR",
              "png-palette MS-SSIM", "Δ bpp", "Δ PSNR"]
    return _table(header, body)


def errors_section(rows: list[dict[str, Any]], info: RunInfo) -> str | None:
    lines = [f"- **{name}** skipped: {why}" for name, why in info.skipped.items()]
    failed: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        if "error" in r:
            failed.setdefault((r["subject"], r["error"][:300]), []).append(f"{r['image']}@{r.get('params', r['point'])}")
    for (subject, error), where in failed.items():
        shown = ", ".join(where[:4]) + (f" and {len(where) - 4} more" if len(where) > 4 else "")
        lines.append(f"- **{subject}** failed {len(where)}× ({shown}): `{error}`")
    return "\n".join(lines) if lines else None


def notes(info: RunInfo, n_images: int) -> str:
    lo, hi = info.auc_window
    text = [
        "- bpp = 8 × whole file bytes / pixels (for mlimg: the complete `.mlimg` file, container included). "
        "Every metric is measured per image and averaged over the images at each rate point, as in the "
        "CompressAI result files; a point that failed on any image is left out of its curve.",
        "- PSNR over all RGB samples (8-bit, peak 255); a bit-exact image counts as "
        "100 dB. MS-SSIM: pytorch_msssim, RGB, 5 scales (n/a for images under 161 px).",
        f"- BD-rate / BD-PSNR: Bjøntegaard, {info.bd_mode} fit "
        + ("(log-rate as a cubic polynomial of PSNR, integrated over the overlap; curves with fewer than 4 points fall back to pchip, marked †)"
           if info.bd_mode == "cubic" else "(monotone piecewise-cubic interpolation)")
        + ". Negative BD-rate / positive BD-PSNR = better than the column's anchor.",
        f"- AUC: area under the piecewise-linear RD curve over {lo}–{hi} bpp divided by the window width "
        "(Toderici et al. 2017 rank codecs by it); n/a if the curve does not span the window.",
        "- Time: wall seconds of `Image.save` and `Image.open(...).load()` in one process, after a warm-up "
        "encode (imports and model loading not timed). Ratios are median vs median. Peak memory: rise of the "
        "peak resident set during the call over the resident set just before it (Linux: freed memory "
        "returned to the OS and VmHWM reset before each call); memory the process still holds from "
        "earlier (loaded weights, caches) is not counted, so it is a lower bound.",
    ]
    if info.published_dir:
        note = f"- Published curves from `{info.published_dir}` average all 24 Kodak images"
        if n_images != 24 or "kodak" not in info.image_source.lower():
            note += f"; this run used {n_images} image(s) from {info.image_source}, so BD-rates against them are indicative only"
        text.append(note + ".")
    return "\n".join(text)


def render(
    info: RunInfo,
    curves: dict[str, Curve],
    published: dict[str, Curve],
    published_bd: list[str],
    rows: list[dict[str, Any]],
    points: dict[str, tuple[dict[str, Any], ...]],
    method_reports: dict[str, str],
) -> str:
    ordered = sorted(curves.values(), key=lambda c: (c.kind != "method", list(points).index(c.name)))
    lossy = [c for c in ordered if not c.lossless and c.params]
    anchors = [c for c in lossy if c.kind == "anchor" and c.name != PALETTE_ANCHOR]
    n = len(info.image_names)
    out = [
        "# mlimg bench",
        "",
        f"`{info.command}` — {n} image(s) from `{info.image_source}`"
        + (f", {info.seconds:.0f} s" if math.isfinite(info.seconds) else "") + ".",
        "",
        "Environment: " + ", ".join(f"{k} {v}" for k, v in info.environment.items()) + ".",
    ]
    if lossy:
        out += ["", "## Rate–distortion (averaged over images)", "", rd_table(lossy, info)]
        out += ["", "![PSNR vs bpp](rd_psnr.png) ![MS-SSIM vs bpp](rd_msssim.png)"]
        bd_anchors = anchors + [published[k] for k in published_bd]
        if bd_anchors:
            out += ["", f"## BD-rate / BD-PSNR (PSNR-RGB, {info.bd_mode})", "", bd_table(lossy, bd_anchors, info.bd_mode)]
        sharp = sharpness_table(lossy)
        if sharp:
            out += ["", "## Sharpness (high-frequency energy ratio, 1.0 = as sharp as the original)", "",
                    "Energy of the luma power spectrum between 0.25 and 0.5 cycles/pixel (Hann window) in the "
                    "reconstruction divided by the original's, averaged over images (`mlimg.metrics.high_frequency_ratio`); "
                    "n/a outside a codec's bpp range.", "", sharp]
    if info.crop_sheet:
        out += ["", "## Crop sheet (equal file size)", "", info.crop_sheet]
    timed = [c for c in ordered if math.isfinite(c.median_encode_s)]
    if timed:
        out += ["", "## Speed and memory", "", speed_table(timed, curves)]
    lossless_methods = [c for c in ordered if c.lossless and c.kind == "method"]
    if lossless_methods:
        lossless_anchors = [c for c in ordered if c.lossless and c.kind == "anchor"]
        out += ["", "## Lossless", "", lossless_table(lossless_methods, lossless_anchors, rows, info.image_names)]
    if PALETTE_ANCHOR in points:
        for name, pts in points.items():
            if curves.get(name) and curves[name].kind == "method":
                table = palette_table(name, pts, points[PALETTE_ANCHOR], rows, n)
                if table:
                    out += ["", f"## {name} vs PNG palette at equal palette size", "", table]
    for name, section in method_reports.items():
        out += ["", f"## {name}: method report", "", section.strip()]
    if info.reports_skipped:
        out += ["", "Method reports (ablations) skipped; add `--reports` to include them."]
    problems = errors_section(rows, info)
    if problems:
        out += ["", "## Errors and skipped codecs", "", problems]
    out += ["", "## How these numbers are made", "", notes(info, n), ""]
    return "\n".join(out)
