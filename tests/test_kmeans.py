"""The kmeans palette method and the shared index-map coder."""
import io

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

import mlimg  # noqa: F401  (registers the plugin)
from mlimg import codecs
from mlimg.codecs.base import CodecError, Header
from mlimg.codecs.indexmap import decode_indexmap, encode_indexmap
from mlimg.codecs.kmeans import elbow_k, k_for_quality

CODEC = codecs.get("kmeans")


def _round_trip(pixels, mode, **opts):
    enc = CODEC.encode(pixels, mode, CODEC.validate_options(mode, opts))
    header = Header(pixels.shape[1], pixels.shape[0], mode, "kmeans", CODEC.version)
    return enc, CODEC.decode(header, enc.chunks)


def _photo_crop():
    from sklearn.datasets import load_sample_image

    return np.ascontiguousarray(load_sample_image("china.jpg")[150:246, 250:346])


def _smooth(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    base = np.stack([yy * 255 // max(h, 1), xx * 255 // max(w, 1), (yy + xx) * 127 // max(h + w, 1)], -1)
    return np.clip(base + rng.integers(-6, 7, base.shape), 0, 255).astype(np.uint8)


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 24),
    w=st.integers(1, 24),
    mode=st.sampled_from(["L", "RGB", "RGBA"]),
    k=st.sampled_from([2, 3, 16]),
    colorspace=st.sampled_from(["rgb", "lab"]),
    dither=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_round_trip_random(h, w, mode, k, colorspace, dither, seed):
    rng = np.random.default_rng(seed)
    shape = (h, w) if mode == "L" else (h, w, len(mode))
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    enc, out = _round_trip(pixels, mode, k=k, colorspace=colorspace, dither=dither)
    assert out.shape == pixels.shape and out.dtype == np.uint8
    colours = out.reshape(h * w, -1)[:, : 1 if mode == "L" else 3]
    assert len(np.unique(colours, axis=0)) <= k  # a k-colour palette
    if mode == "RGBA":
        assert np.array_equal(out[:, :, 3], pixels[:, :, 3])  # alpha is lossless
    again = CODEC.encode(pixels, mode, CODEC.validate_options(mode, dict(k=k, colorspace=colorspace, dither=dither)))
    assert again.chunks == enc.chunks  # deterministic


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_image_with_at_most_k_colours_is_exact(mode):
    rng = np.random.default_rng(3)
    palette = rng.integers(0, 256, (6, 3), dtype=np.uint8)
    idx = rng.integers(0, 6, (20, 30))
    pixels = palette[idx] if mode == "RGB" else palette[idx][:, :, 0]
    _, out = _round_trip(pixels, mode, k=8)
    assert np.array_equal(out, pixels)


def test_photo_psnr_in_expected_range_and_beats_pillow_quantize():
    photo = _photo_crop()
    enc, out = _round_trip(photo, "RGB", k=16)
    mse = np.mean((out.astype(float) - photo) ** 2)
    psnr = 10 * np.log10(255**2 / mse)
    pil = np.asarray(Image.fromarray(photo).quantize(16).convert("RGB"), dtype=float)
    pil_psnr = 10 * np.log10(255**2 / np.mean((pil - photo) ** 2))
    assert 26 < psnr < 34
    assert psnr > pil_psnr


def test_quality_is_monotone_in_rate():
    pixels = _smooth(40, 48)
    sizes = []
    for q in (1, 20, 40, 60, 80, 100):
        enc = CODEC.encode(pixels, "RGB", CODEC.validate_options("RGB", {"quality": q}))
        sizes.append(sum(len(p) for _, p in enc.chunks))
    assert sizes == sorted(sizes), sizes
    assert [k_for_quality(q) for q in (1, 100)] == [2, 256]
    assert all(k_for_quality(q) <= k_for_quality(q + 1) for q in range(1, 100))


def test_auto_k_finds_the_elbow_and_reports_facts():
    rng = np.random.default_rng(0)
    centres = np.array([[20, 20, 20], [230, 30, 30], [30, 230, 30], [30, 30, 230]], dtype=float)
    pixels = np.clip(centres[rng.integers(0, 4, (48, 48))] + rng.normal(0, 4, (48, 48, 3)), 0, 255).astype(np.uint8)
    enc, out = _round_trip(pixels, "RGB", k="auto")
    assert enc.info["kmeans_k"] == 4
    assert enc.info["kmeans_colors_after"] == 4 and enc.info["kmeans_colors_before"] > 100
    assert elbow_k([2, 4, 8, 16], [100.0, 10.0, 8.0, 7.0]) == 4


def test_index_coder_beats_png_deflate_on_a_palette_photo():
    photo = _photo_crop()
    quant = Image.fromarray(photo).quantize(32)
    idx = np.asarray(quant)
    palette = np.array(quant.getpalette()[: 3 * 32]).reshape(-1, 3)
    data = encode_indexmap(idx, palette)
    assert np.array_equal(decode_indexmap(data, *idx.shape, palette, "KIDX"), idx)
    png = io.BytesIO()
    quant.save(png, "PNG", optimize=True)
    assert len(data) < 0.9 * png.tell()


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 30), w=st.integers(1, 30), k=st.integers(1, 40), seed=st.integers(0, 1000))
def test_index_coder_round_trip(h, w, k, seed):
    rng = np.random.default_rng(seed)
    vectors = rng.integers(0, 256, (k, 3))
    imap = rng.integers(0, k, (h, w))
    imap[: h // 2] = imap[0, 0]  # flat area plus noise
    assert np.array_equal(decode_indexmap(encode_indexmap(imap, vectors), h, w, vectors, "KIDX"), imap)


def test_invalid_options_list_valid_values():
    for bad in ({"k": 1}, {"k": 300}, {"colorspace": "hsv"}, {"dither": "yes"}, {"quality": 0}, {"palette": 3}):
        with pytest.raises(ValueError, match="valid"):
            CODEC.validate_options("RGB", bad)


def test_corrupt_chunks_raise_codec_error_naming_the_chunk():
    pixels = _smooth(16, 16)
    enc, _ = _round_trip(pixels, "RGB", k=8)
    chunks = dict(enc.chunks)
    header = Header(16, 16, "RGB", "kmeans", 1)
    cases = {
        "KPAL": [("KPAL", b""), ("KIDX", chunks["KIDX"])],
        "KIDX": [("KPAL", chunks["KPAL"]), ("KIDX", chunks["KIDX"][:5])],
    }
    for name, bad in cases.items():
        with pytest.raises(CodecError, match=name):
            CODEC.decode(header, bad)
    with pytest.raises(CodecError, match="KIDX"):
        CODEC.decode(header, [("KPAL", chunks["KPAL"])])
    rng = np.random.default_rng(0)
    for _ in range(60):  # bit flips: CodecError or some image, never another exception
        payload = bytearray(chunks["KIDX"])
        payload[rng.integers(0, len(payload))] ^= 1 << int(rng.integers(0, 8))
        try:
            out = CODEC.decode(header, [("KPAL", chunks["KPAL"]), ("KIDX", bytes(payload))])
        except CodecError:
            continue
        assert out.shape == (16, 16, 3)


def test_pillow_round_trip_and_info():
    pixels = _smooth(20, 24)
    pixels = np.dstack([pixels, np.where(np.arange(24) < 12, 255, 0).astype(np.uint8)[None, :].repeat(20, 0)])
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buf, format="MLIMG", method="kmeans", k=8)
    buf.seek(0)
    with Image.open(buf) as im:
        assert im.mode == "RGBA" and im.size == (24, 20)
        assert im.info["kmeans_k"] == 8
        out = np.asarray(im)
    assert np.array_equal(out[:, :, 3], pixels[:, :, 3])
    assert len(np.unique(out[:, :, :3].reshape(-1, 3), axis=0)) <= 8
