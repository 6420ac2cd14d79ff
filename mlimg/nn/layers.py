"""Layers: GDN/IGDN (Ballé et al. 2016), strided convs, residual blocks, sub-pixel
upsampling and the simplified attention module of Cheng et al. 2020."""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


class GDN(nn.Module):
    """Generalised divisive normalisation: y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2).

    beta and gamma are kept non-negative by squaring the stored parameters.
    ``inverse=True`` gives IGDN (multiply instead of divide), used in synthesis.
    """

    def __init__(self, channels: int, inverse: bool = False):
        super().__init__()
        self.inverse = inverse
        self.beta_sqrt = nn.Parameter(torch.ones(channels))
        self.gamma_sqrt = nn.Parameter(torch.eye(channels) * 0.1**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = self.beta_sqrt**2 + 1e-6
        gamma = self.gamma_sqrt**2
        c = gamma.shape[0]
        norm = F.conv2d(x * x, gamma.view(c, c, 1, 1), beta)
        if not torch.is_grad_enabled():  # inference: in place (at full resolution GDN is memory-bound)
            return (norm.sqrt_() if self.inverse else norm.rsqrt_()).mul_(x)
        return x * torch.sqrt(norm) if self.inverse else x * torch.rsqrt(norm)


def conv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def deconv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    # output_padding makes the output exactly stride * input size
    return nn.ConvTranspose2d(cin, cout, k, stride=stride, padding=k // 2, output_padding=stride - 1)


def subpel_conv(cin: int, cout: int, r: int = 2) -> nn.Sequential:
    """Sub-pixel convolution upsampling by r (Shi et al. 2016)."""
    return nn.Sequential(nn.Conv2d(cin, cout * r * r, 3, padding=1), nn.PixelShuffle(r))


class ResidualBlock(nn.Module):
    """Two 3x3 convs with leaky ReLU and an identity skip."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x))))


class ResidualBlockStride(nn.Module):
    """Downsampling residual block (Cheng et al. 2020): conv s2 + GDN, 1x1 s2 skip."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.gdn = GDN(cout)
        self.skip = nn.Conv2d(cin, cout, 1, stride=2)

    def forward(self, x):
        out = self.gdn(self.conv2(F.leaky_relu(self.conv1(x))))
        return out + self.skip(x)


class ResidualBlockUpsample(nn.Module):
    """Upsampling residual block (Cheng et al. 2020): sub-pixel conv + IGDN, sub-pixel skip."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.up = subpel_conv(cin, cout)
        self.conv = nn.Conv2d(cout, cout, 3, padding=1)
        self.igdn = GDN(cout, inverse=True)
        self.skip = subpel_conv(cin, cout)

    def forward(self, x):
        out = self.igdn(self.conv(F.leaky_relu(self.up(x))))
        return out + self.skip(x)


class _AttentionUnit(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck with a skip, used in both attention branches."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.body = nn.Sequential(
            nn.Conv2d(channels, half, 1), nn.ReLU(),
            nn.Conv2d(half, half, 3, padding=1), nn.ReLU(),
            nn.Conv2d(half, channels, 1),
        )

    def forward(self, x):
        return F.relu(x + self.body(x))


class SimplifiedAttention(nn.Module):
    """Cheng et al. 2020's simplified attention: x + trunk(x) * sigmoid(mask(x))."""

    def __init__(self, channels: int, units: int = 3):
        super().__init__()
        self.trunk = nn.Sequential(*[_AttentionUnit(channels) for _ in range(units)])
        self.mask = nn.Sequential(*[_AttentionUnit(channels) for _ in range(units)], nn.Conv2d(channels, channels, 1))

    def forward(self, x):
        return x + self.trunk(x) * torch.sigmoid(self.mask(x))
