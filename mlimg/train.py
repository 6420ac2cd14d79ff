"""`mlimg train METHOD`: train a learned codec, checkpoint, resume, export weights.

Example (the command recorded beside the shipped weights):
    mlimg train cae --data ../shared/data/bsds500 --out runs/cae
    mlimg train cae --export runs/cae          # -> mlimg/weights/cae-v1-<sha>.safetensors (context tables from --data)
    mlimg train cae --init default --out runs/cae   # new session: continue from the shipped weights

Checkpoints are safetensors (model + Adam moments) plus a JSON file with the
step counter; the batch order is derived from (seed, step), so a resumed run
continues the same sequence. No pickle anywhere.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

METHODS = ("cae", "gmm", "rnn", "gan")  # rnn trains in mlimg/train_rnn.py, gan in mlimg/train_gan.py
KODAK_EVAL = ("kodim01.png", "kodim08.png", "kodim23.png")
CAE_GMM_DEFAULTS = {"crop": 64, "batch": 8, "lr": 2e-4, "prior_lr": 5e-3, "eval_every": 2000}


def add_arguments(parser) -> None:
    parser.add_argument("method", choices=METHODS)
    parser.add_argument("--data", default="../shared/data/bsds500", help="folder of training images")
    parser.add_argument("--out", default=None, help="run folder for checkpoints and log (default runs/METHOD; --entropy-fit runs/METHOD-entropy)")
    parser.add_argument("--kodak", default="../shared/data/kodak", help="folder with Kodak PNGs for the periodic evaluation")
    parser.add_argument("--steps", type=int, default=10**9,
                        help="stop after this many steps (--entropy-fit: the fit's own steps, default 10000)")
    # None = the method's default (cae/gmm: CAE_GMM_DEFAULTS; rnn and gan: their trainers'), so an
    # option typed with any value, the default's too, always wins.
    parser.add_argument("--crop", type=int, default=None, help="crop side (cae/gmm 64, rnn 32, gan 128; --entropy-fit 256)")
    parser.add_argument("--batch", type=int, default=None, help="crops per step (cae/gmm 8, rnn 16, gan 4; --entropy-fit 16)")
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate (cae/gmm 2e-4, rnn 5e-4, gan 1e-4; --entropy-fit 1e-4, cosine to 0)")
    parser.add_argument("--prior-lr", type=float, default=None,
                        help="learning rate of the entropy-model priors (cae/gmm 5e-3; --entropy-fit 1e-3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes that crop the next batches ahead (default: 2 on a GPU, 0 on the CPU)")
    parser.add_argument("--N", type=int, default=None, help="transform width (cae 96, gmm 64); cae with --init: "
                        "the registered model widened to it, computing the same function at first")
    parser.add_argument("--M", type=int, default=None, help="latent channels (cae 128, gmm 96)")
    parser.add_argument("--Nf", type=int, default=None, help="gmm: width of the full-resolution stages (32; speed)")
    parser.add_argument("--Na", type=int, default=None,
                        help="cae/gmm: analysis (encoder-only) width (default N); with --init, the registered "
                             "model's analysis is widened to it, computing the same function at first")
    parser.add_argument("--Nfa", type=int, default=None, help="gmm: width of the analysis' first stage (default Nf); "
                        "with --init, widened as --Na")
    parser.add_argument("--Ns", type=int, default=None,
                        help="gmm: synthesis (decoder) width (default N; decoding time grows with it); with --init, "
                             "widened as --Na")
    parser.add_argument("--Nfs", type=int, default=None, help="gmm: width of the synthesis' last stage (default Nf); "
                        "with --init, widened as --Na")
    parser.add_argument("--amp", action="store_true",
                        help="gmm: run the analysis and synthesis in bfloat16 autocast (the entropy model stays "
                             "float32), for GPU throughput; off by default")
    parser.add_argument("--checkpoint-every", type=float, default=300.0, help="seconds between checkpoints")
    parser.add_argument("--eval-every", type=int, default=None, help="steps between Kodak evaluations (cae/gmm 2000, gan 500, --entropy-fit 1000)")
    parser.add_argument("--export", metavar="RUN", default=None,
                        help="instead of training: export RUN's checkpoint to mlimg/weights and register it")
    parser.add_argument("--half", action="store_true",
                        help="cae/gmm --export: store the network in float16 where exact enough (about half "
                             "the bytes; the integer tables are computed from the rounded network)")
    parser.add_argument("--init", metavar="MODEL_ID", default=None,
                        help="when the run folder has no checkpoint: start from these registered weights "
                             "('default': the method's default model) at their recorded step, with a fresh "
                             "optimiser; ignored when the run folder has a checkpoint (resume wins)")
    parser.add_argument("--entropy-fit", action="store_true",
                        help="cae/gmm: instead of training: fit the entropy model of --init's weights to the "
                             "rate of rounded latents, transforms frozen, into the run folder --out "
                             "(mlimg/train_entropy.py)")
    parser.add_argument("--crops", type=int, default=1200,
                        help="--entropy-fit: training crops whose analysis output is cached (default 1200)")
    parser.add_argument("--groups", type=lambda v: [int(g) for g in v.split(",")], default=None, metavar="G,G,...",
                        help="gmm --entropy-fit: code the latent's channels in groups of these sizes (adding up to "
                             "M), each conditioned on the ones before (nn/models.py ChannelContext), e.g. 16,16,32,32; "
                             "replaces the groups of an --init that has some")
    parser.add_argument("--group-hidden", type=int, default=None,
                        help="--groups: width of each group's branch (default M)")
    parser.add_argument("--branch-lr", type=float, default=None,
                        help="--groups: learning rate of the new branches (default 5e-4, cosine to 0)")
    parser.add_argument("--base", default=None,
                        help="gan only: the gmm model id or gmm run folder whose frozen codec the generator decodes")
    parser.add_argument("--loss-weights", default=None, metavar="K=V,...",
                        help="gan only: override generator loss weights, e.g. adv=0.3,fm=10 (keys mse, ms_ssim, "
                             "laplacian, adv, fm)")


def run(args) -> int:
    gan_only = [f"--{k.replace('_', '-')}" for k in ("base", "loss_weights") if getattr(args, k, None) is not None]
    if gan_only and args.method != "gan":
        raise SystemExit(f"mlimg train {args.method}: {', '.join(gan_only)} only apply to gan")
    for key, methods in (("Na", ("cae", "gmm")), ("Nfa", ("gmm",)), ("Ns", ("gmm",)), ("Nfs", ("gmm",))):
        if getattr(args, key, None) is not None and args.method not in methods:
            raise SystemExit(f"mlimg train {args.method}: --{key} only applies to {'/'.join(methods)}")
    if getattr(args, "amp", False) and (args.method != "gmm" or args.export or getattr(args, "entropy_fit", False)):
        raise SystemExit(f"mlimg train {args.method}: --amp only applies to training gmm (its transforms)")
    if getattr(args, "half", False) and (args.method not in ("cae", "gmm") or not args.export):
        raise SystemExit(f"mlimg train {args.method}: --half only applies to cae/gmm with --export")
    fit_only = [f"--{k.replace('_', '-')}" for k in ("groups", "group_hidden", "branch_lr") if getattr(args, k, None) is not None]
    if fit_only and not getattr(args, "entropy_fit", False):
        raise SystemExit(f"mlimg train {args.method}: {', '.join(fit_only)} only apply to --entropy-fit")
    if getattr(args, "entropy_fit", False):
        if args.method not in ("cae", "gmm") or args.export:
            raise SystemExit(f"mlimg train {args.method}: --entropy-fit only applies to cae/gmm, without --export")
        from .train_entropy import FIT_DEFAULTS, fit

        for key, value in FIT_DEFAULTS.items():
            if getattr(args, key, None) is None:
                setattr(args, key, value)
        if args.steps == 10**9:
            args.steps = 10000
        return fit(args)
    if args.method == "rnn":
        from .train_rnn import run_from_train_command
        return run_from_train_command(args)
    if args.method == "gan":
        from .train_gan import run_from_train_command as run_gan
        return run_gan(args)
    if args.export:
        from .nn import store

        # cae's version-2 context tables are measured on the training images
        data = Path(args.data) if args.method == "cae" else None
        if data is not None and not data.is_dir():
            raise SystemExit(f"mlimg train cae --export measures its context tables on --data: {data} is not a folder")
        model_id = store.export_checkpoint(args.method, Path(args.export), data, half=args.half)
        print(f"registered {model_id}")
        return 0
    for key, value in CAE_GMM_DEFAULTS.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return _train(args)


# ---------------------------------------------------------------- data


def load_images(folder: Path, limit: int | None = None) -> list[np.ndarray]:
    """The folder's JPEG/PNG images as RGB arrays, sorted by name; the first `limit` only if given."""
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise SystemExit(f"no training images in {folder}")
    return [np.asarray(Image.open(p).convert("RGB")) for p in files[:limit]]


