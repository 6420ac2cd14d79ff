"""mlimg.metrics against known values."""
import math

import numpy as np
import pytest

from mlimg import metrics


def _image(h=192, w=200, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def test_identical_images():
    a = _image()
    assert metrics.mse(a, a) == 0.0
    assert metrics.rmse(a, a) == 0.0
    assert metrics.psnr(a, a) == math.inf
    assert metrics.ms_ssim(a, a) == pytest.approx(1.0, abs=1e-6)


def test_known_error_gives_known_psnr_and_rmse():
    a = np.full((10, 12, 3), 100, np.uint8)
    b = a.copy()
    b[..., 0] += 3  # every red sample off by 3: MSE = 9 / 3 = 3 over all channels
    assert metrics.mse(a, b) == pytest.approx(3.0)
    assert metrics.rmse(a, b) == pytest.approx(math.sqrt(3.0))
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 3.0))


def test_known_noise_level_gives_expected_psnr():
    rng = np.random.default_rng(1)
    a = np.full((256, 256, 3), 128.0)
    noise = rng.choice([-5.0, 5.0], size=a.shape)  # variance exactly 25, no clipping
    b = (a + noise).astype(np.uint8)
    assert metrics.psnr(a.astype(np.uint8), b) == pytest.approx(10 * math.log10(255**2 / 25.0), abs=1e-9)


def test_psnr_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        metrics.psnr(np.zeros((4, 4)), np.zeros((4, 5)))


def test_ms_ssim_matches_pytorch_msssim():
    torch = pytest.importorskip("torch")
    from pytorch_msssim import ms_ssim as reference

    a = _image(seed=2)
    b = np.clip(a.astype(int) + np.random.default_rng(3).integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    x = torch.from_numpy(a.astype(np.float32)).permute(2, 0, 1)[None]
    y = torch.from_numpy(b.astype(np.float32)).permute(2, 0, 1)[None]
    expected = float(reference(x, y, data_range=255, size_average=True))
    got = metrics.ms_ssim(a, b)
    assert got == pytest.approx(expected, abs=1e-6)
    assert 0.5 < got < 1.0


def test_ms_ssim_grayscale_and_too_small():
    a = _image()[..., 0]
    assert metrics.ms_ssim(a, a) == pytest.approx(1.0, abs=1e-6)
    small = np.zeros((100, 300, 3), np.uint8)
    assert math.isnan(metrics.ms_ssim(small, small))


def test_ms_ssim_db():
    assert metrics.ms_ssim_db(0.99) == pytest.approx(20.0)
    assert metrics.ms_ssim_db(1.0) == math.inf


def test_bpp_and_compression_ratio():
    assert metrics.bpp(768 * 512 // 8, 768, 512) == pytest.approx(1.0)
    assert metrics.compression_ratio(768 * 512 * 3 // 24, 768, 512) == pytest.approx(24.0)
    with pytest.raises(ValueError):
        metrics.bpp(10, 0, 5)


# An RD curve shaped like a real codec's: PSNR grows with log-rate and flattens.
RATES = np.array([0.1, 0.2, 0.4, 0.8, 1.6, 3.2])
PSNRS = 24.0 + 6.0 * np.log2(RATES / 0.1) - 0.3 * np.log2(RATES / 0.1) ** 2


@pytest.mark.parametrize("mode", ["cubic", "pchip"])
def test_bd_rate_of_scaled_rates(mode):
    # The same qualities at exactly 0.8x the rate: BD-rate is -20 %.
    assert metrics.bd_rate(RATES, PSNRS, RATES * 0.8, PSNRS, mode=mode) == pytest.approx(-20.0, abs=0.1)
    assert metrics.bd_rate(RATES, PSNRS, RATES * 1.25, PSNRS, mode=mode) == pytest.approx(25.0, abs=0.1)
    assert metrics.bd_rate(RATES, PSNRS, RATES, PSNRS, mode=mode) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("mode", ["cubic", "pchip"])
def test_bd_psnr_of_shifted_curve(mode):
    assert metrics.bd_psnr(RATES, PSNRS, RATES, PSNRS + 1.0, mode=mode) == pytest.approx(1.0, abs=1e-6)
    assert metrics.bd_psnr(RATES, PSNRS, RATES, PSNRS - 0.5, mode=mode) == pytest.approx(-0.5, abs=1e-6)


def test_bd_rate_matches_reference_script():
    """The classic Bjøntegaard script (as in CompressAI), written out here independently."""
    r1, p1 = RATES, PSNRS
    r2 = RATES * np.array([0.7, 0.75, 0.8, 0.85, 0.9, 0.95])
    p2 = PSNRS + np.array([0.1, 0.0, 0.2, 0.1, 0.3, 0.2])
    fit1, fit2 = np.polyfit(p1, np.log(r1), 3), np.polyfit(p2, np.log(r2), 3)
    lo, hi = max(p1.min(), p2.min()), min(p1.max(), p2.max())
    i1, i2 = np.polyint(fit1), np.polyint(fit2)
    avg = (np.polyval(i2, hi) - np.polyval(i2, lo) - np.polyval(i1, hi) + np.polyval(i1, lo)) / (hi - lo)
    expected = (np.exp(avg) - 1) * 100
    assert metrics.bd_rate(r1, p1, r2, p2) == pytest.approx(expected, rel=1e-9)
    # Order of the points does not matter.
    perm = np.array([3, 0, 5, 1, 4, 2])
    assert metrics.bd_rate(r1[perm], p1[perm], r2, p2) == pytest.approx(expected, rel=1e-9)


def test_bd_nan_cases():
    assert math.isnan(metrics.bd_rate(RATES[:3], PSNRS[:3], RATES[:3], PSNRS[:3], mode="cubic"))
    assert metrics.bd_rate(RATES[:3], PSNRS[:3], RATES[:3] * 0.8, PSNRS[:3], mode="auto") == pytest.approx(-20, abs=0.1)
    # No overlap in quality.
    assert math.isnan(metrics.bd_rate(RATES, PSNRS, RATES, PSNRS + 100))
    with pytest.raises(ValueError, match="valid modes"):
        metrics.bd_rate(RATES, PSNRS, RATES, PSNRS, mode="linear")


def test_quality_at_rate():
    assert metrics.quality_at_rate([0.5, 1.0], [30.0, 34.0], 0.75) == pytest.approx(32.0)
    assert math.isnan(metrics.quality_at_rate([0.5, 1.0], [30.0, 34.0], 0.25))
    assert metrics.quality_at_rate([1.0, 0.5], [34.0, 30.0], 1.0) == pytest.approx(34.0)


def test_rd_auc():
    # Linear quality q = 10 * rate over [0, 2]: mean over [0.5, 1.5] is 10.
    assert metrics.rd_auc([0.1, 1.0, 2.0], [1.0, 10.0, 20.0], 0.5, 1.5) == pytest.approx(10.0)
    # Constant curve: AUC = the constant.
    assert metrics.rd_auc([0.1, 3.0], [0.9, 0.9], 0.25, 2.0) == pytest.approx(0.9)
    # A better curve has a larger AUC; a curve that does not span the window has none.
    assert metrics.rd_auc(RATES, PSNRS + 1, 0.25, 2.0) == pytest.approx(metrics.rd_auc(RATES, PSNRS, 0.25, 2.0) + 1)
    assert math.isnan(metrics.rd_auc([0.5, 1.0], [30, 34], 0.25, 2.0))
