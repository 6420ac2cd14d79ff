"""Deterministic synthetic test images for the conformance fixtures.

Integer arithmetic only (no sin/exp): the same seed gives the same pixels on any
machine and numpy version, so regenerated fixtures compare byte for byte.
Each image is a per-channel linear gradient, a disc, a rectangle and a little
noise: smooth enough for PNG to compress, varied enough to exercise codecs.
"""
from __future__ import annotations

import numpy as np

from .codecs.base import CHANNELS as _CHANNELS


def _plane(rng: np.random.Generator, width: int, height: int, noise: int) -> np.ndarray:
    """One 0..255 int64 plane: gradient + disc + rectangle + uniform noise in -noise..noise."""
    y = np.arange(height, dtype=np.int64)[:, None]
    x = np.arange(width, dtype=np.int64)[None, :]
    ax, ay = (int(v) for v in rng.integers(-160, 161, 2))
    base = int(rng.integers(60, 196))
    plane = base + (ax * x) // max(width - 1, 1) + (ay * y) // max(height - 1, 1)
    cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
    radius = int(rng.integers(1, max(2, min(width, height) // 2 + 2)))
    disc = (x - cx) ** 2 + (y - cy) ** 2 <= radius * radius
    plane = np.where(disc, int(rng.integers(0, 256)), plane)
    x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
    x1, y1 = x0 + int(rng.integers(1, width + 1)), y0 + int(rng.integers(1, height + 1))
    plane[y0:y1, x0:x1] = int(rng.integers(0, 256))
    plane = plane + rng.integers(-noise, noise + 1, (height, width))
    return np.clip(plane, 0, 255)


def _alpha_plane(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Alpha with an opaque area, a fully transparent rectangle and a soft ramp."""
    y = np.arange(height, dtype=np.int64)[:, None]
    x = np.arange(width, dtype=np.int64)[None, :]
    alpha = np.full((height, width), 255, dtype=np.int64)
    ramp = np.broadcast_to((255 * x) // max(width - 1, 1), (height, width))
    half = height // 2
    alpha[half:] = ramp[half:]
    x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
    alpha[y0 : y0 + max(1, height // 3), x0 : x0 + max(1, width // 3)] = 0
    return alpha


def synth_pixels(mode: str, width: int, height: int, seed: int, noise: int = 2) -> np.ndarray:
    """Pixels in the codec convention of `mode` (see mlimg.codecs.base)."""
    if mode not in _CHANNELS:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(_CHANNELS)}")
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        coarse = _plane(rng, width, height, noise)
        fine = rng.integers(0, 257, (height, width))  # use all 16 bits, not just multiples of 257
        return np.clip(coarse * 257 + fine - 128, 0, 65535).astype(np.uint16)
    colour = 1 if mode == "L" else 3
    planes = [_plane(rng, width, height, noise) for _ in range(colour)]
    if mode == "RGBA":
        planes.append(_alpha_plane(rng, width, height))
    stacked = planes[0] if colour == 1 and mode == "L" else np.stack(planes, axis=-1)
    return stacked.astype(np.uint8)
