"""Training and export for the gan method (`mlimg train gan`, or `python -m mlimg.train_gan`).

HiFiC (Mentzer et al. 2020) on a frozen gmm codec: the encoder, hyperprior, context model,
gains and priors are copied from a trained gmm model and never change, so gan files keep gmm's
bitstream and rates; only the generator (the decoder, initialised from gmm's g_s) and a
conditional patch discriminator learn. The generator takes a realism knob beta in [0, 1]
(Agustsson et al. 2023), drawn per sample: 1/4 of the samples get beta = 0, 1/4 beta = 1, the
rest beta ~ U(0, 1). The adversarial and feature-matching terms are multiplied by beta, so
beta = 0 trains a distortion-oriented decoder and beta = 1 the full HiFiC objective.

    mlimg train gan --base gmm-v1-xxxxxxxx --data ../shared/data/bsds500 --out runs/gan
    mlimg train gan --base runs/gmm --out runs/gan-try     # base: a gmm run folder's checkpoint
    mlimg train gan --export runs/gan    # -> mlimg/weights/gan-v1-<sha>.safetensors (registered base only)

Checkpoints (safetensors: the whole GAN incl. the frozen gmm part, the discriminator, Adam
moments of both, plus checkpoint.json) go to the run folder every few minutes; rerunning the
same command resumes (the checkpoint wins over --base). The batch order is a pure function of
(seed, step). No pickle anywhere.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

# Loss weights on images in [0, 1] (generator loss per sample:
#   mse*MSE + ms_ssim*(1 - MS-SSIM) + laplacian*LapL1 + beta*(adv*nonsat_GAN + fm*feature_matching)).
# mse = 150 is HiFiC's k_M = 0.075 * 2^-5 on the 0..255 scale (0.075/32 * 255^2 ~ 150) and adv = 0.15
# HiFiC's beta. MS-SSIM, Laplacian L1 and feature matching stand in for LPIPS (weight 1 in HiFiC).
# On 128 px BSDS crops at ~26 dB (blurred + noise, a stand-in for an MSE decoder) the terms are
# 150*MSE ~ 0.36, 1-MS-SSIM ~ 0.036, LapL1 ~ 0.041, so 4 puts each at ~0.15, LPIPS's usual share;
# fm = 5 assumes trained-discriminator feature gaps of ~0.03 (a random one gives 0.003).
# Those were the starting point (adv 0.15, fm 5: gan-v1-1a4c89e1, high-frequency ratio 0.59 at
# 0.2 bpp on Kodak). Without LPIPS the perceptual side was too weak, so adv and fm are 4x that
# (gan-v1-9b8f09bc: ratio ~0.85 at 0.2 bpp for 0.5 dB of PSNR); 8x gave a regular dot pattern
# on smooth areas (TRAINING.md, gan).
LOSS_WEIGHTS = {"mse": 150.0, "ms_ssim": 4.0, "laplacian": 4.0, "adv": 0.6, "fm": 20.0}
KODAK_EVAL = ("kodim01.png", "kodim23.png")
GAN_DEFAULTS = {"crop": 128, "batch": 4, "lr": 1e-4, "eval_every": 500}


def add_arguments(parser) -> None:
    parser.add_argument("--base", default=None,
                        help="gmm weights to build on: a registered gmm model id ('default': the default gmm "
                             "model) or a gmm run folder with checkpoint.safetensors/checkpoint.json")
    parser.add_argument("--data", default="../shared/data/bsds500", help="folder of training images")
    parser.add_argument("--out", default="runs/gan", help="run folder for checkpoints and log")
    parser.add_argument("--kodak", default="../shared/data/kodak", help="folder with Kodak PNGs for the periodic evaluation")
    parser.add_argument("--steps", type=int, default=10**9, help="stop after this many steps")
    parser.add_argument("--crop", type=int, default=GAN_DEFAULTS["crop"])
    parser.add_argument("--batch", type=int, default=GAN_DEFAULTS["batch"])
    parser.add_argument("--lr", type=float, default=GAN_DEFAULTS["lr"], help="Adam learning rate (generator and discriminator)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--checkpoint-every", type=float, default=300.0, help="seconds between checkpoints")
    parser.add_argument("--eval-every", type=int, default=GAN_DEFAULTS["eval_every"], help="steps between Kodak evaluations")
    parser.add_argument("--export", metavar="RUN", default=None,
                        help="instead of training: export RUN's checkpoint to mlimg/weights and register it")
    parser.add_argument("--loss-weights", default=None, metavar="K=V,...",
                        help=f"override generator loss weights, keys {', '.join(LOSS_WEIGHTS)} (default {LOSS_WEIGHTS})")


def parse_loss_weights(text: str | None) -> dict[str, float]:
    """'adv=0.3,fm=10' -> LOSS_WEIGHTS with those entries replaced; ValueError names the valid keys."""
    weights = dict(LOSS_WEIGHTS)
    for item in filter(None, (text or "").split(",")):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in LOSS_WEIGHTS:
            raise ValueError(f"--loss-weights {text!r}: expected KEY=VALUE,... with keys {', '.join(LOSS_WEIGHTS)}")
        try:
            weights[key] = float(value)
        except ValueError:
            raise ValueError(f"--loss-weights {text!r}: {value!r} is not a number") from None
        if not math.isfinite(weights[key]) or weights[key] < 0:
            raise ValueError(f"--loss-weights {text!r}: {key} must be a finite number >= 0")
    return weights


def run(args) -> int:
    if args.export:
        model_id = export(Path(args.export))
        print(f"registered {model_id}")
        return 0
    return train(args)


def run_from_train_command(train_args) -> int:
    """`mlimg train gan ...`: the options shared with mlimg/train.py, gan defaults for the rest."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    unused = [f"--{k.replace('_', '-')}" for k in ("init", "N", "M") if getattr(train_args, k, None) is not None]
    if unused:  # the gan's architecture and starting point come from --base
        raise SystemExit(f"mlimg train gan: {', '.join(unused)} not used by gan (the network comes from --base)")
    # train.py leaves crop/batch/lr/eval_every at None unless typed: None keeps the gan default.
    for key in ("base", "data", "kodak", "steps", "seed", "threads", "checkpoint_every", "export",
                "crop", "batch", "lr", "eval_every", "loss_weights"):
        if getattr(train_args, key, None) is not None:
            setattr(args, key, getattr(train_args, key))
    args.out = getattr(train_args, "out", None) or "runs/gan"
    if "gan" in sys.argv:  # record the command as typed
        args.command = " ".join(["mlimg", "train"] + sys.argv[sys.argv.index("gan"):])
    return run(args)


