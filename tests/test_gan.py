"""gan: the generator/discriminator networks, losses, training step, checkpoint resume, export
to a temporary registry, and the high-frequency (sharpness) metric. Tiny configurations only."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from mlimg import cli, metrics  # noqa: E402
from mlimg.nn import store  # noqa: E402
from mlimg.nn.gan_models import (GAN, Discriminator, laplacian_l1, ms_ssim)  # noqa: E402
from mlimg.nn.models import GMM, build  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_GMM = {"arch": "gmm", "N": 8, "M": 8, "K": 3, "lambdas": [0.01, 0.05]}


def tiny_gmm(seed: int = 0) -> GMM:
    torch.manual_seed(seed)
    return build(TINY_GMM)


def tiny_gan_from(gmm: GMM) -> GAN:
    net = GAN(8, 8, 3, TINY_GMM["lambdas"])
    net.load_state_dict(gmm.state_dict(), strict=False)
    net.generator.init_from_synthesis(net.g_s)
    return net


# ---------------------------------------------------------------- networks


def test_gan_state_dict_is_gmm_plus_generator():
    gmm = tiny_gmm()
    net = GAN(8, 8, 3, TINY_GMM["lambdas"])
    missing, unexpected = net.load_state_dict(gmm.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("generator.") for k in missing)
    assert set(net.gmm_state_dict()) == set(gmm.state_dict())
    assert build(net.config).config == net.config and net.config["arch"] == "gan"


def test_generator_shapes_and_realism_argument():
    net = tiny_gan_from(tiny_gmm())
    y = torch.randn(2, 8, 3, 4)
    with torch.no_grad():
        assert net.generator(y, 0.3).shape == (2, 3, 48, 64)
        assert net.generator(y, torch.tensor([0.0, 1.0])).shape == (2, 3, 48, 64)
    with pytest.raises(ValueError, match="realism"):
        net.generator(y, 1.5)
    with pytest.raises(ValueError, match="batch"):
        net.generator(y, torch.tensor([0.0, 0.5, 1.0]))


def test_generator_equals_synthesis_at_init_for_any_realism():
    gmm = tiny_gmm(3)
    net = tiny_gan_from(gmm)
    y = torch.round(torch.randn(2, 8, 2, 3) * 4)
    with torch.no_grad():
        ref = gmm.g_s(y)
        for beta in (0.0, 0.37, 1.0, torch.tensor([0.2, 0.9])):
            assert torch.equal(net.generator(y, beta), ref)


def test_generator_without_realism_is_plain_synthesis():
    gmm = tiny_gmm(1)
    net = GAN(8, 8, 3, TINY_GMM["lambdas"], realism=False)
    net.load_state_dict(gmm.state_dict(), strict=False)
    net.generator.init_from_synthesis(net.g_s)
    y = torch.randn(1, 8, 2, 2)
    with torch.no_grad():
        assert torch.equal(net.generator(y, 0.5), gmm.g_s(y))


def test_discriminator_shapes():
    disc = Discriminator(8, width=8)
    logits, feats = disc(torch.rand(2, 3, 64, 48), torch.randn(2, 8, 4, 3))
    assert logits.shape == (2, 1, 4, 3)
    assert [f.shape[1:] for f in feats] == [(8, 32, 24), (16, 16, 12), (32, 8, 6), (64, 4, 3)]


# ---------------------------------------------------------------- losses


def test_ms_ssim_matches_pytorch_msssim_and_handles_small_crops():
    from pytorch_msssim import ms_ssim as reference

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 165, 170, generator=gen)
    y = (x + 0.1 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    assert torch.allclose(ms_ssim(x, y), reference(x, y, data_range=1.0, size_average=False), atol=1e-5)
    for side in (128, 32, 7, 1):
        a = torch.rand(1, 3, side, side, generator=gen)
        b = (a + 0.2 * torch.randn(a.shape, generator=gen)).clamp(0, 1)
        value = ms_ssim(a, b)
        assert torch.isfinite(value).all() and torch.allclose(ms_ssim(a, a), torch.ones(1))
        if side >= 32:
            assert value.item() < 1


def test_laplacian_l1_is_zero_for_identical_and_grows_with_error():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert torch.equal(laplacian_l1(x, x), torch.zeros(2))
    small, large = laplacian_l1(x, x + 0.01), laplacian_l1(x, x + 0.1 * torch.randn_like(x))
    assert (small < large).all()


# ---------------------------------------------------------------- training


def test_train_step_gives_finite_losses_and_trains_only_the_generator():
    from mlimg.train_gan import draw_beta, freeze_all_but_generator, make_optimisers, train_step

    net = tiny_gan_from(tiny_gmm())
    freeze_all_but_generator(net)
    disc = Discriminator(8, width=8)
    opt_g, opt_d = make_optimisers(net, disc, 1e-3)
    frozen = {k: v.clone() for k, v in net.gmm_state_dict().items()}
    gen_before = {k: v.clone() for k, v in net.generator.state_dict().items()}
    disc_before = [p.clone() for p in disc.parameters()]
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    beta = torch.from_numpy(draw_beta(np.random.default_rng(0), 2))
    for _ in range(2):
        terms = train_step(net, disc, opt_g, opt_d, x, 1, beta)
        assert all(np.isfinite(v) for v in terms.values())
    frozen_after, gen_after = net.gmm_state_dict(), net.generator.state_dict()
    assert all(torch.equal(v, frozen_after[k]) for k, v in frozen.items())
    assert any(not torch.equal(v, gen_after[k]) for k, v in gen_before.items())
    assert any(not torch.equal(a, b) for a, b in zip(disc_before, disc.parameters()))


def test_draw_beta_covers_both_ends_and_the_middle():
    from mlimg.train_gan import draw_beta

    beta = draw_beta(np.random.default_rng(0), 400)
    assert beta.min() == 0.0 and beta.max() == 1.0
    assert 0.15 < np.mean(beta == 0) < 0.35 and np.mean((beta > 0) & (beta < 1)) > 0.35


@pytest.fixture
def train_data(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(data / f"img{i}.png")
    return data


@pytest.fixture
def base_run(tmp_path):
    """A tiny gmm run folder as mlimg/train.py writes it."""
    from mlimg.train import save_checkpoint

    gmm = tiny_gmm(5)
    folder = tmp_path / "gmm-run"
    folder.mkdir()
    save_checkpoint(folder, gmm, torch.optim.Adam(gmm.parameters()), {"step": 7, "config": gmm.config})
    return folder


def train_cli(base, data, out, steps, *extra) -> int:
    return cli.main(["train", "gan", "--base", str(base), "--data", str(data), "--out", str(out), "--steps", str(steps),
                     "--crop", "32", "--batch", "2", "--kodak", str(data / "none"), "--eval-every", "1000", *extra])


def generator_tensors(run: Path) -> dict:
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(str(run / "checkpoint.safetensors")).items()
            if not k.startswith("model.") or k.startswith("model.generator.")}


def test_resumed_run_matches_an_uninterrupted_one(tmp_path, train_data, base_run):
    assert train_cli(base_run, train_data, tmp_path / "straight", 3) == 0
    assert train_cli(base_run, train_data, tmp_path / "resumed", 2) == 0
    assert train_cli(base_run, train_data, tmp_path / "resumed", 3) == 0
    a, b = generator_tensors(tmp_path / "straight"), generator_tensors(tmp_path / "resumed")
    assert a.keys() == b.keys() and any(k.startswith("adam_d.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    meta = json.loads((tmp_path / "resumed" / "checkpoint.json").read_text())
    assert meta["step"] == 3 and meta["base_kind"] == "run" and len(meta["resumes"]) == 1
    assert meta["config"]["arch"] == "gan" and meta["train_config"]["crop"] == 32
    assert "resumed at step 2" in (tmp_path / "resumed" / "train.log").read_text()


@pytest.mark.parametrize("typed, expected", [((), (128, 4, 1e-4)),
                                             (("--crop", "64", "--batch", "8", "--lr", "2e-4"), (64, 8, 2e-4))])
def test_typed_options_win_even_when_they_equal_train_py_defaults(monkeypatch, tmp_path, typed, expected):
    # `--batch 8` once fell back to the gan default 4, because 8 is also train.py's cae default.
    import mlimg.train_gan as train_gan

    seen = {}
    monkeypatch.setattr(train_gan, "run", lambda a: seen.update(options=(a.crop, a.batch, a.lr)) or 0)
    assert cli.main(["train", "gan", "--base", "default", "--out", str(tmp_path / "run"), *typed]) == 0
    assert seen["options"] == expected


def test_training_positions_cover_the_codecs_quality_range():
    import numpy as np

    from mlimg.codecs.gmm import gain_position
    from mlimg.train_gan import draw_position

    rng = np.random.default_rng(0)
    drawn = np.array([draw_position(rng, 6) for _ in range(2000)])
    lo, hi = gain_position(1, 6, 2), gain_position(100, 6, 2)
    assert lo <= drawn.min() < lo + 0.05 and hi - 0.05 < drawn.max() <= hi
    assert 0.25 < np.mean(drawn < 0) < 0.33  # the extrapolated 2 of 7 levels get their share


def test_loss_weights_override_is_used_and_recorded(tmp_path, train_data, base_run):
    from mlimg.train_gan import LOSS_WEIGHTS, parse_loss_weights

    assert parse_loss_weights(None) == LOSS_WEIGHTS
    assert parse_loss_weights("adv=0.3, fm=10") == {**LOSS_WEIGHTS, "adv": 0.3, "fm": 10.0} != LOSS_WEIGHTS
    for bad in ("lpips=1", "adv", "adv=x", "fm=-1", "mse=nan"):
        with pytest.raises(ValueError, match="loss-weights"):
            parse_loss_weights(bad)
    assert train_cli(base_run, train_data, tmp_path / "run", 1, "--loss-weights", "adv=0.3,fm=10") == 0
    meta = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert meta["train_config"]["loss_weights"] == {**LOSS_WEIGHTS, "adv": 0.3, "fm": 10.0}
    assert "'adv': 0.3" in (tmp_path / "run" / "train.log").read_text()
    with pytest.raises(SystemExit, match="mse, ms_ssim"):
        train_cli(base_run, train_data, tmp_path / "other", 1, "--loss-weights", "lpips=1")
    with pytest.raises(SystemExit, match="only apply to gan"):
        cli.main(["train", "gmm", "--loss-weights", "adv=1", "--out", str(tmp_path / "gmm")])


def test_export_refuses_a_run_folder_base(tmp_path, train_data, base_run):
    assert train_cli(base_run, train_data, tmp_path / "run", 1) == 0
    with pytest.raises(SystemExit, match="registered gmm model id"):
        cli.main(["train", "gan", "--export", str(tmp_path / "run")])


@pytest.fixture
def temp_registry(tmp_path, monkeypatch):
    """A registered tiny gmm model in a temporary weights folder; the real registry is never touched."""
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setattr(store, "WEIGHTS_DIR", weights)
    monkeypatch.setattr(store, "REGISTRY", weights / "registry.json")
    gmm = tiny_gmm(9)
    path = weights / "gmm-test-tiny.safetensors"
    table = np.arange(-5, 40, dtype=np.int32).reshape(3, 15)
    store.save_weights(path, gmm, {"prior": table}, TINY_GMM)
    store.register("gmm-test-tiny", "gmm", path, TINY_GMM)
    yield weights, path
    store.unregister("gmm-test-tiny")
    for model_id in list(store._loaded):
        if model_id.startswith("gan-v1-"):
            store._loaded.pop(model_id)


def test_export_writes_base_tensors_plus_generator_and_registers_default(tmp_path, train_data, temp_registry):
    from safetensors.numpy import load_file

    weights, base_path = temp_registry
    run = tmp_path / "run"
    assert train_cli("gmm-test-tiny", train_data, run, 1) == 0
    assert cli.main(["train", "gan", "--export", str(run)]) == 0
    reg = json.loads(store.REGISTRY.read_text())
    first = reg["default"]["gan"]
    entry = reg["models"][first]
    assert entry["base"] == "gmm-test-tiny" and entry["config"]["arch"] == "gan" and entry["training"]["steps"] == 1
    base, out = load_file(str(base_path)), load_file(str(weights / entry["file"]))
    kept = {k: v for k, v in base.items() if not k.startswith("model.g_s.")}  # the generator replaces g_s
    assert len(kept) < len(base) and not any(k.startswith("model.g_s.") for k in out)
    assert all(np.array_equal(out[k], v) and out[k].dtype == v.dtype for k, v in kept.items())
    assert out["cdf.prior"].dtype == np.int32
    extra = set(out) - set(base)
    assert extra and all(k.startswith("model.generator.") for k in extra)
    loaded = store.load(first, "gan")
    ckpt = generator_tensors(run)
    assert all(torch.equal(v, ckpt[f"model.generator.{k}"]) for k, v in loaded.net.generator.state_dict().items())
    assert np.array_equal(loaded.tables["prior"], base["cdf.prior"])
    # A second export replaces the default and deletes the previous file.
    assert train_cli("gmm-test-tiny", train_data, run, 2) == 0
    assert cli.main(["train", "gan", "--export", str(run)]) == 0
    reg = json.loads(store.REGISTRY.read_text())
    assert reg["default"]["gan"] != first and first not in reg["models"]
    assert not (weights / entry["file"]).exists()


# ---------------------------------------------------------------- sharpness metric


def textured_image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:80]
    base = 128 + 60 * np.sin(xx / 6.0)[..., None] + rng.normal(0, 25, (64, 80, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


def test_high_frequency_ratio_identical_blurred_and_noisy():
    from scipy.ndimage import gaussian_filter

    img = textured_image()
    assert metrics.high_frequency_ratio(img, img) == pytest.approx(1.0)
    blurred = np.clip(gaussian_filter(img.astype(float), sigma=(1.5, 1.5, 0)), 0, 255).astype(np.uint8)
    assert metrics.high_frequency_ratio(img, blurred) < 0.5
    noisy = np.clip(img + np.random.default_rng(1).normal(0, 20, img.shape), 0, 255).astype(np.uint8)
    assert metrics.high_frequency_ratio(img, noisy) > 1.0
    grey = img[..., 0]
    assert metrics.high_frequency_ratio(grey, grey) == pytest.approx(1.0)
    flat = np.full((16, 16), 7, np.uint8)
    assert metrics.high_frequency_ratio(flat, flat) == 1.0
    with pytest.raises(ValueError):
        metrics.high_frequency_ratio(img, grey)
