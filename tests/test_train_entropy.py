"""`mlimg train cae|gmm --entropy-fit` (mlimg/train_entropy.py): the entropy model refitted to the
rate of rounded latents, transforms frozen; resumable; exported like any run."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"cae": ("--N", "4", "--M", "4"), "gmm": ("--N", "8", "--M", "8", "--Nf", "4")}
FIT = ("--entropy-fit", "--crops", "6", "--crop", "32", "--batch", "3")


def _trained(method, tmp_path, train_in_tmp) -> str:
    """A registered tiny model (a few training steps) to fit."""
    from mlimg.nn import store

    assert train_in_tmp(method, tmp_path / "trained", 2, *TINY[method], "--crop", "32", "--batch", "2") == 0
    return store.export_checkpoint(method, tmp_path / "trained")


def _cached_bits(method, run, model):
    """Exact bits (float models) of every cached crop at three gain positions."""
    from safetensors.torch import load_file

    from mlimg.train_entropy import exact_bits, gained

    raw = load_file(str(run / "latents.safetensors"))["g_a"]
    with torch.no_grad():
        return sum(float(exact_bits(model, gained(model, raw, [p] * len(raw)))) for p in (-2.0, 1.0, 5.0))


def _net(run):
    from safetensors.torch import load_file

    from mlimg.nn.models import ARCH_KEYS, build

    meta = json.loads((run / "checkpoint.json").read_text())
    net = build({k: v for k, v in meta["config"].items() if k in ARCH_KEYS})
    net.load_state_dict({k[6:]: v for k, v in load_file(str(run / "checkpoint.safetensors")).items()
                         if k.startswith("model.")})
    return net.eval()


@pytest.mark.parametrize("method", ["cae", "gmm"])
def test_entropy_fit_lowers_the_exact_rate_and_leaves_the_transforms_alone(tmp_path, train_in_tmp, method):
    from mlimg.nn import store
    from mlimg.nn.models import build
    from mlimg.train import init_from_registry
    from mlimg.train_entropy import ENTROPY_PARTS

    model_id = _trained(method, tmp_path, train_in_tmp)
    start = build(store.registry()["models"][model_id]["config"])
    init_from_registry(start, model_id, method)
    run = tmp_path / "fit"
    assert train_in_tmp(method, run, 40, *FIT, "--init", model_id, "--lr", "3e-3", "--prior-lr", "3e-2") == 0
    meta = json.loads((run / "checkpoint.json").read_text())
    assert meta["entropy_fit"]["step"] == 40 and meta["step"] == 2  # the transforms' step count stays
    fitted = _net(run)
    before = _cached_bits(method, run, start.eval())
    after = _cached_bits(method, run, fitted)
    assert after < 0.97 * before, (before, after)
    changed = {name.split(".")[0] for name, value in fitted.state_dict().items()
               if not torch.equal(value, start.state_dict()[name])}
    present = {part for part in ENTROPY_PARTS[method] if getattr(fitted, part, None) is not None}  # no groups here
    assert changed == present  # every entropy part moved, nothing else did

    new_id = store.export_checkpoint(method, run)
    training = store.registry()["models"][new_id]["training"]
    assert training["steps"] == 2 and training["entropy_fit"]["init"] == model_id
    assert training["resumes"][-1]["init"] == model_id


def test_channel_groups_start_as_the_same_model():
    """ChannelContext's branches start at zero: the grouped model's mixture is the checkerboard one."""
    from mlimg.nn.models import build

    torch.manual_seed(0)
    net = build({"arch": "gmm", "N": 8, "M": 8, "K": 3, "lambdas": [0.01, 0.1]}).eval()
    y = torch.randn(2, 8, 6, 7).mul(4).round()
    hyper = torch.randn(2, 16, 6, 7)
    with torch.no_grad():
        before = net.mixture(hyper, y)
        net.add_channel_context([3, 1, 4], [7, 6, 5, 4, 3, 2, 1, 0], 5)
        after = net.mixture(hyper, y)
    assert net.config["groups"] == [3, 1, 4] and net.config["Nc"] == 5
    for a, b in zip(before, after):
        assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="partition"):
        net.add_channel_context([3, 3], None)


def test_entropy_fit_with_channel_groups_fits_exports_and_codes(tmp_path, train_in_tmp):
    import io

    import numpy as np
    from PIL import Image

    import mlimg  # noqa: F401
    from mlimg.nn import store
    from mlimg.nn.models import build
    from mlimg.train import init_from_registry

    model_id = _trained("gmm", tmp_path, train_in_tmp)
    start = build(store.registry()["models"][model_id]["config"])
    init_from_registry(start, model_id, "gmm")
    run = tmp_path / "fit"
    assert train_in_tmp("gmm", run, 30, *FIT, "--init", model_id, "--groups", "2,2,4", "--group-hidden", "4",
                        "--lr", "3e-3", "--prior-lr", "3e-2", "--branch-lr", "1e-2") == 0
    fitted = _net(run)
    assert fitted.config["groups"] == [2, 2, 4] and sorted(fitted.config["order"]) == list(range(8))
    assert all(b[2].weight.detach().abs().sum() > 0 for b in fitted.channel_context.branches.values())
    assert _cached_bits("gmm", run, fitted) < 0.97 * _cached_bits("gmm", run, start.eval())
    with pytest.raises(SystemExit, match="only apply to --entropy-fit"):
        train_in_tmp("gmm", tmp_path / "x", 1, "--groups", "4,4")

    new_id = store.export_checkpoint("gmm", run)
    assert store.registry()["models"][new_id]["config"]["groups"] == [2, 2, 4]
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="MLIMG", method="gmm", model=new_id, quality=70)
    first, second = (np.asarray(Image.open(io.BytesIO(buf.getvalue()))) for _ in range(2))
    assert first.shape == (24, 40, 3) and np.array_equal(first, second)
    # Training goes on with the groups (the transforms and the branches together).
    assert train_in_tmp("gmm", tmp_path / "more", 4, "--init", new_id, "--crop", "32", "--batch", "2") == 0
    assert _net(tmp_path / "more").config["groups"] == [2, 2, 4]
    # --groups on a grouped model regroups its checkerboard part: the old branches go, new ones start at zero.
    assert train_in_tmp("gmm", tmp_path / "regroup", 0, *FIT, "--init", new_id, "--groups", "4,4") == 0
    regrouped = _net(tmp_path / "regroup")
    assert regrouped.config["groups"] == [4, 4] and len(regrouped.channel_context.branches) == 2
    assert all(b[2].weight.detach().abs().sum() == 0 for b in regrouped.channel_context.branches.values())
    plain = build(store.registry()["models"][new_id]["config"])
    init_from_registry(plain, new_id, "gmm")
    plain.remove_channel_context()
    state = {k: v for k, v in regrouped.state_dict().items() if not k.startswith("channel_context.")}
    assert all(torch.equal(v, state[k]) for k, v in plain.state_dict().items()) and len(state) == len(plain.state_dict())


@pytest.mark.parametrize("groups", [(), ("--groups", "4,4")])
def test_a_resumed_entropy_fit_matches_an_uninterrupted_one(tmp_path, train_in_tmp, monkeypatch, groups):
    from safetensors.torch import load_file

    from mlimg import train

    model_id = _trained("gmm", tmp_path, train_in_tmp)
    common = (*FIT, "--init", model_id, "--lr", "1e-3", *groups)
    assert train_in_tmp("gmm", tmp_path / "a", 6, *common) == 0
    # The same fit stopped after step 3 (as `kill` stops it: StopRequest), then resumed.
    stop_request = train.StopRequest

    class StopAfterThreeSteps(stop_request):
        checks = 0  # the loop asks once per step

        @property
        def requested(self):
            type(self).checks += 1
            return self.checks > 3

        @requested.setter
        def requested(self, value):
            pass

    monkeypatch.setattr(train, "StopRequest", StopAfterThreeSteps)
    assert train_in_tmp("gmm", tmp_path / "c", 6, *common) == 0
    assert json.loads((tmp_path / "c" / "checkpoint.json").read_text())["entropy_fit"]["step"] == 3
    monkeypatch.setattr(train, "StopRequest", stop_request)
    assert train_in_tmp("gmm", tmp_path / "c", 6, *common) == 0
    meta = json.loads((tmp_path / "c" / "checkpoint.json").read_text())
    assert meta["entropy_fit"]["step"] == 6 and meta["entropy_fit"]["resumes"][0]["step"] == 3
    a = load_file(str(tmp_path / "a" / "checkpoint.safetensors"))
    c = load_file(str(tmp_path / "c" / "checkpoint.safetensors"))
    assert a.keys() == c.keys()
    for name in a:
        assert torch.equal(a[name], c[name]), name


def test_entropy_fit_refuses_a_training_run_and_other_methods(tmp_path, train_in_tmp):
    model_id = _trained("cae", tmp_path, train_in_tmp)
    with pytest.raises(SystemExit, match="holds a training run"):
        train_in_tmp("cae", tmp_path / "trained", 2, *FIT, "--init", model_id)
    with pytest.raises(SystemExit, match="only applies to cae/gmm"):
        train_in_tmp("rnn", tmp_path / "r", 2, "--entropy-fit")
