"""The `gan` method's networks and losses: a HiFiC-style generative decoder (Mentzer et al. 2020)
on top of a frozen `gmm` codec, with a decoder-side realism knob beta (Agustsson et al. 2023).

GAN = a complete GMM (analysis, hyperprior, context, entropy parameters, gains, priors: all copied
from a trained gmm model and frozen, so gan files share gmm's bitstream and rates) plus a
`generator`, the decoder that is trained as a conditional GAN.

Generator = GMM.g_s's exact layer list (so it starts as the trained MSE decoder) plus
* FiLM (per-channel scale and shift) after four blocks, computed from beta by a tiny MLP, and
* a texture branch (two 3x3 convs at half resolution) whose output is multiplied by beta.
Both end in zero-initialised layers: right after `init_from_synthesis` the generator reproduces
g_s exactly at every beta, and training moves it away only as far as the losses ask.

Pretrained perceptual networks (VGG/LPIPS) are not available, so the perceptual terms are the
discriminator's feature matching, MS-SSIM and a Laplacian-pyramid L1 (see the loss functions).
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from .models import DEFAULT_LAMBDAS, GMM, gmm_synthesis

# Indices in the g_s layer list after which the generator applies FiLM, with their channel counts
# given as "M" (latent width), "N" (transform width) or "Nf" (width of the last stage).
FILM_AFTER = ((1, "M"), (3, "N"), (6, "N"), (8, "Nf"))


class GAN(GMM):
    """A gmm codec whose decoder is `self.generator(y_hat * inv_gain, realism)`.

    The GMM part keeps GMM's state-dict keys, so `load_state_dict(gmm_state, strict=False)`
    fills everything except `generator.*`. `realism=False` builds a generator without the beta
    input (plain HiFiC; the realism argument is then ignored).
    """

    # Shipped gan files omit the base's g_s (the generator was initialised from it and replaces it).
    optional_weights = ("g_s.",)

    def __init__(self, N: int = 64, M: int = 96, K: int = 3, lambdas=DEFAULT_LAMBDAS, realism: bool = True,
                 Nf: int | None = None, Na: int | None = None, Nfa: int | None = None,
                 Ns: int | None = None, Nfs: int | None = None):
        super().__init__(N, M, K, lambdas, Nf, Na, Nfa, Ns, Nfs)
        Nf = self.config["Nf"]
        self.config = dict(self.config, arch="gan", realism=bool(realism))
        self.generator = Generator(M, N, realism=realism, Nf=Nf)

    @classmethod
    def from_config(cls, config: dict) -> "GAN":
        return cls(config["N"], config["M"], config["K"], config["lambdas"], config.get("realism", True), config.get("Nf"),
                   config.get("Na"), config.get("Nfa"), config.get("Ns"), config.get("Nfs"))

    def gmm_state_dict(self) -> dict:
        """The frozen gmm part's tensors (every key except generator.*)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("generator.")}

    def decode_latent(self, x: torch.Tensor, position: float, realism) -> torch.Tensor:
        """Evaluation helper: real rounding at a rate position, then the generator."""
        g, ig = self.gains(position)
        y = torch.round(self.g_a(x) * g.view(1, -1, 1, 1))
        return self.generator(y * ig.view(1, -1, 1, 1), realism)


