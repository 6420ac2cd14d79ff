"""The `lossless` method: exact round trips for every mode and shape, deterministic output,
and corrupt chunks reported as OSError (never a silently wrong image)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlimg.codecs import lossless_geometry as geometry
from mlimg.codecs import lossless_tokens as tokens
from mlimg.codecs.base import CodecError, Header
from mlimg.codecs.lossless import LosslessCodec, decode_plane, encode_plane

CODEC = LosslessCodec()
CHANNELS = {"L": 1, "I;16": 1, "RGB": 3, "RGBA": 4}


def _dtype(mode):
    return np.uint16 if mode == "I;16" else np.uint8


def _roundtrip(pixels, mode):
    enc = CODEC.encode(pixels, mode, CODEC.validate_options(mode, {}))
    header = Header(width=pixels.shape[1], height=pixels.shape[0], mode=mode, method="lossless", method_version=1)
    return enc, CODEC.decode(header, enc.chunks)


def _shape(mode, h, w):
    return (h, w) if CHANNELS[mode] == 1 else (h, w, CHANNELS[mode])


def _smooth_image(mode, h, w, seed=0):
    """Gradient + noise: exercises the predictors and the large-residual raw bits."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(_dtype(mode)).max
    y, x = np.mgrid[0:h, 0:w]
    base = (x * 3 + y * 5) * (top // 400)
    arr = base[..., None] if CHANNELS[mode] > 1 else base
    arr = arr + rng.integers(-top // 50, top // 50 + 1, size=_shape(mode, h, w))
    return np.clip(arr, 0, top).astype(_dtype(mode))


@settings(max_examples=40, deadline=None)
@given(
    mode=st.sampled_from(sorted(CHANNELS)),
    h=st.integers(1, 24),
    w=st.integers(1, 24),
    kind=st.sampled_from(["random", "constant", "smooth"]),
    seed=st.integers(0, 2**16),
)
def test_every_mode_and_shape_roundtrips_exactly(mode, h, w, kind, seed):
    rng = np.random.default_rng(seed)
    top = np.iinfo(_dtype(mode)).max
    if kind == "random":
        pixels = rng.integers(0, top + 1, size=_shape(mode, h, w), dtype=np.int64).astype(_dtype(mode))
    elif kind == "constant":
        pixels = np.full(_shape(mode, h, w), rng.integers(0, top + 1), _dtype(mode))
    else:
        pixels = _smooth_image(mode, h, w, seed)
    _, out = _roundtrip(pixels, mode)
    assert out.dtype == pixels.dtype and out.shape == pixels.shape
    np.testing.assert_array_equal(out, pixels)


@pytest.mark.parametrize("shape", [(1, 1), (1, 200), (200, 1), (2, 3), (67, 45)])
@pytest.mark.parametrize("mode", sorted(CHANNELS))
def test_thin_and_odd_shapes(shape, mode):
    pixels = _smooth_image(mode, *shape)
    _, out = _roundtrip(pixels, mode)
    np.testing.assert_array_equal(out, pixels)


def test_extreme_values_wrap_correctly():
    """Alternating 0/max pixels give the largest residuals of both signs."""
    for mode in ("L", "I;16"):
        top = np.iinfo(_dtype(mode)).max
        pixels = (np.indices((33, 31)).sum(axis=0) % 2 * top).astype(_dtype(mode))
        _, out = _roundtrip(pixels, mode)
        np.testing.assert_array_equal(out, pixels)


def test_compresses_smooth_images_and_is_deterministic():
    pixels = _smooth_image("RGB", 64, 64)
    first, _ = _roundtrip(pixels, "RGB")
    second, _ = _roundtrip(pixels.copy(), "RGB")
    assert first.chunks == second.chunks
    size = sum(len(d) for _, d in first.chunks)
    assert size < pixels.nbytes / 2, size
    constant = np.full((64, 64, 3), 77, np.uint8)
    enc, _ = _roundtrip(constant, "RGB")
    assert sum(len(d) for _, d in enc.chunks) < 1200


def test_plane_helpers_roundtrip_and_reject_bad_input():
    for dtype in (np.uint8, np.uint16):
        plane = _smooth_image("I;16" if dtype == np.uint16 else "L", 19, 23)
        data = encode_plane(plane)
        np.testing.assert_array_equal(decode_plane(data, 19, 23, dtype), plane)
        with pytest.raises(OSError):
            decode_plane(data[:5], 19, 23, dtype)
    with pytest.raises(ValueError):
        encode_plane(np.zeros((2, 2, 2), np.uint8))


def _corrupt(chunks, name, mutate):
    return [(t, mutate(d) if t == name else d) for t, d in chunks]


def _flip(pos):
    def mutate(data):
        b = bytearray(data)
        b[pos % len(b)] ^= 0x5A
        return bytes(b)

    return mutate


@pytest.mark.parametrize("name", ["LLTK", "LLRB", "LLHD"])
def test_corrupt_chunks_raise_oserror(name):
    pixels = _smooth_image("RGB", 40, 37, seed=3)
    enc, _ = _roundtrip(pixels, "RGB")
    header = Header(width=37, height=40, mode="RGB", method="lossless", method_version=1)
    payload = dict(enc.chunks)[name]
    assert payload, name
    mutations = [_flip(i) for i in (0, len(payload) // 2, len(payload) - 1)]
    mutations += [lambda d: d[: len(d) // 2], lambda d: d + b"\x00\x01\x02\x03", lambda d: b""]
    for mutate in mutations:
        bad = _corrupt(enc.chunks, name, mutate)
        if bad == enc.chunks:
            continue
        with pytest.raises(OSError) as info:
            CODEC.decode(header, bad)
        assert isinstance(info.value, CodecError)
        assert "LL" in str(info.value)


def test_missing_or_reordered_chunks_raise():
    pixels = _smooth_image("L", 9, 9)
    enc, _ = _roundtrip(pixels, "L")
    header = Header(width=9, height=9, mode="L", method="lossless", method_version=1)
    with pytest.raises(CodecError):
        CODEC.decode(header, enc.chunks[:2])
    with pytest.raises(CodecError):
        CODEC.decode(header, enc.chunks[::-1])
    wrong_mode = Header(width=9, height=9, mode="RGB", method="lossless", method_version=1)
    with pytest.raises(CodecError):
        CODEC.decode(wrong_mode, enc.chunks)


def test_options_are_validated():
    assert CODEC.validate_options("RGB", {}) == {}
    with pytest.raises(ValueError, match="valid options"):
        CODEC.validate_options("RGB", {"quality": 50})
    with pytest.raises(ValueError, match="valid modes"):
        CODEC.validate_options("P", {})


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (5, 7), (16, 16), (33, 70)])
def test_passes_cover_every_pixel_once_and_only_look_back(shape):
    h, w = shape
    known = np.zeros(h * w, bool)
    for p in geometry.passes(h, w):
        assert not known[p.flat].any()
        if p.neighbours.size:
            assert known[p.neighbours].all()
        known[p.flat] = True
    assert known.all()


@given(st.lists(st.integers(-(2**15), 2**15 - 1), min_size=1, max_size=300))
@settings(max_examples=30, deadline=None)
def test_tokens_and_raw_bits_invert(residuals):
    e = np.array(residuals, np.int64)
    tok, raw, nraw = tokens.to_tokens(e)
    assert tok.max() < tokens.token_count(16)
    np.testing.assert_array_equal(tokens.raw_bit_counts(tok), nraw)
    writer = tokens.BitWriter()
    writer.write(raw, nraw)
    back = tokens.BitReader(writer.finish()).read(nraw)
    np.testing.assert_array_equal(tokens.from_tokens(tok, back), e)


@pytest.mark.parametrize("mode", sorted(CHANNELS))
def test_pillow_save_and_open(tmp_path, mode):
    import mlimg  # noqa: F401 - registers the plugin
    from PIL import Image

    pixels = _smooth_image(mode, 21, 34, seed=5)
    if mode == "I;16":
        im = Image.frombytes("I;16", (34, 21), pixels.astype("<u2").tobytes())
    else:
        im = Image.fromarray(pixels, mode)
    path = tmp_path / "x.mlimg"
    im.save(path, format="MLIMG", method="lossless")
    with Image.open(path) as out:
        assert out.mode == mode
        np.testing.assert_array_equal(np.asarray(out), pixels)


def _with_stream_lengths(chunks, n_planes):
    """Rewrite the LLTK/LLRB byte counts stored in LLHD to match the (mutated) chunks."""
    import struct

    data = dict(chunks)
    at = 3 + n_planes + 4  # version, planes, bits, channel order, pixel CRC
    head = bytearray(data["LLHD"])
    head[at : at + 8] = struct.pack("<II", len(data["LLTK"]), len(data["LLRB"]))
    return [(t, bytes(head) if t == "LLHD" else d) for t, d in chunks]


@pytest.mark.parametrize("claim", [(2000, 2000), (4000, 4000)])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_huge_claimed_size_from_tiny_file_fails_fast_and_cheaply(mode, claim):
    """Fuzzer find: a 17x13 file whose header claims a huge image must be rejected before the
    decoder allocates (and fills) planes of the claimed size."""
    import time
    import tracemalloc

    pixels = _smooth_image(mode, 13, 17, seed=7)
    enc, _ = _roundtrip(pixels, mode)
    header = Header(width=claim[1], height=claim[0], mode=mode, method="lossless", method_version=1)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(OSError):
            CODEC.decode(header, enc.chunks)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 5, elapsed
    assert peak < 64 * 2**20, peak


def test_token_stream_running_out_fails_fast():
    """Consistent model parameters but a token stream cut short: caught by the token budget
    long before the last pass, not after decoding a whole image of garbage."""
    import time

    pixels = _smooth_image("RGB", 300, 256, seed=2)
    enc, _ = _roundtrip(pixels, "RGB")
    header = Header(width=256, height=300, mode="RGB", method="lossless", method_version=1)
    for keep in (0, 64, 1000, 10000):  # the first two fail before decoding, the others mid-image
        bad = _with_stream_lengths(_corrupt(enc.chunks, "LLTK", lambda d: d[:keep]), 3)
        start = time.perf_counter()
        with pytest.raises(CodecError):
            CODEC.decode(header, bad)
        assert time.perf_counter() - start < 5


def test_large_constant_image_is_small_and_still_decodes():
    """A constant image compresses to very few bytes; the fail-fast checks must not reject it."""
    pixels = np.full((700, 640), 200, np.uint8)
    enc, out = _roundtrip(pixels, "L")
    assert len(dict(enc.chunks)["LLTK"]) < 1000
    np.testing.assert_array_equal(out, pixels)
