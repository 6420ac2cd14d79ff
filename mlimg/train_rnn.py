"""Training and export for the rnn codec (`mlimg train rnn`, or `python -m mlimg.train_rnn`).

As in Toderici et al. 2017: 32x32 crops of photos, 16 iterations per step, loss = mean over
iterations of the L1 residual, stochastic binarisation with a straight-through gradient, Adam.
Checkpoints (safetensors, model + Adam moments, JSON step counter) go to the run folder every
few minutes; rerunning the same command resumes. Export writes mlimg/weights/rnn-v1-<sha>.safetensors
with the integer context-model prior (counts measured on training crops) and a registry entry.

    nice -n 19 python -m mlimg.train_rnn --out runs/rnn
    python -m mlimg.train_rnn --export runs/rnn
    python -m mlimg.train_rnn --init default --out runs/rnn   # new session: continue from the shipped weights
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np


def add_arguments(parser) -> None:
    parser.add_argument("--data", default="../shared/data/bsds500", help="folder of training images")
    parser.add_argument("--out", default="runs/rnn", help="run folder for checkpoints and log")
    parser.add_argument("--steps", type=int, default=10**9, help="stop after this many steps")
    parser.add_argument("--crop", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=None,
                        help="coding iterations per training step (default 16, or the checkpoint's)")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--gain-lr", type=float, default=None,
                        help="learning rate of the per-iteration gain offsets (default: --lr); Adam moves each "
                             "offset by about this much per step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--cell", choices=("gru", "lstm"), default="gru")
    parser.add_argument("--reconstruction", choices=("additive", "oneshot"), default="additive")
    parser.add_argument("--no-residual-scaling", action="store_true")
    parser.add_argument("--output", choices=("tanh", "linear"), default="linear",
                        help="decoder output: linear, or tanh-bounded to +-0.5 as in the first models (new runs "
                             "only; linear learned faster, TRAINING.md)")
    parser.add_argument("--gain-slope", type=float, default=0.3,
                        help="initial log-gain added per iteration by the residual scaling (new runs only)")
    parser.add_argument("--dec", default=None, metavar="W,W,W,W,W",
                        help="decoder widths: 1x1 conv, then the four cells (default 64,64,64,32,16; new runs only)")
    parser.add_argument("--lower-gains", action="store_true",
                        help="before training, lower each iteration's gain offset to log(r_0 / r_t), the "
                             "measured shrinkage of the residual (see lower_gain_offsets)")
    parser.add_argument("--binariser", choices=("stochastic", "hard"), default="stochastic",
                        help="training binariser: stochastic (the paper's) or hard (the inference sign, "
                             "straight-through gradient; TRAINING.md)")
    parser.add_argument("--loss", choices=("l1", "mse", "psnr"), default="l1",
                        help="per-iteration residual loss: l1 (the paper's), mse (what PSNR measures) or psnr "
                             "(the mean over iterations of log MSE, so every iteration's dB counts alike)")
    parser.add_argument("--checkpoint-every", type=float, default=300.0, help="seconds between checkpoints")
    parser.add_argument("--export", metavar="RUN", default=None,
                        help="instead of training: export RUN's checkpoint to mlimg/weights and register it")
    parser.add_argument("--refit-context", action="store_true",
                        help="re-export the installed rnn model with its logistic context model (method "
                             "version 4) fitted afresh on --data, every LOGISTIC_STRIDE-th image; no training")
    parser.add_argument("--init", metavar="MODEL_ID", default=None,
                        help="when the run folder has no checkpoint: start from these registered weights "
                             "('default': the default rnn model) at their recorded step, with a fresh "
                             "optimiser; ignored when the run folder has a checkpoint (resume wins)")


def run(args) -> int:
    if args.refit_context:
        model_id = refit_context(Path(args.data), args.seed)
        print(f"registered {model_id}")
        return 0
    if args.export:
        model_id = export(Path(args.export), Path(args.data))
        print(f"registered {model_id}")
        return 0
    return train(args)


def train(args) -> int:
    import torch

    from .nn.rnn_models import RNNCodecNet
    from .train import (StopRequest, init_from_registry, init_lineage, load_checkpoint, load_images, random_batch,
                        resolve_init, run_log, save_checkpoint)

    torch.set_num_threads(args.threads)
    run_dir = Path(args.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    say = run_log(run_dir)
    config = {"cell": args.cell, "reconstruction": args.reconstruction, "output": args.output,
              "gain_slope": args.gain_slope, "residual_scaling": not args.no_residual_scaling,
              "train_iterations": args.iterations or 16}
    if args.dec:
        config["dec"] = [int(v) for v in args.dec.split(",")]
    meta = {"step": 0}
    resuming = (run_dir / "checkpoint.json").exists()
    init_id = init_entry = None
    if resuming:  # resume: the network is the checkpoint's
        config = json.loads((run_dir / "checkpoint.json").read_text())["config"]
    elif args.init:  # a new session: the network is the registered model's
        init_id, init_entry = resolve_init(args.init, "rnn")
        config = dict(init_entry["config"])
    if (resuming or init_id) and args.iterations:  # a training-only setting, may change between runs
        config["train_iterations"] = args.iterations
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick the fastest kernels
    torch.manual_seed(args.seed)
    net = RNNCodecNet(config).to(device)
    # The gain offsets may learn faster than the networks (--gain-lr); each group keeps its
    # ratio to --lr through the schedule below.
    offsets = [p for name, p in net.named_parameters() if name == "gain.offset"]
    rest = [p for name, p in net.named_parameters() if name != "gain.offset"]
    gain_lr = args.gain_lr or args.lr
    gain_scale = gain_lr / args.lr
    groups = [{"params": rest, "scale": 1.0}] + ([{"params": offsets, "scale": gain_scale}] if offsets else [])
    opt = torch.optim.Adam(groups, lr=args.lr)
    command = getattr(args, "command", None) or "python -m mlimg.train_rnn " + " ".join(sys.argv[1:])
    resumes: list = []
    if resuming:
        meta = load_checkpoint(run_dir, net, opt, device)
        say(f"resumed at step {meta['step']}: {command}")
        if args.init:
            say(f"--init {args.init} ignored: {run_dir} has a checkpoint (resume wins)")
        # Older checkpoints stored the latest command only; keep the first one and list the resumes.
        resumes = meta.get("resumes", []) + [{"step": meta["step"], "command": command}]
        command = meta.get("command") or command
    elif init_id is not None:
        meta = {"step": init_from_registry(net, init_id, "rnn")}  # fresh optimiser: no Adam state
        say(f"initialised from {init_id} at step {meta['step']}: {command}")
        command, resumes = init_lineage(init_entry, init_id, meta["step"], command)
    train_config = {"crop": args.crop, "batch": args.batch, "lr": args.lr, "gain_lr": gain_lr,
                    "seed": args.seed, "data": args.data, "binariser": args.binariser, "loss": args.loss}
    images = load_images(Path(args.data))
    say(f"{len(images)} training images on {device}, config {net.config}")
    if args.lower_gains:
        before, after = lower_gain_offsets(net, images, args.seed, device)
        say(f"--lower-gains: gain offsets {[round(float(v), 2) for v in before]} -> {[round(float(v), 2) for v in after]}")
    if meta["step"] >= args.steps:
        say(f"nothing to train: already at step {meta['step']} >= --steps {args.steps}")
    step, last_ckpt, t0, running = meta["step"], time.time(), time.time(), []
    shown_kind = "L1" if args.loss == "l1" else "MSE"  # what the logged per-iteration losses are (psnr: MSE)
    with StopRequest() as stop:  # kill PID / Ctrl-C: finish the step, checkpoint, exit
        while step < args.steps and not stop.requested:
            rng = np.random.default_rng([args.seed, step])  # batch order from (seed, step): resumable
            torch.manual_seed(args.seed * 1_000_003 + step)
            x = torch.from_numpy(random_batch(images, rng, args.crop, args.batch)).to(device) - 0.5
            lr = args.lr * (0.5 if step > 20000 else 1.0)
            for group in opt.param_groups:
                group["lr"] = lr * group["scale"]
            losses = net(x, net.config["train_iterations"], args.binariser, "l1" if args.loss == "l1" else "mse")
            loss = _combine(torch.stack(losses), args.loss)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            step += 1
            running.append([float(v.detach()) for v in losses])
            if len(running) == 1 and step == meta["step"] + 1:  # after a resume or --init: compare with the last loss
                say(f"step {step} loss {np.mean(running[0]):.5f} {shown_kind} it1/last {running[0][0]:.4f} {running[0][-1]:.4f} "
                    f"(first step of this process)")
            if step % 50 == 0:
                avg = np.mean(running, axis=0)
                shown = sorted({0, 3, 7, len(avg) - 1} & set(range(len(avg))))  # iterations 1, 4, 8 and the last
                names = "/".join("last" if i == len(avg) - 1 else str(i + 1) for i in shown)
                psnr = "/".join(f"{_rough_psnr(avg[i], shown_kind.lower()):.1f}" for i in shown)
                say(f"step {step} loss {avg.mean():.5f} {shown_kind} it{names} {' '.join(f'{avg[i]:.4f}' for i in shown)} "
                    f"(~{psnr} dB) {(time.time() - t0) / 50:.2f} s/step")
                running, t0 = [], time.time()
            if time.time() - last_ckpt > args.checkpoint_every or step == args.steps or stop.requested:
                save_checkpoint(run_dir, net, opt, {"step": step, "config": net.config, "command": command,
                                                    "resumes": resumes, "train_config": train_config})
                last_ckpt = time.time()
                say(f"checkpoint at step {step}" + (" (stop requested)" if stop.requested else ""))
    return 0


def _combine(losses, kind: str):
    """One training loss from the per-iteration losses (T,).

    l1/mse: their mean, which weights the early iterations most (their errors are the largest).
    psnr: the gradient of the mean log MSE, i.e. of the mean PSNR over iterations, so a dB at
    iteration 16 counts as much as one at iteration 1 (the rate-distortion curve is measured in
    dB); scaled by the mean MSE so that its size, and gradient clipping, stay as with mse."""
    if kind != "psnr":
        return losses.mean()
    return (losses / losses.detach()).mean() * losses.detach().mean()


def _rough_psnr(loss: float, kind: str) -> float:
    """PSNR in dB from a mean squared error, or roughly from a mean absolute error (L1 * 1.25
    ~ RMS for Laplacian residuals); pixels in [-0.5, 0.5]."""
    if kind == "mse":
        return -10 * np.log10(max(loss, 1e-12))
    return -20 * np.log10(max(loss, 1e-9) * 1.25)


# ---------------------------------------------------------------- export


def export(run_dir: Path, data: Path, n_crops: int = 8, n_images: int = 40) -> str:
    """Checkpoint -> shipped weights + context prior counts + registry entry (old rnn default removed)."""
    import torch
    from safetensors.torch import load_file

    from .nn.binary_context import prior_counts
    from .nn.rnn_models import RNNCodecNet
    from .codecs.rnn import encode_bits
    from .train import load_images, random_batch

    meta = json.loads((run_dir / "checkpoint.json").read_text())
    net = RNNCodecNet(meta["config"])
    tensors = load_file(str(run_dir / "checkpoint.safetensors"))
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    net.eval()
    # Context prior: bit statistics of the trained encoder on 128x128 training crops.
    images = load_images(data, n_images)
    crops = random_batch(images, np.random.default_rng(1234), 128, n_crops)
    planes = []
    with torch.inference_mode():
        for crop in crops:
            planes.append(encode_bits(net, crop.transpose(1, 2, 0), 16))
    # one table per coding: method version 1-2 contexts, and version 3's (checkerboard phases)
    tables = {"context_prior": prior_counts(planes), "context_prior_split": prior_counts(planes, split=True)}
    tables.update(logistic_tables(net, data))  # version 4
    training = {"command": meta.get("command"), "resumes": meta.get("resumes", []), "steps": meta["step"],
                **({"train_config": meta["train_config"]} if "train_config" in meta else {}),
                "context_model": _context_record(data, 0)}
    return _register(net, tables, training)


LOGISTIC_STRIDE = 5  # the logistic context model is fitted on every 5th training image (by name)


def logistic_tables(net, data: Path, seed: int = 0) -> dict:
    """Method version 4's tables: logistic weights fitted on the bits of 16 uniform iterations of
    every LOGISTIC_STRIDE-th image of `data` (whole images: the bits see real image borders),
    and the prior counts of its contexts on the same bits (nn/binary_logistic.py)."""
    import torch
    from PIL import Image

    from .codecs.rnn import encode_bits
    from .nn.binary_logistic import fit_weights, prior_counts

    files = sorted(p for p in Path(data).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[::LOGISTIC_STRIDE]
    if not files:
        raise SystemExit(f"no training images in {data}")
    with torch.inference_mode():
        samples = [encode_bits(net, np.asarray(Image.open(p).convert("RGB"), np.float32) / 255, 16) for p in files]
    weights = fit_weights(samples, seed=seed)
    return {"logistic_weights": weights, "logistic_prior": prior_counts(samples, weights)}


def _context_record(data: Path, seed: int) -> dict:
    """What the registry records of a logistic fit (the command when typed, not from tests)."""
    typed = "--refit-context" in sys.argv or "--export" in sys.argv
    return {"command": " ".join(["python -m mlimg.train_rnn"] + sys.argv[1:]) if typed else None,
            "data": str(data), "stride": LOGISTIC_STRIDE, "seed": seed}


def refit_context(data: Path, seed: int = 0) -> str:
    """The installed rnn model with freshly fitted logistic context tables, as a new model id
    (the network and its other tables unchanged); the old id is unregistered like on export."""
    from .nn import store

    old_id = store.default_model("rnn")
    if old_id is None:
        raise SystemExit("no rnn model is installed")
    loaded = store.load(old_id, "rnn")
    tables = {k: v for k, v in loaded.tables.items() if not k.startswith("logistic_")}
    tables.update(logistic_tables(loaded.net, data, seed))
    training = dict(store.registry()["models"][old_id].get("training", {}))
    training["context_model"] = {**_context_record(data, seed), "refit_of": old_id}
    return _register(loaded.net, tables, training)


def _register(net, tables: dict, training: dict) -> str:
    """Write the weights file, register it as the rnn default and drop the old default's file."""
    from .nn import store

    tmp_path = store.new_weights_path()
    sha = store.save_weights(tmp_path, net, tables, net.config)
    return store.install_default("rnn", tmp_path, sha, {"config": net.config, "training": training})


