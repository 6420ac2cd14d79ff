"""pca mode "blocks": a per-image KLT (PCA over B x B patches) transform coder.

Pipeline (encoder): RGB -> YCbCr (optionally 4:2:0) -> planes padded to block multiples
-> per plane group (luma; chroma shares one basis) a KLT fitted on the image's own
blocks, stored as integers -> coefficients = blocks x inverse(quantised basis) ->
dead-zone uniform quantisation -> context-modelled range coding (pca_coding).

The decoder is integer-exact: the dequantised coefficients and the stored basis are
integers whose products and sums stay below 2^53, so the float64 matrix product is
exact whatever the BLAS summation order; colour conversion and chroma upsampling are
fixed-point integer arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .pca_coding import (CodingError, Reader, Writer, fit_table, fit_tables, probs_matrix, read_tables,
                         write_tables)

N_BANDS = 6
OWN_LEVELS = 3
NB_LEVELS = 4
N_CTX = OWN_LEVELS * NB_LEVELS
TABLES_PER_GROUP = 1 + 2 * N_BANDS * N_CTX  # DC table + (pass, band, context) tables
RECON_OFFSET16 = 1  # dequantise |q| to (|q| - 1/16) * step: Laplacian centroid shift
ROUNDING = 0.45  # quantiser rounding offset: a slight dead zone (measured best of 0.28..0.5 on Kodak)


@dataclass
class BlockParams:
    block: int  # 8 or 16
    subsample: bool  # chroma 4:2:0
    full_basis: bool  # False: separable KLT (two B x B matrices); True: full B^2 x B^2 KLT
    precision: int  # basis entries are integers scaled by 2^precision
    step16: tuple[int, int]  # quantiser steps (luma, chroma) in 1/16 units
    recon16: int = RECON_OFFSET16


AUTO_444_QUALITY = 80  # subsampling="auto": 4:4:4 from here up (crossover measured on Kodak, ~2 bpp)


def params_for_quality(quality: int, block: int, subsample: bool, full_basis: bool) -> BlockParams:
    """quality 1..100 -> quantiser step (monotone: higher quality, smaller step, more bits)."""
    step = 3.0 * 2.0 ** ((95 - quality) / 16.0)  # q 10 -> ~0.15 bpp, q 95 -> ~3 bpp on Kodak
    luma = max(4, int(round(16 * step)))
    # Equal RD slope for RGB PSNR: a half-resolution chroma sample's error lands on 4 pixels,
    # so its step is about half the luma step (measured on Kodak: 0.55x beats 0.7x, 1.0x, 1.4x).
    chroma = max(4, int(round(16 * step * (0.5 if subsample else 1.0))))
    precision = int(np.clip(6 + round(quality / 25), 6, 10))
    return BlockParams(block, subsample, full_basis, precision, (luma, chroma))


# ---------------------------------------------------------------- colour and planes

def to_planes(pixels: np.ndarray, mode: str, subsample: bool) -> list[np.ndarray]:
    """Float64 planes centred on zero: [Y] for L, [Y, Cb, Cr] for RGB (chroma maybe halved)."""
    x = pixels.astype(np.float64)
    if mode == "L":
        return [x - 128.0]
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b - 128.0
    cb = -0.168735892 * r - 0.331264108 * g + 0.5 * b
    cr = 0.5 * r - 0.418687589 * g - 0.081312411 * b
    if subsample:
        cb, cr = _halve(cb), _halve(cr)
    return [y, cb, cr]


def _halve(p: np.ndarray) -> np.ndarray:
    h, w = p.shape
    p = np.pad(p, ((0, h % 2), (0, w % 2)), mode="edge")
    return 0.25 * (p[0::2, 0::2] + p[1::2, 0::2] + p[0::2, 1::2] + p[1::2, 1::2])


def plane_shapes(h: int, w: int, mode: str, subsample: bool) -> list[tuple[int, int]]:
    if mode == "L":
        return [(h, w)]
    c = ((h + 1) // 2, (w + 1) // 2) if subsample else (h, w)
    return [(h, w), c, c]


def from_planes16(planes: list[np.ndarray], h: int, w: int, mode: str, subsample: bool) -> np.ndarray:
    """Integer planes in 1/16 units (luma offset included) -> uint8 pixels, fixed-point only."""
    y = planes[0][:h, :w]
    if mode == "L":
        return np.clip((y + 8) >> 4, 0, 255).astype(np.uint8)
    if subsample:
        cb, cr = (_double(p)[:h, :w] for p in planes[1:])  # 1/256 units
    else:
        cb, cr = (p[:h, :w] << 4 for p in planes[1:])
    y = y << 4
    # JPEG YCbCr -> RGB with 16-bit fixed-point factors; everything below is int64.
    r = (y << 16) + 91881 * cr
    g = (y << 16) - 22554 * cb - 46802 * cr
    b = (y << 16) + 116130 * cb
    out = np.stack([r, g, b], axis=-1)
    return np.clip((out + (1 << 23)) >> 24, 0, 255).astype(np.uint8)


def _double(p: np.ndarray) -> np.ndarray:
    """2x 'fancy' upsampling (3/4, 1/4 weights) per axis; output scaled by 16."""
    for axis in (0, 1):
        n = p.shape[axis]
        prev = np.take(p, np.maximum(np.arange(n) - 1, 0), axis=axis)
        nxt = np.take(p, np.minimum(np.arange(n) + 1, n - 1), axis=axis)
        even, odd = 3 * p + prev, 3 * p + nxt
        p = np.stack([even, odd], axis=axis + 1).reshape(
            p.shape[:axis] + (2 * n,) + p.shape[axis + 1:])
    return p


# ---------------------------------------------------------------- blocks and bases

def to_blocks(plane: np.ndarray, b: int) -> tuple[np.ndarray, int, int]:
    h, w = plane.shape
    hb, wb = -(-h // b), -(-w // b)
    p = np.pad(plane, ((0, hb * b - h), (0, wb * b - w)), mode="edge")
    blocks = p.reshape(hb, b, wb, b).transpose(0, 2, 1, 3).reshape(hb * wb, b * b)
    return blocks, hb, wb


def from_blocks(blocks: np.ndarray, hb: int, wb: int, b: int) -> np.ndarray:
    return blocks.reshape(hb, wb, b, b).transpose(0, 2, 1, 3).reshape(hb * b, wb * b)


def _eig_desc(cov: np.ndarray) -> np.ndarray:
    """Eigenvectors as rows, largest eigenvalue first, sign fixed (largest |entry| positive)."""
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(-vals, kind="stable")
    v = vecs[:, order].T
    pivot = v[np.arange(len(v)), np.argmax(np.abs(v), axis=1)]
    return v * np.where(pivot < 0, -1.0, 1.0)[:, None]


def fit_basis(block_sets: list[np.ndarray], b: int, params: BlockParams) -> list[np.ndarray]:
    """Quantised basis integers for one plane group: [Ur, Uc] (separable) or [T] (full)."""
    x = np.concatenate(block_sets, axis=0)
    scale = float(1 << params.precision)
    if params.full_basis:
        mats = [_eig_desc(x.T @ x / max(len(x), 1))]
    else:
        sq = x.reshape(-1, b, b)
        by_row = sq.transpose(1, 0, 2).reshape(b, -1)
        by_col = sq.transpose(2, 0, 1).reshape(b, -1)
        rows, cols = by_row @ by_row.T, by_col @ by_col.T  # second moments between pixel rows / columns
        mats = [_eig_desc(rows), _eig_desc(cols)]
    return [np.round(m * scale).astype(np.int64) for m in mats]


def separable_order(b: int) -> tuple[np.ndarray, np.ndarray]:
    """Coding order of separable components (a, c): by a + c, then a (a zig-zag over eigen-ranks)."""
    a, c = np.meshgrid(np.arange(b), np.arange(b), indexing="ij")
    a, c = a.ravel(), c.ravel()
    order = np.lexsort((a, a + c))
    return a[order], c[order]


def transform_matrix(mats: list[np.ndarray], b: int, params: BlockParams) -> tuple[np.ndarray, int]:
    """Integer synthesis matrix (components x pixels) and its power-of-two scale exponent."""
    if params.full_basis:
        return mats[0], params.precision
    a, c = separable_order(b)
    ur, uc = mats
    t = (ur[a][:, :, None] * uc[c][:, None, :]).reshape(b * b, b * b)
    return t, 2 * params.precision


def band_of(k: np.ndarray | int, b: int) -> np.ndarray:
    """Frequency band of coding position k (k >= 1): 1, 2-3, 4-7, ... along zig-zag diagonals."""
    a, c = separable_order(b)
    d = (a + c)[np.asarray(k)]
    return np.minimum(np.floor(np.log2(np.maximum(d, 1))).astype(np.int64) + 1, N_BANDS) - 1


# ---------------------------------------------------------------- contexts

class Checkerboard:
    """Blocks split into passes: black ((row + col) even) first, then white.

    For each pass: the flat indices of its blocks (raster order) and of their four
    neighbours; outside the grid a neighbour points at a sentinel slot that is always 0.
    Magnitudes are kept position-major, `mag[k, block]`, with that extra sentinel column.
    """

    def __init__(self, hb: int, wb: int):
        self.n = hb * wb
        rows, cols = np.divmod(np.arange(self.n), wb)
        nbrs = []
        for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            r, c = rows + dr, cols + dc
            inside = (r >= 0) & (r < hb) & (c >= 0) & (c < wb)
            nbrs.append(np.where(inside, r * wb + c, self.n))
        nbrs = np.stack(nbrs, axis=1)
        black = (rows + cols) % 2 == 0
        self.passes = [(np.flatnonzero(black), nbrs[black]), (np.flatnonzero(~black), nbrs[~black])]


def table_ids(mag: np.ndarray, k: int, pass_no: int, board: Checkerboard, band: int) -> np.ndarray:
    """Model table id of each block of one pass for position k >= 1 (see spec/methods/pca.md)."""
    idx, nbrs = board.passes[pass_no]
    own = mag[k - 1, idx] + (mag[k - 2, idx] if k >= 3 else 0)
    if pass_no == 0:  # black: neighbours' previous position
        nb = mag[k - 1][nbrs].sum(axis=1) if k >= 2 else np.zeros_like(own)
    else:  # white: the black neighbours' same position, already coded
        nb = mag[k][nbrs].sum(axis=1)
    ctx = ((own > 0).astype(np.int64) + (own > 2)) * NB_LEVELS + (nb > 0) + (nb > 2) + (nb > 6)
    return 1 + (pass_no * N_BANDS + band) * N_CTX + ctx


# ---------------------------------------------------------------- encoder

def quantise(coef: np.ndarray, step: float) -> np.ndarray:
    return (np.sign(coef) * np.floor(np.abs(coef) / step + ROUNDING)).astype(np.int64)


def dc_residual(dc: np.ndarray) -> np.ndarray:
    """Left-neighbour DPCM; the first column predicts from the block above."""
    res = dc.copy()
    res[:, 1:] -= dc[:, :-1]
    res[1:, 0] -= dc[:-1, 0]
    return res


def dc_from_residual(res: np.ndarray) -> np.ndarray:
    dc = res.copy()
    dc[:, 0] = np.cumsum(res[:, 0])
    return np.cumsum(dc, axis=1)


def encode_planes(planes: list[np.ndarray], params: BlockParams) -> tuple[bytes, bytes, list[int]]:
    """-> (basis payload, coefficient payload, coded components per plane)."""
    b = params.block
    groups = [[0]] if len(planes) == 1 else [[0], [1, 2]]
    blocked = [to_blocks(p, b) for p in planes]
    qgrids: list[np.ndarray] = [None] * len(planes)  # type: ignore[list-item]
    basis_w = Writer()
    group_mats = []
    for gi, members in enumerate(groups):
        mats = fit_basis([blocked[i][0] for i in members], b, params)
        t, shift = transform_matrix(mats, b, params)
        analysis = np.linalg.inv(t.astype(np.float64) / float(1 << shift))
        step = params.step16[min(gi, 1)] / 16.0
        for i in members:
            blocks, hb, wb = blocked[i]
            qgrids[i] = quantise(blocks @ analysis, step).reshape(hb, wb, b * b)
        group_mats.append(mats)
    keep = [_coded_count(q) for q in qgrids]
    for gi, members in enumerate(groups):
        mats = group_mats[gi]
        if params.full_basis:  # only the components some plane of the group uses
            mats = [mats[0][: max(keep[i] for i in members)]]
        _write_basis(basis_w, mats, params)
    coef_w = Writer()
    for members in groups:  # coded-component counts travel in PHDR
        _write_group(coef_w, [qgrids[i] for i in members], [keep[i] for i in members], b)
    return basis_w.finish(), coef_w.finish(), keep


def _coded_count(q: np.ndarray) -> int:
    """Positions up to the last one with any non-zero value in the plane (at least the DC)."""
    used = np.flatnonzero(np.abs(q).reshape(-1, q.shape[-1]).max(axis=0))
    return int(used[-1]) + 1 if used.size else 1


def _write_basis(w: Writer, mats: list[np.ndarray], params: BlockParams) -> None:
    shift = max(params.precision - 4, 0)  # low bits are near-uniform: code them raw
    if params.full_basis:
        w.uints([len(mats[0])], 16)
    for m in mats:
        hi = m >> shift
        table = fit_table(np.abs(hi))
        write_tables(w, [table])
        w.signed(hi, table)
        if shift:
            w.symbols(m & ((1 << shift) - 1), np.full(1 << shift, 1.0 / (1 << shift)))


def _coding_order(qgrid: np.ndarray, keep: int, b: int):
    """(table ids, values) of a plane's AC positions in the order the decoder reads them."""
    hb, wb, _ = qgrid.shape
    board = Checkerboard(hb, wb)
    q = np.concatenate([qgrid.reshape(hb * wb, -1).T, np.zeros((qgrid.shape[2], 1), np.int64)], axis=1)
    mag = np.abs(q)
    bands = band_of(np.arange(1, max(keep, 2)), b)
    tids, vals = [], []
    for k in range(1, keep):
        for pass_no in (0, 1):
            tids.append(table_ids(mag, k, pass_no, board, int(bands[k - 1])))
            vals.append(q[k, board.passes[pass_no][0]])
    return tids, vals


