"""Soft-then-hard (Guo et al. 2021): fine-tune only the analysis with real rounding (STE) in both
the rate and the distortion, decoder and entropy model frozen. Kodak: real-rounding estimate.

    python tools/experiments/soft_then_hard.py gmm STEPS LR CROP BATCH [ga]
(run from the repository root; Kodak in ../shared/data/kodak; TRAINING.md has the results)
"""
import sys, time
import numpy as np, torch
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
from kodak_cost import LEVELS, kodak_tensors, rd_cost
from mlimg.nn import store
from mlimg.train import load_images, random_batch
from mlimg.nn.entropy_models import quantize_ste

method, steps, lr = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
crop, batch = int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(2)
net = store.load(store.default_model(method), method).net.float()
net.train()
for n, p in net.named_parameters():
    # argv[6] "ga": the analysis only; otherwise the hyper-analysis too (both run in the encoder only)
    p.requires_grad_(n.startswith("g_a." if sys.argv[6:7] == ["ga"] else ("g_a.", "h_a.")))
lams = net.config["lambdas"]
opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
images = load_images(Path("../shared/data/bsds500"))
kx, levels = kodak_tensors(), LEVELS

def kodak():
    net.eval()
    out = rd_cost(net, kx, levels)
    net.train()
    return out

base = kodak()
print("base", " | ".join(f"L{l}: J {J:.4f} {b:.4f} bpp {p:.3f} dB" for l, (J, b, p) in zip(levels, base)), flush=True)
t0 = time.time(); run = 0
for step in range(1, steps + 1):
    rng = np.random.default_rng([3, step])
    lv = int(rng.integers(len(lams)))
    x = torch.from_numpy(random_batch(images, rng, crop, batch))
    g = torch.exp(net.log_gain[lv]).view(1, -1, 1, 1).detach(); ig = torch.exp(net.log_inv_gain[lv]).view(1, -1, 1, 1).detach()
    yq = quantize_ste(net.g_a(x) * g)
    bits = net.latent_bits(yq, yq)
    xh = net.g_s(yq * ig)
    loss = lams[lv] * 255**2 * torch.mean((xh - x) ** 2) + bits / (x.shape[0] * x.shape[2] * x.shape[3])
    opt.zero_grad(); loss.backward(); opt.step()
    run = 0.98 * run + 0.02 * loss.item()
    if step % 100 == 0:
        print(step, f"loss {run/(1-0.98**step):.4f} {time.time()-t0:.0f}s", flush=True)
    if step % 250 == 0:
        r = kodak()
        print("kodak", step, " | ".join(f"L{l}: dJ {J-J0:+.4f} ({(J-J0)/J0:+.2%}) {b:.4f} bpp {p:.3f} dB" for l, (J, b, p), (J0, _, _) in zip(levels, r, base)), flush=True)
