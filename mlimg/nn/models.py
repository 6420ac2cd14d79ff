"""The networks of the learned codecs.

CAE: Ballé et al. 2017 transforms (4 stride-2 5x5 convs with GDN) + learned
factorised prior, made variable-rate with gain units (Cui et al. 2021): the
latent y is multiplied by a learned per-channel gain g_l before rounding and
by a learned inverse gain before synthesis, one pair per training lambda.
The prior models the *gained* latent, so one set of probability tables covers
every rate.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .entropy_models import FactorizedPrior, gmm_likelihood, quantize_noise, quantize_ste
from .layers import (GDN, ResidualBlock, ResidualBlockStride, ResidualBlockUpsample,
                     SimplifiedAttention, conv, deconv, subpel_conv)

# CompressAI's MSE lambdas for its six bmshj2018 quality points.
DEFAULT_LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483)

STRIDE = 16  # total downsampling factor of the analysis transform
# The config keys that define a network's architecture (the rest of a run's config is training).
ARCH_KEYS = ("arch", "N", "M", "K", "lambdas", "Nf", "Na", "Nfa", "Ns", "Nfs", "groups", "order", "Nc")


def level_blend(position: float, levels: int) -> tuple[int, int, float]:
    """(lo, hi, t): a continuous level position as the blend (1 - t)·level lo + t·level hi of
    two neighbouring trained levels; positions below 0 extrapolate the line through levels
    0 and 1 (t < 0), positions above the top level are clamped to it."""
    position = min(float(position), levels - 1.0)
    lo = min(max(math.floor(position), 0), max(levels - 2, 0))
    hi = min(lo + 1, levels - 1)  # == lo for a single level: t then has no effect
    return lo, hi, position - lo


class CAE(nn.Module):
    """Na: the analysis transform's width (default N); only the encoder runs it (see GMM)."""

    def __init__(self, N: int = 128, M: int = 128, lambdas=DEFAULT_LAMBDAS, Na: int | None = None):
        super().__init__()
        self.config = {"arch": "cae", "N": N, "M": M, "lambdas": list(lambdas)}
        Na = Na or N
        if Na != N:
            self.config["Na"] = Na
        self.g_a = nn.Sequential(
            conv(3, Na), GDN(Na), conv(Na, Na), GDN(Na), conv(Na, Na), GDN(Na), conv(Na, M),
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
        return cls(config["N"], config["M"], config["lambdas"], config.get("Na"))

    def gains(self, position: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Gain and inverse gain at a continuous level position (at most levels-1).

        Between trained levels the gains are interpolated exponentially
        (linearly in the log domain), as in Cui et al. 2021; a position below 0 extends
        the line through levels 0 and 1 (lower rates than any trained level).
        """
        lo, hi, t = level_blend(position, self.log_gain.shape[0])
        log_g = (1 - t) * self.log_gain[lo] + t * self.log_gain[hi]
        log_ig = (1 - t) * self.log_inv_gain[lo] + t * self.log_inv_gain[hi]
        return torch.exp(log_g), torch.exp(log_ig)

    def estimate(self, x: torch.Tensor, position: float):
        """Evaluation with real rounding: (estimated bits from the prior, x_hat)."""
        g, ig = self.gains(position)
        y = torch.round(self.g_a(x) * g.view(1, -1, 1, 1))
        return self.latent_bits(y, y), self.g_s(y * ig.view(1, -1, 1, 1))

    def latent_bits(self, y_noisy: torch.Tensor, y_rounded: torch.Tensor) -> torch.Tensor:
        """Rate of a gained latent as training measures it (noisy y; estimate() passes the
        rounded y twice), also the rate term of encoder-side refinement."""
        return -torch.log2(self.prior.likelihood(y_noisy)).sum()

    def relaxed_bits(self, y_soft: torch.Tensor) -> torch.Tensor:
        """Rate of a soft-rounded latent (annealed refinement, nn/refine.py): the factorised
        prior has no context, so the same as the training rate."""
        return self.latent_bits(y_soft, y_soft)

    def forward(self, x: torch.Tensor, level: int):
        """Training pass at one lambda level: returns (x_hat, likelihoods)."""
        g = torch.exp(self.log_gain[level]).view(1, -1, 1, 1)
        ig = torch.exp(self.log_inv_gain[level]).view(1, -1, 1, 1)
        y = self.g_a(x) * g
        likelihoods = self.prior.likelihood(quantize_noise(y))
        # Mixed quantisation (Minnen & Singh 2020): noise for the rate, rounding for the decoder.
        x_hat = self.g_s(quantize_ste(y) * ig)
        return x_hat, likelihoods


class GMM(nn.Module):
    """Cheng et al. 2020 (attention, residual blocks, sub-pixel upsampling, hyperprior,
    K-component discretised Gaussian mixture) with a checkerboard context model
    (He et al. 2021) instead of the serial one, and gain units for variable rate.

    Checkerboard: latent positions with (row + col) even are *anchors*, coded
    first from the hyperprior alone; the rest are coded second, with a masked
    5x5 context convolution over the decoded anchors. Decoding is therefore two
    passes of the entropy-parameter network, never a per-position loop.

    The hyper-synthesis, context and entropy-parameter networks use plain ReLU
    convolutions so that they can be run in fixed-point integers at decode time
    (see spec/methods/gmm.md); analysis and synthesis stay floating point.

    Widths: N (hyperprior, and both transforms unless told otherwise), Nf (the transforms'
    half-resolution stage), Na and Nfa (the analysis', default N and Nf), Ns and Nfs (the
    synthesis', default N and Nf). Only the encoder runs the analysis, so it may be wider than
    the synthesis without slowing decoding; nn/widen.py grows either of a trained model.
    """

    def __init__(self, N: int = 64, M: int = 96, K: int = 3, lambdas=DEFAULT_LAMBDAS, Nf: int | None = None,
                 Na: int | None = None, Nfa: int | None = None, Ns: int | None = None, Nfs: int | None = None,
                 groups=None, order=None, Nc: int | None = None):
        super().__init__()
        Nf = Nf or N
        Na, Nfa = Na or N, Nfa or Nf
        Ns, Nfs = Ns or N, Nfs or Nf
        self.config = {"arch": "gmm", "N": N, "M": M, "K": K, "lambdas": list(lambdas), "Nf": Nf}
        if (Na, Nfa) != (N, Nf):  # configs of symmetric models stay as they were
            self.config.update(Na=Na, Nfa=Nfa)
        if (Ns, Nfs) != (N, Nf):
            self.config.update(Ns=Ns, Nfs=Nfs)
        self.K, self.M = K, M
        self.g_a = gmm_analysis(M, Na, Nfa)
        self.g_s = gmm_synthesis(M, Ns, Nfs)
        self.h_a = nn.Sequential(
            nn.Conv2d(M, N, 3, padding=1), nn.LeakyReLU(),
            nn.Conv2d(N, N, 5, stride=2, padding=2), nn.LeakyReLU(),
            nn.Conv2d(N, N, 5, stride=2, padding=2),
        )
        # Integer-friendly (ReLU only): run in fixed point by the decoder.
        self.h_s = nn.Sequential(
            nn.ConvTranspose2d(N, N, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(N, N, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(N, 2 * M, 3, padding=1),
        )
        self.context = MaskedCheckerboardConv(M, 2 * M)
        self.entropy_parameters = nn.Sequential(
            nn.Conv2d(4 * M, 3 * M, 1), nn.ReLU(),
            nn.Conv2d(3 * M, 3 * M, 1), nn.ReLU(),
            nn.Conv2d(3 * M, 3 * K * M, 1),
        )
        self.z_prior = FactorizedPrior(N)
        self.channel_context = None
        if groups:
            self.add_channel_context(groups, order, Nc)
        levels = len(lambdas)
        ramp = torch.linspace(-1.0, 1.0, levels).unsqueeze(1).repeat(1, M)
        self.log_gain = nn.Parameter(ramp.clone())
        self.log_inv_gain = nn.Parameter(-ramp.clone())

    @classmethod
    def from_config(cls, config: dict) -> "GMM":
        return cls(config["N"], config["M"], config["K"], config["lambdas"], config.get("Nf"),
                   config.get("Na"), config.get("Nfa"), config.get("Ns"), config.get("Nfs"),
                   config.get("groups"), config.get("order"), config.get("Nc"))

    gains = CAE.gains

    def add_channel_context(self, groups, order, hidden: int | None = None) -> None:
        """Code the latent's channels in groups (ChannelContext); the model computes the same
        function as before until the new branches are trained."""
        self.channel_context = ChannelContext(self.M, self.entropy_parameters[0].out_channels, groups, order, hidden)
        self.config.update(groups=list(self.channel_context.groups), order=list(self.channel_context.order),
                           Nc=self.channel_context.hidden)

    def remove_channel_context(self) -> None:
        """Back to the plain checkerboard model (the branches dropped), to regroup the channels."""
        self.channel_context = None
        for key in ("groups", "order", "Nc"):
            self.config.pop(key, None)

    def mixture(self, hyper: torch.Tensor, y_hat: torch.Tensor):
        """(weights, means, scales), each (B, K, M, H, W), from hyper features and the decoded
        latent (each value sees only what the decoder has decoded before it)."""
        am = anchor_mask(y_hat)
        ctx = self.context(y_hat * am)
        hyper = hyper[..., : y_hat.shape[-2], : y_hat.shape[-1]]  # z is y/4 rounded up
        features = torch.cat([hyper, ctx], dim=1)
        if self.channel_context is None:
            return split_mixture(self.entropy_parameters(features), self.K, self.M)
        return split_mixture(self.channel_context.grouped_parameters(self.entropy_parameters, features, y_hat, am, self.K),
                             self.K, self.M)

    def estimate(self, x: torch.Tensor, position: float):
        """Evaluation with real rounding: (estimated bits from the float models, x_hat)."""
        g, ig = self.gains(position)
        y = torch.round(self.g_a(x) * g.view(1, -1, 1, 1))
        return self.latent_bits(y, y), self.g_s(y * ig.view(1, -1, 1, 1))

    def latent_bits(self, y_noisy: torch.Tensor, y_rounded: torch.Tensor) -> torch.Tensor:
        """Rate of a gained latent and its hyper-latent as training measures it (noisy y; the
        context and z from the rounded y, straight-through; estimate() passes the rounded y
        twice), also the rate term of encoder-side refinement."""
        z = self.h_a(y_rounded)
        z_hat = quantize_ste(z)
        weights, means, scales = self.mixture(self.h_s(z_hat), y_rounded)
        return (-torch.log2(gmm_likelihood(y_noisy, weights, means, scales)).sum()
                - torch.log2(self.z_prior.likelihood(z_hat)).sum())

    def relaxed_bits(self, y_soft: torch.Tensor) -> torch.Tensor:
        """Rate of a soft-rounded latent (annealed refinement, nn/refine.py): the context sees
        it, the hyper-latent follows it rounded and takes no gradient (as in Yang et al. 2020,
        z is what h_a makes of y, not a free variable)."""
        z_hat = torch.round(self.h_a(y_soft.detach()))
        weights, means, scales = self.mixture(self.h_s(z_hat), y_soft)
        return (-torch.log2(gmm_likelihood(y_soft, weights, means, scales)).sum()
                - torch.log2(self.z_prior.likelihood(z_hat)).sum())

    def forward(self, x: torch.Tensor, level: int):
        g = torch.exp(self.log_gain[level]).view(1, -1, 1, 1)
        ig = torch.exp(self.log_inv_gain[level]).view(1, -1, 1, 1)
        y = self.g_a(x).float() * g
        # The entropy model in float32 even under autocast (`mlimg train --amp`): y plus noise
        # and the likelihoods need more than bfloat16's 8 bits, and it is cheap at 1/16 scale.
        with torch.autocast(y.device.type, enabled=False):
            z = self.h_a(y)
            z_lik = self.z_prior.likelihood(quantize_noise(z))
            hyper = self.h_s(quantize_ste(z))
            # Rate on noisy y; the context sees rounded anchors (what the decoder has).
            y_round = quantize_ste(y)
            weights, means, scales = self.mixture(hyper, y_round)
            y_lik = gmm_likelihood(quantize_noise(y), weights, means, scales)
        x_hat = self.g_s(y_round * ig)
        return x_hat, torch.cat([y_lik.flatten(), z_lik.flatten()])


def split_mixture(params: torch.Tensor, K: int, M: int):
    """(weights, means, scales), each (B, K, M, H, W), from entropy parameters (B, 3 K M, H, W)."""
    b, _, h, w = params.shape
    params = params.view(b, 3, K, M, h, w)
    weights = torch.softmax(params[:, 0], dim=1)
    return weights, params[:, 1], torch.exp(params[:, 2]).clamp(0.11, 256.0)


def gmm_analysis(M: int, N: int, Nf: int) -> nn.Sequential:
    """Cheng et al. 2020 analysis; the first (half-resolution) stage has Nf channels.

    Nf < N is for CPU speed: the stages at 1/2 resolution cost as much as all the others
    together at Nf = N (g_s of a Kodak image: 26 GMAC at Nf = N = 64, 15 at Nf = 32)."""
    return nn.Sequential(
        ResidualBlockStride(3, Nf), ResidualBlock(Nf),
        ResidualBlockStride(Nf, N), SimplifiedAttention(N, units=1), ResidualBlock(N),
        ResidualBlockStride(N, N), ResidualBlock(N),
        nn.Conv2d(N, M, 3, stride=2, padding=1), SimplifiedAttention(M, units=1),
    )


def gmm_synthesis(M: int, N: int, Nf: int) -> nn.Sequential:
    """Cheng et al. 2020 synthesis, mirror of gmm_analysis (the last upsampling stage has Nf channels)."""
    return nn.Sequential(
        SimplifiedAttention(M, units=1), ResidualBlock(M),
        ResidualBlockUpsample(M, N), ResidualBlock(N),
        ResidualBlockUpsample(N, N), SimplifiedAttention(N, units=1), ResidualBlock(N),
        ResidualBlockUpsample(N, Nf), ResidualBlock(Nf),
        subpel_conv(Nf, 3, 2),
    )


class ChannelContext(nn.Module):
    """Channel groups on top of the checkerboard (as ELIC's SCCTX, He et al. 2022, but kept
    compatible with a trained checkerboard model).

    The latent's channels, in `order`, are split into `groups`; the decoder codes the anchors of
    group 1, ..., G, then the non-anchors of group 1, ..., G (2·G passes). Every pass computes the
    checkerboard model's parameters (hyper features + the context of the anchors it has: none in
    an anchor pass, all of them in a non-anchor pass); from group 2 on, a branch per pass
    (3x3 conv over the latent with every value not yet decoded zeroed, ReLU, 1x1 conv) adds
    what the earlier groups tell about this one to the entropy-parameter network's first
    pre-activation. The branches' last layers start at zero, so a trained checkerboard model
    gains the groups without changing its rate, and the entropy fit trains them.
    """

    def __init__(self, M: int, width: int, groups, order=None, hidden: int | None = None):
        super().__init__()
        groups = [int(g) for g in groups]
        order = list(range(M)) if order is None else [int(c) for c in order]
        if sorted(order) != list(range(M)) or sum(groups) != M or min(groups) < 1:
            raise ValueError(f"channel groups {groups} with order of {len(order)} channels do not partition M = {M}")
        self.groups, self.order, self.hidden = groups, order, int(hidden or M)
        starts = [sum(groups[:g]) for g in range(len(groups) + 1)]
        self.spans = list(zip(starts[:-1], starts[1:]))
        self.branches = nn.ModuleDict()
        for g in range(1, len(groups)):
            for kind in ("anchors", "others"):
                last = nn.Conv2d(self.hidden, width, 1)
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)
                self.branches[f"{kind}{g}"] = nn.Sequential(nn.Conv2d(M, self.hidden, 3, padding=1), nn.ReLU(), last)
        self.register_buffer("_order", torch.tensor(order), persistent=False)

    def channels(self, g: int) -> torch.Tensor:
        s, e = self.spans[g]
        return self._order[s:e]

    def decoded_before(self, g: int, y: torch.Tensor) -> torch.Tensor:
        """(1, M, 1, 1): 1 for the channels of groups < g."""
        m = torch.zeros(1, y.shape[1], 1, 1, dtype=y.dtype, device=y.device)
        m[0, self._order[: self.spans[g][0]]] = 1
        return m

    def grouped_parameters(self, entropy_parameters: nn.Sequential, features, y, am, K: int) -> torch.Tensor:
        """The entropy-parameter output (B, 3·K·M, H, W) that each latent value gets in its pass."""
        ep0, _, ep1, _, ep2 = entropy_parameters
        M = y.shape[1]
        first = ep0(features)

        def rows_of(pre, rows_g):
            hidden = torch.relu(ep1(torch.relu(pre)))
            return nn.functional.conv2d(hidden, ep2.weight[rows_g], ep2.bias[rows_g])

        rows, parts = [], []
        for g in range(len(self.groups)):
            chans = self.channels(g)
            rows_g = torch.cat([t * K * M + k * M + chans for t in range(3) for k in range(K)])
            if g == 0:  # the first group's two passes are the checkerboard model itself
                parts.append(rows_of(first, rows_g))
            else:
                before = self.decoded_before(g, y)
                anchors = rows_of(first + self.branches[f"anchors{g}"](y * am * before), rows_g)
                others = rows_of(first + self.branches[f"others{g}"](y * (am + (1 - am) * before)), rows_g)
                parts.append(anchors * am + others * (1 - am))
            rows.append(rows_g)
        out = torch.cat(parts, dim=1)
        return torch.zeros_like(out).index_copy(1, torch.cat(rows), out)


def anchor_mask(y: torch.Tensor) -> torch.Tensor:
    """1 at checkerboard anchors ((row + col) even), 0 elsewhere; shape (1, 1, H, W)."""
    h, w = y.shape[-2:]
    rows = torch.arange(h, device=y.device).view(-1, 1)
    cols = torch.arange(w, device=y.device).view(1, -1)
    return ((rows + cols) % 2 == 0).to(y.dtype).view(1, 1, h, w)


class MaskedCheckerboardConv(nn.Conv2d):
    """5x5 conv that only looks at checkerboard anchor neighbours (He et al. 2021)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, 5, padding=2)
        mask = torch.zeros(1, 1, 5, 5)
        mask[..., 0::2, 1::2] = 1
        mask[..., 1::2, 0::2] = 1
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x):
        return nn.functional.conv2d(x, self.weight * self.mask, self.bias, padding=2)


def build(config: dict):
    """Network from its config dict (as stored in the registry and the weights metadata)."""
    arch = config.get("arch")
    if arch == "cae":
        return CAE.from_config(config)
    if arch == "gmm":
        return GMM.from_config(config)
    if arch == "rnn":  # the rnn codec's recurrent networks live in their own module
        from .rnn_models import RNNCodecNet
        return RNNCodecNet.from_config(config)
    if arch == "gan":  # gmm + generative decoder, in its own module
        from .gan_models import GAN
        return GAN.from_config(config)
    raise ValueError(f"unknown network architecture {arch!r}")
