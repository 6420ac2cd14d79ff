"""`mlimg train cae|gmm --entropy-fit`: fit a trained codec's entropy model to the rate the
range coder pays, with the transforms frozen.

Training measures the rate of y + uniform noise (the model's density convolved with a unit box);
the coder pays -log2 of the discretised model at round(y), and the hyperprior and context see
rounded values too. This fit minimises that exact rate:
  * the analysis output g_a(x) of CROPS random training crops is computed once and cached
    (RUN/latents.safetensors, reused by a fit of the same weights, crops and seed): g_a is
    frozen, so the cache is exact;
  * each step takes BATCH cached crops, each at its own random gain position over the whole
    range quality uses (trained levels and the extrapolated ones below them, which noise
    training never saw), rounds the gained latent and minimises its bits:
      gmm: h_s, the checkerboard context, the entropy-parameter network and the z prior, with
           z = round(h_a(y)) as the encoder makes it (h_a frozen: trained through a
           straight-through rounding, it learned to move information into z, whose rate at
           integers has no gradient worth the name: +25 % bits on Kodak after 1000 steps);
      cae: the factorised prior.
With --groups (gmm), the fit first gives the model channel groups (nn/models.py ChannelContext:
the channels, most bits first on the cached crops at the middle gain, coded group by group, each
group's probabilities also conditioned on the groups before it) and trains their branches at
--branch-lr with the rest; the branches start at zero, so the fit starts from the model's rate.
The reconstruction depends on the rounded latent only, so distortion is unchanged at every
quality: only bits move. The run folder is an ordinary run (`mlimg train METHOD --export RUN`),
whose step count stays the transforms'; RUN/checkpoint.json's "entropy_fit" records this fit,
and a second call with the same folder resumes it (cosine learning rate over --steps).
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported when a fit runs, not with mlimg
    import torch

FIT_DEFAULTS = {"crop": 256, "batch": 16, "lr": 1e-4, "prior_lr": 1e-3, "branch_lr": 5e-4, "eval_every": 1000}
# The parts of each network the fit trains (everything the decoder's probability tables come from).
ENTROPY_PARTS = {"cae": ("prior",), "gmm": ("h_s", "context", "entropy_parameters", "z_prior", "channel_context")}
# Parts with their own learning rate (fit_meta key): the density models, and the channel branches,
# which start from zero while everything else is already trained.
OWN_LR = {"prior": "prior_lr", "z_prior": "prior_lr", "channel_context": "branch_lr"}
EVAL_POSITIONS = (-2.0, 0.0, 2.5, 5.0)  # gain positions of the Kodak evaluation (quality ~1, 29, 64, 100)


def positions_range(method: str, levels: int) -> tuple[float, float]:
    """The gain positions quality 1..100 reaches in the codec's current method version."""
    from .codecs import cae, gmm

    codec = {"cae": cae, "gmm": gmm}[method]
    below = codec.LEVELS_BELOW[max(codec.LEVELS_BELOW)]
    return -below, levels - 1.0


def exact_bits(net, y: "torch.Tensor") -> "torch.Tensor":
    """Bits of the rounded gained latent y (B, M, h, w) as the coder pays them (float models):
    for an integer y the models' relaxed rate (nn/models.py) is exactly that, gmm's hyper-latent
    z = round(h_a(y)) included (no gradient into h_a)."""
    return net.relaxed_bits(y)


def gained(net, raw: "torch.Tensor", positions) -> "torch.Tensor":
    """round(raw · gain(position)), one position per crop."""
    import torch

    with torch.no_grad():
        g = torch.stack([net.gains(float(p))[0] for p in positions])[..., None, None]
    return torch.round(raw * g)


def channel_order(net, raw: "torch.Tensor") -> list[int]:
    """gmm's latent channels by their exact bits on (up to) 64 cached crops at the middle trained
    gain, most first: the order channel groups code them in."""
    import torch

    from .nn.entropy_models import gmm_likelihood

    with torch.inference_mode():
        crops = raw[:64]
        y = gained(net, crops, [(net.log_gain.shape[0] - 1) / 2] * len(crops))
        z = torch.round(net.h_a(y))
        per_channel = -torch.log2(gmm_likelihood(y, *net.mixture(net.h_s(z), y))).sum(dim=(0, 2, 3))
    return [int(c) for c in torch.argsort(per_channel, descending=True, stable=True)]


def add_groups(net, meta: dict, raw, say) -> None:
    """Give the gmm the fit's --groups (order from the cached crops). A model that has channel
    groups already loses them first: its checkerboard part is where the new groups start."""
    fit_meta = meta["entropy_fit"]
    if not fit_meta.get("groups"):
        return
    if net.channel_context is not None:
        say(f"--groups replaces {fit_meta['init']}'s channel groups {net.config['groups']} (their branches dropped)")
        net.remove_channel_context()
    import torch

    try:
        order = channel_order(net, raw)
        with torch.random.fork_rng():  # the branches' first layers: a function of --seed
            torch.manual_seed(fit_meta["seed"])
            net.add_channel_context(fit_meta["groups"], order, fit_meta.get("group_hidden"))
    except ValueError as exc:
        raise SystemExit(f"--groups: {exc}") from None
    meta["config"].update({k: net.config[k] for k in ("groups", "order", "Nc")})
    say(f"channel groups {net.config['groups']} (branches {net.config['Nc']} wide), channels in the order "
        f"{net.config['order']}")


