"""Experiment: is gmm's entropy model limited by its width? The shipped weights' hidden layers of
the entropy-parameter network (3M) and the checkerboard context's outputs (2M) widened so that
the network computes the same function at first (new units' outgoing weights zero), then each
variant fitted like `mlimg train gmm --entropy-fit` (transforms frozen, exact rate of rounded
latents, every gain position) for STEPS steps from the same start, with a same-width control.

    python tools/experiments/gmm_entropy_width.py CACHE STEPS
    e.g. python tools/experiments/gmm_entropy_width.py runs/gmm-fit2/latents.safetensors 1500

CACHE: a fit's RUN/latents.safetensors of the default weights' analysis (the transforms of every
gmm since gmm-v1-7a653fa3 are the same). THREADS (environment, default 2): torch threads.
Prints the exact bits (float models) of kodim01/08/23 at positions -2 / 0 / 2.5 / 5 relative to
the start, as the trainer's evaluation does.
"""
from __future__ import annotations

import copy
import os
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from mlimg.nn import store
from mlimg.nn.models import MaskedCheckerboardConv
from mlimg.train_entropy import (ENTROPY_PARTS, EVAL_POSITIONS, FIT_DEFAULTS, fit_step, kodak_bpp, kodak_raw,
                                 optimiser, positions_range)

torch.set_num_threads(int(os.environ.get("THREADS", 2)))


def widen_linear_pair(first: nn.Conv2d, second: nn.Conv2d, hidden: int, seed: int):
    """first -> ReLU -> second with `hidden` units instead of first.out_channels; same function."""
    gen = torch.Generator().manual_seed(seed)
    a = nn.Conv2d(first.in_channels, hidden, first.kernel_size, padding=first.padding)
    b = nn.Conv2d(hidden, second.out_channels, second.kernel_size, padding=second.padding)
    with torch.no_grad():
        n = first.out_channels
        a.weight.normal_(0, 0.5 * float(first.weight.std()), generator=gen)
        a.bias.zero_()
        a.weight[:n], a.bias[:n] = first.weight, first.bias
        b.weight.zero_()
        b.weight[:, :n], b.bias[:] = second.weight, second.bias
    return a, b


def wide_entropy_parameters(ep: nn.Sequential, hidden: int, extra_in: int = 0) -> nn.Sequential:
    """ep (Conv 1x1, ReLU, Conv, ReLU, Conv) with both hidden layers `hidden` wide and `extra_in`
    more inputs (zero weights)."""
    c0, _, c1, _, c2 = ep
    if extra_in:
        grown = nn.Conv2d(c0.in_channels + extra_in, c0.out_channels, 1)
        with torch.no_grad():
            grown.weight.zero_()
            grown.weight[:, : c0.in_channels], grown.bias[:] = c0.weight, c0.bias
        c0 = grown
    a, b = widen_linear_pair(c0, c1, hidden, 1)
    # b now maps hidden -> c1.out; widen its outputs too: b -> ReLU -> c2
    b2, c = widen_linear_pair(b, c2, hidden, 2)
    return nn.Sequential(a, nn.ReLU(), b2, nn.ReLU(), c)


def wide_context(ctx: MaskedCheckerboardConv, out: int) -> MaskedCheckerboardConv:
    grown = MaskedCheckerboardConv(ctx.in_channels, out)
    with torch.no_grad():
        grown.weight.normal_(0, 0.5 * float(ctx.weight.std()))
        grown.bias.zero_()
        grown.weight[: ctx.out_channels], grown.bias[: ctx.out_channels] = ctx.weight, ctx.bias
    return grown


def fit(net, raw, steps: int):
    """As `mlimg train gmm --entropy-fit` with its defaults (one step function, one optimiser)."""
    fit_meta = dict(FIT_DEFAULTS, steps=steps, seed=0)
    opt = optimiser(net, ENTROPY_PARTS["gmm"], fit_meta)
    positions = positions_range("gmm", net.log_gain.shape[0])
    t = time.time()
    for step in range(steps):
        fit_step(net, opt, raw, fit_meta, step, positions)
    print(f"  fitted {steps} steps in {time.time() - t:.0f} s", flush=True)
    return net.eval()


if __name__ == "__main__":
    cache, steps = Path(sys.argv[1]), int(sys.argv[2])
    raw = load_file(str(cache))["g_a"]
    base = store.load(store.default_model("gmm"), "gmm").net.float().eval()
    assert base.channel_context is None, "written for gmm without channel groups (the default until gmm-v1-8801dc99)"
    M = base.M
    kodak = kodak_raw(base, Path("../shared/data/kodak"))
    start = kodak_bpp(base, kodak)
    print("start bpp", [round(b, 4) for b in start], flush=True)
    variants = {"same width (control)": lambda n: n,
                "entropy parameters 6M hidden": lambda n: setattr(n, "entropy_parameters", wide_entropy_parameters(n.entropy_parameters, 6 * M)) or n,
                "context 4M + entropy parameters 6M": lambda n: (setattr(n, "context", wide_context(n.context, 4 * M)),
                                                                   setattr(n, "entropy_parameters", wide_entropy_parameters(n.entropy_parameters, 6 * M, 2 * M))) and n}
    for name, make in variants.items():
        net = make(copy.deepcopy(base))
        same = kodak_bpp(net, kodak)
        assert all(abs(a / b - 1) < 1e-4 for a, b in zip(same, start)), (name, same)  # widening kept the function
        params = sum(p.numel() for n, p in net.named_parameters() if n.split(".")[0] in ("context", "entropy_parameters"))
        print(f"{name}: {params} context + entropy-parameter weights", flush=True)
        now = kodak_bpp(fit(net, raw, steps), kodak)
        print("  kodak exact bpp " + ", ".join(f"{p:g}: {b:.4f} ({b / s - 1:+.2%})" for p, b, s in zip(EVAL_POSITIONS, now, start)),
              flush=True)