# ---------------------------------------------------------------- base gmm and network


def load_base(base: str) -> tuple[dict, dict, dict]:
    """(gmm config, gmm state dict, provenance) from a registered gmm id or a gmm run folder."""
    from .nn import store
    from .nn.models import ARCH_KEYS

    folder = Path(base)
    if (folder / "checkpoint.json").exists():
        from safetensors.torch import load as load_bytes

        meta = json.loads((folder / "checkpoint.json").read_text())
        config = {k: meta["config"][k] for k in ARCH_KEYS if k in meta["config"]}
        if config.get("arch") != "gmm":
            raise SystemExit(f"--base {base}: the run's architecture is {config.get('arch')!r}, not gmm")
        data = (folder / "checkpoint.safetensors").read_bytes()  # one read: hash and tensors agree
        state = {k[6:]: v for k, v in load_bytes(data).items() if k.startswith("model.")}
        info = {"base": str(base), "base_kind": "run", "base_step": meta.get("step"),
                "base_sha256": hashlib.sha256(data).hexdigest()}
        return config, state, info
    model_id = store.default_model("gmm") if base == "default" else base
    if model_id is None:
        raise SystemExit("--base default: no gmm model is registered")
    try:
        loaded = store.load(model_id, "gmm")
    except OSError as e:
        raise SystemExit(f"--base: {e} (or give a gmm run folder)")
    config = dict(store.registry()["models"][model_id]["config"])
    return config, loaded.net.state_dict(), {"base": model_id, "base_kind": "model", "base_sha256": loaded.sha256}


