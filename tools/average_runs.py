"""Average the network weights of training runs that started from the same weights (a "model
soup", Wortsman et al. 2022): two CPU threads can train two copies with different seeds at
full speed, where one run on two threads is barely faster than on one.

    python tools/average_runs.py runs/rnn runs/rnn-b --out runs/rnn-soup

OUT gets checkpoint.safetensors (the mean of every floating-point `model.*` tensor; no Adam
moments, so a resumed run starts a fresh optimiser) and checkpoint.json (the first run's, with
this averaging recorded as one more resume, so an export lists it in the registry). The runs
must have the same config; `python tools/rnn_eval.py OUT` evaluates the result.
"""
import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    metas = [json.loads((run / "checkpoint.json").read_text()) for run in a.runs]
    if any(m["config"] != metas[0]["config"] for m in metas):
        raise SystemExit("the runs have different network configs: nothing to average")
    tensors = [{k: v for k, v in load_file(str(run / "checkpoint.safetensors")).items() if k.startswith("model.")}
               for run in a.runs]
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
    a.out.mkdir(parents=True, exist_ok=True)
    save_file(mean, str(a.out / "checkpoint.safetensors"))
    meta = {k: v for k, v in metas[0].items() if k != "adam_step"}
    sources = [{"run": str(run), "step": m["step"], "command": (m.get("resumes") or [{}])[-1].get("command") or m.get("command")}
               for run, m in zip(a.runs, metas)]
    meta["resumes"] = list(meta.get("resumes", [])) + [
        {"step": meta["step"], "command": "python tools/average_runs.py " + " ".join(sys.argv[1:]), "averaged": sources}]
    (a.out / "checkpoint.json").write_text(json.dumps(meta, indent=1))
    print(f"{a.out}: mean of {len(a.runs)} runs at steps {[m['step'] for m in metas]}")


if __name__ == "__main__":
    main()
