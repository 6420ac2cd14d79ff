"""Experiment: how many bits would a channel-wise + checkerboard context (ELIC's SCCTX, He et al.
2022) save over gmm's checkerboard alone, with the shipped transforms frozen?

    python tools/experiments/gmm_channel_context.py CROPS STEPS [GROUPS|none] [EVAL_IMAGES] [SAVE_RUN]
    e.g. python tools/experiments/gmm_channel_context.py 600 2000 16,16,32,32 kodim01,kodim08,kodim15,kodim23

SAVE_RUN: a copy of the shipped run folder (runs/gmm) whose context and entropy-parameter
tensors are replaced by the fine-tuned ones, to export and benchmark (`mlimg train gmm --export`).
THREADS (environment, default 1): torch threads.

(run from the repository root; BSDS500 in ../shared/data/bsds500, Kodak in ../shared/data/kodak.)

The shipped analysis, hyper-analysis and hyper-synthesis make rounded latents y and hyper
features of CROPS random 256-px BSDS500 crops at the six trained gain levels (computed once).
On them three entropy models are fitted by their exact rate (-log2 of the discretised mixture at
the rounded y, the rate the coder pays):
  shipped    the registered context + entropy-parameter networks, unchanged;
  shipped-ft the same networks fine-tuned STEPS steps on the cached latents (the control: any
             gain of the next one beyond this is the context's, not the fine-tuning's);
  channel    y split into GROUPS (channel order); group k's parameters from the hyper features,
             a checkerboard context within the group and a context over groups < k (all decoded
             by then), trained from scratch STEPS steps.
The report is the latent's bits on Kodak (float models, no integer tables) at levels 0, 2, 5
relative to `shipped`, and the hyper-latent's bits, which every model shares.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from mlimg.codecs.cae import _pad
from mlimg.nn import store
from mlimg.nn.entropy_models import gmm_likelihood
from mlimg.nn.models import MaskedCheckerboardConv, anchor_mask, split_mixture
from mlimg.train import crop_batch, load_images

torch.set_num_threads(int(os.environ.get("THREADS", 1)))
torch.manual_seed(0)
net = store.load(store.default_model("gmm"), "gmm").net.eval()
for p in net.parameters():
    p.requires_grad_(False)
M, K = net.M, net.K
LEVELS = net.log_gain.shape[0]


def latents(x: torch.Tensor, level: int):
    """Rounded gained y, hyper features (cropped to y) and the hyper-latent's bits."""
    g = torch.exp(net.log_gain[level]).view(1, -1, 1, 1)
    y = torch.round(net.g_a(x) * g)
    z = torch.round(net.h_a(y))
    hyper = net.h_s(z)[..., : y.shape[-2], : y.shape[-1]]
    return y, hyper, float(-torch.log2(net.z_prior.likelihood(z)).sum())


def mixture_bits(params: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bits of the rounded y (B, m, h, w) under the mixture that `params` describe, as gmm parses them."""
    return -torch.log2(gmm_likelihood(y, *split_mixture(params, K, y.shape[1]))).sum()


class Checkerboard(nn.Module):
    """gmm's own context model (a copy of the shipped networks)."""

    def __init__(self):
        super().__init__()
        self.context = copy.deepcopy(net.context)
        self.entropy_parameters = copy.deepcopy(net.entropy_parameters)
        for p in self.parameters():  # the copies of frozen networks
            p.requires_grad_(True)

    def bits(self, y, hyper):
        ctx = self.context(y * anchor_mask(y))
        return mixture_bits(self.entropy_parameters(torch.cat([hyper, ctx], 1)), y)


class ChannelCheckerboard(nn.Module):
    """Groups of channels coded in order, each in two checkerboard passes (SCCTX)."""

    def __init__(self, groups: list[int]):
        super().__init__()
        assert sum(groups) == M, f"groups must add up to M = {M}"
        self.groups = groups
        starts = np.cumsum([0] + groups)
        self.spans = list(zip(starts[:-1], starts[1:]))
        self.spatial = nn.ModuleList(MaskedCheckerboardConv(g, 2 * g) for g in groups)
        self.channel = nn.ModuleList(
            nn.Sequential(nn.Conv2d(int(s), 2 * g, 5, padding=2), nn.ReLU(), nn.Conv2d(2 * g, 2 * g, 3, padding=1))
            if s else None for (s, _), g in zip(self.spans, groups))
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Conv2d(2 * M + 2 * g + (2 * g if s else 0), 4 * g, 1), nn.ReLU(),
                          nn.Conv2d(4 * g, 4 * g, 1), nn.ReLU(), nn.Conv2d(4 * g, 3 * K * g, 1))
            for (s, _), g in zip(self.spans, groups))

    def bits(self, y, hyper):
        total = 0.0
        mask = anchor_mask(y)
        for k, (s, e) in enumerate(self.spans):
            yk = y[:, s:e]
            feats = [hyper, self.spatial[k](yk * mask)]
            if s:
                feats.append(self.channel[k](y[:, :s]))
            total = total + mixture_bits(self.heads[k](torch.cat(feats, 1)), yk)
        return total


