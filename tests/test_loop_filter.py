"""The container's adaptive loop filter (fLTR, spec/MLIMG.md section 14): the vectorised filter
against a per-pixel transcription of the spec, the payload codec, the encoder's fit, and the
plugin: when the chunk is written, when it is applied, and errors."""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image, ImageFile

from conftest import decode_pixels, smooth_image

import mlimg  # noqa: F401  (registers the format)
from mlimg import container, loop_filter as lf


def reference_apply(pixels: np.ndarray, filt: lf.LoopFilter) -> np.ndarray:
    """spec/MLIMG.md section 14, one pixel at a time, in Python integers."""
    img = pixels[..., None] if pixels.ndim == 2 else pixels
    h, w = img.shape[:2]
    C = filt.channels

    def P(c, y, x):
        return int(img[min(max(y, 0), h - 1), min(max(x, 0), w - 1), c])

    def L(y, x):
        return sum(P(c, y, x) for c in range(C))

    out = img.copy()
    for y in range(h):
        for x in range(w):
            H = sum(abs(L(y + dy, x + dx + 1) - L(y + dy, x + dx - 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
            V = sum(abs(L(y + dy + 1, x + dx) - L(y + dy - 1, x + dx)) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
            a = sum(H + V > t for t in filt.thresholds)
            d = 0
            if filt.direction_classes == 3:
                d = 1 if H > 2 * V else 2 if V > 2 * H else 0
            j = a * filt.direction_classes + d
            for c in range(C):
                f = [P(c, y + dy, x + dx) + P(c, y - dy, x - dx) - 2 * P(c, y, x) for dy, dx in lf.OWN_TAPS]
                for o in range(C):
                    if o != c:
                        f.append(P(o, y, x) - P(c, y, x))
                        f += [P(o, y + dy, x + dx) + P(o, y - dy, x - dx) - 2 * P(o, y, x) for dy, dx in lf.CROSS_TAPS]
                f.append(1)
                acc = sum(int(wi) * fi for wi, fi in zip(filt.coefficients[c, j], f))
                out[y, x, c] = min(max(P(c, y, x) + ((acc + (1 << (filt.shift - 1))) >> filt.shift), 0), 255)
    return out[..., 0] if pixels.ndim == 2 else out


def random_filter(rng, channels, n_act, n_dir, scale=300) -> lf.LoopFilter:
    coefficients = rng.integers(-scale, scale + 1, size=(channels, n_act * n_dir, lf.feature_count(channels)))
    thresholds = tuple(sorted(int(t) for t in rng.integers(0, 400 * channels, size=n_act - 1)))
    return lf.LoopFilter(channels, n_act, n_dir, thresholds, coefficients.astype(np.int64))


@pytest.mark.parametrize("mode, n_act, n_dir", [("RGB", 4, 3), ("L", 2, 1), ("RGBA", 1, 1), ("L", 3, 3)])
def test_apply_matches_the_spec_text(mode, n_act, n_dir, monkeypatch):
    rng = np.random.default_rng(7)
    img = np.asarray(Image.fromarray(smooth_image(13, 11)).convert(mode)).copy()
    img[2:5, 3:9] = rng.integers(0, 256, size=img[2:5, 3:9].shape)  # texture and clipping
    filt = random_filter(rng, 1 if mode == "L" else 3, n_act, n_dir)
    expected = reference_apply(img, filt)
    assert np.array_equal(lf.apply(img, filt), expected)
    monkeypatch.setattr(lf, "BAND_ROWS", 4)  # bands with context rows give the same pixels,
    assert np.array_equal(lf.apply(img, filt), expected)  # filtered side by side (on 2+ cores)
    monkeypatch.setattr(lf, "MAX_THREADS", 1)  # or one after another
    assert np.array_equal(lf.apply(img, filt), expected)
    if mode == "RGBA":
        assert np.array_equal(expected[..., 3], img[..., 3])  # alpha passes through


@settings(max_examples=40, deadline=None)
@given(channels=st.sampled_from([1, 3]), n_act=st.integers(1, lf.MAX_ACTIVITY_CLASSES),
       n_dir=st.sampled_from(lf.DIRECTION_CLASSES), scale=st.sampled_from([0, 3, 200, lf.MAX_COEFFICIENT]),
       seed=st.integers(0, 2**32 - 1))
def test_payload_round_trip(channels, n_act, n_dir, scale, seed):
    filt = random_filter(np.random.default_rng(seed), channels, n_act, n_dir, scale)
    back = lf.unpack(lf.pack(filt), channels)
    assert (back.channels, back.activity_classes, back.direction_classes, back.thresholds, back.shift) == (
        channels, n_act, n_dir, filt.thresholds, filt.shift)
    assert np.array_equal(back.coefficients, filt.coefficients)


def _payload() -> bytes:
    filt = random_filter(np.random.default_rng(3), 3, 2, 3)
    return lf.pack(filt)


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p[:4], "shorter than its 6-byte head"),
    (lambda p: b"\x01" + p[1:], "version 1 is not supported"),
    (lambda p: p[:1] + b"\x01" + p[2:], "filters 1 colour channel"),
    (lambda p: p[:2] + b"\x00" + p[3:], "shift 0"),
    (lambda p: p[:3] + b"\x11" + p[4:], "17 activity classes"),
    (lambda p: p[:4] + b"\x02" + p[5:], "2 direction classes"),
    (lambda p: p[:5] + b"\x10" + p[6:], "Golomb order 16"),
    (lambda p: p[:8], "too short for 1 activity thresholds"),
    (lambda p: p[:-3], "coefficient data ends"),
    (lambda p: p + b"\x00", "data after the coefficients"),
    (lambda p: p[:10] + b"\x00" * 5 + p[15:], "leading zeros"),
])
def test_malformed_payloads_are_refused_by_name(mutate, message):
    with pytest.raises(lf.LoopFilterError, match=f"chunk 'fLTR': .*{message}"):
        lf.unpack(mutate(_payload()), 3)


def test_a_huge_coefficient_body_is_refused_before_it_is_read():
    payload = _payload() + bytes(10_000_000)
    with pytest.raises(lf.LoopFilterError, match="more than .* codes can take"):
        lf.unpack(payload, 3)


def test_oversized_coefficient_and_bad_thresholds_are_refused():
    filt = random_filter(np.random.default_rng(1), 1, 3, 1)
    big = filt.coefficients.copy()
    big[0, 1, 0] = lf.MAX_COEFFICIENT
    big[0, 2, 0] = lf.MAX_COEFFICIENT  # fine: class 2 is coded as 0 against class 1
    assert np.array_equal(lf.unpack(lf.pack(lf.LoopFilter(1, 3, 1, filt.thresholds, big)), 1).coefficients, big)
    big[0, 2, 0] = lf.MAX_COEFFICIENT + 1
    with pytest.raises(lf.LoopFilterError, match="exceeds"):
        lf.unpack(lf.pack(lf.LoopFilter(1, 3, 1, filt.thresholds, big)), 1)
    with pytest.raises(lf.LoopFilterError, match="non-decreasing"):
        lf.unpack(lf.pack(lf.LoopFilter(1, 3, 1, (9, 2), filt.coefficients)), 1)


def _blurred(img: np.ndarray) -> np.ndarray:
    """A stand-in for a lossy decode: 3x3 box blur and a colour cast."""
    pad = np.pad(img.astype(np.int64), ((1, 1), (1, 1), (0, 0)), mode="edge")
    blur = sum(pad[dy:dy + img.shape[0], dx:dx + img.shape[1]] for dy in range(3) for dx in range(3)) // 9
    return np.clip(blur + np.array([6, -4, 3]), 0, 255).astype(np.uint8)


def _sse(a, b):
    return float(((a.astype(np.int64) - b) ** 2).sum())


def test_fitted_filter_undoes_a_blur_and_a_colour_cast():
    rng = np.random.default_rng(0)
    original = np.clip(smooth_image(96, 80).astype(np.int64) + rng.integers(-20, 21, size=(96, 80, 3)), 0, 255).astype(np.uint8)
    decoded = _blurred(original)
    choice = lf.choose(decoded, original, file_bytes=20000)
    assert choice is not None and choice.gain_db > 1.0
    filtered = lf.apply(decoded, lf.unpack(choice.payload, 3))
    measured = 10 * np.log10(_sse(decoded, original) / _sse(filtered, original))
    assert measured == pytest.approx(choice.gain_db, abs=0.1)  # the encoder's estimate is the real gain


def test_nothing_to_correct_means_no_filter():
    img = smooth_image(40, 40)
    assert lf.choose(img, img, file_bytes=1000) is None
    forced = lf.choose(img, img, file_bytes=1000, force=True)
    assert forced is not None and np.array_equal(lf.apply(img, forced.filt), img)


# ---------------------------------------------------------------- through Pillow


def save(img, method="pca", **opts) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="MLIMG", method=method, **opts)
    return buf.getvalue()


