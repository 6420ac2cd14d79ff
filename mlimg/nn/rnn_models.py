"""The recurrent progressive networks of the rnn codec (Toderici et al. 2017), narrowed for CPUs.

One iteration t:  residual r (image minus reconstruction so far, times a gain)
    -> encoder (strided conv + three strided ConvGRU/ConvLSTM cells, /16 in all)
    -> binariser (1x1 conv, tanh, sign): `bits` channels of +-1 per 16x16 block
    -> decoder (1x1 conv + four ConvGRU/LSTM cells, each followed by depth-to-space)
    -> an image-sized output that is divided by the gain and added to the reconstruction
       ("additive"), or that *is* the new reconstruction ("oneshot").
       The output is tanh-bounded to +-0.5 ("output": "tanh", the first models) or unbounded
       ("linear", which trains faster: TRAINING.md, "rnn").

Residual scaling (paper section 3.3): a small gain estimator looks at the reconstruction so
far (known to the decoder) and predicts a per-block gain, so later iterations see residuals of
a useful size. Pixel values are in [-0.5, 0.5].
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

STRIDE = 16  # pixels per latent position per side

DEFAULT_CONFIG = {
    "arch": "rnn",
    "cell": "gru",  # "gru" or "lstm"
    "reconstruction": "additive",  # "additive" or "oneshot"
    "residual_scaling": True,
    "bits": 32,  # binary channels per 16x16 block per iteration: 1/8 bpp per iteration
    "enc": [32, 32, 64, 128],  # conv width, then the three encoder cells' hidden widths
    "dec": [64, 64, 64, 32, 16],  # 1x1 conv width, then the four decoder cells' hidden widths
    "train_iterations": 16,
    "output": "tanh",  # "tanh" or "linear"; weights without the key are tanh models
    "gain_slope": 0.3,  # initial log-gain per iteration (training only: the offsets are learned)
}


class ConvGRUCell(nn.Module):
    """Convolutional GRU: gates from conv(x) + conv(h); stride applies to the input conv."""

    def __init__(self, cin: int, hidden: int, k: int = 3, stride: int = 1, hk: int = 1):
        super().__init__()
        self.hidden = hidden
        self.x2h = nn.Conv2d(cin, 3 * hidden, k, stride, k // 2)
        self.h2h = nn.Conv2d(hidden, 3 * hidden, hk, 1, hk // 2)

    def initial_state(self, x_out_shape, device):
        n, _, h, w = x_out_shape
        return torch.zeros(n, self.hidden, h, w, device=device)

    def forward(self, x, state):
        xz, xr, xn = self.x2h(x).chunk(3, 1)
        if state is None:
            state = torch.zeros_like(xz[:, : self.hidden])
        hz, hr, hn = self.h2h(state).chunk(3, 1)
        z = torch.sigmoid(xz + hz)
        r = torch.sigmoid(xr + hr)
        n = torch.tanh(xn + r * hn)
        h = (1 - z) * n + z * state
        return h, h


class ConvLSTMCell(nn.Module):
    """Convolutional LSTM; state is (h, c), output is h."""

    def __init__(self, cin: int, hidden: int, k: int = 3, stride: int = 1, hk: int = 1):
        super().__init__()
        self.hidden = hidden
        self.x2h = nn.Conv2d(cin, 4 * hidden, k, stride, k // 2)
        self.h2h = nn.Conv2d(hidden, 4 * hidden, hk, 1, hk // 2, bias=False)

    def forward(self, x, state):
        gates = self.x2h(x)
        if state is None:
            zero = torch.zeros_like(gates[:, : self.hidden])
            state = (zero, zero)
        h, c = state
        i, f, g, o = (gates + self.h2h(h)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


_CELLS = {"gru": ConvGRUCell, "lstm": ConvLSTMCell}


class Encoder(nn.Module):
    def __init__(self, widths, bits: int, cell: str):
        super().__init__()
        Cell = _CELLS[cell]
        self.conv = nn.Conv2d(3, widths[0], 3, 2, 1)
        self.cells = nn.ModuleList(Cell(widths[i], widths[i + 1], 3, 2) for i in range(3))
        self.binarise = nn.Conv2d(widths[3], bits, 1)

    def forward(self, x, states):
        y = self.conv(x)
        new = []
        for cell, s in zip(self.cells, states):
            y, s = cell(y, s)
            new.append(s)
        return torch.tanh(self.binarise(y)), new


class Decoder(nn.Module):
    def __init__(self, widths, bits: int, cell: str, output: str = "tanh"):
        super().__init__()
        Cell = _CELLS[cell]
        self.bounded = output == "tanh"
        self.conv = nn.Conv2d(bits, widths[0], 1)
        cins = [widths[0]] + [widths[i] // 4 for i in range(1, 4)]
        self.cells = nn.ModuleList(Cell(cins[i], widths[i + 1], 3, 1) for i in range(4))
        self.out = nn.Conv2d(widths[4] // 4, 3, 1)

    def forward(self, b, states):
        y = self.conv(b)
        new = []
        for cell, s in zip(self.cells, states):
            y, s = cell(y, s)
            new.append(s)
            y = F.pixel_shuffle(y, 2)  # depth-to-space
        out = self.out(y)
        return (torch.tanh(out) * 0.5 if self.bounded else out), new


class GainEstimator(nn.Module):
    """Reconstruction so far -> log-gain per 16x16 block (plus a learned per-iteration offset)."""

    def __init__(self, max_iterations: int = 64, width: int = 16, slope: float = 0.3):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1), nn.ReLU(), nn.Conv2d(width, width, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(width, width, 3, 2, 1), nn.ReLU(), nn.Conv2d(width, 1, 3, 2, 1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        # Residuals shrink roughly geometrically with the iteration: start near that (slope:
        # log-gain per iteration at initialisation; only training reads it).
        self.offset = nn.Parameter(torch.arange(max_iterations, dtype=torch.float32) * slope)
        self.max_log = math.log(256.0)

    def forward(self, recon, t: int):
        t = min(t, self.offset.shape[0] - 1)
        log_g = (self.net(recon) + self.offset[t]).clamp(0.0, self.max_log)
        return torch.exp(log_g)


class RNNCodecNet(nn.Module):
    def __init__(self, config: dict | None = None):
        super().__init__()
        cfg = {**DEFAULT_CONFIG, **(config or {})}
        if (cfg["cell"] not in _CELLS or cfg["reconstruction"] not in ("additive", "oneshot")
                or cfg["output"] not in ("tanh", "linear")):
            raise ValueError(f"bad rnn config {cfg}")
        self.config = cfg
        self.encoder = Encoder(cfg["enc"], cfg["bits"], cfg["cell"])
        self.decoder = Decoder(cfg["dec"], cfg["bits"], cfg["cell"], cfg["output"])
        scaled = cfg["residual_scaling"] and cfg["reconstruction"] == "additive"
        self.gain = GainEstimator(slope=cfg["gain_slope"]) if scaled else None

    @classmethod
    def from_config(cls, config: dict) -> "RNNCodecNet":
        return cls(config)

    @property
    def bits(self) -> int:
        return self.config["bits"]

    # -- the two halves of one iteration, shared by training, encoder and decoder

    def block_gain(self, recon, t: int):
        """Per-pixel gain (N,1,H,W) for iteration t; 1 without residual scaling."""
        if self.gain is None or t == 0:
            return None
        g = self.gain(recon, t)
        return g.repeat_interleave(STRIDE, 2).repeat_interleave(STRIDE, 3)

    def decode_step(self, bits, recon, state, t: int, active=None):
        """Bits (+-1) of iteration t -> (new reconstruction, new decoder state).

        active: None (every block codes this iteration) or an (N, 1, h, w) 0/1 map of the
        blocks that do; the others get bits 0 and keep their reconstruction (the rnn codec's
        adaptive iteration counts)."""
        gain = self.block_gain(recon, t)
        if active is not None:
            bits = bits * active
        out, state = self.decoder(bits, state)
        mask = None if active is None else active.repeat_interleave(STRIDE, 2).repeat_interleave(STRIDE, 3)
        return self.reconstruct(out, recon, gain, mask), state

    def reconstruct(self, out, recon, gain, mask=None):
        """The new reconstruction from the decoder's output, the reconstruction so far, the
        block gain of this iteration (None: no scaling) and the pixels that update (None: all)."""
        if self.config["reconstruction"] == "oneshot":
            return out if mask is None else recon + (out - recon) * mask
        step = out if gain is None else out / gain
        return recon + (step if mask is None else step * mask)

    def encode_step(self, x, recon, state, t: int):
        """Continuous code in (-1, 1) for iteration t from the current residual."""
        residual = x - recon
        gain = self.block_gain(recon, t)
        if gain is not None:
            residual = residual * gain
        return self.encoder(residual, state)

    def initial_states(self):
        return [None] * 3, [None] * 4

    def forward(self, x, iterations: int, binariser: str = "stochastic", loss: str = "l1"):
        """Training pass: x (N,3,H,W) in [-0.5, 0.5] -> list of per-iteration residual losses.

        binariser: "stochastic" (the paper's) or "hard" (the inference sign, straight-through);
        loss: "l1" (the paper's) or "mse"."""
        binarise = {"stochastic": stochastic_binarise, "hard": straight_through_sign}[binariser]
        enc_state, dec_state = self.initial_states()
        recon = torch.zeros_like(x)
        losses = []
        for t in range(iterations):
            code, enc_state = self.encode_step(x, recon, enc_state, t)
            recon, dec_state = self.decode_step(binarise(code), recon, dec_state, t)
            err = x - recon
            losses.append(err.abs().mean() if loss == "l1" else (err * err).mean())
        return losses


def stochastic_binarise(code):
    """Training binariser: +1 with probability (1+code)/2, straight-through gradient."""
    noise = torch.where(torch.rand_like(code) < (1 + code) / 2, 1.0, -1.0)
    return code + (noise - code).detach()


def straight_through_sign(code):
    """The inference binariser in training: sign, with the gradient of the identity."""
    return code + (hard_binarise(code) - code).detach()


def hard_binarise(code):
    """Inference binariser: sign with 0 -> +1."""
    return torch.where(code >= 0, 1.0, -1.0)
