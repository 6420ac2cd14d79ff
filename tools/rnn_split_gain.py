"""rnn method version 3 (checkerboard halves, nn/binary_context.py) against version 2 (one
raster pass per plane): real file sizes through Pillow, same image, same quality, and a
check that both decode to the same pixels (the bits are the same; only their coding differs).

    python tools/rnn_split_gain.py kodim01 kodim08 kodim15 kodim23 --qualities 14,42,70,100
"""
import argparse
import io

import numpy as np
from PIL import Image

import mlimg  # noqa: F401  (registers the format)
from mlimg.codecs.rnn import RnnCodec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("images", nargs="+", help="Kodak names (kodim01 ...)")
    p.add_argument("--qualities", default="14,42,70,100")
    p.add_argument("--kodak", default="../shared/data/kodak")
    args = p.parse_args()
    current = RnnCodec.version
    totals = {2: 0, current: 0}
    for name in args.images:
        img = Image.open(f"{args.kodak}/{name}.png").convert("RGB")
        for quality in map(int, args.qualities.split(",")):
            sizes, pixels = {}, {}
            for version in (2, current):
                RnnCodec.version = version
                try:
                    buf = io.BytesIO()
                    img.save(buf, format="MLIMG", method="rnn", quality=quality)
                finally:
                    RnnCodec.version = current
                sizes[version] = len(buf.getvalue())
                with Image.open(io.BytesIO(buf.getvalue())) as im:
                    pixels[version] = np.asarray(im)
                totals[version] += sizes[version]
            same = "same pixels" if np.array_equal(pixels[2], pixels[current]) else "PIXELS DIFFER"
            bpp = 8 / (img.width * img.height)
            print(f"{name} quality {quality:3d}: version 2 {sizes[2] * bpp:.4f} bpp, version {current} "
                  f"{sizes[current] * bpp:.4f} bpp ({(sizes[current] / sizes[2] - 1) * 100:+.2f} %), {same}", flush=True)
    print(f"all: {(totals[current] / totals[2] - 1) * 100:+.2f} % bytes")


if __name__ == "__main__":
    main()
