"""Image-quality and rate-distortion metrics used by `mlimg bench`.

Per-image metrics (PSNR, RMSE, MS-SSIM, bpp, compression ratio) take numpy
arrays as Pillow gives them: (H, W) or (H, W, C) integer arrays.

Curve metrics (BD-rate, BD-PSNR, RD AUC, interpolation at a given rate) take
one RD curve as two sequences: rates (bits per pixel) and qualities (PSNR dB
or any other "higher is better" score).

BD-rate / BD-PSNR follow Bjøntegaard (VCEG-M33) exactly as CompressAI and the
usual reference script do: fit log(rate) as a cubic polynomial of quality
(or quality as a cubic of log(rate)), integrate both fits over the overlapping
interval and compare the averages. The "pchip" variant replaces the cubic fit
by monotone piecewise-cubic interpolation (VCEG-AL22 style), which needs only
two points per curve and does not overshoot.

Only numpy is imported at module level; torch (for MS-SSIM) and scipy (for
pchip) are imported inside the functions that need them.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

# pytorch_msssim uses 5 scales with an 11-tap window: the shorter side must exceed (11 - 1) * 2**4.
MS_SSIM_MIN_SIDE = 161


def _as_float_pair(reference, distorted) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(reference)
    b = np.asarray(distorted)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: reference {a.shape} vs distorted {b.shape}")
    if a.size == 0:
        raise ValueError("empty image")
    return a.astype(np.float64), b.astype(np.float64)


def mse(reference, distorted) -> float:
    """Mean squared error over all pixels and channels."""
    a, b = _as_float_pair(reference, distorted)
    return float(np.mean((a - b) ** 2))


def rmse(reference, distorted) -> float:
    """Root mean squared error over all pixels and channels (in pixel units)."""
    return math.sqrt(mse(reference, distorted))


def psnr(reference, distorted, data_range: float = 255.0) -> float:
    """PSNR in dB over all pixels and channels; +inf for identical images."""
    err = mse(reference, distorted)
    if err == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range * data_range / err)


def _to_nchw(array) -> np.ndarray:
    a = np.asarray(array, dtype=np.float32)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise ValueError(f"expected (H, W) or (H, W, C) array, got shape {a.shape}")
    return np.ascontiguousarray(a.transpose(2, 0, 1)[None])


def ms_ssim(reference, distorted, data_range: float = 255.0) -> float:
    """MS-SSIM (linear, 0..1) with pytorch_msssim's standard 5-scale weights.

    Channels are evaluated separately and averaged (as pytorch_msssim and the
    published CompressAI results do). Returns NaN when the shorter side is below
    MS_SSIM_MIN_SIDE pixels, which the five-scale pyramid cannot handle.
    """
    a, b = _as_float_pair(reference, distorted)
    if min(a.shape[0], a.shape[1]) < MS_SSIM_MIN_SIDE:
        return math.nan
    import torch  # local import: keeps `import mlimg` light
    from pytorch_msssim import ms_ssim as _ms_ssim

    # One thread: on a shared or busy machine torch's thread pool makes these small
    # convolutions several times slower, not faster. The caller's setting is restored.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            x = torch.from_numpy(_to_nchw(a))
            y = torch.from_numpy(_to_nchw(b))
            return float(_ms_ssim(x, y, data_range=data_range, size_average=True))
    finally:
        torch.set_num_threads(threads)


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on the dB scale CompressAI plots use: -10 log10(1 - MS-SSIM)."""
    if value >= 1.0:
        return math.inf
    return -10.0 * math.log10(1.0 - value)


def bpp(num_bytes: int, width: int, height: int) -> float:
    """Bits per pixel of a file of num_bytes for a width x height image."""
    if width <= 0 or height <= 0:
        raise ValueError(f"bad image size {width}x{height}")
    return 8.0 * num_bytes / (width * height)


def compression_ratio(num_bytes: int, width: int, height: int, channels: int = 3, bits: int = 8) -> float:
    """Uncompressed size (width*height*channels*bits/8) divided by the compressed size."""
    if num_bytes <= 0:
        raise ValueError(f"bad compressed size {num_bytes}")
    return width * height * channels * bits / 8.0 / num_bytes


# --- rate-distortion curves -------------------------------------------------------------------


