"""rnn: Pillow round trips, determinism, one ITER chunk per iteration, progressive decoding of
truncated files and of `iterations=n`, the binary context coder, corrupt payloads. All with a
tiny randomly initialised model (no trained weights needed)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image, ImageFile

from conftest import decode_pixels, smooth_image

import mlimg  # noqa: F401  (registers the format)
from mlimg import codecs, container
from mlimg.codecs import rnn as rnn_mod
from mlimg.codecs.base import CodecError, Header

torch = pytest.importorskip("torch")

TINY = {"arch": "rnn", "bits": 8, "enc": [8, 8, 8, 16], "dec": [16, 16, 16, 8, 8], "train_iterations": 4}
MODEL_ID = "rnn-test-tiny"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny rnn network with fixed-seed random weights, registered under a test-only id."""
    from mlimg.nn import store
    from mlimg.nn.models import build

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead on a busy machine
    torch.manual_seed(4321)
    net = build(TINY)
    path = tmp_path_factory.mktemp("weights") / "rnn-tiny.safetensors"
    store.save_weights(path, net, tiny_logistic_tables(TINY["bits"]), net.config)
    store.register(MODEL_ID, "rnn", path, net.config)
    yield MODEL_ID
    store.unregister(MODEL_ID)
    torch.set_num_threads(threads)


def tiny_logistic_tables(channels: int, seed: int = 5) -> dict:
    """Method version 4's tables for a test model: small random weights, a flat prior."""
    from mlimg.nn import binary_logistic as bl

    rng = np.random.default_rng(seed)
    weights = rng.integers(-200, 201, (bl.WEIGHT_SETS, channels, bl.feature_count(channels))).astype(np.int32)
    return {"logistic_weights": weights, "logistic_prior": np.full((bl.CONTEXTS, 2), 2, np.int32)}


def save(array, **opts) -> bytes:
    """The codec's own file: no loop filter (fitted to a random tiny model it would pay, and the
    full decode would then differ from the decodes of fewer iterations compared here)."""
    buf = io.BytesIO()
    opts.setdefault("loop_filter", False)
    Image.fromarray(array).save(buf, format="MLIMG", method="rnn", model=MODEL_ID, **opts)
    return buf.getvalue()


load = decode_pixels


def iter_boundaries(data: bytes) -> list[int]:
    """File offsets just after each ITER chunk."""
    parsed = container.parse(data)
    return [c.offset + 12 + len(c.data) for c in parsed.chunks if c.type == "ITER"]


@pytest.mark.parametrize("mode,shape", [("RGB", (21, 35, 3)), ("L", (16, 16)), ("RGBA", (9, 40, 4)), ("RGB", (1, 1, 3))])
def test_round_trip_through_pillow(tiny_model, mode, shape):
    rng = np.random.default_rng(1)
    array = rng.integers(0, 256, shape, dtype=np.uint8)
    data = save(array, quality=30, adaptive=False)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "MLIMG" and im.mode == mode and im.size == (shape[1], shape[0])
        assert im.info["model_id"] == MODEL_ID
        assert im.info["iterations"] == rnn_mod.iterations_for_quality(30)
        im.load()
        out = np.asarray(im)
    assert out.shape == array.shape
    if mode == "RGBA":  # alpha is lossless
        assert np.array_equal(out[..., 3], array[..., 3])


def test_encoding_and_decoding_are_deterministic(tiny_model):
    img = smooth_image(24, 40)
    a, b = save(img, quality=50), save(img, quality=50)
    assert a == b
    assert np.array_equal(load(a), load(a))


def test_one_iter_chunk_per_iteration_and_rate_grows(tiny_model):
    img = smooth_image(32, 48)
    sizes = []
    for quality in (1, 40, 100):
        data = save(img, quality=quality, adaptive=False)
        types = [c.type for c in container.parse(data).chunks]
        n = rnn_mod.iterations_for_quality(quality)
        assert types.count("ITER") == n and types.index("RNNH") < types.index("ITER")
        sizes.append(len(data))
    assert sizes[0] < sizes[1] < sizes[2]
    assert [c.type for c in container.parse(save(img, iterations=5)).chunks].count("ITER") == 5