def cache(crops: int, seed: int = 0):
    images = load_images(Path("../shared/data/bsds500"))
    rng = np.random.default_rng(seed)
    ys, hs = [], []
    t = time.time()
    with torch.inference_mode():
        for i in range(0, crops, 8):
            x = torch.from_numpy(crop_batch(images, rng, 256, 8).astype(np.float32) / 255.0)  # (8, 3, 256, 256)
            y, hyper, _ = latents(x.contiguous(), int(rng.integers(LEVELS)))
            ys.append(y.to(torch.int16)), hs.append(hyper.clone())
    print(f"cached {crops} crops in {time.time() - t:.0f} s", flush=True)
    return torch.cat(ys), torch.cat(hs)


def fit(model: nn.Module, ys, hs, steps: int, lr: float, batch: int = 16, seed: int = 0):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    t, run = time.time(), []
    for step in range(steps):
        idx = torch.randint(len(ys), (batch,), generator=gen)
        y, hyper = ys[idx].float(), hs[idx].float()
        loss = model.bits(y, hyper) / y.numel()
        opt.zero_grad(), loss.backward(), opt.step(), sched.step()
        run.append(loss.item())
        if (step + 1) % 500 == 0:
            print(f"  {type(model).__name__} step {step + 1} bits/latent {np.mean(run[-500:]):.4f} ({time.time() - t:.0f} s)", flush=True)
    return model.eval()


def kodak(names, models: dict):
    rows = {}
    for name in names:
        img = np.asarray(Image.open(f"../shared/data/kodak/{name}.png").convert("RGB"), np.float32) / 255.0
        x = torch.from_numpy(_pad(img)).permute(2, 0, 1)[None].contiguous()
        for level in (0, 2, LEVELS - 1):
            with torch.inference_mode():
                y, hyper, zbits = latents(x, level)
                r = rows.setdefault(level, {"z": 0.0, **{k: 0.0 for k in models}})
                r["z"] += zbits
                for key, model in models.items():
                    r[key] += float(model.bits(y, hyper))
    for level, r in rows.items():
        base = r["shipped"]
        print(f"level {level}: y bits shipped {base:.0f} (z {r['z']:.0f}); "
              + ", ".join(f"{k} {r[k] / base - 1:+.2%}" for k in models if k != "shipped")
              + "; of y+z: " + ", ".join(f"{k} {(r[k] - base) / (base + r['z']):+.2%}" for k in models if k != "shipped"),
              flush=True)


def save_into_run(model: Checkerboard, run: Path, crops: int, steps: int) -> None:
    """A copy of runs/gmm (the shipped network's run) with the fine-tuned entropy networks."""
    from safetensors.torch import load_file

    from mlimg.train import write_checkpoint

    shutil.copytree("runs/gmm", run, dirs_exist_ok=False)
    tensors = {k: v for k, v in load_file(str(run / "checkpoint.safetensors")).items() if k.startswith("model.")}
    for k, v in model.state_dict().items():
        assert f"model.{k}" in tensors, k
        tensors[f"model.{k}"] = v.detach().contiguous()
    meta = json.loads((run / "checkpoint.json").read_text())
    meta.setdefault("resumes", []).append({"step": meta["step"], "command": "python " + " ".join(sys.argv)
                                           + f"  # entropy networks only, rate of rounded latents, {crops} crops, {steps} steps"})
    write_checkpoint(run, tensors, meta)
    print(f"wrote {run}", flush=True)


if __name__ == "__main__":
    crops, steps = int(sys.argv[1]), int(sys.argv[2])
    spec = sys.argv[3] if len(sys.argv) > 3 else "16,16,32,32"
    groups = [] if spec == "none" else [int(g) for g in spec.split(",")]
    names = (sys.argv[4] if len(sys.argv) > 4 else "kodim01,kodim08,kodim15,kodim23").split(",")
    ys, hs = cache(crops)
    models = {"shipped": Checkerboard().eval(), "shipped-ft": fit(Checkerboard(), ys, hs, steps, 1e-4)}
    if groups:
        models["channel"] = fit(ChannelCheckerboard(groups), ys, hs, steps, 1e-3)
        print("parameters: checkerboard", sum(p.numel() for p in models["shipped"].parameters()),
              "channel", sum(p.numel() for p in models["channel"].parameters()))
    if len(sys.argv) > 5:
        save_into_run(models["shipped-ft"], Path(sys.argv[5]), crops, steps)
    kodak(names, models)