def cache_latents(net, images, crops: int, crop: int, seed: int, say) -> "torch.Tensor":
    """g_a of `crops` random crops (flips included), float32 (crops, M, crop/16, crop/16)."""
    import torch

    from .train import crop_batch

    rng = np.random.default_rng([seed, 0xE7])
    out, t = [], time.time()
    with torch.inference_mode():
        for start in range(0, crops, 8):
            x = torch.from_numpy(crop_batch(images, rng, crop, min(8, crops - start)).astype(np.float32) / 255.0)
            out.append(net.g_a(x).clone())
            if len(out) % 25 == 0:
                say(f"cached {start + x.shape[0]}/{crops} crops ({time.time() - t:.0f} s)")
    say(f"cached {crops} crops of {crop} px in {time.time() - t:.0f} s")
    return torch.cat(out)


def cache_metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}


def kodak_raw(net, kodak: Path) -> list:
    """g_a of the evaluation images (padded to the stride), with their pixel counts."""
    import torch
    from PIL import Image

    from .codecs.cae import _pad
    from .train import KODAK_EVAL

    out = []
    with torch.inference_mode():
        for name in KODAK_EVAL:
            if (kodak / name).exists():
                img = np.asarray(Image.open(kodak / name).convert("RGB"), np.float32) / 255.0
                x = torch.from_numpy(_pad(img)).permute(2, 0, 1)[None].contiguous()  # as the encoder pads
                out.append((net.g_a(x).clone(), img.shape[0] * img.shape[1]))
    return out


def kodak_bpp(net, raws) -> list[float]:
    """Mean exact bpp (float models) of the evaluation images at EVAL_POSITIONS."""
    import torch

    with torch.inference_mode():
        return [float(np.mean([float(exact_bits(net, gained(net, raw, [p]))) / pixels for raw, pixels in raws]))
                for p in EVAL_POSITIONS]


def start_or_resume(args, run_dir: Path, say, command: str):
    """(net, checkpoint meta, resuming): a new fit of --init's weights (net loaded), or the fit in
    RUN resumed (net built; fit() loads its checkpoint once the optimiser exists)."""
    from .nn.models import ARCH_KEYS, build
    from .train import init_from_registry, init_lineage, resolve_init

    ckpt = run_dir / "checkpoint.json"
    meta = json.loads(ckpt.read_text()) if ckpt.exists() else None
    if meta is not None and "entropy_fit" not in meta:
        raise SystemExit(f"--entropy-fit: {run_dir} holds a training run; give a new folder (--out) and the "
                         f"weights to start from (--init)")
    if meta is not None:  # resume: same model, the settings of the first call
        net = build({k: v for k, v in meta["config"].items() if k in ARCH_KEYS})
        fit_meta = meta["entropy_fit"]
        fit_meta.setdefault("resumes", []).append({"step": fit_meta["step"], "command": command})
        say(f"resumed the entropy fit at step {fit_meta['step']} of {fit_meta['steps']}: {command}")
        return net, meta, True
    model_id, entry = resolve_init(args.init or "default", args.method)
    net = build(entry["config"])
    step = init_from_registry(net, model_id, args.method)
    original, resumes = init_lineage(entry, model_id, step, command)
    fit_meta = {"step": 0, "steps": args.steps, "crops": args.crops, "crop": args.crop, "batch": args.batch,
                "lr": args.lr, "prior_lr": args.prior_lr, "seed": args.seed, "data": args.data,
                "init": model_id, "command": command}
    if args.groups:
        if args.method != "gmm":
            raise SystemExit(f"mlimg train {args.method}: --groups only applies to gmm")
        fit_meta.update(groups=args.groups, group_hidden=args.group_hidden, branch_lr=args.branch_lr)
    meta = {"step": step, "config": dict(entry.get("training", {}).get("train_config") or {}, **entry["config"]),
            "command": original, "resumes": resumes, "entropy_fit": fit_meta}
    say(f"entropy fit of {model_id} (transforms at step {step}): {command}")
    return net, meta, False


def cached_latents(net, run_dir: Path, fit_meta: dict, say):
    """The crops' analysis output: RUN/latents.safetensors if it is of these weights and settings, else made now."""
    from safetensors.torch import load_file, save_file

    from .train import load_images

    cache = run_dir / "latents.safetensors"
    made_by = {k: str(fit_meta[k]) for k in ("init", "crops", "crop", "seed", "data")}
    if cache.exists() and cache_metadata(cache) == made_by:
        return load_file(str(cache))["g_a"]
    images = load_images(Path(fit_meta["data"]))
    raw = cache_latents(net, images, fit_meta["crops"], fit_meta["crop"], fit_meta["seed"], say)
    save_file({"g_a": raw.contiguous()}, str(cache), metadata=made_by)
    return raw


