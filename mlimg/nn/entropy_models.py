"""Learned entropy models used during training, and the float pmfs they define.

Training uses these in float32. The range coder never sees their outputs
directly: integer.py turns them into integer frequency tables (cae) or
fixed-point parameters (gmm) first.
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

_LIKELIHOOD_FLOOR = 1e-9


def quantize_noise(x: torch.Tensor) -> torch.Tensor:
    """Additive uniform noise in [-0.5, 0.5): the differentiable proxy for rounding."""
    return x + torch.empty_like(x).uniform_(-0.5, 0.5)


def quantize_ste(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


class FactorizedPrior(nn.Module):
    """Ballé et al. 2018 (appendix 6.1) non-parametric density, one per channel.

    The cumulative c(x) = sigmoid(f_K(...f_1(x))) of each channel is a small
    monotone MLP (non-negative matrices via softplus, tanh "factors").
    The probability of an integer bin is c(x + 1/2) - c(x - 1/2).
    """

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        self.channels = channels
        dims = (1,) + tuple(filters) + (1,)
        scale = init_scale ** (1 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(filters) + 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.empty(channels, dims[i + 1], 1).uniform_(-0.5, 0.5)))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))

    def logits_cumulative(self, x: torch.Tensor) -> torch.Tensor:
        """x: (C, 1, N) -> logits of c(x), same shape."""
        for i, matrix in enumerate(self.matrices):
            x = torch.matmul(F.softplus(matrix), x) + self.biases[i]
            if i < len(self.factors):
                x = x + torch.tanh(self.factors[i]) * torch.tanh(x)
        return x

    def bin_probs(self, x: torch.Tensor) -> torch.Tensor:
        """x: (C, 1, N) bin centres -> probability mass of [x-1/2, x+1/2] per channel."""
        lower = self.logits_cumulative(x - 0.5)
        upper = self.logits_cumulative(x + 0.5)
        # Subtract in the tail where the sigmoids are far from saturation (numerical accuracy).
        sign = -torch.sign(lower + upper).detach()
        return torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))

    def likelihood(self, y: torch.Tensor) -> torch.Tensor:
        """y: (B, C, H, W) (noisy or rounded) -> likelihood per element."""
        b, c, h, w = y.shape
        flat = y.permute(1, 0, 2, 3).reshape(c, 1, -1)
        p = self.bin_probs(flat).reshape(c, b, h, w).permute(1, 0, 2, 3)
        return p.clamp_min(_LIKELIHOOD_FLOOR)


def _std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(-x * (2**-0.5))


def gaussian_likelihood(y: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Mass of the unit bin around y under N(mean, scale^2)."""
    scale = scale.clamp_min(0.11)
    v = torch.abs(y - mean)  # symmetric: evaluate in the lower tail for accuracy
    p = _std_normal_cdf((0.5 - v) / scale) - _std_normal_cdf((-0.5 - v) / scale)
    return p.clamp_min(_LIKELIHOOD_FLOOR)


def gmm_likelihood(y: torch.Tensor, weights: torch.Tensor, means: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Discretised Gaussian mixture (Cheng et al. 2020).

    y: (B, C, H, W); weights/means/scales: (B, K, C, H, W), weights softmaxed over K.
    """
    p = sum(
        weights[:, k] * gaussian_likelihood(y, means[:, k], scales[:, k]) for k in range(weights.shape[1])
    )
    return p.clamp_min(_LIKELIHOOD_FLOOR)


def bits(likelihoods: torch.Tensor) -> torch.Tensor:
    return -torch.log2(likelihoods).sum()
