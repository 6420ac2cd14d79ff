"""Per-image rows -> one RD curve per subject, averaged over images at each rate point.

This is how the published CompressAI results are aggregated: every metric is
averaged over the images at each quality setting (not recomputed from summed
bytes). A rate point that failed on some image is left out of the curve (its
average would cover different images) and listed as incomplete.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MEAN_FIELDS = ("bpp", "psnr", "ms_ssim", "hf_ratio", "rmse", "ratio", "encode_s", "decode_s", "encode_mib", "decode_mib")


@dataclass
class Curve:
    name: str
    label: str
    kind: str  # "method", "anchor" or "published"
    lossless: bool = False
    params: list[str] = field(default_factory=list)  # one label per kept rate point
    values: dict[str, list[float]] = field(default_factory=dict)  # MEAN_FIELDS -> per-point means
    n_images: int = 0
    median_encode_s: float = math.nan
    median_decode_s: float = math.nan
    peak_encode_mib: float = math.nan
    peak_decode_mib: float = math.nan
    incomplete: list[str] = field(default_factory=list)
    errors: int = 0

    def get(self, key: str) -> np.ndarray:
        return np.asarray(self.values.get(key, [math.nan] * len(self.params)), dtype=np.float64)

    @property
    def bpp(self) -> np.ndarray:
        return self.get("bpp")

    @property
    def psnr(self) -> np.ndarray:
        return self.get("psnr")

    @property
    def ms_ssim(self) -> np.ndarray:
        return self.get("ms_ssim")


def _mean(values: list[float]) -> float:
    # NaN propagates on purpose: an average over a subset of images would mislead.
    return float(np.mean(values)) if values else math.nan


def _nanmax(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return max(finite) if finite else math.nan


def build_curve(name: str, label: str, kind: str, lossless: bool, rows: list[dict[str, Any]], n_images: int) -> Curve:
    """The averaged curve of one subject from its rows (all images, all points)."""
    curve = Curve(name, label, kind, lossless, n_images=n_images)
    good = [r for r in rows if "error" not in r]
    curve.errors = len(rows) - len(good)
    by_point: dict[int, list[dict[str, Any]]] = {}
    labels: dict[int, str] = {}
    for row in rows:
        labels[row["point"]] = row.get("params", str(row["point"]))
    for row in good:
        by_point.setdefault(row["point"], []).append(row)
    curve.values = {key: [] for key in MEAN_FIELDS}
    for point in sorted(labels):
        point_rows = by_point.get(point, [])
        if len(point_rows) < n_images:
            curve.incomplete.append(labels[point])
            continue
        curve.params.append(labels[point])
        for key in MEAN_FIELDS:
            curve.values[key].append(_mean([float(r.get(key, math.nan)) for r in point_rows]))  # rows from older runs lack newer metrics
    if good:
        curve.median_encode_s = statistics.median(r["encode_s"] for r in good)
        curve.median_decode_s = statistics.median(r["decode_s"] for r in good)
        curve.peak_encode_mib = _nanmax([r["encode_mib"] for r in good])
        curve.peak_decode_mib = _nanmax([r["decode_mib"] for r in good])
    return curve


def _json_number(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def compressai_json(curve: Curve, description: str) -> dict[str, Any]:
    """The CompressAI result-file layout (name, description, results{bpp, psnr-rgb, ...}).

    Extra keys (rmse, compression ratio, memory, the rate points) sit beside the
    standard ones, so CompressAI's plotting scripts read these files unchanged.
    """
    def column(key: str) -> list[float | None]:
        return [_json_number(v) for v in curve.values.get(key, [])]

    return {
        "name": curve.name,
        "description": description,
        "results": {
            "bpp": column("bpp"),
            "psnr-rgb": column("psnr"),
            "ms-ssim-rgb": column("ms_ssim"),
            "encoding_time": column("encode_s"),
            "decoding_time": column("decode_s"),
            "rmse": column("rmse"),
            "compression_ratio": column("ratio"),
            "encoding_peak_mib": column("encode_mib"),
            "decoding_peak_mib": column("decode_mib"),
        },
        "meta": {
            "label": curve.label,
            "kind": curve.kind,
            "lossless": curve.lossless,
            "points": curve.params,
            "incomplete_points": curve.incomplete,
            "images": curve.n_images,
            "errors": curve.errors,
        },
    }
