"""Lossless alpha-plane coding (mlimg/codecs/alpha.py)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mlimg.codecs.alpha import decode_alpha, encode_alpha
from mlimg.codecs.base import CodecError


def _disc(h, w):
    yy, xx = np.mgrid[:h, :w]
    return np.where((yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 3) ** 2, 255, 0).astype(np.uint8)


@pytest.mark.parametrize("value", [0, 128, 255])
def test_constant_plane_costs_two_bytes(value):
    plane = np.full((300, 200), value, np.uint8)
    data = encode_alpha(plane)
    assert len(data) == 2
    assert np.array_equal(decode_alpha(data, 300, 200), plane)


def test_disc_mask_is_small_and_exact():
    plane = _disc(256, 256)
    data = encode_alpha(plane)
    assert np.array_equal(decode_alpha(data, 256, 256), plane)
    assert len(data) < 256 * 256 / 40  # far below 1 bit per pixel


def test_gradient_and_noise_round_trip():
    rng = np.random.default_rng(0)
    grad = np.add.outer(np.arange(40), np.arange(60)).astype(np.uint8)
    noise = rng.integers(0, 256, (33, 17), dtype=np.uint8)
    for plane in (grad, noise):
        assert np.array_equal(decode_alpha(encode_alpha(plane), *plane.shape), plane)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 20), st.integers(1, 20), st.integers(0, 2**32 - 1), st.sampled_from([2, 3, 256]))
def test_round_trip_random(h, w, seed, levels):
    rng = np.random.default_rng(seed)
    plane = (rng.integers(0, levels, (h, w)) * (255 // (levels - 1))).astype(np.uint8)
    data = encode_alpha(plane)
    assert data == encode_alpha(plane)  # deterministic
    assert np.array_equal(decode_alpha(data, h, w), plane)


def test_corrupt_payloads_raise_codec_error():
    data = encode_alpha(_disc(32, 32))
    for bad in (b"", b"\x07", data[:3], b"\x00", b"\x01\x05\x01"):
        with pytest.raises(CodecError, match="ALPH"):
            decode_alpha(bad, 32, 32)


def test_garbage_never_escapes_as_other_errors():
    rng = np.random.default_rng(1)
    good = encode_alpha(_disc(24, 24))
    for _ in range(200):
        bad = bytearray(good)
        bad[rng.integers(0, len(bad))] ^= 1 << int(rng.integers(0, 8))
        try:
            out = decode_alpha(bytes(bad), 24, 24)
        except CodecError:
            continue
        assert out.shape == (24, 24) and out.dtype == np.uint8
