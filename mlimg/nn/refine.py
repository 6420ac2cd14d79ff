"""Encoder-side latent refinement for cae and gmm (the `refine=` save option).

The analysis network predicts the latent in one pass; that prediction is not the latent
that minimises rate + lambda * distortion for *this* image (the "amortisation gap",
Campos et al. 2019, Yang et al. 2020). Refinement starts from it and takes Adam steps on
the latent itself with every network frozen, minimising the training objective. Two
relaxations of rounding, chosen by the step budget:

* few steps: the rate of y with uniform noise (as in training), the distortion of the
  rounded y decoded by the synthesis network (straight-through rounding);
* many steps (ANNEAL_FROM or more): stochastic Gumbel annealing (SGA, Yang et al. 2020),
  each value a random soft mix of its floor and ceiling whose temperature anneals towards
  hard rounding, rate and distortion both measured on it. It needs the steps to anneal
  (behind the first at 20 steps) but keeps gaining where the first stalls (TRAINING.md,
  "Encoder-side refinement").

The decoder is unchanged: the file holds an ordinary rounded latent, coded with the usual
integer entropy model.

Memory stays bounded on large images: the latent is refined tile by tile (the encoder's
tiles, with their context margin); each tile's loss covers its window, only its core moves.
"""
from __future__ import annotations

import functools
import math

import numpy as np

# Adam's first step size in latent units, decayed linearly to 0 over the steps. Measured on
# Kodak (kodim01 q55, kodim08 q12, 20 steps): 0.01 decayed beat a constant 0.005 and 0.02 decayed.
LEARNING_RATE = 0.01
# Annealed refinement (SGA): from this many steps on; its first step size; its temperature,
# annealed geometrically from TAU_MAX to TAU_MIN. Measured with tools/experiments/refine_sga.py
# (gmm, Kodak; TRAINING.md): lr 0.03 beat 0.01 at 100 steps; SGA-20 lost to the first kind.
ANNEAL_FROM = 50
ANNEAL_LEARNING_RATE = 0.03
TAU_MAX, TAU_MIN = 0.5, 0.05


def lambda_at(lambdas, position: float) -> float:
    """The rate-distortion trade-off at a gain position, interpolated (and, below level 0,
    extrapolated) log-linearly like the gains themselves (CAE.gains)."""
    from .models import level_blend

    lo, hi, t = level_blend(position, len(lambdas))
    return math.exp((1 - t) * math.log(lambdas[lo]) + t * math.log(lambdas[hi]))


def refine_latent(net, x: np.ndarray, y: np.ndarray, position: float, inv_gain, steps: int,
                  lr: float | None = None, seed: int = 0, anneal: bool | None = None,
                  relaxed_bits=None) -> np.ndarray:
    """Refined float latent (M, lh, lw) for the padded image x (H, W, 3) in [0, 1].

    net: a CAE or GMM (anything with g_s, latent_bits, relaxed_bits and config["lambdas"]);
    y: the analysis network's gained latent (what the encoder would otherwise round);
    inv_gain: the inverse gains of `position`; lr: the first step size (decays linearly to 0;
    None: the default of the kind); anneal: SGA (None: from ANNEAL_FROM steps on);
    relaxed_bits: the annealed kind's rate of a soft latent (1, M, h, w) (None: net.relaxed_bits,
    the training prior's; cae passes its coder's, `TableRate`). Deterministic for a given seed and machine.
    """
    import torch

    from ..codecs.cae import STRIDE, _spans

    if anneal is None:
        anneal = steps >= ANNEAL_FROM
    if lr is None:
        lr = ANNEAL_LEARNING_RATE if anneal else LEARNING_RATE
    if anneal:
        loss_of = functools.partial(_annealed_loss, relaxed_bits=relaxed_bits or net.relaxed_bits)
    else:
        loss_of = _straight_through_loss
    lam = lambda_at(net.config["lambdas"], position) * 255.0**2
    ig = inv_gain.detach().clone().view(1, -1, 1, 1)  # clone: may be an inference-mode tensor
    out = np.array(y, dtype=np.float32, copy=True)
    _, lh, lw = out.shape
    gen = torch.Generator().manual_seed(seed)
    frozen = [p for p in net.parameters() if p.requires_grad]
    for p in frozen:  # gradients for the latent only
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            for y0, y1, wy0, wy1 in _spans(lh):
                for x0, x1, wx0, wx1 in _spans(lw):
                    window = torch.from_numpy(out[:, wy0:wy1, wx0:wx1].copy())[None]
                    target = torch.from_numpy(np.ascontiguousarray(
                        x[wy0 * STRIDE : wy1 * STRIDE, wx0 * STRIDE : wx1 * STRIDE])).permute(2, 0, 1)[None]
                    core = torch.zeros_like(window)
                    core[..., y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0] = 1.0
                    latent = window.clone().requires_grad_(True)
                    opt = torch.optim.Adam([latent], lr=lr)
                    pixels = target.shape[-2] * target.shape[-1]
                    for step in range(steps):
                        opt.param_groups[0]["lr"] = lr * (1 - step / steps)
                        bits, decoded = loss_of(net, latent, ig, step / max(steps - 1, 1), gen)
                        loss = bits / pixels + lam * torch.mean((decoded - target) ** 2)
                        opt.zero_grad()
                        loss.backward()
                        latent.grad *= core  # the margin belongs to the neighbouring tiles
                        opt.step()
                    done = latent.detach()[0].numpy()
                    out[:, y0:y1, x0:x1] = done[:, y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0]
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return out


