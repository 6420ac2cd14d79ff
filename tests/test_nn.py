"""mlimg.nn: layers, entropy models, integer tables, checkpoints."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import synthetic_training_images  # noqa: E402
from mlimg.nn import entropy_models as em  # noqa: E402
from mlimg.nn.integer import FREQ_BITS, factorized_freqs, freqs_to_probs, pmf_to_freqs  # noqa: E402
from mlimg.nn.layers import GDN, ResidualBlockStride, ResidualBlockUpsample, SimplifiedAttention  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_gdn_normalises_and_igdn_multiplies():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 5) * 3
    y = GDN(4)(x)
    assert torch.all(y.abs() <= x.abs() + 1e-6)  # beta = 1, gamma >= 0: division shrinks
    z = GDN(4, inverse=True)(x)
    assert torch.all(z.abs() >= x.abs() - 1e-6)


def test_cheng_blocks_shapes():
    x = torch.randn(1, 8, 16, 12)
    assert ResidualBlockStride(8, 6)(x).shape == (1, 6, 8, 6)
    assert ResidualBlockUpsample(8, 6)(x).shape == (1, 6, 32, 24)
    assert SimplifiedAttention(8)(x).shape == x.shape


def test_quantize_ste_rounds_forward_and_passes_gradient():
    x = torch.tensor([0.4, 1.6, -2.5], requires_grad=True)
    y = em.quantize_ste(x)
    assert torch.equal(y, torch.round(x.detach()))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(3))


def test_factorized_prior_is_a_distribution():
    torch.manual_seed(0)
    prior = em.FactorizedPrior(3)
    centres = torch.arange(-200, 201, dtype=torch.float32).view(1, 1, -1).repeat(3, 1, 1)
    mass = prior.bin_probs(centres).sum(dim=-1)
    assert torch.allclose(mass, torch.ones_like(mass), atol=1e-3)


def test_gaussian_and_mixture_bins_sum_to_one():
    y = torch.arange(-60, 61, dtype=torch.float64).view(1, 1, -1, 1)
    p = em.gaussian_likelihood(y, torch.tensor(1.3, dtype=torch.float64), torch.tensor(4.0, dtype=torch.float64))
    assert abs(p.sum().item() - 1) < 1e-6
    k = 3
    weights = torch.softmax(torch.tensor([0.1, 1.0, -0.5], dtype=torch.float64), 0).view(1, k, 1, 1, 1)
    means = torch.tensor([-3.0, 0.0, 5.0], dtype=torch.float64).view(1, k, 1, 1, 1)
    scales = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64).view(1, k, 1, 1, 1)
    pm = em.gmm_likelihood(y, weights.expand(1, k, 1, 121, 1), means.expand(1, k, 1, 121, 1), scales.expand(1, k, 1, 121, 1))
    assert abs(pm.sum().item() - 1) < 1e-6


def test_pmf_to_freqs_rows_sum_exactly_and_never_zero():
    rng = np.random.default_rng(0)
    pmf = rng.random((5, 40)) ** 8
    pmf[0] = 0
    pmf[0, 3] = 1
    f = pmf_to_freqs(pmf)
    assert np.all(f >= 1) and np.all(f.sum(axis=1) == 1 << FREQ_BITS)
    assert np.argmax(f[0]) == 3
    assert np.array_equal(freqs_to_probs(f), f / f.sum(axis=1, keepdims=True))


def test_factorized_freqs_shape_and_escape_column():
    torch.manual_seed(0)
    f = factorized_freqs(em.FactorizedPrior(2), latent_range=10)
    assert f.shape == (2, 22) and np.all(f.sum(axis=1) == 1 << FREQ_BITS)


def test_checkpoint_resume_restores_model_and_adam(tmp_path):
    from mlimg import train
    from mlimg.nn.models import build

    torch.manual_seed(0)
    net = build({"arch": "cae", "N": 4, "M": 4, "lambdas": [0.01, 0.1]})
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.rand(2, 3, 32, 32)
    x_hat, lik = net(x, 1)
    ((x_hat - x) ** 2).mean().add(-torch.log2(lik).mean()).backward()
    opt.step()
    train.save_checkpoint(tmp_path, net, opt, {"step": 7})
    net2 = build({"arch": "cae", "N": 4, "M": 4, "lambdas": [0.01, 0.1]})
    opt2 = torch.optim.Adam(net2.parameters(), lr=1e-3)
    meta = train.load_checkpoint(tmp_path, net2, opt2, torch.device("cpu"))
    assert meta["step"] == 7
    for (name, a), b in zip(net.state_dict().items(), net2.state_dict().values()):
        assert torch.equal(a, b), name
    p1, p2 = next(net.parameters()), next(net2.parameters())
    assert torch.equal(opt.state[p1]["exp_avg_sq"], opt2.state[p2]["exp_avg_sq"])


def test_random_batch_is_a_pure_function_of_the_seed():
    from mlimg.train import random_batch

    images = [np.random.default_rng(i).integers(0, 256, (40, 50, 3), dtype=np.uint8) for i in range(3)]
    a = random_batch(images, np.random.default_rng([0, 5]), 16, 4)
    b = random_batch(images, np.random.default_rng([0, 5]), 16, 4)
    assert a.shape == (4, 3, 16, 16) and a.dtype == np.float32 and np.array_equal(a, b)


@pytest.mark.parametrize("workers", [0, 2])
def test_step_batches_are_the_draws_of_seed_and_step(workers):
    """The batches the trainer gets (built ahead by worker processes or not) are the level and
    crops drawn from default_rng([seed, step]), as float32 in [0, 1]: resumable, worker-independent."""
    from mlimg.train import StepBatches, random_batch, step_batches

    images = [np.random.default_rng(i).integers(0, 256, (40, 50, 3), dtype=np.uint8) for i in range(3)]
    got = list(step_batches(StepBatches(images, 7, 16, 4, 6), 3, 9, torch.device("cpu"), workers))
    assert len(got) == 6
    for step, (level, x) in zip(range(3, 9), got):
        rng = np.random.default_rng([7, step])
        assert level == int(rng.integers(6))
        expected = random_batch(images, rng, 16, 4)
        assert x.dtype == torch.float32 and np.array_equal(x.numpy(), expected)


def test_gains_interpolate_exponentially_and_monotonically():
    from mlimg.nn.models import build

    net = build({"arch": "cae", "N": 4, "M": 4, "lambdas": [0.01, 0.02, 0.04]})
    g0, _ = net.gains(0.0)
    g1, _ = net.gains(1.0)
    gh, _ = net.gains(0.5)
    assert torch.allclose(gh, torch.sqrt(g0 * g1))
    assert torch.all(net.gains(2.0)[0] > g1) and torch.all(g1 > g0)


def test_init_from_exported_weights_continues_the_step_count(tmp_path, train_in_tmp):
    """train -> export -> `--init` in an empty run folder: every exported tensor is restored, the
    step count continues from the registry, the optimiser is fresh, the lineage records the init;
    a run folder with a checkpoint ignores --init."""
    import json

    from safetensors.torch import load_file

    from mlimg import train
    from mlimg.nn import store
    from mlimg.nn.models import build

    def run(out, steps, *extra):
        assert train_in_tmp("cae", out, steps, "--N", "4", "--M", "4", "--crop", "16", "--batch", "2", *extra) == 0

    run(tmp_path / "a", 2)
    model_id = store.export_checkpoint("cae", tmp_path / "a")
    entry = store.registry()["models"][model_id]
    assert entry["training"]["steps"] == 2 and store.default_model("cae") == model_id
    exported = load_file(str(store.WEIGHTS_DIR / entry["file"]))

    net = build(entry["config"])
    assert train.init_from_registry(net, model_id, "cae") == 2
    state = net.state_dict()
    assert {f"model.{k}" for k in state} == {k for k in exported if k.startswith("model.")}
    for name, value in state.items():  # gains and prior parameters included
        assert torch.equal(value, exported[f"model.{name}"]), name

    run(tmp_path / "b", 4, "--init", "default")
    meta = json.loads((tmp_path / "b" / "checkpoint.json").read_text())
    assert meta["step"] == 4 and meta["adam_step"] == 2  # 2 registered + 2 new; fresh Adam
    assert meta["resumes"][-1] == {"step": 2, "command": meta["resumes"][-1]["command"],
                                   "init": model_id, "sha256": entry["sha256"]}
    log = (tmp_path / "b" / "train.log").read_text()
    assert f"initialised from {model_id} at step 2" in log and "(first step of this process" in log

    model_b = store.export_checkpoint("cae", tmp_path / "b")  # the lineage reaches the registry
    training = store.registry()["models"][model_b]["training"]
    assert training["steps"] == 4 and training["resumes"][-1]["init"] == model_id

    run(tmp_path / "b", 5, "--init", model_b)  # resume wins
    meta = json.loads((tmp_path / "b" / "checkpoint.json").read_text())
    assert meta["step"] == 5 and meta["adam_step"] == 3
    assert "ignored" in (tmp_path / "b" / "train.log").read_text()


def test_a_resumed_run_trains_exactly_as_an_uninterrupted_one(tmp_path, train_in_tmp):
    """Batches, levels and the rate's noise are functions of (seed, step) and the checkpoint
    holds the Adam state: 2 steps + 2 resumed steps give the weights of 4 steps in one go."""
    from safetensors.torch import load_file

    def run(out, steps):
        assert train_in_tmp("cae", out, steps, "--N", "4", "--M", "4", "--crop", "16", "--batch", "2") == 0

    run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    run(tmp_path / "b", 4)
    a = load_file(str(tmp_path / "a" / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoint.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_widened_transforms_compute_the_same_function_then_train_apart():
    """nn/widen.py: a gmm whose analysis (or synthesis) is widened from a trained one gives the
    same latents, rates and reconstructions; one training step then changes the zero blocks (new channels
    start to feed old ones). Shrinking, or another kernel size, is refused."""
    from mlimg.nn.models import CAE, GMM
    from mlimg.nn.widen import widen_into

    torch.manual_seed(0)
    narrow = GMM(8, 8, Nf=4)
    with torch.no_grad():  # a "trained" state: not the init's symmetric values
        for p in narrow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    wide = GMM(8, 8, Nf=4, Na=12, Nfa=6)
    assert wide.config["Na"] == 12 and "Na" not in narrow.config
    grown = widen_into(wide, narrow.state_dict())
    assert grown and all(k.startswith("g_a.") for k in grown)
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        for position in (0.0, 2.5, 5.0):
            (bits_n, x_n), (bits_w, x_w) = narrow.estimate(x, position), wide.estimate(x, position)
            assert torch.allclose(bits_n, bits_w, rtol=1e-5) and torch.allclose(x_n, x_w, atol=1e-5)
    # a new channel does not yet feed the old ones, but gets a gradient that will open it
    w = wide.g_a[2].conv1.weight  # ResidualBlockStride(Nfa -> Na): old outputs, new inputs
    assert torch.count_nonzero(w[:8, 4:]) == 0
    x_hat, likelihoods = wide(x, 3)
    ((x_hat - x) ** 2).mean().add(-torch.log2(likelihoods).mean() * 1e-3).backward()
    assert torch.count_nonzero(w.grad[:8, 4:]) > 0
    with pytest.raises(ValueError, match="cannot widen"):
        widen_into(GMM(8, 8, Nf=4), wide.state_dict())
    # the synthesis grows the same way: same reconstructions (rates untouched), then it trains apart
    wide_s = GMM(8, 8, Nf=4, Ns=12, Nfs=6)
    assert (wide_s.config["Ns"], wide_s.config["Nfs"]) == (12, 6) and "Na" not in wide_s.config
    grown = widen_into(wide_s, narrow.state_dict())
    assert grown and all(k.startswith("g_s.") for k in grown)
    with torch.no_grad():
        for position in (0.0, 5.0):
            (bits_n, x_n), (bits_w, x_w) = narrow.estimate(x, position), wide_s.estimate(x, position)
            assert torch.equal(bits_n, bits_w) and torch.allclose(x_n, x_w, atol=1e-5)
    w = wide_s.g_s[2].conv.weight  # ResidualBlockUpsample(M -> Ns): old outputs, new inputs
    assert w.shape[:2] == (12, 12) and torch.count_nonzero(w[:8, 8:]) == 0
    x_hat, _ = wide_s(x, 3)
    ((x_hat - x) ** 2).mean().backward()
    assert torch.count_nonzero(w.grad[:8, 8:]) > 0
    cae, wide_cae = CAE(6, 4), CAE(6, 4, Na=10)  # GDN gammas and the plain conv stack
    widen_into(wide_cae, cae.state_dict())
    with torch.no_grad():
        (bits_n, x_n), (bits_w, x_w) = cae.estimate(x, 2.0), wide_cae.estimate(x, 2.0)
    assert torch.allclose(bits_n, bits_w, rtol=1e-5) and torch.allclose(x_n, x_w, atol=1e-5)
    with pytest.raises(ValueError, match="not the same architecture"):
        widen_into(wide, {})


def test_init_with_wider_analysis_starts_from_the_registered_model(tmp_path, train_in_tmp):
    """`mlimg train gmm --init ID --Na ... --Nfa ...`: a new run whose analysis is the registered
    one widened (the config and the lineage say so); export and the codec then use the wide model;
    --Nfa is refused for cae, and a width below the registered one; cae grows with --N."""
    import json

    from mlimg.nn import store

    def run(method, out, steps, *extra):
        return train_in_tmp(method, out, steps, "--crop", "32", "--batch", "2", *extra)

    assert run("gmm", tmp_path / "a", 1, "--N", "8", "--M", "8", "--Nf", "4") == 0
    narrow_id = store.export_checkpoint("gmm", tmp_path / "a")
    assert run("gmm", tmp_path / "b", 2, "--init", narrow_id, "--Na", "12", "--Nfa", "6") == 0
    meta = json.loads((tmp_path / "b" / "checkpoint.json").read_text())
    assert (meta["config"]["Na"], meta["config"]["Nfa"], meta["config"]["N"]) == (12, 6, 8)
    assert meta["resumes"][-1]["init"] == narrow_id and meta["resumes"][-1]["widened_to"] == {"Na": 12, "Nfa": 6}
    assert "widened to Na=12 Nfa=6" in (tmp_path / "b" / "train.log").read_text()
    wide_id = store.export_checkpoint("gmm", tmp_path / "b")
    net = store.load(wide_id, "gmm").net
    assert net.g_a[0].conv1.out_channels == 6 and net.config["Na"] == 12
    import io

    from PIL import Image

    import mlimg  # noqa: F401  (registers the plugin)

    original = Image.fromarray(np.random.default_rng(1).integers(0, 256, (20, 28, 3), dtype=np.uint8))
    buf = io.BytesIO()
    original.save(buf, format="MLIMG", method="gmm", model=wide_id, quality=50)
    buf.seek(0)
    with Image.open(buf) as decoded:
        assert decoded.size == original.size and decoded.convert("RGB").getbbox() is not None
    with pytest.raises(SystemExit, match="only applies to gmm"):
        run("cae", tmp_path / "c", 1, "--Nfa", "12")
    with pytest.raises(SystemExit, match="widening only grows"):
        run("gmm", tmp_path / "d", 2, "--init", wide_id, "--Na", "10")
    with pytest.raises(SystemExit, match="only applies to gmm"):
        run("cae", tmp_path / "c", 1, "--Ns", "12")
    # --Ns/--Nfs grow the synthesis: the codec decodes with the wide one
    assert run("gmm", tmp_path / "s", 3, "--init", wide_id, "--Ns", "12", "--Nfs", "6") == 0
    meta = json.loads((tmp_path / "s" / "checkpoint.json").read_text())
    assert meta["resumes"][-1]["widened_to"] == {"Ns": 12, "Nfs": 6}
    wide_s_id = store.export_checkpoint("gmm", tmp_path / "s")
    assert store.load(wide_s_id, "gmm").net.g_s[2].conv.out_channels == 12
    buf = io.BytesIO()
    original.save(buf, format="MLIMG", method="gmm", model=wide_s_id, quality=50)
    buf.seek(0)
    with Image.open(buf) as decoded:
        assert decoded.size == original.size and decoded.convert("RGB").getbbox() is not None
    # cae: --N grows the whole transform pair (the prior is over M, unchanged)
    assert run("cae", tmp_path / "e", 1, "--N", "6", "--M", "4") == 0
    cae_id = store.export_checkpoint("cae", tmp_path / "e")
    assert run("cae", tmp_path / "f", 2, "--init", cae_id, "--N", "10") == 0
    meta = json.loads((tmp_path / "f" / "checkpoint.json").read_text())
    assert meta["config"]["N"] == 10 and "Na" not in meta["config"]
    assert meta["resumes"][-1]["widened_to"] == {"N": 10, "Na": 10}  # the analysis follows N


@pytest.mark.parametrize("workers", [0, 2])
def test_sigterm_stops_training_after_a_step_with_a_checkpoint(tmp_path, workers):
    """`kill PID` on a long run: it checkpoints the step it reached and exits 0 (nothing lost).
    With batch workers the signal goes to the whole process group, as `timeout -s TERM` sends it."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    data = synthetic_training_images(tmp_path / "data")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "mlimg.train", "cae", "--data", str(data), "--out", str(run), "--N", "4", "--M", "4",
           "--crop", "16", "--batch", "1", "--kodak", str(tmp_path / "none"), "--checkpoint-every", "100000",
           "--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    log = run / "train.log"
    deadline = time.time() + 60
    while time.time() < deadline and not (log.exists() and "first step" in log.read_text()):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    meta = json.loads((run / "checkpoint.json").read_text())
    assert meta["step"] >= 1 and "(stop requested)" in log.read_text()


