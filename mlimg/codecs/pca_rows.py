"""pca mode "rows": the source documents' method, made into a real codec.

Per channel (R, G, B or L) the image rows are the observations: the channel is
mean row + coefficients (H x k) @ components (k x W), with k the fewest principal
components whose explained variance reaches the `variance` threshold. Mean row,
components and coefficients are stored as integers and range-coded; the
reconstruction is clipped to 0..255 (never min-max rescaled, which shifts colours).

Decoding is integer-exact for the same reason as in pca_blocks: integer operands
whose products and sums stay below 2^53.
"""
from __future__ import annotations

import numpy as np

from .pca_coding import CodingError, Reader, Writer, fit_table, read_tables, write_tables

PRECISION = 10  # component entries are integers scaled by 2^10
MEAN_SCALE = 4  # mean row in 1/4 units
_LOW = 4  # low bits of component entries coded raw


def params_for_quality(quality: int) -> tuple[float, int]:
    """quality -> (variance threshold, coefficient step in 1/16 units); both raise rate with quality."""
    variance = 1.0 - 0.5 * 10.0 ** (-quality / 25.0)
    step16 = max(8, int(round(16 * 2.0 ** ((100 - quality) / 20.0))))
    return variance, step16


def choose_components(xc: np.ndarray, variance: float) -> np.ndarray:
    """Principal axes (rows, unit norm, sign fixed) explaining `variance` of the centred rows."""
    h, w = xc.shape
    if h <= w:  # eigen-decompose the smaller Gram matrix
        vals, u = np.linalg.eigh(xc @ xc.T)
        order = np.argsort(-vals, kind="stable")
        vals, u = np.maximum(vals[order], 0), u[:, order]
        keep = vals > vals[0] * 1e-12 if vals.size and vals[0] > 0 else np.zeros(len(vals), bool)
        axes = (u[:, keep].T @ xc) / np.sqrt(vals[keep])[:, None]
        vals = vals[keep]
    else:
        vals, v = np.linalg.eigh(xc.T @ xc)
        order = np.argsort(-vals, kind="stable")
        vals, axes = np.maximum(vals[order], 0), v[:, order].T
    total = vals.sum()
    if total <= 0:
        return np.zeros((0, w))
    k = int(np.searchsorted(np.cumsum(vals) / total, variance - 1e-12) + 1)
    axes = axes[: min(k, len(axes))]
    pivot = axes[np.arange(len(axes)), np.argmax(np.abs(axes), axis=1)]
    return axes * np.where(pivot < 0, -1.0, 1.0)[:, None]


def encode_channels(channels: list[np.ndarray], variance: float, step16: int) -> tuple[bytes, list[int]]:
    w_ = Writer()
    counts = []
    step = step16 / 16.0
    for ch in channels:
        x = ch.astype(np.float64)
        mean4 = np.round(x.mean(axis=0) * MEAN_SCALE).astype(np.int64)
        xc = x - mean4 / MEAN_SCALE
        axes = choose_components(xc, variance)
        vq = np.round(axes * (1 << PRECISION)).astype(np.int64)
        counts.append(len(vq))
        _write_signed(w_, np.diff(mean4, prepend=0))
        if len(vq):
            basis = vq.astype(np.float64) / (1 << PRECISION)
            coef = xc @ np.linalg.pinv(basis)
            q = np.round(coef / step).astype(np.int64)
            hi = vq >> _LOW
            _write_signed(w_, hi)
            w_.symbols(vq & ((1 << _LOW) - 1), np.full(1 << _LOW, 1.0 / (1 << _LOW)))
            tables = [fit_table(np.abs(col)) for col in q.T]  # one table per component
            write_tables(w_, tables)
            for col, table in zip(q.T, tables):
                w_.signed(col, table)
    return w_.finish(), counts


def _write_signed(w: Writer, values: np.ndarray) -> None:
    table = fit_table(np.abs(values))
    write_tables(w, [table])
    w.signed(values, table)


def _read_signed(r: Reader, n: int) -> np.ndarray:
    return r.signed(n, read_tables(r, 1)[0])


def decode_channels(payload: bytes, h: int, w: int, counts: list[int], step16: int) -> list[np.ndarray]:
    r = Reader(payload)
    out = []
    for k in counts:
        mean4 = np.cumsum(_read_signed(r, w))
        if k == 0:
            acc = np.zeros((h, w))
        else:
            hi = _read_signed(r, k * w)
            vq = ((hi << _LOW) | r.symbols(k * w, np.full(1 << _LOW, 1.0 / (1 << _LOW)))).reshape(k, w)
            if np.abs(vq).max() > (2 << PRECISION):
                raise CodingError("component entry out of range")
            tables = read_tables(r, k)
            q = np.stack([r.signed(h, t) for t in tables], axis=1)
            q = np.clip(q, -(1 << 24), 1 << 24)
            # Integers below 2^53 throughout: exact whatever the summation order.
            acc = (q * step16).astype(np.float64) @ vq.astype(np.float64)  # units 2^-(4+PRECISION)
        shift = 4 + PRECISION
        total = acc + (mean4 * (1 << (shift - 2))).astype(np.float64)[None, :]
        pixels = np.floor((total + float(1 << (shift - 1))) / float(1 << shift))
        out.append(np.clip(pixels, 0, 255).astype(np.uint8))
    return out