def _write_group(w: Writer, qgrids: list[np.ndarray], keeps: list[int], b: int) -> None:
    dc = [dc_residual(q[:, :, 0]).ravel() for q in qgrids]
    ac = [_coding_order(q, keep, b) for q, keep in zip(qgrids, keeps)]
    all_ids = np.concatenate([np.zeros(sum(d.size for d in dc), np.int64)] + [t for tids, _ in ac for t in tids])
    all_mag = np.abs(np.concatenate(dc + [v for _, vals in ac for v in vals]))
    fitted = fit_tables(all_ids, all_mag, TABLES_PER_GROUP)
    present = np.zeros(TABLES_PER_GROUP, dtype=np.int64)
    present[list(fitted)] = 1
    w.symbols(present, np.array([0.5, 0.5]))
    write_tables(w, [fitted[t] for t in sorted(fitted)])
    probs = probs_matrix(fitted, TABLES_PER_GROUP)
    for d, (tids, vals) in zip(dc, ac):
        w.signed(d, fitted[0])
        for tid, v in zip(tids, vals):
            w.magnitudes(np.abs(v), probs[tid])
        if vals:
            w.signs(np.concatenate(vals))


# ---------------------------------------------------------------- decoder

def decode_planes(basis: bytes, coef: bytes, shapes: list[tuple[int, int]], keeps: list[int],
                  params: BlockParams) -> list[np.ndarray]:
    """Integer planes in 1/16 units (luma offset added), padded to block multiples."""
    b = params.block
    groups = [[0]] if len(shapes) == 1 else [[0], [1, 2]]
    br, cr = Reader(basis), Reader(coef)
    out: list[np.ndarray] = [None] * len(shapes)  # type: ignore[list-item]
    try:
        group_t = [transform_matrix(_read_basis(br, b, params), b, params) for _ in groups]
    except CodingError as exc:
        raise CodingError(f"chunk 'PBAS': {exc}") from None
    try:
        _read_coefficients(cr, groups, group_t, shapes, keeps, params, out)
    except CodingError as exc:
        raise CodingError(f"chunk 'PCOF': {exc}") from None
    return out


