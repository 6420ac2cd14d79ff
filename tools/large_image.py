"""Encode and decode one 6000x4000 image (a Kodak image upscaled) through Pillow: seconds and
peak resident memory, the issue's 24-megapixel check.

    python tools/large_image.py cae --quality 50

Encoding and decoding run in separate processes, so each peak is its own.
"""
from __future__ import annotations

import argparse
import io
import resource
import subprocess
import sys
import time

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("method")
parser.add_argument("--quality", type=int, default=50)
parser.add_argument("--image", default="../shared/data/kodak/kodim01.png")
parser.add_argument("--out", default="/tmp/large.mlimg")
parser.add_argument("--step", choices=("encode", "decode"), default=None, help=argparse.SUPPRESS)
args = parser.parse_args()


def peak_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


if args.step is None:
    for step in ("encode", "decode"):
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--step", step], check=True)
    sys.exit(0)

import mlimg  # noqa: E402,F401  (registers the format)
from PIL import Image  # noqa: E402

if args.step == "encode":
    img = Image.open(args.image).convert("RGB").resize((6000, 4000), Image.BICUBIC)
    start = time.perf_counter()
    img.save(args.out, format="MLIMG", method=args.method, quality=args.quality)
    print(f"{args.method} encode 6000x4000: {time.perf_counter() - start:.1f} s, peak RSS {peak_mb()} MB")
else:
    data = open(args.out, "rb").read()
    start = time.perf_counter()
    out = Image.open(io.BytesIO(data))
    out.load()
    print(f"{args.method} decode {out.size[0]}x{out.size[1]} ({len(data)} bytes): "
          f"{time.perf_counter() - start:.1f} s, peak RSS {peak_mb()} MB")
