"""Fine-tune cae's analysis transform against the rate its files actually pay: the context
coder's tables (version 2), not the factorised prior it was trained with. Synthesis, gains,
prior and tables frozen, so files stay decodable by the shipped weights' decoder.

    python tools/experiments/cae_encoder_tables.py STEPS LR CROP BATCH [--save runs/cae-ga.safetensors]

Training rate: each value's code length in the table of its context (contexts from the
rounded latent), interpolated linearly at the latent plus uniform noise; distortion: the
straight-through-rounded latent through the frozen synthesis. Levels: the six trained ones
and the two extrapolated below them, each with its table row and lambda (refine.lambda_at).
Every EVAL steps: Kodak (kodim01/08/15/23) at qualities 29 / 58 / 100 (gain positions about
0 / 2 / 5), real coded bits (latent_context.encode_latent) and PSNR of the synthesis (no loop
filter): the cost lambda * 255^2 * MSE + bpp against the shipped encoder's.
"""
import argparse
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from mlimg.codecs import cae
from mlimg.nn import latent_context as lc
from mlimg.nn import store
from mlimg.nn.entropy_models import quantize_ste
from mlimg.nn.refine import TableRate, lambda_at
from mlimg.train import load_images, random_batch

QUALITIES = (29, 58, 100)
NAMES = ("kodim01", "kodim08", "kodim15", "kodim23")
EVAL = int(os.environ.get("EVAL", 250))  # Kodak evaluation every EVAL steps


def row_rate(model, row):
    """TableRate of stored table row `row` (a gain position), not of a quality."""
    widths = 2 * np.asarray(model.ranges, np.int64) + 2
    return TableRate(model, counts=np.split(model.tables[row].astype(np.int64), np.cumsum(widths)[:-1], axis=1))


def kodak_cost(net, model, images):
    """[(cost, bpp, PSNR)] per quality of QUALITIES, mean over the images, real coding."""
    out = []
    levels = net.log_gain.shape[0]
    with torch.no_grad():
        for quality in QUALITIES:
            position = cae.gain_position(quality, levels, 2)
            gain, inv_gain = net.gains(position)
            lam = lambda_at(net.config["lambdas"], position) * 255**2
            J = b = p = 0.0
            for img in images:
                x = cae._pad(img.astype(np.float32) / 255)
                q = np.round(cae.analysis_tiled(net, x, gain)).astype(np.int64)
                escaped, stream = lc.encode_latent(q, model, quality)
                bpp = (8 * len(stream) + 16 * escaped.size) / (img.shape[0] * img.shape[1])
                xh = cae.synthesis_tiled(net, q.astype(np.float32), inv_gain)[: img.shape[0], : img.shape[1]]
                mse = np.mean((np.clip(np.round(xh * 255), 0, 255) - img) ** 2) / 255**2
                J += (lam * mse + bpp) / len(images)
                b += bpp / len(images)
                p += 10 * math.log10(1 / mse) / len(images)
            out.append((J, b, p))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("steps", type=int)
    parser.add_argument("lr", type=float)
    parser.add_argument("crop", type=int)
    parser.add_argument("batch", type=int)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--save", help="write the fine-tuned analysis (g_a tensors, safetensors) here at each evaluation")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = store.load(store.default_model("cae"), "cae")
    net = loaded.net.float()
    model = cae.context_model(loaded.tables, net.log_gain.shape[0], 2)
    for name, p in net.named_parameters():
        p.requires_grad_(name.startswith("g_a."))
    positions = np.arange(-cae.LEVELS_BELOW[2], net.log_gain.shape[0])  # table rows 0..7
    rates = [row_rate(model, row) for row in range(len(positions))]
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=args.lr)
    images = load_images(Path("../shared/data/bsds500"))
    from PIL import Image
    kodak = [np.asarray(Image.open(f"../shared/data/kodak/{n}.png").convert("RGB")).astype(np.float64) for n in NAMES]
    base = kodak_cost(net, model, kodak)
    print("base  " + " | ".join(f"q{q}: J {J:.4f} {b:.4f} bpp {p:.3f} dB" for q, (J, b, p) in zip(QUALITIES, base)), flush=True)
    start, running = time.time(), 0.0
    for step in range(1, args.steps + 1):
        rng = np.random.default_rng([args.seed, step])
        row = int(rng.integers(len(positions)))
        position = float(positions[row])
        with torch.no_grad():
            gain, inv_gain = (t.view(1, -1, 1, 1) for t in net.gains(position))
        lam = lambda_at(net.config["lambdas"], position) * 255**2
        x = torch.from_numpy(random_batch(images, rng, args.crop, args.batch))
        y = net.g_a(x) * gain
        noisy = y + torch.rand(y.shape, generator=torch.Generator().manual_seed(step)) - 0.5
        bits = sum(rates[row](noisy[i : i + 1], rounded=y[i : i + 1]) for i in range(y.shape[0]))
        xh = net.g_s(quantize_ste(y) * inv_gain)
        loss = lam * torch.mean((xh - x) ** 2) + bits / (x.shape[0] * x.shape[2] * x.shape[3])
        opt.zero_grad()
        loss.backward()
        opt.step()
        running = 0.98 * running + 0.02 * loss.item()
        if step % 50 == 0:
            print(f"{step} loss {running / (1 - 0.98**step):.4f} {time.time() - start:.0f} s", flush=True)
        if step % EVAL == 0 or step == args.steps:
            cost = kodak_cost(net, model, kodak)
            print(f"kodak {step} " + " | ".join(f"q{q}: dJ {(J - J0) / J0:+.2%} {b:.4f} bpp {p:.3f} dB"
                                                 for q, (J, b, p), (J0, _, _) in zip(QUALITIES, cost, base)), flush=True)
            if args.save:
                from safetensors.torch import save_file
                save_file({k: v.contiguous() for k, v in net.state_dict().items() if k.startswith("g_a.")}, args.save)


if __name__ == "__main__":
    main()
