"""gmm codec: round trips, rate control, model references, corrupt payloads, and the
issue's determinism requirement (the fixed-point entropy model), with a tiny random model."""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

import conftest
from conftest import smooth_image

import mlimg  # noqa: F401  (registers the format)
from mlimg import codecs
from mlimg.codecs import gmm as gmm_mod
from mlimg.codecs.base import CodecError, Header

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"arch": "gmm", "N": 8, "M": 8, "K": 3, "lambdas": [0.001, 0.01, 0.1]}
# The same with channel groups (nn/models.py ChannelContext): 2·3 coding passes, channels reordered.
TINY_GROUPS = dict(TINY, groups=[2, 2, 4], order=[5, 0, 7, 2, 1, 6, 3, 4], Nc=6)


@pytest.fixture(scope="module", params=["checkerboard", "groups"])
def tiny_model(tmp_path_factory, request):
    """A tiny GMM with fixed-seed random weights, registered under a test-only id; once as a
    plain checkerboard model, once with channel groups whose branches are not zero."""
    from mlimg.nn import store
    from mlimg.nn.models import build

    config = TINY if request.param == "checkerboard" else TINY_GROUPS
    torch.manual_seed(4321)
    net = build(config)
    with torch.no_grad():  # a useful latent scale: rate then grows with the gain
        net.g_a[-2].weight.mul_(20.0)
        if net.channel_context is not None:  # the branches start at zero; make them matter
            for branch in net.channel_context.branches.values():
                branch[2].weight.normal_(0, 0.3)
    model_id = f"gmm-test-tiny-{request.param}"
    path = tmp_path_factory.mktemp("weights") / f"{model_id}.safetensors"
    sha = store.save_weights(path, net, store.integer_tables(net), config)
    store.register(model_id, "gmm", path, config)
    yield model_id, sha
    store.unregister(model_id)


def save_load(img, **opts):
    return conftest.save_load(img, "gmm", **opts)


@pytest.mark.parametrize("mode,size", [("RGB", (1, 1)), ("RGB", (17, 33)), ("L", (40, 23)), ("RGBA", (20, 19)), ("RGB", (70, 50))])
def test_round_trip_shape_mode_and_repeatable_decode(tiny_model, mode, size):
    w, h = size
    img = Image.fromarray(smooth_image(h, w, {"L": 1, "RGB": 3, "RGBA": 4}[mode]), mode)
    data, out = save_load(img, model=tiny_model[0], quality=60)
    assert out.size == img.size and out.mode == mode
    assert out.info["method"] == "gmm" if "method" in out.info else True
    if mode == "RGBA":
        assert np.array_equal(np.asarray(out)[:, :, 3], np.asarray(img)[:, :, 3])
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), np.asarray(out))


@settings(max_examples=8, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), quality=st.integers(1, 100), seed=st.integers(0, 99))
def test_hypothesis_round_trip(tiny_model, h, w, quality, seed):
    img = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))
    data, out = save_load(img, model=tiny_model[0], quality=quality)
    assert out.size == (w, h)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), np.asarray(out))


def test_decoded_latents_equal_the_encoded_ones(tiny_model):
    """The range coder round trip is exact: y and z decoded from the chunks are what the encoder coded."""
    from mlimg.nn import store

    loaded = store.load(tiny_model[0], "gmm")
    entropy = gmm_mod._entropy_model(loaded)
    rng = np.random.default_rng(0)
    y = rng.laplace(0, 3, (8, 5, 7)).round().astype(np.int64)
    y[0, 0, 0], y[1, 2, 3] = 3000, -200  # escapes
    z = rng.laplace(0, 2, (8, 2, 2)).round().astype(np.int64)
    z[2, 1, 1] = 500
    z_back = gmm_mod.unpack_hyper(gmm_mod._pack_hyper(z, entropy.t["z_prior"]), 5, 7, entropy.t["z_prior"])
    quality, y_back = gmm_mod.unpack_latent(gmm_mod._pack_latent(y, z, 42, entropy), 5, 7, z, entropy)
    assert np.array_equal(z_back, z) and np.array_equal(y_back, y) and quality == 42


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_the_encoders_reconstruction_is_what_the_decoder_makes(tiny_model, mode):
    """Encoded.reconstruct (the loop filter fits to it) skips range decoding; it must be exact."""
    codec = codecs.get("gmm")
    pixels = smooth_image(21, 35, {"L": 1, "RGB": 3, "RGBA": 4}[mode])
    enc = codec.encode(pixels, mode, codec.validate_options(mode, {"model": tiny_model[0], "quality": 40}))
    decoded = codec.decode(Header(35, 21, mode, "gmm", codec.version), enc.chunks, model=enc.model)
    assert np.array_equal(enc.reconstruct(), decoded)


