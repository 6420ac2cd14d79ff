"""The test images: a folder of pictures, or a small synthetic built-in set that always exists."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".webp")
BUILTIN = "builtin"
QUICK_IMAGES = 4


@dataclass
class TestImage:
    name: str
    pixels: np.ndarray  # (H, W, 3) uint8

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    @property
    def height(self) -> int:
        return self.pixels.shape[0]


def _beside_checkout(*parts: str) -> Path:
    """A path in the folder that holds the repository checkout (…/main/mlimg/bench -> …/<parts>)."""
    return Path(__file__).resolve().parents[3].joinpath(*parts)


def find_shared(*parts: str) -> Path | None:
    """../shared/<parts> relative to the working directory, else next to the repository."""
    for base in (Path.cwd().parent / "shared", _beside_checkout("shared")):
        candidate = base.joinpath(*parts)
        if candidate.is_dir():
            return candidate
    return None


def default_image_dir() -> Path | None:
    return find_shared("data", "kodak")


def load_folder(folder: Path) -> list[TestImage]:
    """Every image file in folder (sorted by name) as RGB; alpha is dropped, grey is expanded."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    images = []
    for path in files:
        with Image.open(path) as im:
            images.append(TestImage(path.stem, np.asarray(im.convert("RGB"))))
    return images


def builtin_images(size: int = 256) -> list[TestImage]:
    """Three deterministic synthetic photos-in-miniature: gradients, edges and texture.

    256 px is above the 161 px MS-SSIM needs, small enough for a run of seconds.
    """
    rng = np.random.default_rng(20240601)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size

    # 1. smooth sky-like gradients with a soft sinusoidal texture
    sky = np.stack([
        60 + 150 * y + 10 * np.sin(12 * x),
        110 + 90 * y + 8 * np.sin(9 * (x + y)),
        200 - 60 * y + 6 * np.cos(15 * x),
    ], axis=-1)

    # 2. hard edges: rectangles, a disc and fine stripes on a gradient
    shapes = np.stack([40 + 120 * x, 60 + 60 * y, 90 + 40 * x * y], axis=-1)
    shapes[(x > 0.1) & (x < 0.45) & (y > 0.15) & (y < 0.6)] = (220, 40, 40)
    shapes[(x - 0.7) ** 2 + (y - 0.35) ** 2 < 0.04] = (30, 180, 60)
    stripes = (y > 0.7) & (y < 0.9) & (np.floor(x * 64) % 2 == 0)
    shapes[stripes] = (245, 245, 235)

    # 3. natural-looking texture: smoothed noise at several scales over a colour ramp
    texture = np.zeros((size, size))
    for scale, weight in ((4, 40.0), (16, 20.0), (64, 10.0)):
        coarse = rng.normal(0, 1, (scale, scale))
        texture += weight * np.kron(coarse, np.ones((size // scale, size // scale)))[:size, :size]
    texture += rng.normal(0, 4, (size, size))
    foliage = np.stack([90 + texture, 120 + 0.8 * texture + 40 * x, 60 + 0.5 * texture], axis=-1)

    return [
        TestImage(name, np.clip(np.rint(a), 0, 255).astype(np.uint8))
        for name, a in (("builtin-gradients", sky), ("builtin-edges", shapes), ("builtin-texture", foliage))
    ]


def spread(items: list, count: int) -> list:
    """count items spread evenly over the list, first and last included."""
    if len(items) <= count:
        return list(items)
    picks = np.unique(np.rint(np.linspace(0, len(items) - 1, count)).astype(int))
    return [items[i] for i in picks]


def resolve_images(folder: str | None, quick: bool, limit: int | None) -> tuple[list[TestImage], str]:
    """The images of a run and where they came from (a folder path or 'builtin')."""
    if folder == BUILTIN:
        images, source = builtin_images(), BUILTIN
    elif folder:
        path = Path(folder)
        if not path.is_dir():
            raise ValueError(f"--images {folder}: not a directory (or use --images {BUILTIN})")
        images, source = load_folder(path), str(path)
    else:
        path = default_image_dir()
        if path is not None:
            images, source = load_folder(path), str(path)
        else:
            images, source = builtin_images(), BUILTIN
    if quick:
        images = spread(images, QUICK_IMAGES)
    if limit:
        images = images[:limit]
    return images, source
