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

MEAN_SCALE = 4  # mean row in 1/4 units


def params_for_quality(quality: int) -> tuple[float, int]:
    """quality -> (variance threshold, quantiser step in 1/16 units); both raise the rate with quality."""
    variance = 1.0 - 0.3 * 10.0 ** (-quality / 40.0)
    step16 = 16 - round(8 * quality / 100)  # fine steps: truncation (k) is the efficient knob
    return variance, step16


def factorise(xc: np.ndarray, variance: float) -> tuple[np.ndarray, np.ndarray]:
    """Centred rows -> (A: H x k, B: k x W), A @ B the rank-k PCA reconstruction.

    k is the fewest components whose explained variance reaches `variance`. Each
    component's singular value is split evenly (A = U sqrt(S), B = sqrt(S) V^T) so one
    quantiser step suits both factors. Signs fixed: largest |entry| of each B row positive.
    """
    h, w = xc.shape
    gram = xc @ xc.T if h <= w else xc.T @ xc  # eigen-decompose the smaller Gram matrix
    vals, vecs = np.linalg.eigh(gram)
    order = np.argsort(-vals, kind="stable")
    vals, vecs = np.maximum(vals[order], 0.0), vecs[:, order]
    total = vals.sum()
    if total <= 0:
        return np.zeros((h, 0)), np.zeros((0, w))
    k = int(np.searchsorted(np.cumsum(vals) / total, variance - 1e-12) + 1)
    k = min(k, int((vals > total * 1e-12).sum()))
    sv = np.sqrt(vals[:k])
    if h <= w:
        u = vecs[:, :k]
        vt = (u.T @ xc) / sv[:, None]
    else:
        vt = vecs[:, :k].T
        u = (xc @ vt.T) / sv[None, :]
    pivot = vt[np.arange(k), np.argmax(np.abs(vt), axis=1)]
    flip = np.where(pivot < 0, -1.0, 1.0)
    root = np.sqrt(sv)
    return u * (root * flip)[None, :], vt * (root * flip)[:, None]


def encode_channels(channels: list[np.ndarray], variance: float, step16: int) -> tuple[bytes, list[int]]:
    w_ = Writer()
    counts = []
    step = step16 / 16.0
    for ch in channels:
        x = ch.astype(np.float64)
        mean4 = np.round(x.mean(axis=0) * MEAN_SCALE).astype(np.int64)
        xc = x - mean4 / MEAN_SCALE
        a, b = factorise(xc, variance)
        counts.append(b.shape[0])
        _write_signed(w_, np.diff(mean4, prepend=0))
        if b.shape[0]:
            bq = np.round(b / step).astype(np.int64)
            a = xc @ np.linalg.pinv(bq * step)  # least squares against the stored B
            aq = np.round(a / step).astype(np.int64)
            _write_signed(w_, bq)
            tables = [fit_table(np.abs(col)) for col in aq.T]  # one table per component
            write_tables(w_, tables)
            for col, table in zip(aq.T, tables):
                w_.signed(col, table)
    return w_.finish(), counts


def _write_signed(w: Writer, values: np.ndarray) -> None:
    table = fit_table(np.abs(values))
    write_tables(w, [table])
    w.signed(values, table)


def _read_signed(r: Reader, n: int) -> np.ndarray:
    return r.signed(n, read_tables(r, 1)[0])


def decode_channels(payload: bytes, h: int, w: int, counts: list[int], step16: int) -> list[np.ndarray]:
    if any(k > min(h, w) for k in counts):  # the rank bound: never allocate from a bad count
        raise CodingError(f"chunk 'PCOF': component counts {counts} exceed min(W, H) = {min(h, w)}")
    r = Reader(payload)
    out = []
    for k in counts:
        mean4 = np.cumsum(_read_signed(r, w))
        acc = np.zeros((h, w))
        if k:
            bq = np.clip(_read_signed(r, k * w).reshape(k, w), -(1 << 20), 1 << 20)
            tables = read_tables(r, k)
            aq = np.clip(np.stack([r.signed(h, t) for t in tables], axis=1), -(1 << 20), 1 << 20)
            # Integers well below 2^53 for any real stream: exact whatever the summation order.
            acc = aq.astype(np.float64) @ bq.astype(np.float64)
        # value = acc * step^2 + mean, in 1/256 units: step^2 = step16^2 / 256, mean = mean4 / 4
        total = acc * float(step16 * step16) + (mean4 * 64).astype(np.float64)[None, :]
        pixels = np.floor((total + 128.0) / 256.0)
        out.append(np.clip(pixels, 0, 255).astype(np.uint8))
    return out