def build_from_base(config: dict, state: dict):
    """A GAN whose gmm part is `state` (frozen) and whose generator starts as its g_s."""
    from .nn.gan_models import GAN

    net = GAN.from_config({"K": 3, **config})
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("generator.") for k in missing):
        raise SystemExit(f"--base: not a gmm state dict of this size (missing {missing[:3]}, unexpected {unexpected[:3]})")
    net.generator.init_from_synthesis(net.g_s)
    freeze_all_but_generator(net)
    return net


def freeze_all_but_generator(net) -> None:
    for name, p in net.named_parameters():
        p.requires_grad_(name.startswith("generator."))


# ---------------------------------------------------------------- one step


def draw_beta(rng: np.random.Generator, batch: int) -> np.ndarray:
    """Per-sample realism: 1/4 exactly 0, 1/4 exactly 1 (the ends users pick), the rest U(0, 1)."""
    kind, u = rng.random(batch), rng.random(batch)
    return np.where(kind < 0.25, 0.0, np.where(kind < 0.5, 1.0, u)).astype(np.float32)


def draw_position(rng: np.random.Generator, levels: int) -> float:
    """A gain position as the codec uses them: uniform over what quality 1..100 reaches,
    including the extrapolated levels below 0 (gmm/gan method version 2)."""
    return float(rng.uniform(-levels_below(), levels - 1))


def levels_below() -> int:
    """How many gain levels below the lowest trained one the current gan codec reaches."""
    from .codecs.gan import GanCodec
    from .codecs.gmm import LEVELS_BELOW

    return int(LEVELS_BELOW[GanCodec.version])


def quantised_latent(net, x, position: float):
    """y_hat * inverse gain at a gain position, with real rounding (what the decoder receives)."""
    import torch

    with torch.no_grad():
        g, ig = net.gains(position)
        return torch.round(net.g_a(x) * g.view(1, -1, 1, 1)) * ig.view(1, -1, 1, 1)


def train_step(net, disc, opt_g, opt_d, x, position: float, beta, weights: dict = LOSS_WEIGHTS) -> dict:
    """One generator update then one discriminator update; returns the loss terms as floats."""
    import torch

    from .nn.gan_models import (discriminator_loss, feature_matching_loss, generator_adversarial_loss,
                                laplacian_l1, ms_ssim)

    b = x.shape[0]
    y_in = quantised_latent(net, x, position)
    x_hat = net.generator(y_in, beta)
    # Generator: the discriminator is only a fixed function here (one pass over real + fake).
    disc.requires_grad_(False)
    logits, feats = disc(torch.cat([x, x_hat]), torch.cat([y_in, y_in]))
    adv = generator_adversarial_loss(logits[b:])
    fm = feature_matching_loss([f[:b] for f in feats], [f[b:] for f in feats])
    mse = ((x_hat - x) ** 2).flatten(1).mean(1)
    msssim = ms_ssim(x_hat, x)
    lap = laplacian_l1(x, x_hat)
    per_sample = (weights["mse"] * mse + weights["ms_ssim"] * (1 - msssim) + weights["laplacian"] * lap
                  + beta * (weights["adv"] * adv + weights["fm"] * fm))
    loss_g = per_sample.mean()
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    torch.nn.utils.clip_grad_norm_(net.generator.parameters(), 1.0)
    opt_g.step()
    # Discriminator: real vs the (detached) fakes of this step, same latent condition.
    disc.requires_grad_(True)
    logits, _ = disc(torch.cat([x, x_hat.detach()]), torch.cat([y_in, y_in]))
    loss_d = discriminator_loss(logits[:b], logits[b:])
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    return {"g": loss_g.item(), "d": loss_d.item(), "mse": mse.mean().item(), "msssim": msssim.mean().item(),
            "lap": lap.mean().item(), "adv": adv.mean().item(), "fm": fm.mean().item(),
            "d_real": torch.sigmoid(logits[:b]).mean().item(), "d_fake": torch.sigmoid(logits[b:]).mean().item()}


