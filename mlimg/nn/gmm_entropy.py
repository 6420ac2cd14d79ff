"""The gmm entropy model in fixed point: the part of the decoder that decides probabilities.

At export, the float hyper-synthesis, checkerboard-context and entropy-parameter
networks of a trained GMM are quantised to integers (`export_tables`) and stored
in the weights file beside precomputed integer tables (Gaussian pmfs, an exp
table for the mixture weights, log-scale thresholds, the factorised z prior).
Encoder and decoder then run `IntegerEntropyModel`, which uses only integer
arithmetic (exact float64 products, see integer.int_matmul) — so every machine,
thread count and BLAS computes the same frequencies. Layout: spec/methods/gmm.md.
"""
from __future__ import annotations

import numpy as np

from .checkerboard import anchor_mask
from .integer import (MEAN_FRAC_BITS, exp_table, factorized_freqs, gaussian_tables, int_matmul,
                      int_softmax, quantize_weights, scale_table, scale_thresholds)

W_BITS = 12  # fractional bits of the integer weights
A_BITS = 8  # fractional bits of the integer activations
ACT_LIMIT = (1 << 20) - 1  # activations saturate here, keeping every product sum below 2**53
GAUSS_BITS = 30  # Gaussian bin masses in units of 2**-30: tails down to ~1e-9 keep their true cost
# Minimum frequency of every symbol, against totals near 2**46: a probability floor of about
# 2**-30 (the float model's likelihood floor is 1e-9), so a rare outlier costs ~30 bits, not 46.
FREQ_FLOOR = 1 << 16
GAUSS_HALF_WIDTH = 256  # the Gaussian tables cover offsets -256..256 from the mean
N_SCALES = 64
EXP_SIZE = 4096  # exp(-4096/256) * 2**16 rounds to 0: the table covers every useful logit gap
WINDOW = 31  # symbols code the values centre-31..centre+31; anything else is escaped
_BAND_ELEMENTS = 1 << 22  # im2col elements per band: bounds memory on huge images

