"""Encoder-side choice of gmm's hyper-latent z for a latent y that is already fixed.

z does not reach the pixels: the decoder's image is a function of y alone, and z only sets
the probabilities y is coded with. The hyper-analysis h_a(y) predicts a good z in one pass;
a few gradient steps on z itself against the exact bits of *this* y, bits(z) + bits(y | z),
do better (TRAINING.md, "Choosing the hyper-latent per image"). The file format and the
decoder are unchanged: the file holds another integer z.

With y fixed, everything in the entropy model except the hyper-synthesis' output is a
constant: the checkerboard context, the channel groups' branches and their share of the
entropy-parameter network's first layer are computed once, and each step runs only h_s, the
rest of that first layer and the two 1x1 layers after it, at each latent position once per
group (the pass that codes it).
"""
from __future__ import annotations

import torch
from torch import nn

from .entropy_models import gmm_likelihood, quantize_ste
from .models import anchor_mask

# Adam's first step size in z units, decayed linearly to 0 over the steps (the codec passes its
# own per step count: codecs/gmm.py HYPER_STEPS; TRAINING.md)
LEARNING_RATE = 0.05


class HyperObjective:
    """bits(z) + bits(y | z) of one rounded latent y (1, M, H, W) under a GMM's float entropy model."""

    def __init__(self, net, y: torch.Tensor):
        self.net, self.shape = net, y.shape[-2:]
        M, K = net.M, net.K
        ep0, _, ep1, _, ep2 = net.entropy_parameters
        self.w_hyper = ep0.weight[:, : 2 * M, 0, 0]
        self.w1, self.b1 = ep1.weight[:, :, 0, 0], ep1.bias[:, None]
        with torch.no_grad():
            am = anchor_mask(y)
            ctx = net.context(y * am)
            # positions reordered once, anchors first, so that each pass reads a slice
            anchors = torch.nonzero(am.flatten()).flatten()
            self.order = torch.cat([anchors, torch.nonzero(1 - am.flatten()).flatten()])
            kinds = {"anchors": slice(0, len(anchors)), "others": slice(len(anchors), None)}
            # the context's share of the first layer, its bias included: (3M, H*W)
            base = nn.functional.conv2d(ctx, ep0.weight[:, 2 * M :], ep0.bias)[0].flatten(1)[:, self.order]
            flat_y = y[0].flatten(1)[:, self.order]
            cc = net.channel_context
            pre, self.passes, self.sizes, values = [], [], [], []
            for g in range(1 if cc is None else len(cc.groups)):
                chans = torch.arange(M) if cc is None else cc.channels(g)
                rows = torch.cat([t * K * M + k * M + chans for t in range(3) for k in range(K)])
                for kind, cols in kinds.items():
                    part = base[:, cols]
                    if cc is not None and g > 0:
                        before = cc.decoded_before(g, y)
                        seen = y * am * before if kind == "anchors" else y * (am + (1 - am) * before)
                        part = part + cc.branches[f"{kind}{g}"](seen)[0].flatten(1)[:, self.order][:, cols]
                    pre.append(part)
                    values.append(flat_y[chans][:, cols].reshape(-1))
                    self.passes.append((ep2.weight[rows, :, 0, 0], ep2.bias[rows, None]))
                    self.sizes.append(part.shape[1])
            self.pre = torch.cat(pre, dim=1)
            self.values = torch.cat(values)[None, None, :, None]

    def bits(self, z: torch.Tensor) -> torch.Tensor:
        """Bits of y given z (1, N, h, w) plus z's own bits under the z prior."""
        net, K = self.net, self.net.K
        hyper = net.h_s(z)[0, :, : self.shape[0], : self.shape[1]].flatten(1)[:, self.order]
        first = self.w_hyper @ hyper
        # every pass's first-layer input side by side (a group's two passes cover the positions
        # in their order): one product with the second layer
        first = first.repeat(1, len(self.passes) // 2)
        hidden = torch.relu(self.w1 @ torch.relu(first + self.pre) + self.b1)
        params = [(w2 @ h + b2).view(3, K, -1)
                  for (w2, b2), h in zip(self.passes, hidden.split(self.sizes, dim=1))]
        params = torch.cat(params, dim=2)[None, :, :, :, None]  # (1, 3, K, values, 1)
        weights = torch.softmax(params[:, 0], dim=1)
        scales = torch.exp(params[:, 2]).clamp(0.11, 256.0)
        rate = -torch.log2(net.z_prior.likelihood(z)).sum()
        return rate - torch.log2(gmm_likelihood(self.values, weights, params[:, 1], scales)).sum()


def refine_hyper(net, y: torch.Tensor, z: torch.Tensor, steps: int, lr: float = LEARNING_RATE) -> torch.Tensor:
    """The integer z (1, N, h, w) to code with the rounded latent y (1, M, H, W): the one of
    fewest bits among h_a's rounded z and `steps` Adam steps from it. Each step measures the
    exact bits at the rounded z and takes the gradient straight through the rounding."""
    best_z = torch.round(z)
    if steps <= 0:
        return best_z
    params = list(net.parameters())
    trainable = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        with torch.enable_grad():
            objective = HyperObjective(net, y)
            free = z.detach().clone().requires_grad_(True)
            opt = torch.optim.Adam([free], lr=lr)
            best = None
            for step in range(steps + 1):
                rounded = quantize_ste(free)
                loss = objective.bits(rounded)
                if best is None or loss.item() < best:
                    best, best_z = loss.item(), rounded.detach().clone()
                if step == steps:
                    break
                opt.param_groups[0]["lr"] = lr * (1 - step / steps)
                opt.zero_grad()
                loss.backward()
                opt.step()
        return best_z
    finally:
        for p, t in zip(params, trainable):
            p.requires_grad_(t)