def _read_coefficients(cr: Reader, groups, group_t, shapes, keeps, params: BlockParams, out: list) -> None:
    b = params.block
    for gi, members in enumerate(groups):
        t, shift = group_t[gi]
        present = cr.symbols(TABLES_PER_GROUP, np.array([0.5, 0.5]))
        ids = np.flatnonzero(present)
        fitted = dict(zip(ids.tolist(), read_tables(cr, len(ids))))
        probs = probs_matrix(fitted, TABLES_PER_GROUP)
        for i in members:
            h, w = shapes[i]
            hb, wb = -(-h // b), -(-w // b)
            keep = keeps[i]
            if not 1 <= keep <= min(b * b, len(t)):
                raise CodingError(f"plane {i}: {keep} coded components, basis has {len(t)}")
            q = _read_plane(cr, fitted, probs, hb, wb, keep, b)
            out[i] = _synthesise(q, t[:keep], shift, params.step16[min(gi, 1)], params.recon16, hb, wb, b)
            if i == 0:
                out[i] = out[i] + 128 * 16


def _read_basis(r: Reader, b: int, params: BlockParams) -> list[np.ndarray]:
    shift = max(params.precision - 4, 0)
    if params.full_basis:
        n_rows = int(r.uints(1, 16)[0])
        if not 1 <= n_rows <= b * b:
            raise CodingError(f"full basis claims {n_rows} components for {b}x{b} blocks")
        shapes = [(n_rows, b * b)]
    else:
        shapes = [(b, b), (b, b)]
    mats = []
    for shape in shapes:
        table = read_tables(r, 1)[0]
        hi = r.signed(shape[0] * shape[1], table)
        lo = r.symbols(hi.size, np.full(1 << shift, 1.0 / (1 << shift))) if shift else 0
        m = (hi << shift) | lo
        if np.abs(m).max(initial=0) > (2 << params.precision):
            raise CodingError("basis entry out of range")
        mats.append(m.reshape(shape))
    return mats


def _read_plane(r: Reader, tables: dict, probs: np.ndarray, hb: int, wb: int, keep: int, b: int) -> np.ndarray:
    """Quantised coefficients of one plane as (hb * wb, keep)."""
    if 0 not in tables:
        raise CodingError("DC model table is absent")
    board = Checkerboard(hb, wb)
    mag = np.zeros((keep + 1, hb * wb + 1), dtype=np.int64)  # spare position + sentinel block
    dc = dc_from_residual(r.signed(hb * wb, tables[0]).reshape(hb, wb)).ravel()
    mag[0, :-1] = np.abs(dc)
    bands = band_of(np.arange(1, max(keep, 2)), b)
    for k in range(1, keep):
        for pass_no in (0, 1):
            rows = probs[table_ids(mag, k, pass_no, board, int(bands[k - 1]))]
            if np.isnan(rows[:, 0]).any():
                raise CodingError(f"coefficients at position {k} use an absent model table")
            mag[k, board.passes[pass_no][0]] = r.magnitudes(rows)
    q = mag[:keep, :-1].T.copy()
    q[:, 0] = dc
    if keep > 1:  # AC signs in coding order: position, black then white, raster
        order = np.concatenate([k * (hb * wb) + board.passes[p][0] for k in range(1, keep) for p in (0, 1)])
        flat = q.T.reshape(-1)  # position-major copy
        flat[order] = r.apply_signs(flat[order])
        q = flat.reshape(keep, hb * wb).T
    return q


def _synthesise(q, t, shift, step16, recon16, hb, wb, b) -> np.ndarray:
    mag = np.abs(q)
    deq = np.sign(q) * np.where(mag > 0, 16 * mag - recon16, 0) * step16  # 1/256 units
    deq = deq.astype(np.float64)
    # Integers below 2^53 throughout: the product is exact in any summation order.
    acc = deq @ t.astype(np.float64)
    x16 = np.floor((acc + float(1 << (shift + 3))) / float(1 << (shift + 4)))
    x16 = np.clip(x16, -(1 << 20), 1 << 20).astype(np.int64)
    return from_blocks(x16, hb, wb, b)
