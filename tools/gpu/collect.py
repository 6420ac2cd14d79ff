"""Slim fp32 model tensors of each run + logs into $OUT (the device tool returns <= 8 files, each < 16 MiB).

    python3 tools/gpu/collect.py .gpu $OUT

A run whose tensors exceed PART_BYTES goes out as RUN.part0.safetensors, RUN.part1... (a gmm with
a widened analysis is 16.8 MiB in fp32); tools/gpu/import_runs.py joins them.
"""
import glob
import os
import sys
import tarfile
from pathlib import Path
from safetensors.torch import load_file, save_file

G, OUT = Path(sys.argv[1]), Path(sys.argv[2])
keep = {"gmm": ("model.",), "gmm-b": ("model.",), "cae": ("model.",), "rnn": ("model.",), "rnn-b": ("model.",),
        "gan": ("model.generator.", "discriminator.")}
PART_BYTES = 15 * 2**20  # under the tool's 16 MiB per file, with room for the safetensors header


def parts(tensors: dict) -> list[dict]:
    """The tensors in order, cut into groups of at most PART_BYTES (a larger single tensor alone)."""
    out, size = [{}], 0
    for k, v in tensors.items():
        n = v.numel() * v.element_size()
        if out[-1] and size + n > PART_BYTES:
            out.append({})
            size = 0
        out[-1][k] = v
        size += n
    return out


def write(tensors: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)


for run, prefixes in keep.items():
    ck = G / "runs" / run / "checkpoint.safetensors"
    if not ck.exists():
        continue
    try:
        t = load_file(str(ck))
        slim = {k: v.float().contiguous() if v.is_floating_point() else v for k, v in t.items() if k.startswith(prefixes)}
        groups = parts(slim)
        names = [f"{run}.safetensors"] if len(groups) == 1 else [f"{run}.part{i}.safetensors" for i in range(len(groups))]
        for group, name in zip(groups, names):
            write(group, OUT / name)
        print(run, len(slim), "tensors in", ", ".join(f"{n} {(OUT / n).stat().st_size / 2**20:.1f} MiB" for n in names))
    except Exception as e:  # a half-written checkpoint must not stop the others
        print(run, "collect failed:", e)
with tarfile.open(OUT / "logs.tar.gz.tmp", "w:gz") as tar:
    for f in glob.glob(str(G / "runs/*/checkpoint.json")) + glob.glob(str(G / "runs/*/train.log")) + glob.glob(str(G / "logs/*")):
        tar.add(f, arcname=os.path.relpath(f, G))
os.replace(OUT / "logs.tar.gz.tmp", OUT / "logs.tar.gz")
