"""Per-point bpp and PSNR of two weights files of one method on a few Kodak images (e.g. a float32
and a float16 export of the same run, before shipping one of them).

    python tools/compare_weights.py gmm /tmp/gmm-fp32.safetensors /tmp/gmm-fp16.safetensors
    python tools/compare_weights.py cae A.safetensors B.safetensors --images kodim01,kodim08 --qualities 1,50,100

Each file is registered for this process under its own name (its config read from the file's
metadata, as save_weights writes it), so neither needs to be installed.
"""
from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

import mlimg  # noqa: F401  (registers the format)
from mlimg.metrics import psnr
from mlimg.nn import store


def register_file(method: str, path: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        config = json.loads(f.metadata()["config"])
    model_id = f"compare-{path.stem}"
    store.register(model_id, method, path, config)
    return model_id


def point(image: Image.Image, method: str, model_id: str, quality: int) -> tuple[float, float]:
    buf = io.BytesIO()
    image.save(buf, format="MLIMG", method=method, model=model_id, quality=quality)
    decoded = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return 8 * len(buf.getvalue()) / (image.width * image.height), psnr(np.asarray(image), np.asarray(decoded))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("method", choices=("cae", "gmm"))
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--images", default="kodim01,kodim08,kodim23")
    p.add_argument("--qualities", default="1,25,55,100")
    p.add_argument("--kodak", type=Path, default=Path("../shared/data/kodak"))
    args = p.parse_args()
    ids = [register_file(args.method, path) for path in (args.a, args.b)]
    print(f"image quality  A: {args.a.name} bpp PSNR  B: {args.b.name} bpp PSNR")
    for name in args.images.split(","):
        image = Image.open(args.kodak / f"{name}.png").convert("RGB")
        for quality in map(int, args.qualities.split(",")):
            (bpp_a, db_a), (bpp_b, db_b) = (point(image, args.method, i, quality) for i in ids)
            print(f"{name} {quality:3d}  A {bpp_a:.4f} {db_a:.3f}  B {bpp_b:.4f} {db_b:.3f}", flush=True)


if __name__ == "__main__":
    main()