def random_batch(images: list[np.ndarray], rng: np.random.Generator, crop: int, batch: int) -> np.ndarray:
    """(batch, 3, crop, crop) float32 in [0, 1]: random image, random crop, random flips."""
    return crop_batch(images, rng, crop, batch).astype(np.float32) / 255.0


def crop_batch(images: list[np.ndarray], rng: np.random.Generator, crop: int, batch: int) -> np.ndarray:
    """random_batch's crops as contiguous (batch, 3, crop, crop) uint8 (the same draws from rng)."""
    out = np.empty((batch, crop, crop, 3), np.uint8)
    for i in range(batch):
        img = images[rng.integers(len(images))]
        h, w = img.shape[:2]
        y, x = rng.integers(h - crop + 1), rng.integers(w - crop + 1)
        patch = img[y : y + crop, x : x + crop]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        if rng.random() < 0.5:
            patch = patch[::-1]
        out[i] = patch
    # Contiguous NCHW: a channels-last strided batch segfaults torch 2.13 CPU conv backward at 128 px.
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


class StepBatches:
    """Item `step`: (lambda level, uint8 crops) of that training step, a pure function of
    (seed, step), so a resumed run sees the same batches and worker processes can build them
    ahead of the GPU (map-style dataset for torch's DataLoader)."""

    def __init__(self, images: list[np.ndarray], seed: int, crop: int, batch: int, levels: int):
        self.images, self.seed, self.crop, self.batch, self.levels = images, seed, crop, batch, levels

    def __getitem__(self, step: int) -> tuple[int, np.ndarray]:
        rng = np.random.default_rng([self.seed, step])
        level = int(rng.integers(self.levels))
        return level, crop_batch(self.images, rng, self.crop, self.batch)