@pytest.mark.parametrize("older", [1, 2, 3])
def test_older_method_versions_still_decode_to_the_same_pixels(tiny_model, monkeypatch, older):
    """Versions 1 and 2 code each bit plane in one raster pass, version 3 in checkerboard
    halves, version 4 with logistic contexts: the same bits, other bytes, the same pixels."""
    img = smooth_image(48, 64, seed=3)
    options = {"iterations": 4} if older == 1 else {"quality": 60}  # version 1 has no count map
    current = save(img, **options)
    monkeypatch.setattr(rnn_mod.RnnCodec, "version", older)
    old = save(img, **options)
    monkeypatch.undo()
    assert old != current
    with Image.open(io.BytesIO(old)) as im:
        assert im.info["method_version"] == older
    with Image.open(io.BytesIO(current)) as im:
        assert im.info["method_version"] == rnn_mod.RnnCodec.version == 4
    assert np.array_equal(load(old), load(current))


def test_quality_maps_monotonically_onto_1_to_16_iterations():
    its = [rnn_mod.iterations_for_quality(q) for q in range(1, 101)]
    assert its[0] == 1 and its[-1] == 16 and all(a <= b for a, b in zip(its, its[1:]))
    for n in range(1, 17):
        assert rnn_mod.iterations_for_quality(rnn_mod.quality_for_iterations(n)) == n


def test_truncated_files_decode_progressively(tiny_model):
    img = smooth_image(32, 32)
    data = save(img, iterations=4)
    full = load(data)
    ends = iter_boundaries(data)
    assert len(ends) == 4
    previews = [load(data, iterations=k) for k in range(1, 5)]
    assert np.array_equal(previews[-1], full)
    assert not np.array_equal(previews[0], full)  # fewer iterations really decode less
    for k, end in enumerate(ends[:-1], start=1):
        cut = data[:end]
        with Image.open(io.BytesIO(cut)) as im:
            assert "truncated" in im.info
            with pytest.raises(OSError, match="truncated"):
                im.load()
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            assert np.array_equal(load(cut), previews[k - 1])  # exactly the k iterations it holds
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = False


def test_iterations_decode_option_is_checked(tiny_model):
    data = save(smooth_image(16, 16), iterations=2)
    assert np.array_equal(load(data, iterations=10), load(data))  # more than present: all of them
    with pytest.raises(ValueError, match="iterations"):
        load(data, iterations=0)


def test_bad_save_options_list_valid_values(tiny_model):
    with pytest.raises(ValueError, match="1..100"):
        save(smooth_image(8, 8), quality=0)
    with pytest.raises(ValueError, match="iterations"):
        save(smooth_image(8, 8), iterations=1000)
    with pytest.raises(ValueError, match="valid options"):
        save(smooth_image(8, 8), colour="yes")


def _codec_chunks(data: bytes):
    parsed = container.parse(data)
    h = parsed.header
    return Header(h.width, h.height, h.mode, h.method, h.method_version), [
        (c.type, c.data) for c in parsed.chunks if c.type in ("RNNH", "RNNM", "ITER", "ALPH")], container.parse_model_payload(parsed.find("MODL").data)


@pytest.mark.parametrize("damage,message", [
    (lambda ch: [ch[0], ch[2], ch[1]] + ch[3:], "iteration index"),
    (lambda ch: ch[:1] + ch[2:], "iteration index"),
    (lambda ch: [("RNNH", ch[0][1][:-1])] + ch[1:], "RNNH"),
    (lambda ch: [("RNNH", ch[0][1][:2] + b"\x00\x09" + ch[0][1][4:])] + ch[1:], "latent size"),
    (lambda ch: ch[1:], "RNNH"),
    (lambda ch: ch[:-1], "only 2 of the 3"),
    (lambda ch: ch[:2] + [("ITER", ch[2][1] + b"\x01")], "32-bit words"),
])
def test_corrupt_payloads_raise_codec_errors(tiny_model, damage, message):
    header, chunks, model = _codec_chunks(save(smooth_image(16, 16), iterations=3))
    assert [kind for kind, _ in chunks] == ["RNNH", "ITER", "ITER", "ITER"]  # iterations=n: no map
    with pytest.raises(CodecError, match=message):
        codecs.get("rnn").decode(header, damage(chunks), model=model)


