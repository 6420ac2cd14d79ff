"""Shared test helpers: tiny synthetic images and a hypothesis profile for a slow shared machine."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import settings

# Timing deadlines are meaningless on two shared cores; each test still sets its own max_examples.
settings.register_profile("mlimg", deadline=None)
settings.load_profile("mlimg")

MODES = ("L", "RGB", "RGBA", "I;16")
_SHAPES = {"L": (), "RGB": (3,), "RGBA": (4,), "I;16": ()}


def random_pixels(mode: str, width: int = 7, height: int = 5, seed: int = 0) -> np.ndarray:
    """A deterministic noise image in the codec pixel convention for `mode`."""
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return rng.integers(0, 1 << 16, (height, width), dtype=np.uint16)
    return rng.integers(0, 256, (height, width, *_SHAPES[mode]), dtype=np.uint8)


def random_image(mode: str, width: int = 7, height: int = 5, seed: int = 0):
    from PIL import Image

    image = Image.fromarray(random_pixels(mode, width, height, seed))
    assert image.mode == mode
    return image


def smooth_image(h: int, w: int, channels: int = 3, seed: int = 0, noise: float = 8.0) -> np.ndarray:
    """A photo-like test image for the learned codecs: smooth sinusoids plus a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = [128 + 100 * np.sin(xx / (5 + 3 * c) + yy / (7 + c)) for c in range(channels)]
    img = np.clip(np.stack(base, axis=-1) + rng.normal(0, noise, (h, w, channels)), 0, 255).astype(np.uint8)
    return img[..., 0] if channels == 1 else img


def save_load(img, method: str, **opts):
    """(file bytes, loaded image) of `img` saved as .mlimg with `method` and `opts`, through Pillow."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    img.save(buf, format="MLIMG", method=method, **opts)
    data = buf.getvalue()
    out = Image.open(io.BytesIO(data))
    out.load()
    return data, out


def decode_pixels(data: bytes, **decode_options) -> np.ndarray:
    """The pixels of an .mlimg file decoded through Pillow with these decode options."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.decode_options = decode_options
        im.load()
        return np.asarray(im)


@pytest.fixture(params=MODES)
def mode(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module: on a loaded shared machine OpenMP spinning makes 2 threads far slower."""
    import torch  # only the learned-codec tests use this fixture; conftest stays light

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def synthetic_training_images(folder, n=3, size=40):
    from PIL import Image

    folder.mkdir()
    for i in range(n):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


@pytest.fixture
def train_in_tmp(tmp_path, monkeypatch):
    """An empty weights registry under tmp_path, and run(method, out, steps, *options): the exit
    code of `mlimg train` on three small synthetic images (no Kodak folder: no evaluation)."""
    import argparse

    from mlimg import train
    from mlimg.nn import store

    monkeypatch.setattr(store, "WEIGHTS_DIR", tmp_path / "weights")
    monkeypatch.setattr(store, "REGISTRY", tmp_path / "weights" / "registry.json")
    monkeypatch.setattr(store, "_loaded", {})
    data = synthetic_training_images(tmp_path / "data")
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)

    def run(method, out, steps, *extra):
        args = parser.parse_args([method, "--data", str(data), "--out", str(out), "--steps", str(steps),
                                  "--kodak", str(tmp_path / "no-kodak"), *extra])
        return train.run(args)

    return run