def _leave_stopping_to_the_trainer(_worker_id: int) -> None:
    """`timeout -s TERM` and Ctrl-C signal the whole process group: a worker that died of it
    would abort the trainer before its final checkpoint; the trainer stops the workers itself."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def step_batches(data: StepBatches, start: int, stop: int, device, workers: int):
    """(level, float32 batch in [0, 1] on device) for steps start..stop-1. With workers > 0,
    that many processes crop ahead (on a GPU the main process then only launches kernels);
    uint8 crosses to the device and becomes float there (same values: one IEEE division)."""
    import torch

    loader = torch.utils.data.DataLoader(
        data, batch_size=None, sampler=range(start, stop), num_workers=workers,
        pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None,
        multiprocessing_context="fork" if workers else None,  # fork: workers share the images
        worker_init_fn=_leave_stopping_to_the_trainer)
    # Started now: starting draws a seed from torch's generator, which must happen before the
    # trainer seeds its first step, or a resumed run's first step would see other noise.
    started = iter(loader)
    return ((int(level), crops.to(device, non_blocking=True).float().div_(255.0)) for level, crops in started)


# ---------------------------------------------------------------- log, stopping and checkpoints


def run_log(run_dir: Path):
    """say(msg): a timestamped line appended to RUN/train.log and printed above the progress bar."""
    from tqdm import tqdm

    log = open(run_dir / "train.log", "a", buffering=1)

    def say(msg: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
        log.write(line + "\n")
        tqdm.write(line)

    return say


class StopRequest:
    """`kill PID` (SIGTERM) or Ctrl-C ends a run after the current step, with a checkpoint,
    so a stopped run loses nothing. A context manager: the previous handlers come back after."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __enter__(self) -> "StopRequest":
        import signal

        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def save_checkpoint(run_dir: Path, model, opt, meta: dict) -> None:
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    names = dict(model.named_parameters())
    for name, p in names.items():
        state = opt.state.get(p)
        if state:
            tensors[f"adam.exp_avg.{name}"] = state["exp_avg"].contiguous().cpu()
            tensors[f"adam.exp_avg_sq.{name}"] = state["exp_avg_sq"].contiguous().cpu()
            meta["adam_step"] = int(state["step"])
    write_checkpoint(run_dir, tensors, meta)