class Generator(nn.Module):
    def __init__(self, M: int, N: int, realism: bool = True, hidden: int = 64, Nf: int | None = None):
        super().__init__()
        Nf = Nf or N
        # Exactly GMM.g_s's layers (same indices, so g_s's state dict loads into `body`).
        self.body = gmm_synthesis(M, N, Nf)
        self.realism = bool(realism)
        if self.realism:
            widths = {"M": M, "N": N, "Nf": Nf}
            self.film_after = [i for i, _ in FILM_AFTER]
            self.beta_mlp = nn.Sequential(nn.Linear(3, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
            self.film = nn.ModuleList(nn.Linear(hidden, 2 * widths[w]) for _, w in FILM_AFTER)
            # Texture branch at half resolution (before the last sub-pixel conv), gated by beta.
            self.texture = nn.Sequential(nn.Conv2d(Nf, Nf, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(Nf, Nf, 3, padding=1))
            for layer in (*self.film, self.texture[-1]):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    @torch.no_grad()
    def init_from_synthesis(self, g_s: nn.Sequential) -> None:
        """Copy a trained GMM.g_s into the generator's body (the beta layers keep their zero init)."""
        self.body.load_state_dict(g_s.state_dict(), strict=True)

    def _beta(self, realism, batch: int, ref: torch.Tensor) -> torch.Tensor:
        beta = torch.as_tensor(realism, dtype=ref.dtype, device=ref.device).reshape(-1)
        if not isinstance(realism, torch.Tensor) and not 0.0 <= float(beta.min()) <= float(beta.max()) <= 1.0:
            raise ValueError(f"realism must lie in [0, 1], got {realism!r}")
        if beta.numel() == 1:
            beta = beta.expand(batch)
        if beta.numel() != batch:
            raise ValueError(f"realism has {beta.numel()} values for a batch of {batch}")
        return beta

    def forward(self, y_hat: torch.Tensor, realism) -> torch.Tensor:
        """y_hat (B, M, h, w), already multiplied by the inverse gain; realism: float or (B,) in [0, 1]."""
        if not self.realism:
            return self.body(y_hat)
        beta = self._beta(realism, y_hat.shape[0], y_hat)
        # Fourier-ish features so the tiny MLP can bend its response along beta.
        emb = self.beta_mlp(torch.stack([beta, torch.sin(math.pi * beta), torch.cos(math.pi * beta)], dim=1))
        x = y_hat
        films = iter(self.film)
        last = len(self.body) - 1
        for i, layer in enumerate(self.body):
            if i == last:  # texture residual before the final sub-pixel conv
                x = x + beta.view(-1, 1, 1, 1) * self.texture(x)
            x = layer(x)
            if i in self.film_after:
                scale, shift = next(films)(emb).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
                x = x * (1 + scale) + shift
        return x


class Discriminator(nn.Module):
    """HiFiC's conditional patch discriminator, slimmed for CPU training.

    The latent (B, M, h, w) goes through a 1x1 conv to 12 channels and is upsampled (nearest) to
    the image size; image and latent features are concatenated and go through four stride-2 4x4
    spectral-normalised convs with LeakyReLU(0.2) and a 1x1 conv giving one logit per patch.
    """

    def __init__(self, M: int, width: int = 32, latent_channels: int = 12):
        super().__init__()
        self.latent = nn.Conv2d(M, latent_channels, 1)
        sn = nn.utils.parametrizations.spectral_norm
        chans = [3 + latent_channels, width, 2 * width, 4 * width, 8 * width]
        self.convs = nn.ModuleList(sn(nn.Conv2d(a, b, 4, stride=2, padding=1)) for a, b in zip(chans[:-1], chans[1:]))
        self.out = sn(nn.Conv2d(chans[-1], 1, 1))

    def forward(self, image: torch.Tensor, y_hat: torch.Tensor):
        """(logits (B, 1, H/16, W/16), [features after each of the four stride-2 convs])."""
        lat = F.interpolate(F.leaky_relu(self.latent(y_hat), 0.2), size=image.shape[-2:], mode="nearest")
        x = torch.cat([image, lat], dim=1)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            features.append(x)
        return self.out(x), features


# ---------------------------------------------------------------- losses
# All image losses take (B, 3, H, W) tensors in [0, 1] and return per-sample values (B,),
# so the trainer can weight the adversarial terms by each sample's beta.


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN loss for the generator: softplus(-D(fake)), mean over patches."""
    return F.softplus(-fake_logits).flatten(1).mean(1)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN loss for the discriminator (scalar)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def feature_matching_loss(real_features, fake_features) -> torch.Tensor:
    """Mean over discriminator layers of the L1 distance between real and fake features."""
    per_layer = [(f - r.detach()).abs().flatten(1).mean(1) for r, f in zip(real_features, fake_features)]
    return torch.stack(per_layer).mean(0)


_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    k = _BINOMIAL.to(x)
    kernel = (k[:, None] * k[None, :]).expand(c, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), kernel, groups=c)


def laplacian_pyramid(x: torch.Tensor, levels: int = 4) -> list[torch.Tensor]:
    """`levels` band-pass images (fine to coarse) plus the final low-pass image."""
    bands = []
    for _ in range(levels):
        if min(x.shape[-2:]) < 2:
            break
        low = _blur(x)[..., ::2, ::2]
        up = _blur(F.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=False))
        bands.append(x - up)
        x = low
    return bands + [x]


def laplacian_l1(x: torch.Tensor, x_hat: torch.Tensor, levels: int = 4) -> torch.Tensor:
    """Laplacian-pyramid L1 (Bojanowski et al. 2018): sum over levels of the mean absolute band error.

    With the paper's 2^(2j) level weights, per-pixel means of every level count equally.
    """
    return sum((a - b).abs().flatten(1).mean(1) for a, b in zip(laplacian_pyramid(x, levels), laplacian_pyramid(x_hat, levels)))


MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gauss_window(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    coords = torch.arange(size, dtype=like.dtype, device=like.device) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _ssim_and_cs(x, y, win, data_range: float):
    """Per-sample SSIM and contrast-structure terms with a separable 'valid' Gaussian window."""
    c = x.shape[1]
    wh = win.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    wv = win.view(1, 1, -1, 1).expand(c, 1, -1, 1)

    def filt(t):
        return F.conv2d(F.conv2d(t, wh, groups=c), wv, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = filt(x), filt(y)
    sxx = filt(x * x) - mx * mx
    syy = filt(y * y) - my * my
    sxy = filt(x * y) - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    ssim = (2 * mx * my + c1) / (mx * mx + my * my + c1) * cs
    return ssim.flatten(2).mean(2), cs.flatten(2).mean(2)  # (B, C)


def ms_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win_size: int = 11) -> torch.Tensor:
    """Differentiable MS-SSIM per sample (B,), as pytorch_msssim computes it, for any crop size.

    pytorch_msssim refuses images whose shorter side is <= 160 px (5 scales with an 11-tap
    window). Here the number of scales is the largest (up to 5) for which the coarsest scale
    is still at least one window wide, and the standard weights of those scales are
    renormalised; with one scale this is plain SSIM. For sides > 160 it equals pytorch_msssim.
    """
    side = min(x.shape[-2:])
    if side < win_size:  # tiny inputs: shrink the window (odd) rather than fail
        win_size = max(1, side - (1 - side % 2))
    scales = 1
    while scales < 5 and -(-side // 2**scales) >= win_size:  # size after `scales` poolings
        scales += 1
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=x.dtype, device=x.device)
    weights = weights / weights.sum()
    win = _gauss_window(win_size, 1.5, x)
    values = []
    for i in range(scales):
        ssim, cs = _ssim_and_cs(x, y, win, data_range)
        values.append(F.relu(cs) if i < scales - 1 else F.relu(ssim))
        if i < scales - 1:
            pad = [s % 2 for s in x.shape[-2:]]
            x = F.avg_pool2d(x, 2, padding=pad)
            y = F.avg_pool2d(y, 2, padding=pad)
    stacked = torch.stack(values, dim=0)  # (scales, B, C)
    # Small epsilon: relu(cs)**w has an infinite derivative at 0 for w < 1.
    return torch.prod((stacked + 1e-8) ** weights.view(-1, 1, 1), dim=0).mean(1)