def test_encoding_is_deterministic(tiny_model):
    img = Image.fromarray(smooth_image(32, 48))
    assert save_load(img, model=tiny_model[0])[0] == save_load(img, model=tiny_model[0])[0]


def test_quality_is_monotone_in_rate(tiny_model):
    img = Image.fromarray(smooth_image(64, 64, seed=3))
    sizes = [len(save_load(img, model=tiny_model[0], quality=q)[0]) for q in (1, 30, 60, 100)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_quality_maps_to_gain_levels_per_method_version(tiny_model):
    from mlimg.nn import store

    net = store.load(tiny_model[0], "gmm").net
    top = net.log_gain.shape[0] - 1
    assert gmm_mod.gain_position(1, top + 1, 1) == 0.0 and gmm_mod.gain_position(1, top + 1, 2) == -2.0
    assert gmm_mod.gain_position(100, top + 1, 1) == gmm_mod.gain_position(100, top + 1, 2) == top
    with pytest.raises(CodecError, match="method version 3"):
        gmm_mod.gain_position(50, top + 1, 3)
    # Below level 0 the gains continue the log-linear line through levels 0 and 1.
    g0, ig0 = net.gains(0.0)
    g1, ig1 = net.gains(1.0)
    gm, igm = net.gains(-2.0)
    assert torch.allclose(gm, g0 ** 3 / g1 ** 2, rtol=1e-5) and torch.allclose(igm, ig0 ** 3 / ig1 ** 2, rtol=1e-5)


def test_version_1_files_decode_with_the_version_1_gains(tiny_model, monkeypatch):
    """A file written by a version-1 encoder (quality 1 = the lowest trained level) keeps
    decoding as written; version 2 spends fewer bytes at quality 1."""
    img = Image.fromarray(smooth_image(48, 64, seed=5))
    v2_data, v2_out = save_load(img, model=tiny_model[0], quality=1, loop_filter=False)
    with monkeypatch.context() as patch:
        patch.setattr(gmm_mod.GmmCodec, "version", 1)
        v1_data, v1_out = save_load(img, model=tiny_model[0], quality=1, loop_filter=False)
    assert v1_out.info["method_version"] == 1 and v2_out.info["method_version"] == 2
    assert len(v2_data) < len(v1_data)
    # The same chunks read as version 2 give other pixels: the decoder follows the header.
    codec = codecs.get("gmm")
    from mlimg import container

    parsed = container.parse(v1_data)
    chunks = [(c.type, c.data) for c in parsed.chunks if c.type in ("HLAT", "GLAT")]
    model = (tiny_model[0], bytes.fromhex(tiny_model[1]))
    as_v1 = codec.decode(Header(64, 48, "RGB", "gmm", 1), chunks, model)
    as_v2 = codec.decode(Header(64, 48, "RGB", "gmm", 2), chunks, model)
    assert np.array_equal(as_v1, np.asarray(v1_out)) and not np.array_equal(as_v1, as_v2)


def test_target_bpp_bisects_quality_to_fit(tiny_model):
    img = Image.fromarray(smooth_image(64, 64, seed=3))
    low = len(save_load(img, model=tiny_model[0], quality=1)[0])
    high = len(save_load(img, model=tiny_model[0], quality=100)[0])
    budget = (low + high) // 2
    data, out = save_load(img, model=tiny_model[0], max_bytes=budget)
    assert low <= len(data) <= budget and out.size == img.size


def test_bad_options_list_valid_values(tiny_model):
    img = Image.fromarray(smooth_image(8, 8))
    with pytest.raises(ValueError, match="1..100"):
        save_load(img, model=tiny_model[0], quality=101)
    with pytest.raises(ValueError, match="valid options"):
        save_load(img, model=tiny_model[0], realism=0.5)
    with pytest.raises(OSError, match="not installed"):
        save_load(img, model="gmm-no-such-model")


def _encode(model_id, h=20, w=30):
    codec = codecs.get("gmm")
    opts = codec.validate_options("RGB", {"model": model_id, "quality": 50})
    return codec, Header(w, h, "RGB", "gmm", codec.version), codec.encode(smooth_image(h, w), "RGB", opts)


def test_model_hash_mismatch_is_a_clear_oserror(tiny_model):
    codec, header, enc = _encode(tiny_model[0])
    assert enc.model == (tiny_model[0], bytes.fromhex(tiny_model[1]))
    wrong = bytes(32)
    with pytest.raises(OSError, match=f"sha256 {wrong.hex()}.*{tiny_model[1]}"):
        codec.decode(header, enc.chunks, model=(tiny_model[0], wrong))
    with pytest.raises(CodecError, match="MODL"):
        codec.decode(header, enc.chunks)


def test_corrupt_payloads_raise_codec_error_naming_the_chunk(tiny_model):
    codec, header, enc = _encode(tiny_model[0])
    hlat, glat = dict(enc.chunks)["HLAT"], dict(enc.chunks)["GLAT"]
    bad_glat = [
        glat[:5],  # shorter than the header
        bytes([0]) + glat[1:],  # quality 0
        glat[:1] + b"\x07" + glat[2:],  # reserved byte
        glat[:2] + (999).to_bytes(2, "big") + glat[4:],  # latent height inconsistent with the image
        glat[:6] + (50).to_bytes(2, "big") + glat[8:],  # channel count differs from the model
        glat[:8] + (10**6).to_bytes(4, "big") + glat[12:],  # absurd escape count
        glat[:-1],  # not a whole number of words
    ]
    for data in bad_glat:
        with pytest.raises(CodecError, match="GLAT"):
            codec.decode(header, [("HLAT", hlat), ("GLAT", data)], model=enc.model)
    bad_hlat = [hlat[:3], (99).to_bytes(2, "big") + hlat[2:], hlat[:4] + (3).to_bytes(2, "big") + hlat[6:], hlat[:-1]]
    for data in bad_hlat:
        with pytest.raises(CodecError, match="HLAT"):
            codec.decode(header, [("HLAT", data), ("GLAT", glat)], model=enc.model)
    with pytest.raises(CodecError, match="GLAT"):
        codec.decode(header, [("HLAT", hlat)], model=enc.model)


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=0, max_size=120), st.booleans())
def test_fuzzed_payload_never_escapes_as_other_errors(tiny_model, tail, hyper):
    codec, header, enc = _encode(tiny_model[0])
    chunks = dict(enc.chunks)
    if hyper:
        chunks["HLAT"] = chunks["HLAT"][:10] + tail
    else:
        chunks["GLAT"] = chunks["GLAT"][:12] + tail
    try:
        out = codec.decode(header, list(chunks.items()), model=enc.model)
    except CodecError:
        return
    assert out.shape == (header.height, header.width, 3)