@settings(max_examples=15)
@given(st.binary(min_size=0, max_size=64))
def test_garbage_iteration_data_never_leaks_other_errors(tiny_model, garbage):
    header, chunks, model = _codec_chunks(save(smooth_image(16, 16), iterations=2))
    chunks = chunks[:1] + [("ITER", b"\x00" + garbage)]
    try:
        out = codecs.get("rnn").decode(header, chunks, model=model, truncated=True)
    except CodecError:
        return
    assert out.shape == (16, 16, 3)


# ---------------------------------------------------------------- the binary context coder


@settings(max_examples=30)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**32 - 1),
       st.booleans(), st.booleans(), st.booleans())
def test_context_coder_round_trips(iterations, channels, h, w, seed, use_prior, split, masked):
    from mlimg.nn.binary_context import ContextCounts, context_count, decode_iteration, encode_iteration

    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, (iterations, channels, h, w), dtype=np.uint8)
    block_counts = rng.integers(1, iterations + 1, (h, w)) if masked else None
    if masked:  # as the encoder writes them: a position past its count has bits 0
        bits *= (block_counts > np.arange(iterations)[:, None, None])[:, None].astype(np.uint8)
    prior = rng.integers(0, 50, (context_count(channels), 2)) if use_prior else None
    enc_counts, dec_counts = ContextCounts(channels, prior, split), ContextCounts(channels, prior, split)
    prev = None
    for t in range(iterations):
        active = None if block_counts is None else block_counts > t
        data = encode_iteration(t, bits[t], prev, enc_counts, active)
        assert np.array_equal(decode_iteration(t, data, bits.shape[1:], prev, dec_counts, active), bits[t])
        prev = bits[t]
    assert np.array_equal(enc_counts.counts, dec_counts.counts)
    assert np.array_equal(enc_counts.shared, dec_counts.shared)


def test_split_contexts_follow_the_spec():
    """Version 3's phase, position by position as spec/methods/rnn.md words it: 0 on an
    anchor, else 1 + the 4-neighbours equal to 1 in the same plane (outside: 0; only coded
    anchors count)."""
    from mlimg.nn.binary_context import anchor_mask, plane_contexts, split_contexts

    rng = np.random.default_rng(8)
    bits = rng.integers(0, 2, (2, 3, 7, 9), dtype=np.uint8)
    active = rng.random((7, 9)) < 0.7
    coded = anchor_mask(7, 9) & active
    for t, c in [(0, 0), (1, 2)]:
        ctx = plane_contexts(t, c, bits[0] if t else None, bits[t])
        got = split_contexts(ctx, bits[t, c], coded).reshape(7, 9)
        for y in range(7):
            for x in range(9):
                if (y + x) % 2 == 0:
                    phase = 0
                else:
                    near = [(y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)]
                    phase = 1 + sum(int(bits[t, c, j, i]) for j, i in near
                                    if 0 <= j < 7 and 0 <= i < 9 and coded[j, i])
                local = ctx[y * 9 + x]
                assert got[y, x] == (c * 6 + phase) * 126 + local % 126, (t, c, y, x)


@pytest.mark.parametrize("split", [False, True])
def test_count_updates_follow_the_specified_rule(split):
    """ContextCounts.update looks only at the block of rows a plane touches; the spec halves
    every row of the whole table over 4096 after each plane. Same tables, including a prior
    with rows over the limit and updates that span several channels."""
    from mlimg.nn.binary_context import RESCALE, ContextCounts, context_count

    rng = np.random.default_rng(11)
    prior = rng.integers(0, 40, (context_count(3), 2))
    prior[5] = (5000, 7)  # over the limit from the start: halved at the first update
    counts = ContextCounts(3, prior, split)
    ref_counts, ref_shared = counts.counts.copy(), counts.shared.copy()
    n = counts.per_channel
    for step in range(60):
        if step % 7 == 3:  # across channels
            ctx = rng.integers(0, 3 * n, 500)
        else:  # one channel's block, heavily skewed so rows pass the limit
            c = rng.integers(0, 3)
            ctx = c * n + rng.integers(0, 4, 3000) * rng.integers(1, 3)
        bits = rng.integers(0, 2, ctx.size)
        counts.update(ctx, bits)
        for table, index in ((ref_counts, ctx * 2 + bits), (ref_shared, (ctx % n) * 2 + bits)):
            np.add.at(table.reshape(-1), index, 1)
            big = table.sum(axis=1) > RESCALE
            table[big] = (table[big] + 1) // 2
        assert np.array_equal(counts.counts, ref_counts) and np.array_equal(counts.shared, ref_shared), step


