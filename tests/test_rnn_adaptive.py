"""rnn method version 2: per-block iteration counts (the RNNM chunk), their rate-distortion
choice, the frozen reconstruction of blocks past their count, progressive decoding of such
files, and the count-map coder."""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image, ImageFile

from conftest import smooth_image
from test_rnn import TINY, _codec_chunks, iter_boundaries, load, save, tiny_model  # noqa: F401  (fixture)

from mlimg import codecs, container
from mlimg.codecs import rnn as rnn_mod
from mlimg.codecs import rnn_adaptive
from mlimg.codecs.base import CodecError, Header

torch = pytest.importorskip("torch")


@pytest.fixture
def forced_counts(monkeypatch):
    """A fixed random count map (1..4) instead of the rate-distortion choice: a random tiny
    model's errors do not fall with iterations, so its own choice would be nearly all 1s."""

    def fixed(net, x, slope, iterations, fast=True):
        lh, lw = -(-x.shape[0] // 16), -(-x.shape[1] // 16)
        counts = np.random.default_rng(lh * 100 + lw).integers(1, 5, (lh, lw)).astype(np.uint8)
        counts.flat[0] = 4  # the map always reaches 4 iterations and differs between blocks
        counts.flat[-1] = 1
        return counts, None

    monkeypatch.setattr(rnn_mod, "allocate_iterations", fixed)
    return fixed


def _block_counts(data: bytes) -> np.ndarray:
    header, chunks, _ = _codec_chunks(data)
    lh, lw = -(-header.height // 16), -(-header.width // 16)
    rnnm = dict(chunks)["RNNM"]
    return rnn_adaptive.decode_counts(rnnm[1:], (lh, lw), dict(chunks)["RNNH"][-1])


def test_adaptive_files_carry_a_count_map_and_decode_deterministically(tiny_model, forced_counts):
    img = smooth_image(40, 72)
    data = save(img, quality=50)
    types = [c.type for c in container.parse(data).chunks]
    assert types.index("RNNH") + 1 == types.index("RNNM") < types.index("ITER")
    assert types.count("ITER") == 4
    assert np.array_equal(_block_counts(data), forced_counts(None, img, 0, 16)[0])
    assert data == save(img, quality=50)
    assert np.array_equal(load(data), load(data))
    with Image.open(io.BytesIO(data)) as im:
        assert container.parse(data).header.method_version == rnn_mod.RnnCodec.version == 4
        assert im.info["iterations"] == 4


def test_blocks_past_their_count_keep_their_reconstruction(tiny_model, forced_counts):
    data = save(smooth_image(40, 72), quality=50)
    counts = _block_counts(data)
    full = load(data)
    for k in (1, 2, 3):
        part = load(data, iterations=k)
        for (by, bx), n in np.ndenumerate(counts):
            block = np.s_[16 * by : 16 * by + 16, 16 * bx : 16 * bx + 16]
            if n <= k:  # done after k iterations: the later ones leave it alone
                assert np.array_equal(part[block], full[block])
        assert not np.array_equal(part, full)  # blocks with more iterations did change


def test_truncated_adaptive_files_decode_progressively(tiny_model, forced_counts):
    data = save(smooth_image(40, 72), quality=50)
    ends = iter_boundaries(data)
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        for k, end in enumerate(ends[:-1], start=1):
            assert np.array_equal(load(data[:end]), load(data, iterations=k))
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def test_fast_and_module_paths_agree_with_a_count_map():
    from mlimg.nn.rnn_models import RNNCodecNet

    torch.manual_seed(3)
    net = RNNCodecNet(TINY).eval()
    x = np.random.default_rng(5).random((40, 56, 3), dtype=np.float32)
    counts = np.array([[1, 4, 2, 3], [4, 4, 1, 2], [2, 3, 4, 1]], np.uint8)
    fast_bits = rnn_mod.encode_bits(net, x, 4, counts=counts)
    slow_bits = rnn_mod.encode_bits(net, x, 4, fast=False, counts=counts)
    assert (fast_bits == slow_bits).mean() > 0.99
    past = counts[None, None] <= np.arange(4)[:, None, None, None]
    assert not fast_bits[np.broadcast_to(past, fast_bits.shape)].any()  # nothing sent past a block's count
    fast = rnn_mod.decode_image(net, slow_bits, 3, 4, counts=counts)
    slow = rnn_mod.decode_image(net, slow_bits, 3, 4, fast=False, counts=counts)
    np.testing.assert_allclose(fast, slow, atol=1e-5)


def test_block_errors_are_the_decoders_errors_inside_the_image():
    from mlimg.nn.rnn_models import RNNCodecNet

    torch.manual_seed(4)
    net = RNNCodecNet(TINY).eval()
    x = np.random.default_rng(6).random((20, 37, 3), dtype=np.float32)
    target = rnn_mod._pixels(x)
    xt, lh, lw = rnn_mod._padded_tensor(x)
    bits, errors = rnn_mod._encoder_pass(net, xt, 3, True, None, target)
    assert errors.shape == (4, 2, 3)
    for t in range(4):
        decoded = rnn_mod._pixels(rnn_mod.decode_image(net, bits[:t], lh, lw)[:20, :37])
        assert errors[t].sum() == pytest.approx(float(((decoded - target) ** 2).sum()), abs=2 * 255**2)
    assert errors[:, :, 2].sum() > 0 and errors[:, 1].sum() > 0  # partial edge blocks count their inside


def test_without_adaptation_every_block_gets_the_same_count(tiny_model, forced_counts):
    img = smooth_image(40, 72)
    for opts in ({"adaptive": False}, {"iterations": 3}, {"adaptive": True, "iterations": 3}):
        types = [c.type for c in container.parse(save(img, **opts)).chunks]
        assert "RNNM" not in types


def test_refine_needs_uniform_counts(tiny_model):
    with pytest.raises(ValueError, match="refine=3.*adaptive=False"):
        save(smooth_image(16, 16), refine=3)
    with pytest.raises(ValueError, match="adaptive"):
        save(smooth_image(16, 16), adaptive="sometimes")


@pytest.mark.parametrize("damage,message", [
    (lambda ch: [ch[0], ("RNNM", b"\x01" + ch[1][1][1:])] + ch[2:], "map coding 1"),
    (lambda ch: [ch[0], ("RNNM", b"")] + ch[2:], "map coding missing"),
    (lambda ch: [ch[0], ("RNNM", ch[1][1] + b"\x00")] + ch[2:], "corrupt"),
    (lambda ch: [ch[0], ch[2], ch[1]] + ch[3:], "right after RNNH"),
    (lambda ch: ch[:2] + ch[1:], "at most one"),
])
def test_corrupt_count_maps_raise_codec_errors(tiny_model, forced_counts, damage, message):
    header, chunks, model = _codec_chunks(save(smooth_image(40, 72), quality=50))
    with pytest.raises(CodecError, match=message):
        codecs.get("rnn").decode(header, damage(chunks), model=model)


def test_a_count_map_is_not_part_of_version_1(tiny_model, forced_counts):
    header, chunks, model = _codec_chunks(save(smooth_image(40, 72), quality=50))
    old = Header(header.width, header.height, header.mode, header.method, 1)
    with pytest.raises(CodecError, match="RNNM.*version 1"):
        codecs.get("rnn").decode(old, chunks, model=model)


# ---------------------------------------------------------------- choosing and coding counts


@settings(max_examples=30)
@given(st.integers(1, 16), st.integers(1, 5), st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_counts_minimise_error_plus_slope_times_bits_and_fall_as_the_slope_rises(t, h, w, seed):
    rng = np.random.default_rng(seed)
    errors = rng.integers(0, 10**6, (t + 1, h, w)).astype(np.float64)
    previous = None
    for slope in (0.0, 10.0, 1e3, 1e9):
        counts = rnn_adaptive.choose_counts(errors, slope, 32)
        assert counts.min() >= 1 and counts.max() <= t
        cost = errors[1:] + slope * 32 * np.arange(1, t + 1)[:, None, None]
        chosen = np.take_along_axis(cost, counts[None].astype(np.int64) - 1, 0)[0]
        assert np.array_equal(chosen, cost.min(axis=0))
        if previous is not None:
            assert (counts <= previous).all()
        previous = counts
    assert (previous == 1).all()  # a huge slope: one iteration everywhere


def test_quality_lowers_the_slope_monotonically():
    slopes = [rnn_adaptive.slope_for_quality(q) for q in range(1, 101)]
    assert all(a > b for a, b in zip(slopes, slopes[1:]))
    assert slopes[0] == pytest.approx(rnn_adaptive.SLOPE_AT_1) and slopes[-1] == pytest.approx(rnn_adaptive.SLOPE_AT_100)


@settings(max_examples=40)
@given(st.integers(1, 32), st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**32 - 1))
def test_count_maps_round_trip(t, h, w, seed):
    counts = np.random.default_rng(seed).integers(1, t + 1, (h, w)).astype(np.uint8)
    data = rnn_adaptive.encode_counts(counts, t)
    assert np.array_equal(rnn_adaptive.decode_counts(data, (h, w), t), counts)


@settings(max_examples=25)
@given(st.binary(max_size=40).map(lambda b: b[: len(b) // 4 * 4]), st.integers(1, 32))
def test_garbage_count_maps_give_valid_counts_or_value_errors(garbage, t):
    try:
        counts = rnn_adaptive.decode_counts(garbage, (3, 5), t)
    except ValueError:
        return
    assert counts.shape == (3, 5) and counts.min() >= 1 and counts.max() <= t


def test_smooth_maps_cost_little():
    counts = np.full((32, 48), 3, np.uint8)
    counts[:, 24:] = 9
    assert len(rnn_adaptive.encode_counts(counts, 16)) < 0.05 * counts.size  # well under 1 bit per block


# ---------------------------------------------------------------- with the shipped weights


def _psnr(a, b) -> float:
    return 10 * np.log10(255**2 / np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2))


def test_shipped_weights_spend_iterations_where_they_pay():
    """A flat ramp beside a busy pattern: the adaptive file beats the uniform curve at its own
    rate (measured: by 0.5-0.8 dB at qualities 25-60)."""
    from mlimg.nn import store

    model_id = store.default_model("rnn")
    if model_id is None or model_id.startswith("rnn-test"):
        pytest.skip("no shipped rnn weights in mlimg/weights")
    img = smooth_image(64, 96, seed=7, noise=0.0)
    img[:, :48] = 120 + np.linspace(0, 40, 48).astype(np.uint8)[None, :, None]

    def point(**opts):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="MLIMG", method="rnn", **opts)
        with Image.open(io.BytesIO(buf.getvalue())) as im:
            return len(buf.getvalue()), _psnr(im, img)

    sizes, psnrs = zip(*(point(iterations=n) for n in range(1, 17)))
    for quality in (25, 40):
        size, psnr = point(quality=quality)
        assert sizes[0] < size < sizes[-1]
        assert psnr > np.interp(size, sizes, psnrs) + 0.3, (quality, size, psnr, sizes, psnrs)