def _curve(rates: Sequence[float], qualities: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Validated (rate, quality) arrays sorted by rate, non-finite points dropped."""
    r = np.asarray(rates, dtype=np.float64).ravel()
    q = np.asarray(qualities, dtype=np.float64).ravel()
    if r.shape != q.shape:
        raise ValueError(f"rates and qualities differ in length: {r.size} vs {q.size}")
    keep = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[keep], q[keep]
    order = np.argsort(r, kind="stable")
    return r[order], q[order]


def _integral_over(x: np.ndarray, y: np.ndarray, lo: float, hi: float, mode: str) -> float:
    """Integral over [lo, hi] of a curve y(x) fitted as a cubic or interpolated with pchip."""
    if mode == "cubic":
        poly = np.polyint(np.polyfit(x, y, 3))
        return float(np.polyval(poly, hi) - np.polyval(poly, lo))
    if mode == "pchip":
        from scipy.interpolate import PchipInterpolator  # local import: scipy comes with scikit-learn

        order = np.argsort(x, kind="stable")
        xs, ys = x[order], y[order]
        # pchip needs strictly increasing x: merge duplicates by averaging their y.
        ux, inverse = np.unique(xs, return_inverse=True)
        uy = np.bincount(inverse, weights=ys) / np.bincount(inverse)
        return float(PchipInterpolator(ux, uy, extrapolate=False).integrate(lo, hi))
    raise ValueError(f"unknown BD mode {mode!r}; valid modes: cubic, pchip")


def _bd_mode(n_points: int, mode: str) -> str | None:
    """The fit to use for a curve of n_points, or None when there are too few points."""
    if mode not in ("cubic", "pchip", "auto"):
        raise ValueError(f"unknown BD mode {mode!r}; valid modes: auto, cubic, pchip")
    if mode == "auto":
        return "cubic" if n_points >= 4 else ("pchip" if n_points >= 2 else None)
    need = 4 if mode == "cubic" else 2
    return mode if n_points >= need else None


def bd_rate(
    rates_anchor, quality_anchor, rates_test, quality_test, mode: str = "cubic"
) -> float:
    """Bjøntegaard delta rate in percent: average rate change of test vs anchor at equal quality.

    Negative = the test curve needs fewer bits. mode: "cubic" (classic, >= 4 points per
    curve), "pchip" (>= 2 points) or "auto" (cubic when both curves have 4 points, else pchip).
    Returns NaN when a curve has too few points or the quality ranges do not overlap.
    """
    r1, q1 = _curve(rates_anchor, quality_anchor)
    r2, q2 = _curve(rates_test, quality_test)
    fit = _bd_mode(min(r1.size, r2.size), mode)
    if fit is None:
        return math.nan
    lo, hi = max(q1.min(), q2.min()), min(q1.max(), q2.max())
    if not hi > lo:
        return math.nan
    int1 = _integral_over(q1, np.log(r1), lo, hi, fit)
    int2 = _integral_over(q2, np.log(r2), lo, hi, fit)
    return float((math.exp((int2 - int1) / (hi - lo)) - 1.0) * 100.0)


def bd_psnr(
    rates_anchor, quality_anchor, rates_test, quality_test, mode: str = "cubic"
) -> float:
    """Bjøntegaard delta quality (dB for PSNR): average quality gain of test vs anchor at equal rate.

    Positive = the test curve is better. Same modes and NaN rules as bd_rate; the
    integration runs over the overlapping log-rate interval.
    """
    r1, q1 = _curve(rates_anchor, quality_anchor)
    r2, q2 = _curve(rates_test, quality_test)
    fit = _bd_mode(min(r1.size, r2.size), mode)
    if fit is None:
        return math.nan
    l1, l2 = np.log(r1), np.log(r2)
    lo, hi = max(l1.min(), l2.min()), min(l1.max(), l2.max())
    if not hi > lo:
        return math.nan
    int1 = _integral_over(l1, q1, lo, hi, fit)
    int2 = _integral_over(l2, q2, lo, hi, fit)
    return float((int2 - int1) / (hi - lo))


def quality_at_rate(rates, qualities, target: float) -> float:
    """Quality at a target rate by linear interpolation in rate; NaN outside the measured range."""
    r, q = _curve(rates, qualities)
    if r.size == 0 or target < r[0] or target > r[-1]:
        return math.nan
    return float(np.interp(target, r, q))


def rd_auc(rates, qualities, lo: float, hi: float) -> float:
    """Area under the piecewise-linear RD curve over [lo, hi] bpp, divided by (hi - lo).

    This is the rate-averaged quality that Toderici et al. (2017) rank codecs by
    (they integrate MS-SSIM and PSNR-HVS over bpp). Normalising by the window width
    keeps the unit of the quality metric (dB or MS-SSIM). NaN unless the curve
    spans the whole window, so every codec is scored over the same rates.
    """
    if not hi > lo:
        raise ValueError(f"empty AUC window [{lo}, {hi}]")
    r, q = _curve(rates, qualities)
    if r.size < 2 or r[0] > lo or r[-1] < hi:
        return math.nan
    inside = (r > lo) & (r < hi)
    xs = np.concatenate([[lo], r[inside], [hi]])
    ys = np.interp(xs, r, q)
    area = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))
    return area / (hi - lo)


# --- sharpness --------------------------------------------------------------------------------


def _luma(array) -> np.ndarray:
    """BT.601 luma of an (H, W) or (H, W, C>=3) array (alpha ignored), as float64."""
    a = np.asarray(array, dtype=np.float64)
    if a.ndim == 3 and a.shape[2] >= 3:
        return a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114
    if a.ndim == 3:
        return a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"expected (H, W) or (H, W, C) array, got shape {a.shape}")
    return a


def _top_octave_energy(luma: np.ndarray) -> float:
    """Power-spectrum energy at radial frequencies in [0.25, 0.5] cycles/pixel (Hann-windowed FFT)."""
    h, w = luma.shape
    window = np.outer(np.hanning(h), np.hanning(w)) if min(h, w) > 2 else np.ones((h, w))
    power = np.abs(np.fft.fft2((luma - luma.mean()) * window)) ** 2
    radius = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
    return float(power[(radius >= 0.25) & (radius <= 0.5)].sum())


def high_frequency_ratio(reference, reconstruction) -> float:
    """Sharpness of a reconstruction relative to its reference: top-octave luma energy ratio.

    Energy of the luma power spectrum (Hann window, mean removed) between 0.25 and 0.5
    cycles/pixel in the reconstruction divided by the same in the reference. 1.0 = as much
    fine detail as the original; blurry (MSE-optimised) codecs give well below 1; noise or
    invented texture can push it above 1. A reference with no such energy gives 1.0 when
    the reconstruction has none either, else inf.
    """
    a, b = _as_float_pair(reference, reconstruction)
    ref, rec = _top_octave_energy(_luma(a)), _top_octave_energy(_luma(b))
    if ref == 0.0:
        return 1.0 if rec == 0.0 else math.inf
    return rec / ref