def _straight_through_loss(net, latent, ig, progress: float, gen):
    """(bits, decoded): rate of the noisy latent, distortion of the rounded one."""
    import torch

    from .entropy_models import quantize_ste

    rounded = quantize_ste(latent)
    noise = torch.rand(latent.shape, generator=gen) - 0.5
    bits = net.latent_bits(latent + noise, rounded)
    # channels-last: the synthesis runs ~1.2x faster forward and backward in it
    return bits, net.g_s((rounded * ig).contiguous(memory_format=torch.channels_last))


def _annealed_loss(net, latent, ig, progress: float, gen, relaxed_bits):
    """(bits, decoded) of the latent soft-rounded at the temperature of `progress` (0..1)."""
    import torch

    soft = sga_round(latent, TAU_MAX * (TAU_MIN / TAU_MAX) ** progress, gen)
    return relaxed_bits(soft), net.g_s((soft * ig).contiguous(memory_format=torch.channels_last))


def sga_round(y, tau: float, gen):
    """Stochastic Gumbel annealing's relaxed rounding of y: floor or ceiling, mixed by a
    Gumbel-softmax at temperature tau whose logits favour the nearer integer (-atanh of the
    distance, Yang et al. 2020 eq. 5); tends to hard rounding as tau -> 0."""
    import torch

    lo = torch.floor(y).detach()
    d = torch.stack([y - lo, lo + 1 - y], -1).clamp(-1 + 1e-5, 1 - 1e-5)
    logits = -torch.atanh(d) / tau
    u = torch.rand(logits.shape, generator=gen).clamp(1e-10, 1 - 1e-10)
    p = torch.softmax((logits - torch.log(-torch.log(u))) / tau, -1)
    return lo + p[..., 1]


class TableRate:
    """The rate of a soft latent under cae's context-adaptive coder (nn/latent_context.py),
    for annealed refinement: each value's context comes from the rounded latent (as the coder
    sees it, before adaptation), its bits are those of its floor and ceiling in that
    context's table, mixed linearly by where the soft value lies between them.

    The training prior's rate misleads long refinements of a context-coded latent: on
    kodim01 q55 (100 steps) it ends with 3.8 % more bits than no refinement, this one with
    3.2 % fewer and +0.2 dB (TRAINING.md, "Encoder-side refinement")."""

    def __init__(self, model, quality: int | None = None, counts: list | None = None):
        """The tables of `quality`, or the per-channel `counts` given instead."""
        import torch

        from .latent_context import code_lengths

        self.model = model
        lengths = code_lengths(model.counts(quality) if counts is None else counts)
        self.width = lengths.shape[2]
        self.lengths = torch.from_numpy(lengths.astype(np.float32)).reshape(-1)
        self.ranges = torch.from_numpy(np.asarray(model.ranges, np.int64)).view(-1, 1, 1)

    def _column(self, v):
        """Integer values (M, h, w) -> their symbol's column: v + r, or the escape 2r + 1."""
        import torch

        return torch.where(v.abs() > self.ranges, 2 * self.ranges + 1, v + self.ranges).long()

    def __call__(self, soft, rounded=None):
        """Bits of soft (1, M, h, w); the contexts from `rounded` (same shape) if given, else from soft rounded."""
        import torch

        from .latent_context import CONTEXTS, contexts

        values = soft[0]
        lo = torch.floor(values).detach()
        rounded = torch.round(values if rounded is None else rounded[0]).detach()
        ctx = torch.from_numpy(contexts(rounded.numpy().astype(np.int64), self.model))
        channel = torch.arange(values.shape[0]).view(-1, 1, 1)
        base = (channel * CONTEXTS + ctx) * self.width
        at_lo = self.lengths[base + self._column(lo)]
        at_hi = self.lengths[base + self._column(lo + 1)]
        w = values - lo
        return ((1 - w) * at_lo + w * at_hi).sum()