def test_split_coding_starts_every_phase_from_the_prior():
    from mlimg.nn.binary_context import PHASES, SHARED, ContextCounts, context_count

    prior = np.random.default_rng(5).integers(0, 500, (context_count(3), 2))
    plain, split = ContextCounts(3, prior), ContextCounts(3, prior, split=True)
    per_phase = split.counts.reshape(3, PHASES, SHARED, 2)
    for f in range(PHASES):
        assert np.array_equal(per_phase[:, f], plain.counts.reshape(3, SHARED, 2))
        assert np.array_equal(split.shared[f * SHARED : (f + 1) * SHARED], plain.shared)


def test_a_version_3_prior_is_used_as_measured():
    """With `context_prior_split` the counts start from it, the channel-free table from its
    scaled sum over channels (spec: K3 = P3, S3 = scale(sum over c)); a misfit one is refused."""
    from mlimg.nn.binary_context import PHASES, SHARED, ContextCounts, _scale, context_count, prior_counts

    rng = np.random.default_rng(9)
    samples = [rng.integers(0, 2, (3, 2, 5, 7), dtype=np.uint8) for _ in range(2)]
    split_prior = prior_counts(samples, split=True)
    assert split_prior.shape == (2 * SHARED * PHASES, 2)
    # every coded bit is counted once (no row passes PRIOR_TOTAL here, so nothing is scaled)
    assert split_prior.sum() == sum(s.size for s in samples)
    counts = ContextCounts(2, prior_counts(samples), split=True, split_prior=split_prior)
    assert np.array_equal(counts.counts, split_prior)
    assert np.array_equal(counts.shared, _scale(split_prior.reshape(2, SHARED * PHASES, 2).sum(axis=0)))
    assert np.array_equal(ContextCounts(2, None, split=False, split_prior=split_prior).counts,
                          np.zeros((context_count(2), 2)))  # versions 1-2 ignore it
    with pytest.raises(ValueError, match="split context prior"):
        ContextCounts(3, None, split=True, split_prior=split_prior)


@pytest.mark.parametrize("version,table,rows", [(3, "context_prior_split", 8 * 126 * 6), (4, "logistic_prior", 640)])
def test_files_code_with_the_models_prior(tiny_model, monkeypatch, version, table, rows):
    """The codec starts version-3 files from the weights' split prior, version-4 files from
    their logistic prior: other bytes than without it, the same pixels; a prior that does not
    fit the network is a CodecError."""
    from mlimg.nn import store

    monkeypatch.setattr(rnn_mod.RnnCodec, "version", version)
    img = smooth_image(32, 48, seed=6)
    plain = save(img, quality=60)
    plain_pixels = load(plain)  # the prior is part of the weights: decode before changing them
    tables = store.load(MODEL_ID, "rnn").tables
    saved = tables.get(table)
    try:
        tables[table] = np.zeros((rows, 2), np.int32)
        tables[table][:, 1] = 60  # "bits are 1": far from this image's bits
        skewed = save(img, quality=60)
        assert skewed != plain and len(skewed) > len(plain)
        assert np.array_equal(load(skewed), plain_pixels)
        tables[table] = np.zeros((5, 2), np.int32)
        with pytest.raises(CodecError, match="context tables do not fit"):
            load(skewed)
    finally:
        tables.pop(table, None)
        if saved is not None:
            tables[table] = saved


