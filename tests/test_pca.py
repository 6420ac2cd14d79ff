"""The pca method (mlimg/codecs/pca*.py): round trips, rate control, determinism, corrupt data."""
import io

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mlimg.codecs import get
from mlimg.codecs.base import CodecError, Header

CHANNELS = {"L": (), "RGB": (3,), "RGBA": (4,)}


def _codec():
    return get("pca")


def _smooth(h, w, mode, seed=0):
    """A smooth synthetic photo-like image: gradients, a disc and mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(float)
    base = [96 + 80 * np.sin(xx / 9 + c) * np.cos(yy / 13 - c) for c in range(4)]
    img = np.stack(base, axis=-1) + rng.normal(0, 3, (h, w, 4))
    img[(yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (min(h, w) / 4) ** 2, :3] = 40
    img = np.clip(img, 0, 255).astype(np.uint8)
    return img[..., 0] if mode == "L" else img[..., : len(mode)]


def _round_trip(x, image_mode, **opts):
    codec = _codec()
    encoded = codec.encode(x, image_mode, codec.validate_options(image_mode, opts))
    header = Header(x.shape[1], x.shape[0], image_mode, "pca", 1)
    return encoded, codec.decode(header, encoded.chunks), header


def _size(encoded):
    return sum(len(p) for _, p in encoded.chunks)


def _psnr(a, b):
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 40), w=st.integers(1, 40), mode=st.sampled_from(["L", "RGB", "RGBA"]),
    pca_mode=st.sampled_from(["blocks", "rows"]), quality=st.integers(1, 100),
    block=st.sampled_from([8, 16]), sub=st.sampled_from(["auto", "4:2:0", "4:4:4"]),
    basis=st.sampled_from(["separable", "full"]), seed=st.integers(0, 1000),
)
def test_round_trip_shape_mode_determinism(h, w, mode, pca_mode, quality, block, sub, basis, seed):
    x = _smooth(h, w, mode, seed)
    opts = dict(mode=pca_mode, quality=quality, block=block, subsampling=sub, basis=basis)
    encoded, y, _ = _round_trip(x, mode, **opts)
    assert y.shape == x.shape and y.dtype == np.uint8
    assert _codec().encode(x, mode, _codec().validate_options(mode, opts)).chunks == encoded.chunks
    if mode == "RGBA":
        assert np.array_equal(y[..., 3], x[..., 3])  # alpha is lossless


@settings(max_examples=15, deadline=None)
@given(h=st.integers(1, 30), w=st.integers(1, 30), mode=st.sampled_from(["L", "RGB"]),
       seed=st.integers(0, 1000), block=st.sampled_from([8, 16]))
def test_error_within_quantiser_bound(h, w, mode, seed, block):
    """At quality 100, 4:4:4, the step is 2.4 levels; the dead-zone quantiser errs by at most 0.66 step
    per coefficient, and the orthonormal-ish transform keeps that RMS in each Y/Cb/Cr plane
    (the RGB conversion amplifies chroma error by at most ~1.8)."""
    x = np.random.default_rng(seed).integers(0, 256, (h, w, *CHANNELS[mode]), dtype=np.uint8)
    _, y, _ = _round_trip(x, mode, quality=100, subsampling="4:4:4", block=block)
    err = (y.astype(float) - x).reshape(-1, 1 if mode == "L" else 3)
    bound = 0.66 * 2.4 + 0.5  # + final rounding to 8 bits
    assert np.sqrt(np.mean(err ** 2)) < bound * (1.0 if mode == "L" else 1.8)
    assert np.abs(err).max() <= 16


def test_rows_mode_near_lossless_with_all_variance():
    x = _smooth(24, 31, "RGB")
    encoded, y, header = _round_trip(x, "RGB", mode="rows", quality=100, variance=0.999999)
    err = y.astype(float) - x  # both factors quantised with step 0.5: small, not zero
    assert np.sqrt(np.mean(err ** 2)) < 1.5 and np.abs(err).max() <= 8
    info = _codec().describe(header, encoded.chunks)
    assert info["pca_mode"] == "rows" and len(info["pca_components"]) == 3


def test_rows_variance_sets_component_count_and_clips():
    x = _smooth(48, 40, "RGB")
    counts = []
    for v in (0.5, 0.9, 0.99):
        encoded, y, header = _round_trip(x, "RGB", mode="rows", variance=v)
        counts.append(_codec().describe(header, encoded.chunks)["pca_components"])
        assert encoded.info["pca_components"] == counts[-1]
    assert all(a <= b for lo, hi in zip(counts, counts[1:]) for a, b in zip(lo, hi))
    assert sum(counts[0]) < sum(counts[-1])


@pytest.mark.parametrize("pca_mode", ["blocks", "rows"])
def test_quality_is_monotone_in_rate(pca_mode):
    x = _smooth(48, 64, "RGB")
    sizes = [_size(_round_trip(x, "RGB", mode=pca_mode, quality=q)[0]) for q in (1, 20, 40, 60, 80, 100)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def _sample_photo(name):
    """A 192x256 crop of a photo shipped with scikit-learn (a test dependency)."""
    from sklearn.datasets import load_sample_image

    return np.ascontiguousarray(load_sample_image(name)[100:292, 200:456])


def _jpeg_psnr_at(x, bpp):
    """Pillow JPEG (default settings) PSNR at a rate, interpolated over qualities."""
    from PIL import Image

    rates, psnrs = [], []
    for q in (10, 30, 50, 75, 90):
        buf = io.BytesIO()
        Image.fromarray(x).save(buf, "JPEG", quality=q)
        rates.append(buf.tell() * 8 / x[..., 0].size)
        psnrs.append(_psnr(x, np.asarray(Image.open(buf))))
    return float(np.interp(bpp, rates, psnrs))


@pytest.mark.parametrize("name, quality, lo, hi", [
    ("china.jpg", 25, 24.5, 27.5), ("china.jpg", 50, 30.0, 33.0), ("flower.jpg", 50, 29.0, 32.0),
])
def test_real_photo_lands_in_expected_psnr_range(name, quality, lo, hi):
    """Measured when written: china q25 26.1 dB (0.78 bpp) / q50 31.7 dB (1.82 bpp), flower q50
    30.8 dB (1.90 bpp); Pillow JPEG at the same rates 24.5 / 29.8 / 29.3 dB. Blocks mode must
    stay in range and ahead of JPEG."""
    x = _sample_photo(name)
    encoded, y, _ = _round_trip(x, "RGB", quality=quality)
    bpp = _size(encoded) * 8 / x[..., 0].size
    assert lo < _psnr(x, y) < hi
    assert _psnr(x, y) > _jpeg_psnr_at(x, bpp) + 0.5


def test_rows_mode_on_a_photo():
    x = _sample_photo("flower.jpg")
    encoded, y, header = _round_trip(x, "RGB", mode="rows", variance=0.95)
    assert 24.0 < _psnr(x, y) < 40.0
    assert all(1 <= k < 192 for k in _codec().describe(header, encoded.chunks)["pca_components"])


@pytest.mark.parametrize("opts, word", [
    ({"mode": "pixels"}, "blocks"), ({"quality": 0}, "1..100"), ({"quality": 101}, "1..100"),
    ({"block": 12}, "8 or 16"), ({"subsampling": "4:2:2"}, "4:4:4"), ({"variance": 1.0}, "0 < v < 1"),
    ({"basis": "dct"}, "separable"), ({"colour": 1}, "valid options"),
])
def test_bad_options_list_valid_values(opts, word):
    with pytest.raises(ValueError, match=word):
        _codec().validate_options("RGB", opts)


def test_unsupported_mode():
    with pytest.raises(ValueError, match="L, RGB, RGBA"):
        _codec().validate_options("I;16", {})


@pytest.mark.parametrize("pca_mode", ["blocks", "rows"])
def test_corrupt_payloads_raise_codec_error_only(pca_mode):
    x = _smooth(20, 27, "RGBA")
    encoded, _, header = _round_trip(x, "RGBA", mode=pca_mode)
    codec = _codec()
    rng = np.random.default_rng(3)
    for _ in range(60):
        chunks = [list(c) for c in encoded.chunks]
        i = int(rng.integers(0, len(chunks)))
        data = bytearray(chunks[i][1])
        if rng.random() < 0.3 and data:
            data = data[: int(rng.integers(0, len(data)))]
        elif data:
            data[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
        chunks[i][1] = bytes(data)
        try:
            y = codec.decode(header, [tuple(c) for c in chunks])
        except CodecError:
            continue
        assert y.shape == x.shape  # undetected damage still gives a well-formed image


def test_missing_and_unexpected_chunks():
    x = _smooth(9, 9, "RGB")
    encoded, _, header = _round_trip(x, "RGB")
    codec = _codec()
    with pytest.raises(CodecError, match="PBAS"):
        codec.decode(header, [c for c in encoded.chunks if c[0] != "PBAS"])
    with pytest.raises(CodecError, match="XXXX"):
        codec.decode(header, encoded.chunks + [("XXXX", b"")])
    with pytest.raises(CodecError, match="PHDR"):
        codec.decode(header, [("PHDR", b"\x00\x07")] + encoded.chunks[1:])


def test_pillow_round_trip_and_info():
    from PIL import Image

    import mlimg  # noqa: F401  registers the plugin

    x = _smooth(33, 45, "RGB")
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, format="MLIMG", method="pca", quality=60, mode="rows")
    buf.seek(0)
    im = Image.open(buf)
    assert im.size == (45, 33) and im.mode == "RGB"
    assert im.info["pca_mode"] == "rows" and len(im.info["pca_components"]) == 3
    assert np.asarray(im).shape == x.shape
    x = _smooth(96, 128, "RGB")
    sizes = []
    for bpp in (0.8, 2.0):
        buf = io.BytesIO()
        Image.fromarray(x).save(buf, format="MLIMG", method="pca", target_bpp=bpp)
        assert buf.tell() * 8 / (96 * 128) <= bpp
        sizes.append(buf.tell())
    assert sizes[0] < sizes[1]


def test_rows_component_count_beyond_rank_is_rejected():
    x = _smooth(12, 10, "L")
    encoded, _, header = _round_trip(x, "L", mode="rows")
    chunks = dict(encoded.chunks)
    bad = chunks["PHDR"][:3] + (60000).to_bytes(2, "big")
    with pytest.raises(CodecError, match="PCOF"):
        _codec().decode(header, [("PHDR", bad), ("PCOF", chunks["PCOF"])])
