"""Checkerboard helpers shared by the two-pass context coders (cae's latent_context, rnn's
binary_context, gmm's entropy model): which positions are anchors, and the sum of a
position's four neighbours, which in the second pass are all decoded anchors."""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=32)
def anchor_mask(h: int, w: int) -> np.ndarray:
    """The anchors of an (h, w) plane, the half coded first: positions with y + x even.
    Cached (the coders ask per plane) and read-only."""
    mask = (np.add.outer(np.arange(h), np.arange(w)) % 2) == 0
    mask.flags.writeable = False
    return mask


def cross4(plane: np.ndarray) -> np.ndarray:
    """Sum of the 4 neighbours inside the plane (outside counts 0)."""
    p = np.pad(plane, 1)
    return p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]