@pytest.mark.parametrize("method", ["gmm", "cae"])
def test_half_export_stores_float16_and_describes_the_network_it_ships(tmp_path, train_in_tmp, method):
    """`mlimg train METHOD --export RUN --half`: about half the bytes; the loaded network is the
    float16-rounded one and the integer tables are those of that network; files encode and decode."""
    import io

    from PIL import Image
    from safetensors.torch import load_file

    import mlimg  # noqa: F401  (registers the plugin)
    from mlimg.nn import store

    widths = ("--N", "8", "--M", "8") + (("--Nf", "4") if method == "gmm" else ())
    assert train_in_tmp(method, tmp_path / "run", 2, "--crop", "32", "--batch", "2", *widths) == 0
    full_id = store.export_checkpoint(method, tmp_path / "run")
    # the next export replaces the default's file
    (tmp_path / "full.safetensors").write_bytes((store.WEIGHTS_DIR / f"{full_id}.safetensors").read_bytes())
    half_id = store.export_checkpoint(method, tmp_path / "run", half=True)
    half_path = store.WEIGHTS_DIR / f"{half_id}.safetensors"
    stored = load_file(str(half_path))
    full = load_file(str(tmp_path / "full.safetensors"))

    def network_bytes(tensors):  # the integer tables, the bulk of a tiny model's file, are unchanged
        return sum(v.numel() * v.element_size() for k, v in tensors.items() if k.startswith("model."))

    assert half_id != full_id and network_bytes(stored) < 0.6 * network_bytes(full)
    assert store.registry()["models"][half_id]["network_dtype"].startswith("float16")
    weights = [v for k, v in stored.items() if k.startswith("model.") and v.is_floating_point() and v.dim() > 1]
    assert weights and all(v.dtype == torch.float16 for v in weights)
    loaded = store.load(half_id, method)
    for name, value in loaded.net.state_dict().items():
        assert value.dtype == full[f"model.{name}"].dtype  # float32 again once loaded
        assert torch.equal(value, stored[f"model.{name}"].to(value.dtype))
        assert torch.allclose(value, full[f"model.{name}"], rtol=2e-3, atol=1e-3 * float(value.abs().max()))
    for name, table in store.integer_tables(loaded.net).items():  # recomputed from what a decoder loads
        assert np.array_equal(np.asarray(table), loaded.tables[name]), name
    original = Image.fromarray(np.random.default_rng(2).integers(0, 256, (24, 30, 3), dtype=np.uint8))
    buf = io.BytesIO()
    original.save(buf, format="MLIMG", method=method, model=half_id, quality=50)
    decoded = [np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")) for _ in range(2)]
    assert decoded[0].shape == (24, 30, 3) and np.array_equal(decoded[0], decoded[1])
    with pytest.raises(SystemExit, match="--half only applies"):
        train_in_tmp("rnn", tmp_path / "r", 1, "--half")


def test_half_where_exact_keeps_float32_where_float16_would_lose_values():
    from mlimg.nn.store import half_where_exact

    assert half_where_exact(torch.tensor([0.5, -0.25, 1.0])).dtype == torch.float16
    assert half_where_exact(torch.zeros(3)).dtype == torch.float16
    assert half_where_exact(torch.tensor([1e-9, 2e-9])).dtype == torch.float32  # subnormal in float16
    assert half_where_exact(torch.tensor([1e5])).dtype == torch.float32  # overflows float16
    assert half_where_exact(torch.tensor([1.0, 1e-6])).dtype == torch.float16  # error judged against the largest


def test_shipped_weights_are_registered_within_the_size_limit_and_match_their_sha256():
    """Every file in the package's weights folder is registered with its sha256, every default
    exists, and none is over the 25 MB a method may ship (issue 6)."""
    import hashlib
    import json

    from mlimg.nn import store

    reg = json.loads(store.REGISTRY.read_text())
    files = {p.name for p in store.WEIGHTS_DIR.glob("*.safetensors")}
    assert files == {entry["file"] for entry in reg["models"].values()}
    assert all(model_id in reg["models"] for model_id in reg["default"].values())
    for model_id, entry in reg["models"].items():
        path = store.WEIGHTS_DIR / entry["file"]
        assert path.stat().st_size <= 25_000_000, f"{model_id}: {path.stat().st_size} bytes"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], model_id
        assert model_id.endswith(entry["sha256"][:8]), model_id