load = decode_pixels


def strip_filter(data: bytes) -> bytes:
    """The file as a 1.0 encoder would have written it: no fLTR, version 1.0."""
    parsed = container.parse(data)
    header = container.FileHeader(parsed.header.width, parsed.header.height, parsed.header.mode,
                                  parsed.header.method, parsed.header.method_version)
    return container.build(header, [c for c in parsed.chunks if c.type != "fLTR"])


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_saved_filter_is_applied_and_can_be_switched_off(mode):
    original = np.asarray(Image.fromarray(smooth_image(72, 56)).convert(mode))
    data = save(original, quality=10, loop_filter=True)
    types = [c.type for c in container.parse(data).chunks]
    assert types[-1] == "fLTR"  # after the method chunks
    with Image.open(io.BytesIO(data)) as im:
        assert im.info["format_version"] == "1.1" and im.info["loop_filter"] is True
    filtered, plain = load(data), load(data, loop_filter=False)
    assert np.array_equal(plain, load(strip_filter(data)))  # what a decoder without fLTR shows
    assert not np.array_equal(filtered, plain)
    assert _sse(filtered, original) < _sse(plain, original)
    assert np.array_equal(filtered, load(data, loop_filter=True))
    assert container.parse(save(original, quality=10, loop_filter=False)).header.version == (1, 0)
    default = container.parse(save(original, method="kmeans", quality=10))  # kmeans' default: no filter
    assert default.header.version == (1, 0) and "fLTR" not in [c.type for c in default.chunks]


