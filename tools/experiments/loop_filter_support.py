"""Experiment: the loop filter's support (fLTR) on gmm decodes: a smaller or larger diamond of
the channel's own taps, more cross-channel taps.

    python tools/experiments/loop_filter_support.py gmm kodim01,kodim08,kodim15,kodim23 1,40,100

For each variant the encoder's choice (mlimg/loop_filter.py `choose`, every candidate class
layout, forced) on the method's decodes without a filter: the mean estimated PSNR gain, the
chunk's bytes, and the score the encoder ranks by (gain less the bytes' cost in dB). Run from
the repository root; TRAINING.md ("Tried on the shipped gmm without training") has the result.
"""
import sys

import numpy as np

import mlimg  # noqa: F401
from PIL import Image
from mlimg import codecs
from mlimg import loop_filter as lf

codec = codecs.get(sys.argv[1])
cases = []
for name in sys.argv[2].split(","):
    image = np.asarray(Image.open(f"../shared/data/kodak/{name}.png").convert("RGB"))
    for q in (int(v) for v in sys.argv[3].split(",")):
        encoded = codec.encode(image, "RGB", codec.validate_options("RGB", {"quality": q}))
        size = sum(len(data) + 12 for _, data in encoded.chunks) + 100  # chunks plus the container, roughly
        cases.append((image, encoded.reconstruct(), size))


def diamond(radius):
    return tuple((dy, dx) for dy in range(radius + 1) for dx in range(-radius, radius + 1)
                 if abs(dy) + abs(dx) <= radius and (dy > 0 or dx > 0))


CROSS = ((0, 1), (1, 0))
for label, own, cross in [("7x7 diamond (shipped)", diamond(3), CROSS), ("9x9 diamond", diamond(4), CROSS),
                          ("5x5 diamond", diamond(2), CROSS),
                          ("7x7, cross 5-diamond", diamond(3), CROSS + ((1, 1), (1, -1), (0, 2), (2, 0)))]:
    lf.OWN_TAPS, lf.CROSS_TAPS = own, cross
    chosen = [lf.choose(decoded, image, size, force=True) for image, decoded, size in cases]
    print(f"{label:24s} gain {np.mean([c.gain_db for c in chosen]):.4f} dB, "
          f"bytes {np.mean([len(c.payload) for c in chosen]):.0f}, score {np.mean([c.score for c in chosen]):.4f} dB")
