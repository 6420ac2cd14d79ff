"""Pass structure of the lossless coder: which pixels each pass codes, and which
already-decoded pixels it may look at.

The image is coded coarse to fine. The base pass codes the lattice of every S-th
pixel (S a power of two). Each following level halves the step 2h -> h with three
passes, each a vectorised step because every pixel in it only looks at pixels of
earlier passes:

  D  centres     (h, h) mod 2h   four diagonal corners known
  H  rows        (0, h) mod 2h   left/right corners and up/down centres known
  V  columns     (h, 0) mod 2h   everything but the other V pixels known

Near the image border a neighbour outside the image is mirrored into it (about
the first and last line of the same lattice, so the mirrored pixel is known too);
a neighbour whose lattice line does not exist at all (tiny images) falls back to
the pass's primary neighbour, which always exists.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# Neighbour offsets in units of h; the primary neighbour first, the nearest ones next.
OFFSETS = {
    "D": ((-1, -1), (-1, 1), (1, -1), (1, 1),
          (-1, -3), (-1, 3), (1, -3), (1, 3), (-3, -1), (-3, 1), (3, -1), (3, 1)),
    "H": ((0, -1), (0, 1), (-1, 0), (1, 0),
          (0, -3), (0, 3), (-2, -1), (-2, 1), (2, -1), (2, 1), (-1, -2), (-1, 2), (1, -2), (1, 2)),
    "V": ((-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1),
          (-3, 0), (3, 0), (-2, -1), (-2, 1), (2, -1), (2, 1), (-1, -2), (-1, 2), (1, -2), (1, 2)),
}
NEAR = {"D": 4, "H": 4, "V": 8}  # how many leading offsets count as "near"
_ORIGIN = {"D": (1, 1), "H": (0, 1), "V": (1, 0)}  # pixel position in units of h inside a 2h cell
BASE_CELLS = 3  # the base lattice has at most ~2**BASE_CELLS pixels along the longer side


@dataclass(frozen=True)
class Pass:
    kind: str  # "B" (base lattice) or one of OFFSETS
    step: int  # lattice step of the pixels coded so far (2h), S for the base pass
    shape: tuple[int, int]  # (rows, cols) of this pass's pixel grid
    flat: np.ndarray  # (N,) flat indices of the pixels this pass codes, row-major
    neighbours: np.ndarray  # (N, K) flat indices of known neighbours, primary first; (N, 0) for "B"

    @property
    def size(self) -> int:
        return int(self.flat.size)


def base_step(height: int, width: int) -> int:
    longest = max(height, width)
    return 1 << max(0, (longest - 1).bit_length() - BASE_CELLS)


def _map_line(coords: np.ndarray, residue: int, n: int, step: int) -> np.ndarray | None:
    """Mirror coordinates of lattice line class `residue` (mod step) into [0, n); None if no such line."""
    if residue > n - 1:
        return None
    last = residue + ((n - 1 - residue) // step) * step
    c = np.abs(coords)  # mirror about 0 keeps the class because residue is 0 or step/2
    c = np.where(c > last, 2 * last - c, c)
    return np.clip(c, residue, last)


def _level_pass(kind: str, h: int, height: int, width: int) -> Pass | None:
    oy, ox = _ORIGIN[kind]
    ys = np.arange(oy * h, height, 2 * h, dtype=np.int64)
    xs = np.arange(ox * h, width, 2 * h, dtype=np.int64)
    if ys.size == 0 or xs.size == 0:
        return None
    dtype = _index_dtype(height, width)
    flat = (ys[:, None] * width + xs[None, :]).ravel().astype(dtype)
    # Filled column by column straight into the final dtype: the mirrored row and column
    # coordinates of an offset only depend on the row resp. column, so no (N, K) int64 temporaries.
    nbrs = np.empty((flat.size, len(OFFSETS[kind])), dtype)
    for j, (dy, dx) in enumerate(OFFSETS[kind]):
        my = _map_line(ys + dy * h, ((oy + dy) % 2) * h, height, 2 * h)
        mx = _map_line(xs + dx * h, ((ox + dx) % 2) * h, width, 2 * h)
        if my is None or mx is None:
            nbrs[:, j] = nbrs[:, 0]  # the primary neighbour always exists
        else:
            nbrs[:, j] = (my[:, None] * width + mx[None, :]).ravel()
    return Pass(kind, 2 * h, (ys.size, xs.size), flat, nbrs)


def _index_dtype(height: int, width: int):
    return np.int32 if height * width < 2**31 else np.int64  # halves the memory of the index tables


def passes(height: int, width: int) -> Iterator[Pass]:
    """All passes in coding order, built one at a time (only one index table is alive at once);
    together they cover every pixel exactly once."""
    step = base_step(height, width)
    ys = np.arange(0, height, step, dtype=np.int64)
    xs = np.arange(0, width, step, dtype=np.int64)
    base_flat = (ys[:, None] * width + xs[None, :]).ravel().astype(_index_dtype(height, width))
    yield Pass("B", step, (ys.size, xs.size), base_flat, np.zeros((base_flat.size, 0), base_flat.dtype))
    h = step // 2
    while h >= 1:
        for kind in ("D", "H", "V"):
            p = _level_pass(kind, h, height, width)
            if p is not None:
                yield p
        h //= 2


def pass_sizes(height: int, width: int) -> list[tuple[str, int]]:
    """(kind, pixel count) of every pass of passes(height, width), in coding order, by arithmetic
    only: lets a decoder check a file against the claimed size before it allocates anything."""
    def count(start: int, n: int, step: int) -> int:
        return max(0, -(-(n - start) // step))

    step = base_step(height, width)
    out = [("B", count(0, height, step) * count(0, width, step))]
    h = step // 2
    while h >= 1:
        for kind in ("D", "H", "V"):
            oy, ox = _ORIGIN[kind]
            size = count(oy * h, height, 2 * h) * count(ox * h, width, 2 * h)
            if size:
                out.append((kind, size))
        h //= 2
    return out
