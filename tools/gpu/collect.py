"""Slim fp32 model tensors of each run + logs into $OUT (the device tool returns <= 8 files, each < 16 MiB).

    python3 tools/gpu/collect.py .gpu $OUT
"""
import glob
import os
import sys
import tarfile
from pathlib import Path
from safetensors.torch import load_file, save_file

G, OUT = Path(sys.argv[1]), Path(sys.argv[2])
keep = {"gmm": ("model.",), "cae": ("model.",), "rnn": ("model.",), "rnn-b": ("model.",), "gan": ("model.generator.", "discriminator.")}
for run, prefixes in keep.items():
    ck = G / "runs" / run / "checkpoint.safetensors"
    if not ck.exists():
        continue
    try:
        t = load_file(str(ck))
        slim = {k: v.float().contiguous() if v.is_floating_point() else v for k, v in t.items() if k.startswith(prefixes)}
        tmp = OUT / f"{run}.safetensors.tmp"
        save_file(slim, str(tmp))
        os.replace(tmp, OUT / f"{run}.safetensors")
        print(run, len(slim), "tensors", (OUT / f"{run}.safetensors").stat().st_size / 2**20, "MiB")
    except Exception as e:  # a half-written checkpoint must not stop the others
        print(run, "collect failed:", e)
with tarfile.open(OUT / "logs.tar.gz.tmp", "w:gz") as tar:
    for f in glob.glob(str(G / "runs/*/checkpoint.json")) + glob.glob(str(G / "runs/*/train.log")) + glob.glob(str(G / "logs/*")):
        tar.add(f, arcname=os.path.relpath(f, G))
os.replace(OUT / "logs.tar.gz.tmp", OUT / "logs.tar.gz")