# Checkerboard context taps (He et al. 2021): in a 5x5 window, (dy + dx) odd.
CONTEXT_TAPS = np.array([i for i in range(25) if (i // 5 + i % 5) % 2 == 1])


# ---------------------------------------------------------------- export (float64, once)


def _int32(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.int64)
    if a.size and np.abs(a).max() >= 1 << 31:
        raise ValueError(f"integer table {name!r} overflows int32 (max |value| {np.abs(a).max()})")
    return a


def _conv_layer(name: str, weight, bias) -> dict:
    w = weight.detach().double().numpy()
    b = bias.detach().double().numpy()
    return {f"{name}.w": _int32(name, quantize_weights(w, W_BITS)),
            f"{name}.b": _int32(name, quantize_weights(b, W_BITS + A_BITS))}


def _transposed_as_conv(weight):
    """ConvTranspose2d weight (Cin, Cout, k, k) -> the Conv2d weight that, applied to the
    zero-inserted input, computes the same transposed convolution."""
    return weight.flip(2, 3).transpose(0, 1)


def export_tables(net) -> dict[str, np.ndarray]:
    """Integer tables of a float GMM: everything IntegerEntropyModel needs."""
    hs = net.h_s
    tables = {"z_prior": factorized_freqs(net.z_prior)}
    tables.update(_conv_layer("hs0", _transposed_as_conv(hs[0].weight), hs[0].bias))
    tables.update(_conv_layer("hs1", _transposed_as_conv(hs[2].weight), hs[2].bias))
    tables.update(_conv_layer("hs2", hs[4].weight, hs[4].bias))
    tables.update(_conv_layer("ctx", net.context.weight * net.context.mask, net.context.bias))
    for i, layer in enumerate(net.entropy_parameters[::2]):
        tables.update(_conv_layer(f"ep{i}", layer.weight, layer.bias))
    scales = scale_table(N_SCALES)
    tables["gauss"] = gaussian_tables(scales, GAUSS_HALF_WIDTH, GAUSS_BITS)
    tables["scale_thresholds"] = scale_thresholds(scales, A_BITS)
    tables["exp"] = exp_table(A_BITS, EXP_SIZE)
    return tables


# ---------------------------------------------------------------- fixed-point layers


class IntLayer:
    """An integer layer as a matrix: w (fan-in, out) int64, its float64 copy and bound, bias."""

    def __init__(self, w: np.ndarray, b: np.ndarray, taps: np.ndarray | None = None):
        o, c, k, _ = w.shape
        cols = w.reshape(o, c, k * k)
        if taps is not None:
            cols = cols[:, :, taps]
        self.k, self.taps, self.out = k, taps, o
        self.w = np.ascontiguousarray(cols.reshape(o, -1).T, dtype=np.int64)
        self.w_float = self.w.astype(np.float64)
        self.bound = float(np.abs(self.w).sum(axis=0).max(initial=0))
        self.b = np.asarray(b, np.int64)

    def apply(self, cols: np.ndarray) -> np.ndarray:
        """(n, fan-in) integer inputs -> (n, out) integer outputs at the activation scale (floor)."""
        return (int_matmul(cols, self.w, self.w_float, self.bound) + self.b) >> W_BITS


def _saturate(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -ACT_LIMIT, ACT_LIMIT)


def conv_banded(x: np.ndarray, layer: IntLayer, pad: int, relu: bool) -> np.ndarray:
    """Stride-1 integer conv of (C, H, W) in bands of output rows (bounded memory).

    A layer built with `taps` uses only those flattened window positions (the checkerboard
    context uses 12 of 25): same result as zero weights there, half the work.
    """
    c, h, wd = x.shape
    k = layer.k
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    ho, wo = h + 2 * pad - k + 1, wd + 2 * pad - k + 1
    rows = max(1, _BAND_ELEMENTS // max(wo * layer.w.shape[0], 1))
    out = np.empty((layer.out, ho, wo), np.int64)
    for r0 in range(0, ho, rows):
        r1 = min(ho, r0 + rows)
        win = np.lib.stride_tricks.sliding_window_view(xp[:, r0 : r1 + k - 1], (k, k), axis=(1, 2))
        win = win.reshape(c, r1 - r0, wo, k * k)  # (C, rows, wo, k*k)
        if layer.taps is not None:
            win = win[..., layer.taps]
        cols = win.transpose(1, 2, 0, 3).reshape((r1 - r0) * wo, -1)
        out[:, r0:r1] = layer.apply(cols).T.reshape(layer.out, r1 - r0, wo)
    if relu:
        out = np.maximum(out, 0)
    return _saturate(out)


def conv_transposed_banded(x: np.ndarray, layer: IntLayer, relu: bool) -> np.ndarray:
    """ConvTranspose2d(k=4, stride=2, padding=1) as zero insertion + ordinary conv (pure indexing)."""
    c, h, wd = x.shape
    up = np.zeros((c, 2 * h - 1, 2 * wd - 1), np.int64)
    up[:, ::2, ::2] = x
    return conv_banded(up, layer, pad=layer.k - 2, relu=relu)


# ---------------------------------------------------------------- the model


class IntegerEntropyModel:
    """Fixed-point hyper-synthesis + checkerboard context + entropy parameters -> integer pmfs."""

    def __init__(self, tables: dict[str, np.ndarray], M: int, K: int):
        missing = [n for n in ("z_prior", "hs0.w", "ctx.w", "ep2.w", "gauss", "scale_thresholds", "exp")
                   if n not in tables]
        if missing:
            raise OSError(f"gmm weights lack the integer tables {missing}")
        self.t = {name: np.asarray(v, np.int64) for name, v in tables.items()}
        self.M, self.K = M, K
        t = self.t
        self.layers = {name: IntLayer(t[f"{name}.w"], t[f"{name}.b"]) for name in ("hs0", "hs1", "hs2", "ep0", "ep1", "ep2")}
        self.layers["ctx"] = IntLayer(t["ctx.w"], t["ctx.b"], taps=CONTEXT_TAPS)
        self.gauss_width = self.t["gauss"].shape[2]

    # -------- hyper-synthesis: z -> features at y resolution

    def hyper(self, z: np.ndarray, lh: int, lw: int) -> np.ndarray:
        """Integer z (N, zh, zw) -> integer hyper features (2M, lh, lw) in units of 2**-A_BITS."""
        L = self.layers
        a = _saturate(np.asarray(z, np.int64) << A_BITS)
        a = conv_transposed_banded(a, L["hs0"], relu=True)
        a = conv_transposed_banded(a, L["hs1"], relu=True)
        a = conv_banded(a, L["hs2"], pad=1, relu=False)
        return a[:, :lh, :lw]

    def context(self, y: np.ndarray) -> np.ndarray:
        """Context features (2M, lh, lw) from integer y whose non-anchor positions are zero."""
        a = _saturate(np.asarray(y, np.int64) << A_BITS)
        return conv_banded(a, self.layers["ctx"], pad=2, relu=False)

    def context_of_nothing(self, n: int) -> np.ndarray:
        """What `context` gives where every input in the window is zero (the anchors): the bias."""
        return np.broadcast_to(_saturate(self.t["ctx.b"] >> W_BITS), (n, self.t["ctx.b"].size))

    def parameters(self, features: np.ndarray):
        """Per-position integer features (n, 4M) -> (weights, mean_q, scale_idx), each (n*M, K)."""
        t = self.t
        a = features
        for i in range(3):
            a = _saturate(self.layers[f"ep{i}"].apply(a))
            if i < 2:
                a = np.maximum(a, 0)
        n, K, M = a.shape[0], self.K, self.M
        p = a.reshape(n, 3, K, M).transpose(1, 0, 3, 2).reshape(3, n * M, K)  # element = (position, channel)
        weights = int_softmax(p[0], t["exp"])
        mean_q = p[1] >> (A_BITS - MEAN_FRAC_BITS)
        scale_idx = np.searchsorted(t["scale_thresholds"], p[2], side="right")
        return weights, mean_q, scale_idx

    def probabilities(self, weights, mean_q, scale_idx):
        """(centre (n,), probabilities (n, 2*WINDOW+2)): the values centre-WINDOW..centre+WINDOW,
        then an escape symbol; centre is the integer mean of the heaviest component.

        freq(v) = FLOOR + sum_k w_k * G[s_k][f_k][v - m_k]; escape = FLOOR + sum_k w_k * (2**30 - window mass);
        probability = freq / sum(freq) in float64 (exact rounding: identical everywhere)."""
        from .gmm_kernels import window_probs

        return window_probs(np.ascontiguousarray(weights), np.ascontiguousarray(mean_q),
                            np.ascontiguousarray(scale_idx), self.t["gauss"], MEAN_FRAC_BITS, GAUSS_BITS, WINDOW, FREQ_FLOOR)

    # -------- checkerboard passes

    def pass_blocks(self, hyper: np.ndarray, y: np.ndarray | None, anchors: bool):
        """Yield (positions, centre, probabilities) blocks of one checkerboard pass; elements of a block
        are in (position, channel) order, positions are flat indices into the lh x lw latent.

        anchors=True: the first pass (context of nothing). anchors=False: the second pass;
        y must hold the decoded anchors (its non-anchor positions are ignored). Blocks bound
        the memory of the (elements, 64) probability arrays on huge images.
        """
        _, lh, lw = hyper.shape
        select = anchor_mask(lh, lw) if anchors else ~anchor_mask(lh, lw)
        pos = np.flatnonzero(select.ravel())
        hyper_flat = hyper.reshape(hyper.shape[0], -1)
        ctx_flat = None
        if not anchors:
            ctx_flat = self.context(np.where(select[None], 0, y)).reshape(2 * self.M, -1)
        step = max(1, 65536 // self.M)  # ~32 MB of probabilities per block
        for s in range(0, pos.size, step):
            block = pos[s : s + step]
            ctx = self.context_of_nothing(block.size) if anchors else ctx_flat[:, block].T
            features = np.concatenate([hyper_flat[:, block].T, ctx], axis=1)
            centre, probs = self.probabilities(*self.parameters(features))
            yield block, centre, probs