def test_decoders_skip_the_filter_for_partial_decodes():
    original = smooth_image(64, 64)
    data = save(original, quality=10, loop_filter=True)
    parsed = container.parse(data)
    cut = data[:parsed.chunks[-1].offset + 5]  # truncated inside fLTR: method chunks complete
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        assert np.array_equal(load(cut), load(data, loop_filter=False))
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", (32, 32))
        im.load()  # pca has no draft decode: a full decode, filtered
        assert np.array_equal(np.asarray(im), load(data))


@pytest.mark.parametrize("kwargs, message", [
    ({"loop_filter": "yes"}, r"valid is None \(the method's default\), 'auto', True or False"),
    ({"loop_filter": 1}, "valid is None"),
    ({"method": "lossless", "loop_filter": True}, "lossy methods"),
    ({"method": "lossless", "loop_filter": "auto"}, "lossy methods"),
])
def test_bad_loop_filter_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        save(smooth_image(8, 8), **kwargs)
    save(smooth_image(8, 8), method="lossless", loop_filter=False)  # False is always allowed
    with pytest.raises(ValueError, match="decode option loop_filter"):
        load(save(smooth_image(8, 8), quality=10, loop_filter=True), loop_filter="no")


def test_filter_chunk_errors_through_pillow():
    data = save(smooth_image(40, 40), quality=10, loop_filter=True)
    parsed = container.parse(data)
    chunks = [c if c.type != "fLTR" else container.RawChunk("fLTR", b"\x07" + c.data[1:]) for c in parsed.chunks]
    broken = container.build(parsed.header, chunks)
    with pytest.raises(OSError, match="chunk 'fLTR': version 7"):
        load(broken)
    assert np.array_equal(load(broken, loop_filter=False), load(data, loop_filter=False))
    with pytest.raises(ValueError, match="only once"):
        container.build(parsed.header, parsed.chunks + [parsed.chunks[-1]])
    twice = data[:-12] + container.build_chunk("fLTR", parsed.chunks[-1].data) + data[-12:]
    with pytest.raises(OSError, match="'fLTR'.*only once"):
        load(twice)


def test_a_16_bit_file_with_a_filter_is_refused():
    grey = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    data = save(grey, method="lossless")
    with pytest.raises(ValueError, match="lossy methods"):
        save(grey, method="pca", loop_filter=True)
    parsed = container.parse(data)
    payload = lf.pack(random_filter(np.random.default_rng(0), 1, 1, 1))
    forged = container.build(parsed.header, [*parsed.chunks, ("fLTR", payload)])
    with pytest.raises(OSError, match="mode I;16 has no loop filter"):
        load(forged)