def test_context_coder_exploits_redundancy():
    from mlimg.nn.binary_context import ContextCounts, encode_iteration, prior_counts

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 2, (2, 8, 24, 24), dtype=np.uint8)
    # Only one random plane: every channel repeats channel 0, iteration 1 repeats iteration 0.
    repeated = np.broadcast_to(noise[:1, :1], noise.shape).copy()

    def size(bits, prior=None):
        counts, prev, total = ContextCounts(8, prior), None, 0
        for t in range(bits.shape[0]):
            total += len(encode_iteration(t, bits[t], prev, counts))
            prev = bits[t]
        return total

    raw = noise.size / 8
    assert size(noise) > 0.95 * raw
    assert size(repeated) < 0.3 * raw
    assert size(repeated, prior_counts([repeated])) < size(repeated)


# ---------------------------------------------------------------- networks


@pytest.mark.parametrize("extra", [{}, {"cell": "lstm"}, {"reconstruction": "oneshot"}, {"residual_scaling": False}])
def test_network_variants_train_and_code(extra):
    from mlimg.nn.rnn_models import RNNCodecNet

    torch.manual_seed(0)
    net = RNNCodecNet({**TINY, **extra})
    losses = net(torch.rand(2, 3, 32, 32) - 0.5, 3)
    assert len(losses) == 3 and all(torch.isfinite(v) for v in losses)
    torch.stack(losses).mean().backward()
    net.eval()
    bits = rnn_mod.encode_bits(net, np.random.default_rng(0).random((20, 20, 3), dtype=np.float32), 3)
    assert bits.shape == (3, 8, 2, 2) and set(np.unique(bits)) <= {0, 1}
    assert rnn_mod.decode_image(net, bits, 2, 2).shape == (32, 32, 3)


def test_training_binarisers_and_losses():
    """The hard binariser feeds the decoder the inference bits (so the first iteration's
    reconstruction is the inference one); mse is the square of the same residual."""
    from mlimg.nn.rnn_models import RNNCodecNet, hard_binarise, straight_through_sign

    torch.manual_seed(2)
    net = RNNCodecNet(TINY)
    x = torch.rand(2, 3, 32, 32) - 0.5
    code = torch.tensor([-0.7, -0.0, 0.0, 0.2], requires_grad=True)
    bits = straight_through_sign(code)
    assert bits.tolist() == [-1.0, 1.0, 1.0, 1.0]
    bits.sum().backward()
    assert code.grad.tolist() == [1.0] * 4  # straight through
    l1 = net(x, 1, "hard", "l1")[0]
    mse = net(x, 1, "hard", "mse")[0]
    with torch.no_grad():
        enc, dec = net.initial_states()
        code, _ = net.encode_step(x, torch.zeros_like(x), enc, 0)
        recon, _ = net.decode_step(hard_binarise(code), torch.zeros_like(x), dec, 0)
    assert float(l1.detach()) == pytest.approx(float((x - recon).abs().mean()), rel=1e-5)
    assert float(mse.detach()) == pytest.approx(float(((x - recon) ** 2).mean()), rel=1e-5)
    mse.backward()
    assert net.encoder.conv.weight.grad is not None and net.encoder.conv.weight.grad.abs().sum() > 0


def test_cli_decode_iterations(tiny_model, tmp_path):
    from mlimg import cli

    src = tmp_path / "in.mlimg"
    src.write_bytes(save(smooth_image(16, 32), iterations=4))
    out = tmp_path / "out.png"
    assert cli.main(["decode", "--iterations", "2", str(src), str(out)]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), load(src.read_bytes(), iterations=2))


def test_fewer_iterations_give_the_prefix_of_a_longer_file(tiny_model):
    img = smooth_image(24, 24)
    short, long = container.parse(save(img, iterations=2)), container.parse(save(img, iterations=5))
    iters = lambda f: [c.data for c in f.chunks if c.type == "ITER"]  # noqa: E731
    assert iters(short) == iters(long)[:2]
    assert short.find("RNNH").data[:-1] == long.find("RNNH").data[:-1]


def _train_tiny(tmp_path, *options: str) -> None:
    """A training run on one 40x40 image in tmp_path/run: 32 px crops, batch 1, two iterations."""
    from mlimg import train_rnn

    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(smooth_image(40, 40)).save(data / "img.png")
    threads = torch.get_num_threads()
    try:
        argv = ["--data", str(data), "--out", str(tmp_path / "run"), "--batch", "1", "--crop", "32", "--iterations", "2",
                *options]
        assert train_rnn.main(argv) == 0
    finally:
        torch.set_num_threads(threads)


