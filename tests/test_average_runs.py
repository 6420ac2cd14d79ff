"""tools/average_runs.py: the model soup of run folders that share a network."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import load_file  # noqa: E402

from mlimg.train import write_checkpoint  # noqa: E402

TOOL = Path(__file__).resolve().parents[1] / "tools" / "average_runs.py"


def make_run(folder: Path, value: float, **config) -> Path:
    folder.mkdir()
    tensors = {"model.w": torch.full((2, 3), value), "model.count": torch.tensor([7]),
               "adam.exp_avg.w": torch.full((2, 3), value * 10)}
    meta = {"step": 100, "config": {"arch": "gmm", "N": 64, "seed": 0, "lr": 3e-5, **config}}
    write_checkpoint(folder, tensors, meta)
    return folder


def average(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True)


def test_runs_that_differ_only_in_training_options_are_averaged(tmp_path):
    a = make_run(tmp_path / "a", 1.0)
    b = make_run(tmp_path / "b", 3.0, seed=1, lr=1e-5)
    done = average(a, b, "--out", tmp_path / "soup")
    assert done.returncode == 0, done.stderr
    soup = load_file(str(tmp_path / "soup" / "checkpoint.safetensors"))
    assert torch.equal(soup["model.w"], torch.full((2, 3), 2.0))
    assert torch.equal(soup["model.count"], torch.tensor([7]))
    assert not any(k.startswith("adam.") for k in soup)  # a new run folder restarts its optimiser
    meta = json.loads((tmp_path / "soup" / "checkpoint.json").read_text())
    assert [s["run"] for s in meta["resumes"][-1]["averaged"]] == [str(a), str(b)]


def test_write_back_keeps_each_runs_optimiser_state(tmp_path):
    a = make_run(tmp_path / "a", 1.0)
    b = make_run(tmp_path / "b", 3.0, seed=1)
    assert average(a, b, "--write-back").returncode == 0
    for run, moment in ((a, 10.0), (b, 30.0)):
        kept = load_file(str(run / "checkpoint.safetensors"))
        assert torch.equal(kept["model.w"], torch.full((2, 3), 2.0))
        assert torch.equal(kept["adam.exp_avg.w"], torch.full((2, 3), moment))


def test_runs_with_different_networks_are_refused(tmp_path):
    a = make_run(tmp_path / "a", 1.0)
    b = make_run(tmp_path / "b", 3.0, N=128)
    done = average(a, b, "--out", tmp_path / "soup")
    assert done.returncode != 0
    assert "different network configs" in done.stderr
    assert not (tmp_path / "soup").exists()
