"""Pack what one GPU lease needs into .gpu/ (git-excluded; travels with the run tool's `carry`).

    python tools/gpu/prepare.py                 # data, 3 Kodak eval images, wheels, slim checkpoints
    python tools/gpu/prepare.py --untrack       # also keep weights, docs/results, fixtures from travelling
    python tools/gpu/prepare.py --restore       # after the lease: all tracked again

The device tool sends the working tree (tracked + untracked-not-ignored files + carried paths)
and refuses more than 64 MiB. The shipped weights (about 50 MB) plus BSDS500 (37 MB) exceed that,
so --untrack takes the tracked files the trainers never read (LEASE_UNTRACKED: the weights, the
benchmark reports and the conformance fixtures; on 2026-11-27 about 49.6 + 9.5 + 3.8 of the tree's
60.4 MiB) out of the index for the lease (git rm --cached, plus exclude lines); --restore puts
them back. Training on the device never needs them: each run resumes from the slim checkpoint written here (model tensors only, float16 where the
values fit; the optimiser restarts, as with `--init`).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from mlimg.nn.store import half_where_exact  # noqa: E402  (the float16 rule of `--export --half`)
from mlimg.train import KODAK_EVAL  # noqa: E402  (the images the trainers' logs evaluate on; gan uses two of them)
DEST = ROOT / ".gpu"
EXCLUDE = ROOT / ".git" / "info" / "exclude"
# Tracked paths the device never reads: (git pathspec, exclude line).
LEASE_UNTRACKED = (("mlimg/weights/*.safetensors", "/mlimg/weights/*.safetensors"),
                   ("docs/results", "/docs/results/"), ("fixtures", "/fixtures/"))
WHEELS = ("construct==2.10.70", "constriction==0.5.0", "pytorch-msssim==1.0.0")  # not in the device image


def exclude(line: str, present: bool) -> None:
    lines = EXCLUDE.read_text().splitlines() if EXCLUDE.exists() else []
    lines = [x for x in lines if x != line] + ([line] if present else [])
    EXCLUDE.write_text("\n".join(lines) + "\n")


def slim_checkpoint(run: Path, out: Path) -> None:
    """Model tensors of RUN's checkpoint (float16 where exact enough), the JSON minus optimiser steps."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(run / "checkpoint.safetensors"))
    slim = {}
    for k, v in tensors.items():
        if not k.startswith("model."):
            continue
        slim[k] = half_where_exact(v) if v.is_floating_point() else v
    out.mkdir(parents=True, exist_ok=True)
    save_file(slim, str(out / "checkpoint.safetensors"))
    meta = json.loads((run / "checkpoint.json").read_text())
    for key in [k for k in meta if k.endswith("_step") and k.startswith("adam")]:
        del meta[key]
    (out / "checkpoint.json").write_text(json.dumps(meta, indent=1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared/data/bsds500"))
    p.add_argument("--kodak", default=str(ROOT.parent / "shared/data/kodak"))
    p.add_argument("--runs", default=str(ROOT / "runs"), help="run folders to continue (gmm, cae, rnn)")
    p.add_argument("--methods", default="gmm,cae,rnn", help="runs to pack (leave one out with its train.sh switch, e.g. CAE=0)")
    p.add_argument("--untrack", action="store_true", help="keep weights, docs/results and fixtures from travelling")
    p.add_argument("--max-images", type=int, default=None,
                   help="pack only the first N training images (when the lease's files would pass 64 MiB)")
    p.add_argument("--restore", action="store_true", help="undo --untrack")
    a = p.parse_args(argv)
    if a.restore:
        for spec, line in LEASE_UNTRACKED:
            subprocess.run(["git", "reset", "-q", "HEAD", "--", spec], cwd=ROOT, check=True)
            exclude(line, False)
        print("weights, docs/results and fixtures tracked again")
        return 0
    exclude("/.gpu/", True)
    shutil.rmtree(DEST, ignore_errors=True)
    images = sorted(f.name for f in Path(a.data).iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
    keep = set(images[: a.max_images])  # the trainers read a folder's images sorted by name
    shutil.copytree(a.data, DEST / "bsds500", ignore=lambda _, names: [n for n in names if n not in keep])
    (DEST / "kodak").mkdir()
    for name in KODAK_EVAL:
        shutil.copy(Path(a.kodak) / name, DEST / "kodak" / name)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp",
                    *[x for plat in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
                      for x in ("--platform", plat)], "-d", str(DEST / "whl"), *WHEELS], check=True)
    for method in a.methods.split(","):
        run = Path(a.runs) / method
        if (run / "checkpoint.json").exists():
            slim_checkpoint(run, DEST / "runs" / method)
            print(f"{method}: continues {run} at step {json.loads((run / 'checkpoint.json').read_text())['step']}")
        else:
            print(f"{method}: no checkpoint in {run} (first `mlimg train {method} --init default --out {run}` "
                  "for a step, or the device run starts from scratch)")
    if a.untrack:
        for spec, line in LEASE_UNTRACKED:
            subprocess.run(["git", "rm", "-q", "-r", "--cached", "--", spec], cwd=ROOT, check=True)
            exclude(line, True)
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, check=True).stdout.split(b"\0")
    tree = sum((ROOT / f.decode()).stat().st_size for f in listed if f and (ROOT / f.decode()).is_file())
    carried = sum(f.stat().st_size for f in DEST.rglob("*") if f.is_file())
    total = (tree + carried) / 2**20
    print(f"travels: tree {tree / 2**20:.1f} MiB + .gpu {carried / 2**20:.1f} MiB = {total:.1f} MiB (limit 64 MiB)")
    if total > 64:
        print("over the limit: run again with --untrack (and --restore after the lease)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