def test_new_run_records_the_network_options(tmp_path):
    """--output / --dec / --gain-slope shape a new run's network and are kept in its checkpoint (--gain-lr,
    --binariser and --loss in its training settings)."""
    import json

    from mlimg.nn.rnn_models import RNNCodecNet

    _train_tiny(tmp_path, "--steps", "1", "--output", "linear", "--dec", "16,16,16,8,8", "--gain-slope", "0.2",
                "--gain-lr", "0.01", "--binariser", "hard", "--loss", "mse")
    meta = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    config = meta["config"]
    assert meta["train_config"]["gain_lr"] == 0.01 and meta["train_config"]["lr"] == 5e-4
    assert meta["train_config"]["binariser"] == "hard" and meta["train_config"]["loss"] == "mse"
    # Adam's first step moves each parameter by its learning rate: offset[1] (the only one the
    # two iterations use) by 0.01, not 5e-4.
    from safetensors.torch import load_file

    offset = load_file(str(tmp_path / "run" / "checkpoint.safetensors"))["model.gain.offset"]
    assert abs(float(offset[1]) - 0.2) == pytest.approx(0.01, rel=1e-3) and float(offset[2]) == pytest.approx(0.4)
    assert config["output"] == "linear" and config["dec"] == [16, 16, 16, 8, 8] and config["gain_slope"] == 0.2
    net = RNNCodecNet(config)
    assert not net.decoder.bounded and net.decoder.out.in_channels == 2
    assert float(net.gain.offset.detach()[5]) == pytest.approx(1.0)
    # Weights written before the option existed have no "output" key: they are tanh models.
    assert RNNCodecNet({k: v for k, v in config.items() if k != "output"}).decoder.bounded
    with pytest.raises(ValueError, match="bad rnn config"):
        RNNCodecNet({**config, "output": "relu"})


def test_psnr_loss_weights_every_iteration_by_its_inverse_error():
    """--loss psnr: the gradient is that of the mean log MSE (mean PSNR over iterations), scaled by
    the mean MSE; its value is the mean MSE, so logs and clipping read as with --loss mse."""
    from mlimg.train_rnn import _combine

    w = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    scale = torch.tensor([0.5, 0.01, 0.002])  # errors shrinking over iterations, as in training
    losses = scale * w * w
    mse = _combine(losses, "mse")
    psnr = _combine(losses, "psnr")
    assert float(psnr.detach()) == pytest.approx(float(mse.detach()))
    (grad,) = torch.autograd.grad(psnr, w, retain_graph=True)
    (log_grad,) = torch.autograd.grad(torch.log(losses).mean(), w)
    assert torch.allclose(grad, log_grad * losses.detach().mean())
    # Each iteration's weight no longer depends on the size of its error: d/dw log(s w^2) = 2 / w.
    assert torch.allclose(log_grad, 2 / w.detach() / 3)


def test_training_with_the_psnr_loss_runs_and_is_recorded(tmp_path):
    import json

    _train_tiny(tmp_path, "--steps", "2", "--loss", "psnr")
    meta = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert meta["step"] == 2 and meta["train_config"]["loss"] == "psnr"
    assert "MSE it1/last" in (tmp_path / "run" / "train.log").read_text()  # logged as MSE values


