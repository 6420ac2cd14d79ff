"""Encoder-side latent refinement for cae and gmm (the `refine=` save option).

The analysis network predicts the latent in one pass; that prediction is not the latent
that minimises rate + lambda * distortion for *this* image (the "amortisation gap",
Campos et al. 2019, Yang et al. 2020). Refinement starts from it and takes a few Adam
steps on the latent itself with every network frozen, minimising the training objective:
the rate of y with uniform noise (as in training), and the distortion of the rounded y
decoded by the synthesis network (straight-through rounding). The decoder is unchanged:
the file holds an ordinary rounded latent, coded with the usual integer entropy model.

Memory stays bounded on large images: the latent is refined tile by tile (the encoder's
tiles, with their context margin); each tile's loss covers its window, only its core moves.
"""
from __future__ import annotations

import math

import numpy as np

# Adam's first step size in latent units, decayed linearly to 0 over the steps. Measured on
# Kodak (kodim01 q55, kodim08 q12, 20 steps): 0.01 decayed beat a constant 0.005 and 0.02 decayed.
LEARNING_RATE = 0.01


def lambda_at(lambdas, position: float) -> float:
    """The rate-distortion trade-off at a gain position, interpolated (and, below level 0,
    extrapolated) log-linearly like the gains themselves (CAE.gains)."""
    from .models import level_blend

    lo, hi, t = level_blend(position, len(lambdas))
    return math.exp((1 - t) * math.log(lambdas[lo]) + t * math.log(lambdas[hi]))


def refine_latent(net, x: np.ndarray, y: np.ndarray, position: float, inv_gain, steps: int,
                  lr: float = LEARNING_RATE, seed: int = 0) -> np.ndarray:
    """Refined float latent (M, lh, lw) for the padded image x (H, W, 3) in [0, 1].

    net: a CAE or GMM (anything with g_s, latent_bits and config["lambdas"]);
    y: the analysis network's gained latent (what the encoder would otherwise round);
    inv_gain: the inverse gains of `position`; lr: the first step size (decays linearly to 0).
    Deterministic for a given seed and machine.
    """
    import torch

    from ..codecs.cae import STRIDE, _spans
    from .entropy_models import quantize_ste

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
                        rounded = quantize_ste(latent)
                        noise = torch.rand(latent.shape, generator=gen) - 0.5
                        bits = net.latent_bits(latent + noise, rounded)
                        # channels-last: the synthesis runs ~1.2x faster forward and backward in it
                        decoded = net.g_s((rounded * ig).contiguous(memory_format=torch.channels_last))
                        mse = torch.mean((decoded - target) ** 2)
                        loss = bits / pixels + lam * mse
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