def _all_probabilities(entropy, y, z):
    """Every (positions, channels, centre, probabilities) block the decoder feeds the range coder, in order."""
    _, lh, lw = y.shape
    hyper = entropy.hyper(z, lh, lw)
    return [(pos, entropy.group_channels[g], c.copy(), p.copy())
            for anchors, g in entropy.passes() for pos, c, p in entropy.pass_blocks(hyper, y, anchors, g)]


def test_decoder_probability_inputs_are_identical_across_threads_and_exact_integers(tiny_model, monkeypatch):
    """The issue's determinism test. The probabilities the range decoder uses come from the
    fixed-point entropy model: compute them under 1 and 2 torch threads, with the float network
    moved to float64, and with an independent pure-int64 matrix product instead of the float64
    BLAS path; all must be bit-identical."""
    from mlimg.nn import gmm_entropy, store

    loaded = store.load(tiny_model[0], "gmm")
    entropy = gmm_mod._entropy_model(loaded)
    rng = np.random.default_rng(1)
    y = rng.laplace(0, 4, (8, 9, 11)).round().astype(np.int64)
    z = rng.laplace(0, 3, (8, 3, 3)).round().astype(np.int64)
    runs = []
    threads = torch.get_num_threads()
    try:
        for n_threads, dtype in ((1, torch.float32), (2, torch.float32), (2, torch.float64)):
            torch.set_num_threads(n_threads)
            loaded.net.to(dtype)
            runs.append(_all_probabilities(entropy, y, z))
    finally:
        torch.set_num_threads(threads)
        loaded.net.to(torch.float32)
    monkeypatch.setattr(gmm_entropy, "int_matmul", lambda a, b, *_: np.matmul(np.asarray(a, np.int64), np.asarray(b, np.int64)))
    runs.append(_all_probabilities(entropy, y, z))
    for other in runs[1:]:
        assert len(other) == len(runs[0]) == 2 * len(entropy.group_channels)
        for (p0, _, c0, q0), (p1, _, c1, q1) in zip(runs[0], other):
            assert np.array_equal(p0, p1) and np.array_equal(c0, c1)
            assert np.array_equal(q0.view(np.int64), q1.view(np.int64))  # bit-identical floats


