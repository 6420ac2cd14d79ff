"""Experiment: a channel-conditioned checkerboard context for gmm, warm-started from the shipped
entropy model so that it starts as exactly the same function.

    python tools/experiments/gmm_channel_groups.py CACHE STEPS GROUPS [HIDDEN] [LR]
    e.g. python tools/experiments/gmm_channel_groups.py runs/gmm-fit2/latents.safetensors 3000 16,16,32,32

CACHE: a fit's RUN/latents.safetensors of the default weights' analysis (see gmm_entropy_width.py).
THREADS (environment, default 2). MODEL (environment, default: the default gmm): a registered gmm
without channel groups (the default had none until gmm-v1-8801dc99, which this experiment led to:
the trainer mode `mlimg train gmm --entropy-fit --groups`, TRAINING.md "Channel groups").
STRIP_GROUPS=1: use MODEL's checkerboard part alone (its channel groups removed) as the start.

The latent's channels, sorted by their bits on the cache (most first), are split into GROUPS and
decoded in 2·G passes: the anchors of group 1, 2, ..., G, then the non-anchors of group 1, ..., G.
Each pass uses the shipped checkerboard model (hyper features + the 5x5 context of all anchors,
which a non-anchor pass always has) and, from group 2 on, a branch per pass over everything
decoded so far (3x3 conv over the latent with the unknown values zeroed, ReLU, 1x1 conv) whose
output is added to the entropy-parameter network's first pre-activation. The branches' last
convolution starts at zero: at step 0 the model is the shipped one. Then the whole thing (branches
at LR, default 5e-4, context and entropy parameters at 1e-4) is fitted like `--entropy-fit`: exact
bits of rounded latents at random gain positions, cosine schedule.
Prints the exact bits (float models) of kodim01/08/23 at positions -2 / 0 / 2.5 / 5 relative to
the start, and the time of the step.
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F

from mlimg.nn import store
from mlimg.nn.entropy_models import gmm_likelihood
from mlimg.nn.models import anchor_mask, split_mixture
from mlimg.train_entropy import EVAL_POSITIONS, gained, kodak_raw, positions_range

torch.set_num_threads(int(os.environ.get("THREADS", 2)))
torch.manual_seed(0)


class ChannelGroups(nn.Module):
    def __init__(self, net, order: list[int], groups: list[int], hidden: int):
        super().__init__()
        self.net, self.M, self.K = net, net.M, net.K
        starts = np.cumsum([0] + groups)
        self.chans = [torch.tensor(order[s:e]) for s, e in zip(starts[:-1], starts[1:])]
        ep0 = net.entropy_parameters[0]
        self.branches = nn.ModuleDict()
        for g in range(1, len(groups)):
            for kind in ("a", "n"):
                last = nn.Conv2d(hidden, ep0.out_channels, 1)
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)
                self.branches[f"{kind}{g}"] = nn.Sequential(nn.Conv2d(self.M, hidden, 3, padding=1), nn.ReLU(), last)
        self.before = []  # (1, M, 1, 1) masks of the channels of groups < g
        for g in range(len(groups)):
            m = torch.zeros(1, self.M, 1, 1)
            for c in self.chans[:g]:
                m[0, c] = 1
            self.before.append(m)

    def bits(self, y: torch.Tensor) -> torch.Tensor:
        net, K, M = self.net, self.K, self.M
        h, w = y.shape[-2:]
        z = torch.round(net.h_a(y.detach()))
        hyper = net.h_s(z)[..., :h, :w]
        am = anchor_mask(y)
        ctx = net.context(y * am)
        ep0, _, ep1, _, ep2 = net.entropy_parameters
        h0 = ep0(torch.cat([hyper, ctx], 1))
        total = -torch.log2(net.z_prior.likelihood(z)).sum()
        for g, chans in enumerate(self.chans):
            rows = torch.cat([t * K * M + k * M + chans for t in range(3) for k in range(K)])
            for kind, sel in (("a", am), ("n", 1 - am)):
                pre = h0
                if g:
                    known = y * am * self.before[g] if kind == "a" else y * (am + (1 - am) * self.before[g])
                    pre = h0 + self.branches[f"{kind}{g}"](known)
                a = F.relu(ep1(F.relu(pre)))
                params = F.conv2d(a, ep2.weight[rows], ep2.bias[rows])
                lik = gmm_likelihood(y[:, chans], *split_mixture(params, K, len(chans)))
                total = total - (torch.log2(lik) * sel).sum()
        return total


def kodak_bits(model, raws) -> list[float]:
    with torch.inference_mode():
        return [float(np.mean([float(model.bits(gained(model.net, raw, [p]))) / px for raw, px in raws]))
                for p in EVAL_POSITIONS]


def channel_order(net, raw) -> list[int]:
    """Channels by their exact bits on 64 cached crops at the middle gain, most first."""
    with torch.inference_mode():
        y = gained(net, raw[:64], [2.5] * 64)
        z = torch.round(net.h_a(y))
        wts, mu, s = net.mixture(net.h_s(z), y)
        per = -torch.log2(gmm_likelihood(y, wts, mu, s)).sum(dim=(0, 2, 3))
    return [int(c) for c in torch.argsort(per, descending=True)]


if __name__ == "__main__":
    cache, steps = Path(sys.argv[1]), int(sys.argv[2])
    groups = [int(g) for g in sys.argv[3].split(",")]
    hidden = int(sys.argv[4]) if len(sys.argv) > 4 else 96
    lr = float(sys.argv[5]) if len(sys.argv) > 5 else 5e-4
    raw = load_file(str(cache))["g_a"]
    net = store.load(os.environ.get("MODEL") or store.default_model("gmm"), "gmm").net.float().eval()
    if os.environ.get("STRIP_GROUPS"):
        net.remove_channel_context()
    assert net.channel_context is None, "MODEL must be a gmm without channel groups (or STRIP_GROUPS=1)"
    for p in net.parameters():
        p.requires_grad_(False)
    model = ChannelGroups(net, channel_order(net, raw), groups, hidden)
    kodak = kodak_raw(net, Path("../shared/data/kodak"))
    start = kodak_bits(model, kodak)
    print("start bpp", [round(b, 4) for b in start], flush=True)
    trained = list(net.context.parameters()) + list(net.entropy_parameters.parameters())
    for p in trained:
        p.requires_grad_(True)
    opt = torch.optim.Adam([{"params": trained, "base": 1e-4}, {"params": model.branches.parameters(), "base": lr}])
    lo, hi = positions_range("gmm", net.log_gain.shape[0])
    t, batch, crop = time.time(), 16, 256
    for step in range(steps):
        rng = np.random.default_rng([0, step])
        idx = torch.from_numpy(rng.integers(len(raw), size=batch))
        y = gained(net, raw[idx], rng.uniform(lo, hi, batch))
        loss = model.bits(y) / (batch * crop * crop)
        for grp in opt.param_groups:
            grp["lr"] = grp["base"] * 0.5 * (1 + math.cos(math.pi * step / steps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 500 == 0 or step + 1 == steps:
            now = kodak_bits(model, kodak)
            print(f"step {step + 1} ({(time.time() - t) / (step + 1):.2f} s/step) kodak exact bpp "
                  + ", ".join(f"{p:g}: {b:.4f} ({b / s - 1:+.2%})" for p, b, s in zip(EVAL_POSITIONS, now, start)),
                  flush=True)