def lower_gain_offsets(net, images, seed: int, device, crops: int = 64, crop: int = 64):
    """Cap iteration t's log-gain offset at log(r_0 / r_t), r_t the mean |residual| entering iteration t.

    The offsets start at 0.3·t (residuals assumed to shrink by e^0.3 per iteration). When they
    shrink more slowly, gains outgrow the residual: the encoder input saturates and the decoder's
    correction (at most 0.5 / gain) becomes too small to matter, so later iterations stop paying
    for their bits (the shipped 7389-step model had gain ~32 at t = 15 for a residual only 4.7x
    smaller than at t = 0). Measured iteration by iteration with hard bits on fixed crops, each t
    after lowering the ones before it. Returns (old offsets, new offsets) of the first T entries.
    """
    import torch

    from .nn.rnn_models import hard_binarise
    from .train import random_batch

    if net.gain is None:
        raise SystemExit("--lower-gains: this network has no residual scaling")
    iterations = net.config["train_iterations"]
    x = torch.from_numpy(random_batch(images, np.random.default_rng([seed, 10**9]), crop, crops)).to(device) - 0.5
    before = net.gain.offset[:iterations].detach().cpu().numpy().copy()
    with torch.no_grad():
        enc, dec = net.initial_states()
        recon = torch.zeros_like(x)
        r0 = None
        for t in range(iterations):
            r = float((x - recon).abs().mean())
            r0 = r if r0 is None else r0
            if t and r0 > 0 and r > 0:  # (an all-flat batch has nothing to measure)
                net.gain.offset[t] = min(float(net.gain.offset[t]), math.log(r0 / r))
            code, enc = net.encode_step(x, recon, enc, t)
            recon, dec = net.decode_step(hard_binarise(code), recon, dec, t)
    return before, net.gain.offset[:iterations].detach().cpu().numpy()


def run_from_train_command(train_args) -> int:
    """`mlimg train rnn ...`: the shared options of mlimg/train.py that were typed, rnn defaults
    for the rest (32x32 crops as in the paper); the cae/gmm-specific options are ignored."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    # train.py leaves crop/batch/lr at None unless typed: None keeps the rnn default.
    for key in ("data", "steps", "crop", "batch", "lr", "seed", "threads", "checkpoint_every", "export", "init"):
        if getattr(train_args, key, None) is not None:
            setattr(args, key, getattr(train_args, key))
    args.out = getattr(train_args, "out", None) or "runs/rnn"
    if "rnn" in sys.argv:  # record the command as typed (`mlimg train rnn ...`)
        args.command = " ".join(["mlimg", "train"] + sys.argv[sys.argv.index("rnn"):])
    return run(args)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlimg.train_rnn", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