def test_train_init_from_exported_weights(tmp_path, monkeypatch):
    """checkpoint -> export -> `--init` in an empty run folder: every exported tensor is restored,
    the step continues from the registry, the lineage records the init."""
    import json

    from safetensors.torch import load_file

    from mlimg import train_rnn
    from mlimg.nn import store
    from mlimg.nn.models import build
    from mlimg.train import init_from_registry, save_checkpoint

    monkeypatch.setattr(store, "WEIGHTS_DIR", tmp_path / "weights")
    monkeypatch.setattr(store, "REGISTRY", tmp_path / "weights" / "registry.json")
    monkeypatch.setattr(store, "_loaded", {})
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        Image.fromarray(smooth_image(130, 140, seed=i)).save(data / f"img{i}.png")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        net = build(TINY)
        (tmp_path / "a").mkdir()
        save_checkpoint(tmp_path / "a", net, torch.optim.Adam(net.parameters()),
                        {"step": 3, "config": net.config, "command": "first command"})
        model_id = train_rnn.export(tmp_path / "a", data, n_crops=1)
        entry = store.registry()["models"][model_id]
        exported = load_file(str(store.WEIGHTS_DIR / entry["file"]))

        net2 = build(entry["config"])
        assert init_from_registry(net2, model_id, "rnn") == 3
        for name, value in net2.state_dict().items():
            assert torch.equal(value, exported[f"model.{name}"]), name

        out = tmp_path / "b"
        argv = ["--data", str(data), "--out", str(out), "--steps", "5", "--batch", "2", "--crop", "16",
                "--iterations", "2", "--init", "default"]
        assert train_rnn.main(argv) == 0
        meta = json.loads((out / "checkpoint.json").read_text())
        assert meta["step"] == 5 and meta["adam_step"] == 2 and meta["config"]["enc"] == TINY["enc"]
        assert meta["command"] == "first command"
        assert meta["resumes"][-1]["init"] == model_id and meta["resumes"][-1]["step"] == 3
        assert f"initialised from {model_id} at step 3" in (out / "train.log").read_text()
        model_b = train_rnn.export(out, data, n_crops=1)
        training = store.registry()["models"][model_b]["training"]
        assert training["steps"] == 5 and training["resumes"][-1]["init"] == model_id
        assert training["train_config"]["batch"] == 2
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------- fast inference path, draft()


@pytest.mark.parametrize("extra", [{}, {"reconstruction": "oneshot"}, {"residual_scaling": False}, {"output": "linear"}])
def test_fast_network_passes_match_the_module_path(one_torch_thread, extra):
    """nn/rnn_inference.py computes what RNNCodecNet computes, up to float32 round-off."""
    from mlimg.nn import rnn_inference
    from mlimg.nn.rnn_models import RNNCodecNet

    torch.manual_seed(1)
    net = RNNCodecNet({**TINY, **extra}).eval()
    assert rnn_inference.supports(net)
    x = np.random.default_rng(2).random((40, 56, 3), dtype=np.float32)
    fast_bits = rnn_mod.encode_bits(net, x, 4)
    slow_bits = rnn_mod.encode_bits(net, x, 4, fast=False)
    assert fast_bits.shape == slow_bits.shape == (4, 8, 3, 4)
    assert (fast_bits == slow_bits).mean() > 0.99  # a code within round-off of 0 may flip
    fast = rnn_mod.decode_image(net, slow_bits, 3, 4)
    slow = rnn_mod.decode_image(net, slow_bits, 3, 4, fast=False)
    np.testing.assert_allclose(fast, slow, atol=1e-5)


def test_lstm_networks_use_the_module_path():
    from mlimg.nn import rnn_inference
    from mlimg.nn.rnn_models import RNNCodecNet

    assert not rnn_inference.supports(RNNCodecNet({**TINY, "cell": "lstm"}))


def test_context_probabilities_per_plane_equal_the_generic_formula():
    """The per-plane shortcut in ContextCounts.probs gives exactly the specified floats."""
    from mlimg.entropy import probs_from_counts
    from mlimg.nn.binary_context import (SHARED, ContextCounts, anchor_mask, context_count, plane_contexts,
                                         split_contexts)

    rng = np.random.default_rng(3)
    prior = rng.integers(0, 300, (context_count(4), 2))
    bits = rng.integers(0, 2, (2, 4, 13, 11), dtype=np.uint8)
    for split in (False, True):
        counts = ContextCounts(4, prior, split)
        counts.update(np.arange(counts.counts.shape[0]), rng.integers(0, 2, counts.counts.shape[0]))
        for t, c in [(0, 0), (0, 3), (1, 2)]:
            ctx = plane_contexts(t, c, bits[0] if t else None, bits[t])
            if split:
                ctx = split_contexts(ctx, bits[t, c], anchor_mask(13, 11))
            expected = probs_from_counts(counts.counts[ctx] + counts.shared[ctx % (SHARED * (6 if split else 1))])
            assert np.array_equal(counts.probs(ctx), expected)