def write_checkpoint(run_dir: Path, tensors: dict, meta: dict) -> None:
    """RUN/checkpoint.safetensors and RUN/checkpoint.json, each replaced atomically."""
    from safetensors.torch import save_file

    tmp = run_dir / "checkpoint.safetensors.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, run_dir / "checkpoint.safetensors")  # atomic: a kill never leaves half a checkpoint
    (run_dir / "checkpoint.json.tmp").write_text(json.dumps(meta, indent=1))
    os.replace(run_dir / "checkpoint.json.tmp", run_dir / "checkpoint.json")


def load_checkpoint(run_dir: Path, model, opt, device) -> dict:
    """Model tensors (and, unless `opt` is None, the Adam moments) of RUN's checkpoint; its JSON."""
    import torch
    from safetensors.torch import load_file

    meta = json.loads((run_dir / "checkpoint.json").read_text())
    tensors = load_file(str(run_dir / "checkpoint.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    for name, p in model.named_parameters():
        if opt is not None and f"adam.exp_avg.{name}" in tensors:
            opt.state[p] = {
                "step": torch.tensor(float(meta.get("adam_step", meta["step"]))),
                "exp_avg": tensors[f"adam.exp_avg.{name}"].to(device),
                "exp_avg_sq": tensors[f"adam.exp_avg_sq.{name}"].to(device),
            }
    return meta


def command_line(method: str) -> str:
    """This process's `mlimg train METHOD ...` command as typed (recorded beside the weights);
    empty when METHOD is not on the command line (a test calling run() directly)."""
    return " ".join(["mlimg", "train"] + sys.argv[sys.argv.index(method):]) if method in sys.argv else ""


def resolve_init(model_id: str, method: str) -> tuple[str, dict]:
    """(model id, registry entry) for `--init MODEL_ID`; 'default' is the method's default model."""
    from .nn import store

    if model_id == "default":
        model_id = store.default_model(method)
        if model_id is None:
            raise SystemExit(f"--init default: no {method} model is registered")
    entry = store.registry()["models"].get(model_id)
    if entry is None or entry["method"] != method:
        have = ", ".join(store.model_ids(method)) or "none"
        raise SystemExit(f"--init: {method} model {model_id!r} is not registered (registered: {have})")
    return model_id, entry


# Widths that `--init` can grow while keeping the registered model's function (nn/widen.py),
# each with the width a config that leaves it out means. cae's N is its transforms' width only;
# gmm's N also sets the hyperprior, whose new channels would change the rate, so gmm grows its
# transforms' own widths only.
GROWABLE = {"cae": (("N", "N"), ("Na", "N")), "gmm": (("Na", "N"), ("Nfa", "Nf"), ("Ns", "N"), ("Nfs", "Nf"))}


def _widths(config: dict) -> dict:
    """The GROWABLE widths of a config, those it leaves out filled in."""
    return {key: config.get(key, config[base]) for key, base in GROWABLE.get(config["arch"], ())}


def widened_config(config: dict, args) -> dict:
    """The registered config with the GROWABLE widths given (--N, --Na, --Nfa, --Ns, --Nfs) raised;
    the model built from it fills in (or leaves out) transform widths as it does for any config."""
    wide = dict(config)
    for key, have in _widths(config).items():
        value = getattr(args, key, None)
        if value is not None:
            if value < have:
                raise SystemExit(f"--{key} {value}: the registered model already has {have}; widening only grows")
            wide[key] = value
    return wide


def init_from_registry(model, model_id: str, method: str) -> int:
    """Copy every tensor of a registered weights file into `model`; returns the recorded step count.

    Goes through store.load: safetensors only, sha256 checked against the registry. The load is
    strict, so a weights file lacking any parameter or buffer the trainer needs is an error; a
    model built wider (widened_config) gets the weights through nn/widen.py instead.
    """
    from .nn import store

    try:
        loaded = store.load(model_id, method)
    except OSError as e:
        raise SystemExit(f"--init: {e}")
    if model.config == loaded.net.config:
        model.load_state_dict(loaded.net.state_dict(), strict=True)  # copies: the cached net stays untouched
    else:
        from .nn.widen import widen_into

        widen_into(model, loaded.net.state_dict())
    return int((store.registry()["models"][model_id].get("training") or {}).get("steps") or 0)


def init_lineage(entry: dict, model_id: str, step: int, command: str) -> tuple[str, list]:
    """(original command, resumes) of a run initialised from a registered model: the model's own
    training history, then this init as one more resume (with the model id and sha256)."""
    training = entry.get("training") or {}
    resumes = list(training.get("resumes") or [])
    resumes.append({"step": step, "command": command, "init": model_id, "sha256": entry["sha256"]})
    return training.get("command") or command, resumes


# ---------------------------------------------------------------- evaluation


def kodak_eval(model, kodak: Path, device) -> str:
    """Estimated bpp (from the prior) and PSNR on a few Kodak images at three rates."""
    import torch
    from PIL import Image

    files = [kodak / f for f in KODAK_EVAL if (kodak / f).exists()]
    if not files:
        return "kodak: not found"
    levels = model.log_gain.shape[0]
    parts = []
    model.eval()
    with torch.no_grad():
        for level in (0, levels // 2, levels - 1):
            bpp, psnr = [], []
            for f in files:
                x = torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1)[None].float().div(255).to(device)
                h, w = x.shape[2:]
                x = torch.nn.functional.pad(x, (0, -w % 64, 0, -h % 64), mode="replicate")
                bits, x_hat = model.estimate(x, level)
                bits, x_hat = bits.item(), x_hat[..., :h, :w].clamp(0, 1)
                x = x[..., :h, :w]
                mse = torch.mean((torch.round(x_hat * 255) - x * 255) ** 2).item()
                bpp.append(bits / (x.shape[2] * x.shape[3]))
                psnr.append(10 * math.log10(255**2 / max(mse, 1e-10)))
            parts.append(f"L{level}: {np.mean(bpp):.3f} bpp {np.mean(psnr):.2f} dB")
    model.train()
    return f"kodak({len(files)} imgs) " + " | ".join(parts)


# ---------------------------------------------------------------- training loop


def _build(args):
    from .nn.models import CAE, GMM

    if args.method == "cae":
        return CAE(args.N or 96, args.M or 128, Na=args.Na)
    return GMM(args.N or 64, args.M or 96, Nf=args.Nf or 32, Na=args.Na, Nfa=args.Nfa, Ns=args.Ns, Nfs=args.Nfs)


def _train(args) -> int:
    import torch
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick the fastest kernels
    run_dir = Path(args.out or f"runs/{args.method}")
    run_dir.mkdir(parents=True, exist_ok=True)
    say = run_log(run_dir)
    torch.manual_seed(args.seed)
    resuming = (run_dir / "checkpoint.json").exists()
    init_id = init_entry = None
    if args.init and not resuming:
        init_id, init_entry = resolve_init(args.init, args.method)
    if resuming:  # a resumed run keeps its architecture
        from .nn.models import ARCH_KEYS, build

        saved = json.loads((run_dir / "checkpoint.json").read_text())["config"]
        model = build({k: v for k, v in saved.items() if k in ARCH_KEYS}).to(device)
    elif init_entry is not None:  # the registered model's architecture, maybe widened (GROWABLE)
        from .nn.models import build

        model = build(widened_config(init_entry["config"], args)).to(device)
    else:
        model = _build(args).to(device)
    # The priors are tiny density models that must track the latents quickly:
    # at the transforms' learning rate they lag for thousands of steps and inflate the rate.
    prior_params = [p for n, p in model.named_parameters() if n.split(".")[0] in ("prior", "z_prior")]
    other_params = [p for n, p in model.named_parameters() if n.split(".")[0] not in ("prior", "z_prior")]
    opt = torch.optim.Adam([{"params": other_params}, {"params": prior_params, "lr": args.prior_lr}], lr=args.lr)
    step, command = 0, command_line(args.method)
    if resuming:
        meta = load_checkpoint(run_dir, model, opt, device)
        step = meta["step"]
        say(f"resumed from step {step}: {command}")
        if args.init:
            say(f"--init {args.init} ignored: {run_dir} has a checkpoint (resume wins)")
        resumes = meta.get("resumes", []) + [{"step": step, "command": command}]
        command = meta.get("command", command)
    elif init_id is not None:
        step = init_from_registry(model, init_id, args.method)  # fresh optimiser: no Adam state
        say(f"initialised from {init_id} at step {step}: {command}")
        command, resumes = init_lineage(init_entry, init_id, step, command)
        if model.config != init_entry["config"]:
            before, after = _widths(init_entry["config"]), _widths(model.config)
            resumes[-1]["widened_to"] = {k: v for k, v in after.items() if v != before[k]}
            widths = " ".join(f"{k}={v}" for k, v in resumes[-1]["widened_to"].items())
            say(f"widened to {widths} (same function at this step)")
    else:
        resumes = []
    if not step:
        say(f"new run: {command} device={device}")
    if step >= args.steps:
        say(f"nothing to train: already at step {step} >= --steps {args.steps}")
    config = dict(model.config, crop=args.crop, batch=args.batch, lr=args.lr, prior_lr=args.prior_lr, seed=args.seed, data=args.data)

    images = load_images(Path(args.data))
    say(f"{len(images)} training images, {sum(p.numel() for p in model.parameters())} parameters")
    bar = tqdm(total=args.steps if args.steps < 10**9 else None, initial=step, mininterval=30, file=sys.stderr)
    model.train()
    with StopRequest() as stop:
        step = _train_loop(args, model, opt, images, device, step, say, bar, config, command, resumes, stop)
    bar.close()
    return 0


SHOW_EVERY = 20  # steps between reads of the running averages (progress bar)


def _train_loop(args, model, opt, images, device, step, say, bar, config, command, resumes, stop) -> int:
    import torch

    run_dir = Path(args.out or f"runs/{args.method}")
    lambdas = model.config["lambdas"]
    last_ckpt = time.time()
    running = None  # running averages of loss, bpp, mse, kept on the device (see below)
    seen = 0  # steps since this process started: bias-corrects the running averages
    workers = args.workers if args.workers is not None else (2 if device.type == "cuda" else 0)
    batches = step_batches(StepBatches(images, args.seed, args.crop, args.batch, len(lambdas)),
                           step, args.steps, device, workers)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(getattr(args, "amp", False)))
    while step < args.steps and not stop.requested:
        torch.manual_seed(args.seed * 1_000_003 + step)
        level, x = next(batches)  # the batch order is a pure function of (seed, step)
        with amp:  # --amp: the transforms in bfloat16; the models keep their entropy terms in float32
            x_hat, likelihoods = model(x, level)
        bpp = -torch.log2(likelihoods.float()).sum() / (x.shape[0] * x.shape[2] * x.shape[3])
        mse = torch.mean((x_hat.float() - x) ** 2)
        loss = lambdas[level] * 255**2 * mse + bpp
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        seen += 1
        if seen == 1:  # after a resume or --init: compare with the loss the previous session ended at
            say(f"step {step} loss {loss.item():.4f} bpp {bpp.item():.4f} "
                f"psnr {10 * math.log10(1 / max(mse.item(), 1e-10)):.2f} (first step of this process, level {level})")
        # On the device, read back only every SHOW_EVERY steps: a read waits for the GPU, and a
        # wait every step keeps the CPU from queueing the next step's kernels meanwhile
        w = max(0.01, 1.0 / seen)
        values = torch.stack([loss.detach(), bpp.detach(), mse.detach()])
        running = values if running is None else (1 - w) * running + w * values
        bar.update(1)
        if seen % SHOW_EVERY == 0 or step % 200 == 0:
            avg = dict(zip(("loss", "bpp", "mse"), running.tolist()))
            psnr = 10 * math.log10(1 / max(avg["mse"], 1e-10))
            bar.set_postfix(loss=f"{avg['loss']:.3f}", bpp=f"{avg['bpp']:.3f}", psnr=f"{psnr:.2f}")
            if step % 200 == 0:
                say(f"step {step} loss {avg['loss']:.4f} bpp {avg['bpp']:.4f} psnr {psnr:.2f} (running, all levels)")
        if step % args.eval_every == 0:
            say(f"step {step} {kodak_eval(model, Path(args.kodak), device)}")
        if time.time() - last_ckpt > args.checkpoint_every or step == args.steps or stop.requested:
            save_checkpoint(run_dir, model, opt, {"step": step, "config": config, "command": command, "resumes": resumes})
            last_ckpt = time.time()
            say(f"checkpoint at step {step}" + (" (stop requested)" if stop.requested else ""))
    batches.close()  # stops the worker processes
    return step


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(prog="mlimg train")
    add_arguments(p)
    raise SystemExit(run(p.parse_args()))
