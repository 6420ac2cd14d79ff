"""The pca method's own section of `mlimg bench`: the rows-mode curve and a blocks ablation."""
from __future__ import annotations

import numpy as np

from .base import Header

ROWS_QUALITIES = (10, 30, 50, 70, 90)
ABLATION = (
    ("default (separable KLT, 8x8, auto subsampling)", {}),
    ("full (non-separable) KLT", {"basis": "full"}),
    ("16x16 blocks", {"block": 16}),
    ("4:2:0 always", {"subsampling": "4:2:0"}),
    ("4:4:4 always", {"subsampling": "4:4:4"}),
)


def _measure(codec, arr: np.ndarray, opts: dict) -> tuple[float, float, float]:
    """(bpp, PSNR dB, share of bytes in PBAS) for codec chunks (container overhead excluded)."""
    encoded = codec.encode(arr, "RGB", codec.validate_options("RGB", opts))
    h, w = arr.shape[:2]
    out = codec.decode(Header(w, h, "RGB", codec.name, codec.version), encoded.chunks)
    size = sum(len(p) for _, p in encoded.chunks)
    basis = sum(len(p) for t, p in encoded.chunks if t == "PBAS")
    mse = float(np.mean((out.astype(np.float64) - arr) ** 2))
    return size * 8 / (h * w), 10 * np.log10(255**2 / max(mse, 1e-12)), basis / size


def report(codec, images, n_images: int = 6) -> str:
    arrays = [np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images[:n_images]]
    lines = [f"Mean over the first {len(arrays)} images; codec payload bytes only.", "",
             "**rows mode** (the source documents' method: row-PCA per channel)", "",
             "| quality | bpp | PSNR (dB) |", "|---|---|---|"]
    for q in ROWS_QUALITIES:
        m = np.mean([_measure(codec, a, {"mode": "rows", "quality": q})[:2] for a in arrays], axis=0)
        lines.append(f"| {q} | {m[0]:.3f} | {m[1]:.2f} |")
    lines += ["", "**blocks mode ablation**", "",
              "| variant | quality | bpp | PSNR (dB) | basis share |", "|---|---|---|---|---|"]
    for q in (25, 70):
        for label, opts in ABLATION:
            m = np.mean([_measure(codec, a, {"quality": q, **opts}) for a in arrays], axis=0)
            lines.append(f"| {label} | {q} | {m[0]:.3f} | {m[1]:.2f} | {100 * m[2]:.1f} % |")
    return "\n".join(lines) + "\n"
