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
# A channel branch's 3x3 window: the centre and diagonals are positions of the coded position's
# own kind (anchor or not), the cross of the other kind.
SAME_KIND_TAPS, OTHER_KIND_TAPS = np.array([0, 2, 4, 6, 8]), np.array([1, 3, 5, 7])


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
    if getattr(net, "channel_context", None) is not None:  # channel groups: the branches' layers
        for name, branch in net.channel_context.branches.items():
            tables.update(_conv_layer(f"cc.{name}.0", branch[0].weight, branch[0].bias))
            tables.update(_conv_layer(f"cc.{name}.1", branch[2].weight, branch[2].bias))
    scales = scale_table(N_SCALES)
    tables["gauss"] = gaussian_tables(scales, GAUSS_HALF_WIDTH, GAUSS_BITS)
    tables["scale_thresholds"] = scale_thresholds(scales, A_BITS)
    tables["exp"] = exp_table(A_BITS, EXP_SIZE)
    return tables


# ---------------------------------------------------------------- fixed-point layers


class IntLayer:
    """An integer layer as a matrix: w (fan-in, out) int64, its float64 copy and bound, bias."""

    def __init__(self, w: np.ndarray, b: np.ndarray, taps: np.ndarray | None = None,
                 columns: np.ndarray | None = None):
        """taps: the window positions used (of k*k, every channel); columns: the (channel, tap)
        inputs used, as indices into the flattened fan-in. Inputs left out must be zero."""
        o, c, k, _ = w.shape
        cols = w.reshape(o, c, k * k)
        if taps is not None:
            cols = cols[:, :, taps]
        cols = cols.reshape(o, -1)
        if columns is not None:
            cols = cols[:, columns]
        self.k, self.taps, self.columns, self.out = k, taps, columns, o
        self.w = np.ascontiguousarray(cols.T, dtype=np.int64)
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
    """Fixed-point hyper-synthesis + checkerboard context (+ channel groups) + entropy parameters
    -> integer pmfs.

    groups/order: the model's channel groups (nn/models.py ChannelContext), from its config;
    None for a plain checkerboard model (one group of every channel, two passes)."""

    def __init__(self, tables: dict[str, np.ndarray], M: int, K: int, groups=None, order=None):
        groups = [int(g) for g in groups] if groups else [M]
        order = [int(c) for c in order] if order is not None else list(range(M))
        if sorted(order) != list(range(M)) or sum(groups) != M or min(groups) < 1:
            raise OSError(f"gmm weights: channel groups {groups} do not partition the {M} latent channels")
        branches = [f"{kind}{g}" for g in range(1, len(groups)) for kind in ("anchors", "others")]
        needed = ["z_prior", "hs0.w", "ctx.w", "ep2.w", "gauss", "scale_thresholds", "exp"]
        missing = [n for n in needed + [f"cc.{b}.{i}.w" for b in branches for i in (0, 1)] if n not in tables]
        if missing:
            raise OSError(f"gmm weights lack the integer tables {missing}")
        self.t = {name: np.asarray(v, np.int64) for name, v in tables.items()}
        self.M, self.K = M, K
        t = self.t
        self.layers = {name: IntLayer(t[f"{name}.w"], t[f"{name}.b"]) for name in ("hs0", "hs1", "hs2", "ep0", "ep1", "ep2")}
        self.layers["ctx"] = IntLayer(t["ctx.w"], t["ctx.b"], taps=CONTEXT_TAPS)
        starts = np.cumsum([0] + groups)
        self.group_channels = [np.asarray(order[s:e], np.int64) for s, e in zip(starts[:-1], starts[1:])]
        for g in range(1, len(groups)):
            for anchors in (True, False):
                name = f"cc.{'anchors' if anchors else 'others'}{g}"
                self.layers[f"{name}.0"] = IntLayer(t[f"{name}.0.w"], t[f"{name}.0.b"],
                                                    columns=self._known_inputs(anchors, g))
                self.layers[f"{name}.1"] = IntLayer(t[f"{name}.1.w"], t[f"{name}.1.b"])
        # The last entropy-parameter layer per group: only the rows of the group's channels.
        w2, b2 = t["ep2.w"], t["ep2.b"]
        self.last_layers = []
        for chans in self.group_channels:
            rows = np.concatenate([i * K * M + k * M + chans for i in range(3) for k in range(K)])
            self.last_layers.append(IntLayer(w2[rows], b2[rows]))
        self.gauss_width = self.t["gauss"].shape[2]

    def _known_inputs(self, anchors: bool, group: int) -> np.ndarray:
        """The (channel, tap) inputs of a pass's branch that can be non-zero (branch_input):
        the earlier groups' channels everywhere in the window of the pass's own kind, and in a
        non-anchor pass every channel at the cross, which are anchors. The branch multiplies
        only these: the same integers for a fraction of the work (a third in anchor passes)."""
        known = np.zeros((self.M, 9), bool)
        known[np.concatenate(self.group_channels[:group])[:, None], SAME_KIND_TAPS] = True
        if not anchors:
            known[:, OTHER_KIND_TAPS] = True
        return np.flatnonzero(known.ravel())

    def passes(self) -> list[tuple[bool, int]]:
        """(anchors, group) of each coding pass, in order: every group's anchors, then the rest."""
        n = len(self.group_channels)
        return [(True, g) for g in range(n)] + [(False, g) for g in range(n)]

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

    def parameters(self, first: np.ndarray, group: int = 0, extra: np.ndarray | None = None):
        """ep0's output (n, 3M) at n positions (`first_layer`) -> (weights, mean_q, scale_idx) of
        the group's channels, each (n*Mg, K); `extra` (n, 3M): the group's channel branch."""
        t = self.t
        a = first if extra is None else first + extra
        a = np.maximum(_saturate(a), 0)
        a = np.maximum(_saturate(self.layers["ep1"].apply(a)), 0)
        a = _saturate(self.last_layers[group].apply(a))
        n, K, M = a.shape[0], self.K, self.group_channels[group].size
        p = a.reshape(n, 3, K, M).transpose(1, 0, 3, 2).reshape(3, n * M, K)  # element = (position, channel)
        weights = int_softmax(p[0], t["exp"])
        mean_q = p[1] >> (A_BITS - MEAN_FRAC_BITS)
        scale_idx = np.searchsorted(t["scale_thresholds"], p[2], side="right")
        return weights, mean_q, scale_idx

    def first_layer(self, features: np.ndarray) -> np.ndarray:
        """ep0 of the features [hyper (2M), context (2M)] (n, 4M), before ReLU and saturation."""
        return self.layers["ep0"].apply(features)

    def probabilities(self, weights, mean_q, scale_idx):
        """(centre (n,), probabilities (n, 2*WINDOW+2)): the values centre-WINDOW..centre+WINDOW,
        then an escape symbol; centre is the integer mean of the heaviest component.

        freq(v) = FLOOR + sum_k w_k * G[s_k][f_k][v - m_k]; escape = FLOOR + sum_k w_k * (2**30 - window mass);
        probability = freq / sum(freq) in float64 (exact rounding: identical everywhere)."""
        from .gmm_kernels import window_probs

        return window_probs(np.ascontiguousarray(weights), np.ascontiguousarray(mean_q),
                            np.ascontiguousarray(scale_idx), self.t["gauss"], MEAN_FRAC_BITS, GAUSS_BITS, WINDOW, FREQ_FLOOR)

    # -------- coding passes

    def branch_input(self, y: np.ndarray, anchors: bool, group: int) -> np.ndarray:
        """What the channel branch of a pass sees, (M, lh + 2, lw + 2) padded: y with everything
        not decoded before the pass zeroed (anchor pass: the earlier groups' anchors; other
        pass: every anchor and the earlier groups' other positions)."""
        m, lh, lw = y.shape
        earlier = np.zeros(m, bool)
        earlier[np.concatenate(self.group_channels[:group])] = True
        am = anchor_mask(lh, lw)
        known = (am[None] & earlier[:, None, None]) if anchors else (am[None] | earlier[:, None, None])
        return np.pad(_saturate(np.where(known, np.asarray(y, np.int64), 0) << A_BITS), ((0, 0), (1, 1), (1, 1)))

    def branch(self, padded: np.ndarray, anchors: bool, group: int, positions: np.ndarray) -> np.ndarray:
        """The channel branch (3x3 conv, ReLU, 1x1 conv) at `positions`, (n, 3M)."""
        name = f"cc.{'anchors' if anchors else 'others'}{group}"
        first = self.layers[f"{name}.0"]
        hidden = np.maximum(_saturate(first.apply(_im2col_at(padded, 3, positions, columns=first.columns))), 0)
        return _saturate(self.layers[f"{name}.1"].apply(hidden))

    def first_layer_at(self, hyper: np.ndarray, y: np.ndarray, anchors: bool, positions: np.ndarray) -> np.ndarray:
        """ep0's output (n, 3M) at `positions` of one kind of pass: hyper features and the
        context of nothing (anchors) or of every anchor (the others), in bounded chunks."""
        hyper_flat = hyper.reshape(hyper.shape[0], -1)
        if not anchors:
            select = ~anchor_mask(*y.shape[1:])
            padded = np.pad(_saturate(np.where(select[None], 0, np.asarray(y, np.int64)) << A_BITS),
                            ((0, 0), (2, 2), (2, 2)))
        out = np.empty((positions.size, self.layers["ep0"].out), np.int64)
        step = max(1, _BAND_ELEMENTS // (self.M * CONTEXT_TAPS.size))
        for s in range(0, positions.size, step):
            block = positions[s : s + step]
            if anchors:
                ctx = self.context_of_nothing(block.size)
            else:
                ctx = _saturate(self.layers["ctx"].apply(_im2col_at(padded, 5, block, CONTEXT_TAPS)))
            out[s : s + step] = self.first_layer(np.concatenate([hyper_flat[:, block].T, ctx], axis=1))
        return out

    def pass_blocks(self, hyper: np.ndarray, y: np.ndarray | None, anchors: bool, group: int = 0,
                    shared: dict | None = None):
        """Yield (positions, centre, probabilities) blocks of one coding pass (`passes`); elements
        of a block are in (position, channel) order, channels as `group_channels[group]` lists
        them, positions are flat indices into the lh x lw latent.

        y must hold every value decoded before this pass (the rest is ignored). `shared`: a dict
        kept across the passes of one latent, where the first layer's output, the same for every
        group's anchor (or other) pass, is computed once. Blocks bound the memory of the
        (elements, 64) probability arrays on huge images.
        """
        _, lh, lw = hyper.shape
        shared = {} if shared is None else shared
        select = anchor_mask(lh, lw) if anchors else ~anchor_mask(lh, lw)
        pos = np.flatnonzero(select.ravel())
        if anchors not in shared:  # (by the first non-anchor pass every anchor is decoded)
            shared[anchors] = self.first_layer_at(hyper, y, anchors, pos)
        first = shared[anchors]
        padded = self.branch_input(y, anchors, group) if group else None
        step = max(1, 65536 // self.group_channels[group].size)  # ~32 MB of probabilities per block
        for s in range(0, pos.size, step):
            block = pos[s : s + step]
            extra = self.branch(padded, anchors, group, block) if group else None
            centre, probs = self.probabilities(*self.parameters(first[s : s + step], group, extra))
            yield block, centre, probs


def _im2col_at(padded: np.ndarray, k: int, positions: np.ndarray, taps: np.ndarray | None = None,
               columns: np.ndarray | None = None) -> np.ndarray:
    """(n, C·taps) im2col rows of a k x k stride-1 conv over `padded` (C, h + k - 1, w + k - 1) at
    flat output `positions`, columns ordered (channel, tap) as IntLayer's weights; `columns`: only
    those (as IntLayer's), gathered directly."""
    c = padded.shape[0]
    lw = padded.shape[2] - k + 1
    windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(1, 2))  # (C, h, w, k, k)
    rows, cols = np.divmod(positions, lw)
    if columns is not None:
        channel, tap = np.divmod(columns, k * k)
        ty, tx = np.divmod(tap, k)
        return windows[channel[None], rows[:, None], cols[:, None], ty[None], tx[None]]
    picked = windows[:, rows, cols].reshape(c, positions.size, k * k)
    if taps is not None:
        picked = picked[..., taps]
    return picked.transpose(1, 0, 2).reshape(positions.size, -1)
