"""RD plots (PSNR–bpp and MS-SSIM–bpp) with the published curves drawn in, as PNG files."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .. import metrics
from .aggregate import Curve

PUBLISHED_COLOURS = ("black", "dimgray", "saddlebrown", "darkolivegreen", "slategray", "rosybrown")
MAX_PLOT_BPP = 3.0  # beyond this the low-rate region, where codecs differ most, gets squashed


def _ms_ssim_db(values: np.ndarray) -> np.ndarray:
    return np.array([metrics.ms_ssim_db(v) if math.isfinite(v) else math.nan for v in values])


def _draw(ax, curve: Curve, y: np.ndarray, style: dict) -> bool:
    keep = np.isfinite(curve.bpp) & np.isfinite(y)
    if keep.sum() == 0:
        return False
    order = np.argsort(curve.bpp[keep])
    ax.plot(curve.bpp[keep][order], y[keep][order], label=curve.label, **style)
    return True


def rd_plot(path: Path, run: list[Curve], published: list[Curve], metric: str, title: str) -> bool:
    """One RD plot: run curves solid with markers, published curves dashed. False if nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def values(c: Curve) -> np.ndarray:
        return c.psnr if metric == "psnr" else _ms_ssim_db(c.ms_ssim)

    fig, ax = plt.subplots(figsize=(11, 6.5), dpi=110)
    drawn = False
    markers = "osD^v<>phX*"
    # tab20's saturated then light colours, greys left for the published curves.
    tab20 = plt.get_cmap("tab20").colors
    colours = [tab20[i] for i in range(0, 20, 2) if i != 14] + [tab20[i] for i in range(1, 20, 2) if i != 15]
    for i, c in enumerate(run):
        # mlimg methods: thick lines; anchors measured in this run: thin.
        style = {"marker": markers[i % len(markers)], "markersize": 4, "color": colours[i % len(colours)]}
        style["linewidth"] = 2.4 if c.kind == "method" else 1.2
        drawn |= _draw(ax, c, values(c), style)
    for i, c in enumerate(published):
        # Published curves: dashed, in greys and earth tones so they never match a run curve.
        colour = PUBLISHED_COLOURS[i % len(PUBLISHED_COLOURS)]
        drawn |= _draw(ax, c, values(c), {"linestyle": "--", "linewidth": 1.1, "color": colour})
    if not drawn:
        plt.close(fig)
        return False
    top = max([float(np.nanmax(c.bpp)) for c in run if c.bpp.size] or [1.0])
    right = min(top, MAX_PLOT_BPP) * 1.05
    ax.set_xlim(0, right)
    # Scale y to what is visible, so far-off published points do not squash the plot.
    visible = np.concatenate([values(c)[c.bpp <= right] for c in run + published] or [np.zeros(0)])
    visible = visible[np.isfinite(visible)]
    if visible.size:
        pad = 0.05 * max(float(visible.max() - visible.min()), 1.0)
        ax.set_ylim(float(visible.min()) - pad, float(visible.max()) + pad)
    ax.set_xlabel("bits per pixel (whole file)")
    ax.set_ylabel("PSNR-RGB (dB)" if metric == "psnr" else "MS-SSIM-RGB (dB, −10·log10(1−MS-SSIM))")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
