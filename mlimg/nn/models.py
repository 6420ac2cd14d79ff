"""The networks of the learned codecs.

CAE: Ballé et al. 2017 transforms (4 stride-2 5x5 convs with GDN) + learned
factorised prior, made variable-rate with gain units (Cui et al. 2021): the
latent y is multiplied by a learned per-channel gain g_l before rounding and
by a learned inverse gain before synthesis, one pair per training lambda.
The prior models the *gained* latent, so one set of probability tables covers
every rate.
"""
from __future__ import annotations

import torch
from torch import nn

from .entropy_models import FactorizedPrior, quantize_noise, quantize_ste
from .layers import GDN, conv, deconv

# CompressAI's MSE lambdas for its six bmshj2018 quality points.
DEFAULT_LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483)

STRIDE = 16  # total downsampling factor of the analysis transform


class CAE(nn.Module):
    def __init__(self, N: int = 128, M: int = 128, lambdas=DEFAULT_LAMBDAS):
        super().__init__()
        self.config = {"arch": "cae", "N": N, "M": M, "lambdas": list(lambdas)}
        self.g_a = nn.Sequential(
            conv(3, N), GDN(N), conv(N, N), GDN(N), conv(N, N), GDN(N), conv(N, M),
        )
        self.g_s = nn.Sequential(
            deconv(M, N), GDN(N, inverse=True), deconv(N, N), GDN(N, inverse=True),
            deconv(N, N), GDN(N, inverse=True), deconv(N, 3),
        )
        self.prior = FactorizedPrior(M)
        # Log-gains, one row per lambda; initialised increasing so rate grows with the index.
        levels = len(lambdas)
        ramp = torch.linspace(-1.0, 1.0, levels).unsqueeze(1).repeat(1, M)
        self.log_gain = nn.Parameter(ramp.clone())
        self.log_inv_gain = nn.Parameter(-ramp.clone())

    @classmethod
    def from_config(cls, config: dict) -> "CAE":
        return cls(config["N"], config["M"], config["lambdas"])

    def gains(self, position: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Gain and inverse gain at a continuous level position in [0, levels-1].

        Between trained levels the gains are interpolated exponentially
        (linearly in the log domain), as in Cui et al. 2021.
        """
        levels = self.log_gain.shape[0]
        position = min(max(float(position), 0.0), levels - 1.0)
        lo = min(int(position), levels - 2) if levels > 1 else 0
        t = position - lo
        hi = min(lo + 1, levels - 1)
        log_g = (1 - t) * self.log_gain[lo] + t * self.log_gain[hi]
        log_ig = (1 - t) * self.log_inv_gain[lo] + t * self.log_inv_gain[hi]
        return torch.exp(log_g), torch.exp(log_ig)

    def forward(self, x: torch.Tensor, level: int):
        """Training pass at one lambda level: returns (x_hat, likelihoods)."""
        g = torch.exp(self.log_gain[level]).view(1, -1, 1, 1)
        ig = torch.exp(self.log_inv_gain[level]).view(1, -1, 1, 1)
        y = self.g_a(x) * g
        likelihoods = self.prior.likelihood(quantize_noise(y))
        # Mixed quantisation (Minnen & Singh 2020): noise for the rate, rounding for the decoder.
        x_hat = self.g_s(quantize_ste(y) * ig)
        return x_hat, likelihoods


def build(config: dict):
    """Network from its config dict (as stored in the registry and the weights metadata)."""
    arch = config.get("arch")
    if arch == "cae":
        return CAE.from_config(config)
    raise ValueError(f"unknown network architecture {arch!r}")
