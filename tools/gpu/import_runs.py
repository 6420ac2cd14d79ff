"""Turn what a GPU lease returned (tools/gpu/collect.py's files) into run folders, and export them.

    python tools/gpu/import_runs.py /work/.device/N            # -> runs/{gmm,cae,rnn,gan}
    python tools/gpu/import_runs.py /work/.device/N --export   # ... then register the weights

The old run folders move to runs/before-gpu-<time>/. gmm, cae and rnn continued a local checkpoint,
so their train.log is the old log followed by the device's; the gan was a new run on the device's
gmm, so its log is the device's alone. Paths inside .gpu/ are written as the data they copied
(../shared/data/...). A gan checkpoint is rebuilt from the gmm tensors (its frozen part, identical
by construction) plus the returned generator and discriminator; the optimisers restart on resume.
--export registers gmm first, records that model id as the gan's base (the gan was trained on that
very checkpoint; the run folder it used is kept under `base_run`), then exports gan, cae and rnn.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("gmm", "cae", "rnn", "gan")  # gmm before gan: the gan needs its base
RUNS = METHODS + ("rnn-b", "gmm-b")  # train.sh's optional second runs, imported only (compare or average, then export)


def local_paths(o):
    if isinstance(o, str):
        for a, b in ((".gpu/bsds500", "../shared/data/bsds500"), (".gpu/kodak", "../shared/data/kodak"), (".gpu/runs/", "runs/")):
            o = o.replace(a, b)
        return o
    if isinstance(o, list):
        return [local_paths(x) for x in o]
    if isinstance(o, dict):
        return {k: local_paths(v) for k, v in o.items()}
    return o


def returned_tensors(files_at: Path, run: str) -> dict | None:
    """RUN's tensors as collect.py returned them: RUN.safetensors, or joined from RUN.partN.safetensors."""
    from safetensors.torch import load_file

    files = [files_at / f"{run}.safetensors"] if (files_at / f"{run}.safetensors").exists() else \
        sorted(files_at.glob(f"{run}.part*.safetensors"), key=lambda f: int(f.name.split(".part")[1].split(".")[0]))
    if not files:
        return None
    tensors = {}
    for f in files:
        tensors.update(load_file(str(f)))
    return tensors


def import_runs(files_at: Path, runs: Path) -> list[str]:
    from safetensors.torch import save_file

    logs = Path(tempfile.mkdtemp())
    with tarfile.open(files_at / "logs.tar.gz") as tar:
        tar.extractall(logs, filter="data")
    backup = runs / f"before-gpu-{time.strftime('%Y%m%d-%H%M%S')}"
    done = []
    for method in RUNS:
        tensors = returned_tensors(files_at, method)
        if tensors is None:
            continue
        if method == "gan":
            tensors = {**returned_tensors(files_at, "gmm"), **tensors}
        old_log = ""
        if (runs / method).exists():
            backup.mkdir(parents=True, exist_ok=True)
            shutil.move(str(runs / method), str(backup / method))
            if method != "gan" and (backup / method / "train.log").exists():
                old_log = (backup / method / "train.log").read_text()
        (runs / method).mkdir(parents=True)
        save_file(tensors, str(runs / method / "checkpoint.safetensors"))
        meta = local_paths(json.loads((logs / "runs" / method / "checkpoint.json").read_text()))
        (runs / method / "checkpoint.json").write_text(json.dumps(meta, indent=1))
        (runs / method / "train.log").write_text(old_log + (logs / "runs" / method / "train.log").read_text())
        done.append(method)
        print(f"{method}: step {meta['step']} -> {runs / method}")
    return done


def export(runs: Path, methods: list[str]) -> None:
    from mlimg import cli
    from mlimg.nn import store

    for method in methods:
        if method == "gan":
            meta_path = runs / "gan" / "checkpoint.json"
            meta = json.loads(meta_path.read_text())
            if meta.get("base_kind") == "run":
                base = store.default_model("gmm")
                meta["base_run"] = {"folder": meta["base"], "step": meta.pop("base_step", None),
                                    "checkpoint_sha256": meta["base_sha256"]}
                meta.update(base=base, base_kind="model", base_sha256=store.registry()["models"][base]["sha256"])
                meta_path.write_text(json.dumps(meta, indent=1))
        if cli.main(["train", method, "--export", str(runs / method)]) != 0:
            raise SystemExit(f"export of {method} failed")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files_at", type=Path, help="the folder the device tool copied $OUT into")
    p.add_argument("--runs", type=Path, default=ROOT / "runs")
    p.add_argument("--export", action="store_true", help="register the imported runs' weights")
    a = p.parse_args(argv)
    methods = import_runs(a.files_at, a.runs)
    if a.export:
        export(a.runs, [m for m in methods if m in METHODS])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