def test_integer_entropy_model_tracks_the_float_model(tiny_model):
    """The fixed-point pmf is a close approximation of the trained float mixture: its cross-entropy
    on these latents costs at most 2 % more bits than the float model's."""
    from mlimg.nn import store
    from mlimg.nn.entropy_models import gmm_likelihood
    from mlimg.nn.gmm_entropy import WINDOW
    from mlimg.nn.models import anchor_mask

    loaded = store.load(tiny_model[0], "gmm")
    net, entropy = loaded.net, gmm_mod._entropy_model(loaded)
    rng = np.random.default_rng(2)
    z = rng.laplace(0, 2, (8, 3, 3)).round().astype(np.int64)
    y = rng.laplace(0, 3, (8, 10, 12)).round().astype(np.int64)
    with torch.no_grad():
        yt = torch.from_numpy(y.astype(np.float32))[None]
        w, m, s = net.mixture(net.h_s(torch.from_numpy(z.astype(np.float32))[None]), yt)
        float_bits = -torch.log2(gmm_likelihood(yt, w, m, s)).sum().item()
    int_bits = 0.0
    flat = y.reshape(8, -1)
    seen = np.zeros(flat.shape, int)
    for pos, chans, centre, probs in _all_probabilities(entropy, y, z):
        seen[chans[:, None], pos[None]] += 1
        v = flat[chans][:, pos].T.ravel() - centre
        inside = np.abs(v) <= WINDOW
        sym = np.where(inside, v + WINDOW, 2 * WINDOW + 1)
        int_bits += -np.log2(probs[np.arange(sym.size), sym]).sum()
    assert anchor_mask(yt).sum() > 0 and (seen == 1).all()  # every value coded once
    assert int_bits < float_bits * 1.02 + 20


def test_hyper_synthesis_in_integers_matches_the_float_network(tiny_model):
    from mlimg.nn import store
    from mlimg.nn.gmm_entropy import A_BITS

    loaded = store.load(tiny_model[0], "gmm")
    net, entropy = loaded.net, gmm_mod._entropy_model(loaded)
    z = np.random.default_rng(3).laplace(0, 3, (8, 3, 4)).round().astype(np.int64)
    with torch.no_grad():
        ref = net.h_s(torch.from_numpy(z.astype(np.float32))[None])[0].numpy()
    got = entropy.hyper(z, 12, 16) / 2**A_BITS
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 0.05 * max(1.0, np.abs(ref).max())


