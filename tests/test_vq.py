"""The vq (per-image codebook) method."""
import io

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

import mlimg  # noqa: F401  (registers the plugin)
from mlimg import codecs
from mlimg.codecs.base import CodecError, Header
from mlimg.codecs.vq import block_eigenvalues, codebook_for_quality, rgb_to_ycbcr, train_codebook, ycbcr_to_rgb

CODEC = codecs.get("vq")


def _round_trip(pixels, mode, **opts):
    enc = CODEC.encode(pixels, mode, CODEC.validate_options(mode, opts))
    header = Header(pixels.shape[1], pixels.shape[0], mode, "vq", CODEC.version)
    return enc, CODEC.decode(header, enc.chunks)


def _psnr(a, b):
    return 10 * np.log10(255**2 / max(np.mean((a.astype(float) - b.astype(float)) ** 2), 1e-12))


def _photo_crop():
    from sklearn.datasets import load_sample_image

    return np.ascontiguousarray(load_sample_image("china.jpg")[150:278, 250:378])


@settings(max_examples=20, deadline=None)
@given(
    h=st.integers(1, 26),
    w=st.integers(1, 26),
    mode=st.sampled_from(["L", "RGB", "RGBA"]),
    codebook=st.sampled_from([2, 8, 32]),
    block=st.sampled_from([2, 4, 5]),
    init=st.sampled_from(["eigen", "lbg", "random"]),
    mean_removed=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_round_trip_random(h, w, mode, codebook, block, init, mean_removed, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    gray = (yy * 7 + xx * 5) % 256
    shape = (h, w) if mode == "L" else (h, w, len(mode))
    pixels = np.clip((gray if mode == "L" else gray[:, :, None]) + rng.integers(-20, 21, shape), 0, 255).astype(np.uint8)
    opts = dict(codebook=codebook, block=block, init=init, mean_removed=mean_removed)
    enc, out = _round_trip(pixels, mode, **opts)
    assert out.shape == pixels.shape and out.dtype == np.uint8
    if mode == "RGBA":
        assert np.array_equal(out[:, :, 3], pixels[:, :, 3])
    # error bound: no worse than replacing every pixel with the image mean
    ref = pixels[..., :3] if mode != "L" else pixels
    flat = np.full_like(ref, int(np.rint(ref.mean())))
    assert _psnr(ref, out[..., :3] if mode != "L" else out) >= _psnr(ref, flat) - 3.0
    assert CODEC.encode(pixels, mode, CODEC.validate_options(mode, opts)).chunks == enc.chunks


def test_few_distinct_blocks_are_reproduced_exactly():
    rng = np.random.default_rng(1)
    tiles = rng.integers(0, 256, (3, 4, 4), dtype=np.uint8)
    pixels = np.block([[tiles[(i + j) % 3] for j in range(6)] for i in range(5)])
    _, out = _round_trip(pixels, "L", codebook=4)
    assert np.array_equal(out, pixels)


def test_photo_psnr_in_expected_range():
    photo = _photo_crop()
    psnrs = []
    for q in (30, 70):
        _, out = _round_trip(photo, "RGB", quality=q)
        psnrs.append(_psnr(photo, out))
    assert 18 < psnrs[0] < 22 and 22.5 < psnrs[1] < 27  # measured 19.8 and 24.3 dB
    assert psnrs[1] > psnrs[0]


def test_quality_is_monotone_in_rate():
    photo = _photo_crop()[:64, :64]
    sizes = []
    for q in (1, 20, 40, 60, 80, 100):
        enc = CODEC.encode(photo, "RGB", CODEC.validate_options("RGB", {"quality": q}))
        sizes.append(sum(len(p) for _, p in enc.chunks))
    assert sizes == sorted(sizes), sizes
    assert codebook_for_quality(1) == 4 and codebook_for_quality(100) == 1024


def test_eigen_init_is_competitive_with_random_init():
    from mlimg.codecs.vq import _nearest, to_blocks

    blocks, _ = to_blocks(rgb_to_ycbcr(_photo_crop())[:, :, :1], 4)
    err = {}
    for init in ("eigen", "random"):
        book = train_codebook(blocks, 32, init, 4)
        err[init] = float(((blocks - book[_nearest(blocks, book)]) ** 2).mean())
    assert err["eigen"] < 1.1 * err["random"]
    eig = block_eigenvalues(np.zeros((2, 16)) + np.arange(16), 4)
    assert eig.shape == (2,) and eig[0] == eig[1]


def test_ycbcr_round_trip_is_close():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (50, 50, 3), dtype=np.uint8)
    back = ycbcr_to_rgb(rgb_to_ycbcr(rgb))
    assert np.abs(back.astype(int) - rgb).max() <= 3


def test_invalid_options_list_valid_values():
    for bad in ({"codebook": 1}, {"codebook": 5000}, {"block": 1}, {"init": "kpp"}, {"mean_removed": "x"}):
        with pytest.raises(ValueError, match="valid"):
            CODEC.validate_options("RGB", bad)


def test_corrupt_chunks_raise_codec_error():
    pixels = _photo_crop()[:24, :24]
    enc, _ = _round_trip(pixels, "RGB", codebook=8)
    header = Header(24, 24, "RGB", "vq", 1)
    chunks = enc.chunks
    with pytest.raises(CodecError, match="VIDX"):
        CODEC.decode(header, chunks[:1])
    with pytest.raises(CodecError, match="VCBK"):
        CODEC.decode(header, [("VCBK", b"\x00\x04")] + chunks[1:])
    with pytest.raises(CodecError, match="VCBK"):
        CODEC.decode(header, chunks[:2])  # chroma plane missing
    rng = np.random.default_rng(0)
    for _ in range(60):
        i = int(rng.integers(0, len(chunks)))
        payload = bytearray(chunks[i][1])
        payload[rng.integers(0, len(payload))] ^= 1 << int(rng.integers(0, 8))
        bad = list(chunks)
        bad[i] = (chunks[i][0], bytes(payload))
        try:
            out = CODEC.decode(header, bad)
        except CodecError:
            continue
        assert out.shape == (24, 24, 3)


def test_bench_report_is_a_table():
    img = Image.fromarray(_photo_crop()[:32, :32])
    report = CODEC.bench_report([img])
    assert report.count("| eigen |") == 2 and "| random |" in report and "| lbg |" in report


def test_pillow_round_trip():
    photo = _photo_crop()[:40, :36]
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="MLIMG", method="vq", quality=60)
    buf.seek(0)
    with Image.open(buf) as im:
        assert im.mode == "RGB" and im.size == (36, 40)
        assert 2 <= im.info["vq_codebook_luma"] <= codebook_for_quality(60)  # capped by distinct blocks
        assert _psnr(photo, np.asarray(im)) > 22