def test_amp_trains_gmm_in_bfloat16_with_float32_weights_and_entropy_model(tmp_path, train_in_tmp):
    """--amp (GPU throughput): the transforms run in bfloat16 autocast, the entropy model and
    the weights stay float32, the loss stays near the float32 run's; other methods refuse it."""
    from safetensors.torch import load_file

    from mlimg.nn.models import build

    net = build({"arch": "gmm", "N": 8, "M": 8, "K": 3, "lambdas": [0.01, 0.1]})
    x = torch.rand(2, 3, 64, 64)
    torch.manual_seed(0)
    x_hat, lik = net(x, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(0)
        x_hat_amp, lik_amp = net(x, 1)
    assert lik_amp.dtype == torch.float32 and x_hat_amp.dtype == torch.bfloat16
    bits, bits_amp = -torch.log2(lik).sum().item(), -torch.log2(lik_amp).sum().item()
    assert abs(bits_amp - bits) < 0.02 * bits
    assert torch.mean((x_hat_amp.float() - x_hat) ** 2).item() < 1e-3

    tiny = ("--N", "4", "--M", "4", "--Nf", "4", "--crop", "32", "--batch", "2")
    assert train_in_tmp("gmm", tmp_path / "amp", 3, *tiny, "--amp") == 0
    log = (tmp_path / "amp" / "train.log").read_text()
    assert "first step of this process" in log and "nan" not in log and "checkpoint at step 3" in log
    assert all(t.dtype == torch.float32 for t in load_file(str(tmp_path / "amp" / "checkpoint.safetensors")).values())
    with pytest.raises(SystemExit, match="--amp only applies"):
        train_in_tmp("cae", tmp_path / "cae", 1, "--amp")