def optimiser(net, parts, fit_meta: dict):
    """Adam over `parts` (the rest frozen): the priors at --prior-lr, the channel branches at
    --branch-lr, the other networks at --lr."""
    import torch

    for name, p in net.named_parameters():
        p.requires_grad_(name.split(".")[0] in parts)
    trained = [(n.split(".")[0], p) for n, p in net.named_parameters() if p.requires_grad]
    rates = {key: fit_meta.get(key, FIT_DEFAULTS[key]) for key in ("lr", *OWN_LR.values())}
    groups = [{"params": [p for part, p in trained if OWN_LR.get(part, "lr") == key], "base": rate}
              for key, rate in rates.items()]
    return torch.optim.Adam([dict(g, lr=g["base"]) for g in groups if g["params"]])


def fit_step(net, opt, raw, fit_meta: dict, step: int, positions: tuple[float, float]) -> float:
    """One step of the fit: fit_meta's batch of cached crops, each at a random gain position in
    `positions`, both functions of (seed, step); cosine learning rate over fit_meta's steps.
    Returns the bits per pixel of the crops."""
    import torch

    rng = np.random.default_rng([fit_meta["seed"], step])
    idx = torch.from_numpy(rng.integers(len(raw), size=fit_meta["batch"]))
    y = gained(net, raw[idx], rng.uniform(*positions, fit_meta["batch"]))
    loss = exact_bits(net, y) / (len(idx) * fit_meta["crop"] ** 2)
    for g in opt.param_groups:  # from any resumed step
        g["lr"] = g["base"] * 0.5 * (1 + math.cos(math.pi * step / fit_meta["steps"]))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def fit(args) -> int:
    import torch
    from tqdm import tqdm

    from .train import StopRequest, command_line, load_checkpoint, run_log, save_checkpoint

    torch.set_num_threads(args.threads)
    run_dir = Path(args.out or f"runs/{args.method}-entropy")
    run_dir.mkdir(parents=True, exist_ok=True)
    say = run_log(run_dir)
    net, meta, resuming = start_or_resume(args, run_dir, say, command_line(args.method))
    fit_meta = meta["entropy_fit"]
    net.eval()  # no dropout or batch norm anywhere; eval() keeps the frozen parts' state fixed
    if not resuming:  # (a resumed net has its weights, channel groups included, after load_checkpoint)
        raw = cached_latents(net, run_dir, fit_meta, say)
        add_groups(net, meta, raw, say)
    opt = optimiser(net, ENTROPY_PARTS[args.method], fit_meta)
    if resuming:  # weights and the trained parts' Adam moments
        load_checkpoint(run_dir, net, opt, torch.device("cpu"))
        raw = cached_latents(net, run_dir, fit_meta, say)
    lo, hi = positions_range(args.method, net.log_gain.shape[0])
    kodak = kodak_raw(net, Path(args.kodak))
    start_bpp = fit_meta.get("kodak_start")
    if kodak and start_bpp is None:
        start_bpp = fit_meta["kodak_start"] = kodak_bpp(net, kodak)
        say("kodak exact bpp at positions " + ", ".join(f"{p:g}: {b:.4f}" for p, b in zip(EVAL_POSITIONS, start_bpp)))

    step, running, seen, last_ckpt = fit_meta["step"], 0.0, 0, time.time()
    bar = tqdm(total=fit_meta["steps"], initial=step, mininterval=30, file=sys.stderr)

    def checkpoint(note: str = "") -> None:
        fit_meta["step"] = step
        save_checkpoint(run_dir, net, opt, meta)  # the frozen parts have no Adam state
        say(f"checkpoint at entropy-fit step {step}{note}")

    with StopRequest() as stop:
        while step < fit_meta["steps"] and not stop.requested:
            bpp = fit_step(net, opt, raw, fit_meta, step, (lo, hi))
            step, seen = step + 1, seen + 1
            w = max(0.01, 1.0 / seen)
            running = (1 - w) * running + w * bpp
            bar.update(1)
            bar.set_postfix(bpp=f"{running:.4f}")
            if step % 200 == 0:
                say(f"entropy-fit step {step} bpp {running:.4f} (running, all positions)")
            if kodak and (step % args.eval_every == 0 or step == fit_meta["steps"]):
                now = fit_meta["kodak_last"] = kodak_bpp(net, kodak)
                say(f"entropy-fit step {step} kodak exact bpp " + ", ".join(
                    f"{p:g}: {b:.4f} ({b / s - 1:+.2%})" for p, b, s in zip(EVAL_POSITIONS, now, start_bpp)))
            if time.time() - last_ckpt > args.checkpoint_every:
                checkpoint()
                last_ckpt = time.time()
        checkpoint(" (stop requested)" if stop.requested else "")
    bar.close()
    return 0
