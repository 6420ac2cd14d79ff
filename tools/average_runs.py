"""Average the network weights of training runs that started from the same weights (a "model
soup", Wortsman et al. 2022): two CPU threads can train two copies with different seeds at
full speed, where one run on two threads is barely faster than on one.

    python tools/average_runs.py runs/rnn runs/rnn-b --out runs/rnn-soup
    python tools/average_runs.py runs/rnn runs/rnn-b --write-back   # (trainers stopped first)

OUT gets checkpoint.safetensors (the mean of every floating-point `model.*` tensor; no Adam
moments, so a resumed run starts a fresh optimiser) and checkpoint.json (the first run's, with
this averaging recorded as one more resume, so an export lists it in the registry). The runs
must have the same config; `python tools/rnn_eval.py OUT` evaluates the result.

--write-back instead puts the mean into every run's own checkpoint, keeping each run's Adam
moments and step, and records the averaging in its checkpoint.json: resuming the runs then
continues from the common weights (periodic averaging, "local SGD"), which keeps the copies
close enough for their mean to stay better than either.
"""
import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from mlimg.train import write_checkpoint


# Options recorded in a run's config that shape its training, not its network: runs that differ
# only in these (e.g. two seeds) can be averaged.
TRAINING_OPTIONS = {"crop", "batch", "lr", "prior_lr", "gain_lr", "seed", "data", "loss", "binariser"}


def network(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in TRAINING_OPTIONS}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="write the mean as a new run folder")
    where.add_argument("--write-back", action="store_true", help="replace each run's weights by the mean")
    a = p.parse_args()
    metas = [json.loads((run / "checkpoint.json").read_text()) for run in a.runs]
    if any(network(m["config"]) != network(metas[0]["config"]) for m in metas):
        raise SystemExit("the runs have different network configs: nothing to average")
    stored = [load_file(str(run / "checkpoint.safetensors")) for run in a.runs]
    tensors = [{k: v for k, v in t.items() if k.startswith("model.")} for t in stored]
    if any(t.keys() != tensors[0].keys() for t in tensors):
        raise SystemExit("the runs have different tensors: nothing to average")
    mean = {}
    for key, first in tensors[0].items():
        if first.is_floating_point():  # in float64, so the order of the runs does not matter
            mean[key] = (sum(t[key].double() for t in tensors) / len(tensors)).to(first.dtype).contiguous()
        elif all(torch.equal(t[key], first) for t in tensors):
            mean[key] = first
        else:
            raise SystemExit(f"{key}: integer tensor differs between the runs")
    sources = [{"run": str(run), "step": m["step"], "command": (m.get("resumes") or [{}])[-1].get("command") or m.get("command")}
               for run, m in zip(a.runs, metas)]
    command = "python tools/average_runs.py " + " ".join(sys.argv[1:])
    if a.write_back:
        for run, meta, kept in zip(a.runs, metas, stored):
            adam = {k: v for k, v in kept.items() if not k.startswith("model.")}
            _save(run, {**mean, **adam}, meta, command, sources)
        print(f"averaged {len(a.runs)} runs at steps {[m['step'] for m in metas]}; each now holds the mean")
        return
    a.out.mkdir(parents=True, exist_ok=True)
    _save(a.out, mean, {k: v for k, v in metas[0].items() if k != "adam_step"}, command, sources)
    print(f"{a.out}: mean of {len(a.runs)} runs at steps {[m['step'] for m in metas]}")


def _save(run: Path, tensors: dict, meta: dict, command: str, sources: list) -> None:
    """A checkpoint with the averaging appended to the run's resumes."""
    meta = {**meta, "resumes": list(meta.get("resumes", [])) + [{"step": meta["step"], "command": command, "averaged": sources}]}
    write_checkpoint(run, tensors, meta)


if __name__ == "__main__":
    main()