# ---------------------------------------------------------------- checkpoints


def save_gan_checkpoint(run_dir: Path, net, disc, opt_g, opt_d, meta: dict) -> None:
    """Whole GAN (frozen gmm part too: resuming never depends on the base still existing),
    discriminator and both optimisers' Adam moments; atomic replace as in train.py."""
    import os

    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    tensors.update({f"discriminator.{k}": v.detach().contiguous().cpu() for k, v in disc.state_dict().items()})
    for prefix, module, opt in (("adam_g", net, opt_g), ("adam_d", disc, opt_d)):
        for name, p in module.named_parameters():
            state = opt.state.get(p)
            if state:
                tensors[f"{prefix}.exp_avg.{name}"] = state["exp_avg"].contiguous().cpu()
                tensors[f"{prefix}.exp_avg_sq.{name}"] = state["exp_avg_sq"].contiguous().cpu()
                meta[f"{prefix}_step"] = int(state["step"])
    tmp = run_dir / "checkpoint.safetensors.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, run_dir / "checkpoint.safetensors")
    (run_dir / "checkpoint.json.tmp").write_text(json.dumps(meta, indent=1))
    os.replace(run_dir / "checkpoint.json.tmp", run_dir / "checkpoint.json")


def load_gan_checkpoint(run_dir: Path, device, lr: float):
    """(net, disc, opt_g, opt_d, meta) restored from a run folder; the optimisers use `lr` (may change on resume)."""
    import torch
    from safetensors.torch import load_file

    from .nn.gan_models import GAN, Discriminator

    meta = json.loads((run_dir / "checkpoint.json").read_text())
    tensors = load_file(str(run_dir / "checkpoint.safetensors"))
    net = GAN.from_config(meta["config"])
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    freeze_all_but_generator(net)
    disc = Discriminator(net.M)
    disc.load_state_dict({k[14:]: v for k, v in tensors.items() if k.startswith("discriminator.")})
    net, disc = net.to(device), disc.to(device)
    opt_g, opt_d = make_optimisers(net, disc, lr)
    for prefix, module, opt in (("adam_g", net, opt_g), ("adam_d", disc, opt_d)):
        for name, p in module.named_parameters():
            if f"{prefix}.exp_avg.{name}" in tensors:
                opt.state[p] = {"step": torch.tensor(float(meta[f"{prefix}_step"])),
                                "exp_avg": tensors[f"{prefix}.exp_avg.{name}"].to(device),
                                "exp_avg_sq": tensors[f"{prefix}.exp_avg_sq.{name}"].to(device)}
    return net, disc, opt_g, opt_d, meta


def make_optimisers(net, disc, lr: float):
    import torch

    return (torch.optim.Adam(net.generator.parameters(), lr=lr),
            torch.optim.Adam(disc.parameters(), lr=lr))


# ---------------------------------------------------------------- evaluation