def test_shipped_weights_decode_a_small_image():
    from mlimg.nn import store

    model_id = store.default_model("gmm")
    if model_id is None or model_id.startswith("gmm-test"):
        pytest.skip("no shipped gmm weights in mlimg/weights")
    img = Image.fromarray(smooth_image(48, 64, seed=5, noise=0))
    low, _ = save_load(img, quality=1)
    high, out_high = save_load(img, quality=100)
    mse = np.mean((np.asarray(out_high, float) - np.asarray(img, float)) ** 2)
    assert 10 * np.log10(255**2 / mse) > 14 and len(high) > len(low)


def _float_rate(net, y, z):
    """bits(y | z) + bits(z) the plain way, through GMM.mixture."""
    from mlimg.nn.entropy_models import gmm_likelihood

    with torch.no_grad():
        weights, means, scales = net.mixture(net.h_s(z), y)
        return (-torch.log2(gmm_likelihood(y, weights, means, scales)).sum()
                - torch.log2(net.z_prior.likelihood(z)).sum()).item()


def _random_latent(net, seed):
    """An integer latent of the tiny model (1, M, 9, 11) and h_a's float hyper-latent of it."""
    y = torch.from_numpy(np.random.default_rng(seed).laplace(0, 4, (1, net.M, 9, 11)).round().astype(np.float32))
    with torch.no_grad():
        return y, net.h_a(y)


def test_hyper_objective_is_the_models_float_rate(tiny_model):
    """nn/hyper_refine.py's fast objective (positions reordered, passes batched) computes the
    same bits as the model's own mixture, for h_a's z and for another z."""
    from mlimg.nn import store
    from mlimg.nn.hyper_refine import HyperObjective

    net = store.load(tiny_model[0], "gmm").net
    y, z = _random_latent(net, 1)
    objective = HyperObjective(net, y)
    for candidate in (torch.round(z), torch.round(z) + torch.from_numpy(np.random.default_rng(2).integers(-1, 2, z.shape)).float()):
        with torch.no_grad():
            assert objective.bits(candidate).item() == pytest.approx(_float_rate(net, y, candidate), rel=1e-5)


def test_the_chosen_hyper_latent_never_costs_more_than_h_as(tiny_model):
    """refine_hyper: integer, no more bits than h_a's rounded z (here fewer), the same twice,
    h_a's own with 0 steps, and the network's parameters untouched."""
    from mlimg.nn import store
    from mlimg.nn.hyper_refine import refine_hyper

    net = store.load(tiny_model[0], "gmm").net
    before = {k: v.clone() for k, v in net.state_dict().items()}
    flags = [p.requires_grad for p in net.parameters()]
    y, z = _random_latent(net, 3)
    assert torch.equal(refine_hyper(net, y, z, 0), torch.round(z))
    chosen = refine_hyper(net, y, z, 8)
    assert torch.equal(chosen, torch.round(chosen)) and torch.equal(chosen, refine_hyper(net, y, z, 8))
    assert _float_rate(net, y, chosen) < _float_rate(net, y, torch.round(z))
    assert [p.requires_grad for p in net.parameters()] == flags
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_the_encoder_codes_the_chosen_hyper_latent(tiny_model):
    """The file's z is hyper_latent's choice for the file's y (here not h_a's own)."""
    from mlimg.nn import store

    loaded = store.load(tiny_model[0], "gmm")
    net, entropy = loaded.net, gmm_mod._entropy_model(loaded)
    codec = codecs.get("gmm")
    opts = codec.validate_options("RGB", {"model": tiny_model[0], "quality": 100})
    chunks = dict(codec.encode(smooth_image(70, 90, seed=7), "RGB", opts).chunks)
    z = gmm_mod.unpack_hyper(chunks["HLAT"], 5, 6, entropy.t["z_prior"])
    _, y = gmm_mod.unpack_latent(chunks["GLAT"], 5, 6, z, entropy)
    assert np.array_equal(z, gmm_mod.hyper_latent(net, y, *gmm_mod.HYPER_STEPS))
    assert not np.array_equal(z, gmm_mod.hyper_latent(net, y, 0, 0.1))