def test_box_reduce_averages_blocks_like_image_reduce():
    from mlimg.plugin import box_reduce

    img = np.random.default_rng(4).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    out = box_reduce(img, 2)
    assert out.shape == (4, 3, 3)
    assert np.array_equal(out[0, 0], np.round(img[:2, :2].reshape(4, 3).mean(axis=0)).astype(np.uint8))
    assert np.array_equal(out[3, 2], img[6, 4])  # a 1x1 corner block is itself
    pillow = np.asarray(Image.fromarray(img).reduce(2)).astype(int)
    assert np.abs(out.astype(int) - pillow).max() <= 1  # Pillow rounds in integers


def test_draft_decodes_half_the_iterations_and_shrinks(tiny_model):
    data = save(smooth_image(40, 72), iterations=4)
    from mlimg.plugin import box_reduce

    with Image.open(io.BytesIO(data)) as im:
        assert im.draft("RGB", (36, 20)) == ("RGB", (0, 0, 36.0, 20.0))
        assert im.size == (36, 20)
        assert im.draft("RGB", (9, 5)) is None  # only the first call configures the decoder
        im.load()
        drafted = np.asarray(im)
    assert np.array_equal(drafted, box_reduce(load(data, iterations=2), 2))
    with Image.open(io.BytesIO(data)) as im:  # scale 4 (the largest of 2, 4, 8 that fits)
        assert im.draft(None, (17, 9))[1] == (0, 0, 18.0, 10.0) and im.size == (18, 10)
    with Image.open(io.BytesIO(data)) as im:  # no smaller than half: nothing to gain
        assert im.draft("RGB", (50, 30)) is None and im.size == (72, 40)
    with Image.open(io.BytesIO(data)) as im:  # the user's decode options win
        im.draft("RGB", (36, 20))
        im.decode_options["iterations"] = 4
        im.load()
        assert np.array_equal(np.asarray(im), box_reduce(load(data), 2))
    with Image.open(io.BytesIO(data)) as im:
        im.thumbnail((16, 16))  # Pillow's thumbnail() drafts first
        assert max(im.size) == 16


@pytest.mark.parametrize("typed, expected", [((), (32, 16, 5e-4)),
                                             (("--crop", "64", "--batch", "8", "--lr", "2e-4"), (64, 8, 2e-4))])
def test_mlimg_train_rnn_takes_typed_options_and_rnn_defaults_otherwise(monkeypatch, tmp_path, typed, expected):
    import mlimg.train_rnn as train_rnn
    from mlimg import cli

    seen = {}
    monkeypatch.setattr(train_rnn, "run", lambda a: seen.update(options=(a.crop, a.batch, a.lr)) or 0)
    assert cli.main(["train", "rnn", "--out", str(tmp_path / "run"), *typed]) == 0
    assert seen["options"] == expected


def test_lower_gains_caps_offsets_at_the_measured_residual_shrinkage():
    from mlimg.nn.rnn_models import RNNCodecNet
    from mlimg.train_rnn import lower_gain_offsets

    torch.manual_seed(0)
    net = RNNCodecNet({**TINY, "train_iterations": 4}).eval()
    with torch.no_grad():
        net.gain.offset[:4] = torch.tensor([0.0, 3.0, 4.0, 5.0])  # far more gain than the residual warrants
    images = [np.random.default_rng(i).integers(0, 256, (80, 80, 3), dtype=np.uint8) for i in range(3)]
    before, after = lower_gain_offsets(net, images, seed=0, device="cpu", crops=4, crop=32)
    assert before.tolist() == [0.0, 3.0, 4.0, 5.0]
    assert after[0] == 0.0 and np.all(after <= before) and np.all(after[1:] < before[1:])
    # a random network barely shrinks the residual, so the caps are small
    assert np.all(after[1:] < 1.0)
    again_before, again = lower_gain_offsets(net, images, seed=0, device="cpu", crops=4, crop=32)
    assert np.allclose(again_before, after) and np.all(again <= after + 1e-6)
    with pytest.raises(SystemExit, match="no residual scaling"):
        lower_gain_offsets(RNNCodecNet({**TINY, "residual_scaling": False}), images, 0, "cpu", crops=2, crop=32)