def kodak_eval(net, kodak: Path, device) -> str:
    """PSNR and high-frequency ratio on two Kodak images, beta 0 and 1, at three gain positions:
    the lowest quality of the codec (P-2, extrapolated), the lowest trained level (L0), the middle one."""
    import torch
    from PIL import Image

    from .metrics import high_frequency_ratio, psnr

    files = [kodak / f for f in KODAK_EVAL if (kodak / f).exists()]
    if not files:
        return "kodak: not found"
    levels = net.log_gain.shape[0]
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    parts = []
    with torch.no_grad():
        for level in sorted({-levels_below(), 0, levels // 2}):
            scores = {0.0: [], 1.0: []}
            for img in images:
                h, w = img.shape[:2]
                x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float().div(255).to(device)
                x = torch.nn.functional.pad(x, (0, -w % 64, 0, -h % 64), mode="replicate")
                y_in = quantised_latent(net, x, level)
                for beta in scores:
                    out = net.generator(y_in, beta)[0, :, :h, :w].clamp(0, 1).mul(255).round()
                    rec = out.byte().permute(1, 2, 0).cpu().numpy()
                    scores[beta].append((psnr(img, rec), high_frequency_ratio(img, rec)))
            parts.append(f"{'P' if level < 0 else 'L'}{level}: " + ", ".join(
                f"b={beta:g} {np.mean([s[0] for s in v]):.2f} dB hf {np.mean([s[1] for s in v]):.2f}"
                for beta, v in scores.items()))
    return f"kodak({len(files)} imgs) " + " | ".join(parts)


# ---------------------------------------------------------------- training loop


def train(args) -> int:
    import torch
    from tqdm import tqdm

    from .nn.gan_models import Discriminator
    from .train import StopRequest, load_images, random_batch, run_log

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick the fastest kernels
    run_dir = Path(args.out)
    resuming = (run_dir / "checkpoint.json").exists()
    if not resuming and not args.base:
        raise SystemExit("mlimg train gan needs --base (a registered gmm model id or a gmm run folder)")
    base = None if resuming else load_base(args.base)  # a bad --base fails before the run folder exists
    run_dir.mkdir(parents=True, exist_ok=True)
    say = run_log(run_dir)
    command = getattr(args, "command", None) or "python -m mlimg.train_gan " + " ".join(sys.argv[1:])
    try:
        weights = parse_loss_weights(getattr(args, "loss_weights", None))
    except ValueError as exc:
        raise SystemExit(f"mlimg train gan: {exc}") from None
    train_config = {"crop": args.crop, "batch": args.batch, "lr": args.lr, "seed": args.seed, "data": args.data,
                    "loss_weights": weights}
    torch.manual_seed(args.seed)
    if resuming:
        net, disc, opt_g, opt_d, meta = load_gan_checkpoint(run_dir, device, args.lr)
        step, provenance = meta["step"], {k: meta[k] for k in meta if k.startswith("base")}
        say(f"resumed at step {step} (base {provenance['base']}): {command}")
        if args.base and args.base != provenance["base"]:
            say(f"--base {args.base} ignored: {run_dir} has a checkpoint built on {provenance['base']} (resume wins)")
        resumes = meta.get("resumes", []) + [{"step": step, "command": command}]
        command = meta.get("command") or command
    else:
        config, state, provenance = base
        net = build_from_base(config, state).to(device)
        disc = Discriminator(net.M).to(device)
        opt_g, opt_d = make_optimisers(net, disc, args.lr)
        step, resumes = 0, []
        say(f"new run on base {provenance['base']} (sha256 {provenance['base_sha256'][:16]}): {command} device={device}")
    net.eval()  # no dropout/batch norm anywhere; eval keeps the frozen part's semantics explicit
    lambdas = net.config["lambdas"]
    images = load_images(Path(args.data))
    n_gen = sum(p.numel() for p in net.generator.parameters())
    say(f"{len(images)} training images, generator {n_gen} / discriminator "
        f"{sum(p.numel() for p in disc.parameters())} parameters, loss weights {weights}")
    if step >= args.steps:
        say(f"nothing to train: already at step {step} >= --steps {args.steps}")
    running: dict[str, float] = {}
    seen, last_ckpt = 0, time.time()
    bar = tqdm(total=args.steps if args.steps < 10**9 else None, initial=step, mininterval=30, file=sys.stderr)
    with StopRequest() as stop:  # kill PID / Ctrl-C: finish the step, checkpoint, exit
        while step < args.steps and not stop.requested:
            rng = np.random.default_rng([args.seed, step])  # batch order is a pure function of (seed, step)
            torch.manual_seed(args.seed * 1_000_003 + step)
            position = draw_position(rng, len(lambdas))
            x = torch.from_numpy(random_batch(images, rng, args.crop, args.batch)).to(device)
            beta = torch.from_numpy(draw_beta(rng, args.batch)).to(device)
            terms = train_step(net, disc, opt_g, opt_d, x, position, beta, weights)
            step += 1
            seen += 1
            if seen == 1:
                say(f"step {step} " + " ".join(f"{k} {v:.4f}" for k, v in terms.items()) + " (first step of this process)")
            w = max(0.01, 1.0 / seen)
            for k, v in terms.items():
                running[k] = (1 - w) * running.get(k, v) + w * v
            bar.update(1)
            bar.set_postfix(g=f"{running['g']:.3f}", d=f"{running['d']:.3f}",
                            psnr=f"{10 * math.log10(1 / max(running['mse'], 1e-10)):.2f}", fm=f"{running['fm']:.3f}")
            if step % 100 == 0:
                say(f"step {step} " + " ".join(f"{k} {v:.4f}" for k, v in running.items())
                    + f" psnr {10 * math.log10(1 / max(running['mse'], 1e-10)):.2f} (running)")
            if step % args.eval_every == 0:
                say(f"step {step} {kodak_eval(net, Path(args.kodak), device)}")
            if time.time() - last_ckpt > args.checkpoint_every or step == args.steps or stop.requested:
                save_gan_checkpoint(run_dir, net, disc, opt_g, opt_d,
                                    {"step": step, "config": net.config, "train_config": train_config, **provenance,
                                     "command": command, "resumes": resumes})
                last_ckpt = time.time()
                say(f"checkpoint at step {step}" + (" (stop requested)" if stop.requested else ""))
    bar.close()
    return 0


# ---------------------------------------------------------------- export


def export(run_dir: Path) -> str:
    """Checkpoint -> mlimg/weights/gan-v1-<sha8>.safetensors: every tensor of the base gmm weights
    file unchanged (float network and integer cdf.* tables) except g_s, plus model.generator.*; registered as
    the gan default, the previous default gan file removed."""
    from safetensors.numpy import load_file, save_file

    from .nn import store
    from .nn.gan_models import GAN

    meta = json.loads((run_dir / "checkpoint.json").read_text())
    base_id = meta.get("base")
    if meta.get("base_kind") != "model":
        raise SystemExit(f"--export {run_dir}: trained on the run folder {base_id!r}; export needs a run whose "
                         "--base is a registered gmm model id (the file must share that model's tables)")
    entry = store.registry()["models"].get(base_id)
    if entry is None or entry["method"] != "gmm":
        raise SystemExit(f"--export {run_dir}: base gmm model {base_id!r} is not registered")
    if entry["sha256"] != meta["base_sha256"]:
        raise SystemExit(f"--export {run_dir}: base {base_id} has sha256 {entry['sha256']}, "
                         f"the run was trained on {meta['base_sha256']}")
    base_path = Path(entry["file"])
    if not base_path.is_absolute():
        base_path = store.WEIGHTS_DIR / base_path
    base = load_file(str(base_path))
    ckpt = load_file(str(run_dir / "checkpoint.safetensors"))
    changed = [k for k, v in base.items() if k.startswith("model.") and not np.array_equal(ckpt.get(k), v)]
    if changed:
        raise SystemExit(f"--export {run_dir}: the checkpoint's gmm part differs from {base_id} ({changed[:3]})")
    # The generator replaces g_s at decode time: leaving g_s out keeps the file under 25 MB.
    tensors = {k: v for k, v in base.items() if not k.startswith("model.g_s.")}
    tensors.update({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in ckpt.items() if k.startswith("model.generator.")})
    config = dict(meta["config"])
    net = GAN.from_config(config)  # validates: everything but the optional g_s must load
    import torch
    missing, unexpected = net.load_state_dict(
        {k[6:]: torch.from_numpy(v) for k, v in tensors.items() if k.startswith("model.")}, strict=False)
    if unexpected or [k for k in missing if not k.startswith(GAN.optional_weights)]:
        raise SystemExit(f"--export {run_dir}: tensors do not fit the gan network (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")

    tmp_path = store.new_weights_path()
    save_file(tensors, str(tmp_path), metadata={"config": json.dumps(config)})
    entry = {"config": config, "base": base_id,
             "training": {"command": meta.get("command"), "resumes": meta.get("resumes", []), "steps": meta["step"],
                          "train_config": meta.get("train_config")}}
    return store.install_default("gan", tmp_path, store.sha256_file(tmp_path), entry)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlimg.train_gan", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
