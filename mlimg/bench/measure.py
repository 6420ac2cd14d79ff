"""Measure one subject on one image across its rate points: bytes, quality, time, memory.

This is the unit of work a bench worker process runs. Everything it returns is
a plain dict per (image, subject, point) so results pickle cheaply and go
straight to rows.csv.

Peak memory: on Linux, before each encode/decode the process returns freed
memory to the OS (gc, Pillow's block cache, glibc malloc_trim) and resets its
peak resident set size (VmHWM) by writing 5 to /proc/self/clear_refs; the
reported figure is the peak RSS during the call minus the RSS just before it.
It sees every allocation (numpy, torch, Pillow, libavif...), unlike tracemalloc,
but memory still held from earlier (torch's caches, model weights, pages the
allocator keeps) is not counted, so it is a lower bound on the call's working
memory. Elsewhere it is NaN.
"""
from __future__ import annotations

import ctypes
import gc
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from PIL import Image

from .. import metrics
from . import subjects

PSNR_CAP = 100.0  # dB reported for a bit-exact reconstruction, so averages stay finite
_WARMUP_SIZE = 64


@dataclass
class Task:
    image_name: str
    pixels: np.ndarray
    subject: str
    points: tuple[dict[str, Any], ...]


def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _release_free_memory() -> None:
    """Hand memory freed by earlier calls back to the OS, so the next call's peak shows up as a rise."""
    gc.collect()
    Image.core.clear_cache()  # Pillow keeps freed image blocks for reuse
    try:
        ctypes.CDLL(None).malloc_trim(0)  # glibc only
    except (OSError, AttributeError):
        pass


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """Run fn(); return (result, wall seconds, peak extra resident memory in MiB or NaN)."""
    _release_free_memory()  # not timed
    can_measure = _reset_peak_rss()
    before = _proc_status_kb("VmRSS") if can_measure else None
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = _proc_status_kb("VmHWM") if before is not None else None
    memory = max(0, peak - before) / 1024.0 if peak is not None else math.nan
    return result, seconds, memory


_warmed: set[str] = set()


def warm_up(subject: subjects.Subject) -> None:
    """Encode and decode a small image once per process so imports and model loading are not timed."""
    if subject.name in _warmed:
        return
    _warmed.add(subject.name)
    y, x = np.mgrid[0:_WARMUP_SIZE, 0:_WARMUP_SIZE]
    pixels = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.uint8)
    try:
        subject.decode(subject.encode(Image.fromarray(pixels, "RGB"), subject.points[0]))
    except Exception:  # the real measurement reports the error
        pass


def _quality(reference: np.ndarray, decoded: np.ndarray, num_bytes: int) -> dict[str, Any]:
    if decoded.shape != reference.shape:
        raise ValueError(f"decoded shape {decoded.shape} differs from the original {reference.shape}")
    h, w = reference.shape[:2]
    psnr = metrics.psnr(reference, decoded)
    return {
        "bytes": num_bytes,
        "bpp": metrics.bpp(num_bytes, w, h),
        "ratio": metrics.compression_ratio(num_bytes, w, h, channels=reference.shape[2]),
        "psnr": min(psnr, PSNR_CAP),
        "rmse": metrics.rmse(reference, decoded),
        "ms_ssim": metrics.ms_ssim(reference, decoded),
        "hf_ratio": metrics.high_frequency_ratio(reference, decoded),  # sharpness (gan vs blurrier codecs)
        "exact": bool(np.array_equal(reference, decoded)),
    }


def measure(task: Task) -> list[dict[str, Any]]:
    """One row per rate point; a failure becomes a row with an 'error' and no metrics."""
    subject = subjects.build(task.subject)
    warm_up(subject)
    image = Image.fromarray(task.pixels, "RGB")
    rows = []
    for index, params in enumerate(task.points):
        row: dict[str, Any] = {
            "image": task.image_name,
            "subject": subject.name,
            "point": index,
            "params": subjects.point_label(params),
            "width": image.width,
            "height": image.height,
        }
        try:
            data, row["encode_s"], row["encode_mib"] = timed(lambda: subject.encode(image, params))
            decoded, row["decode_s"], row["decode_mib"] = timed(lambda: subject.decode(data))
            row.update(_quality(task.pixels, np.asarray(decoded), len(data)))
        except Exception as exc:  # one failing method must not stop the run
            row["error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
    return rows
