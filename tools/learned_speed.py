"""Encode/decode time of a method through Pillow on four Kodak images (the README's speed line).

    python tools/learned_speed.py gmm --quality 50 --threads 2
    python tools/learned_speed.py rnn -o iterations=16     # extra save options, KEY=VALUE (integers parsed)

Per image: the fastest of three `Image.save` / `Image.open(...).load()` runs (the first run
also warms up model loading); prints each image and the median over the four.
"""
from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

import mlimg  # noqa: F401  (registers the format)

IMAGES = ("kodim01", "kodim08", "kodim15", "kodim23")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method")
    parser.add_argument("--quality", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kodak", default="../shared/data/kodak")
    parser.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    extra = {}
    for item in args.option:
        key, _, value = item.partition("=")
        extra[key] = int(value) if value.lstrip("-").isdigit() else value
    torch.set_num_threads(args.threads)
    enc, dec = [], []
    for name in IMAGES:
        im = Image.open(Path(args.kodak) / f"{name}.png").convert("RGB")
        te, td = [], []
        for _ in range(3):
            buf = io.BytesIO()
            t0 = time.perf_counter()
            im.save(buf, format="MLIMG", method=args.method, quality=args.quality, **extra)
            te.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            Image.open(io.BytesIO(buf.getvalue())).load()
            td.append(time.perf_counter() - t0)
        enc.append(min(te))
        dec.append(min(td))
        print(f"{name} {args.method} encode {enc[-1]:.3f} s decode {dec[-1]:.3f} s", flush=True)
    print(f"median {args.method} encode {statistics.median(enc):.3f} s decode {statistics.median(dec):.3f} s "
          f"({args.threads} threads, quality {args.quality}{''.join(f', {k}={v}' for k, v in extra.items())})")


if __name__ == "__main__":
    main()
