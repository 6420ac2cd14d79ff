"""Feasibility: a small decoder-side latent residual predictor (LRP) trained with the frozen gmm/cae.
y_hat = q + 0.5*tanh(f(q, mean, log scale)); loss = pixel MSE through the frozen synthesis.

    python tools/experiments/latent_residual_predictor.py gmm STEPS WIDTH [THREADS [LR]]
(run from the repository root; Kodak in ../shared/data/kodak; TRAINING.md has the results)
"""
import sys, math, time
import numpy as np, torch, torch.nn as nn
from pathlib import Path
from PIL import Image
from mlimg.nn import store
from mlimg.train import load_images, random_batch
from mlimg.nn.entropy_models import quantize_ste

torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else 2)
method = sys.argv[1]; steps = int(sys.argv[2]); width = int(sys.argv[3])
net = store.load(store.default_model(method), method).net.float().eval()
for p in net.parameters():
    p.requires_grad_(False)
M = net.M if hasattr(net, "M") else net.config["M"]
levels = net.log_gain.shape[0]

def features(q):
    if method == "gmm":
        z = torch.round(net.h_a(q))
        w, m, s = net.mixture(net.h_s(z), q)
        mean = (w * m).sum(1); ls = (w * torch.log(s)).sum(1)
        return torch.cat([q, q - mean, ls], 1)
    return q

class LRP(nn.Module):
    def __init__(self, cin, M, width):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, M, 1))
        nn.init.zeros_(self.body[-1].weight); nn.init.zeros_(self.body[-1].bias)
    def forward(self, f):
        return 0.5 * torch.tanh(self.body(f))

cin = 3 * M if method == "gmm" else M
f = LRP(cin, M, width)
opt = torch.optim.Adam(f.parameters(), lr=float(sys.argv[5]) if len(sys.argv) > 5 else 1e-3)
images = load_images(Path("../shared/data/bsds500"))

def recon(x, pos, use):
    g, ig = net.gains(pos)
    with torch.no_grad():
        q = torch.round(net.g_a(x) * g.view(1, -1, 1, 1)); feats = features(q)
    r = f(feats) if use else 0
    return net.g_s((q + r) * ig.view(1, -1, 1, 1))

def kodak(names, positions):
    res = np.zeros((len(positions), 2))
    with torch.no_grad():
        for n in names:
            x = torch.from_numpy(np.array(Image.open(f"../shared/data/kodak/{n}.png").convert("RGB"))).permute(2, 0, 1)[None].float().div(255)
            for i, p in enumerate(positions):
                for j, use in enumerate((False, True)):
                    xh = recon(x, p, use).clamp(0, 1)
                    mse = torch.mean((torch.round(xh * 255) - x * 255) ** 2).item()
                    res[i, j] += 10 * math.log10(255**2 / mse) / len(names)
    return res

names = ["kodim01", "kodim08", "kodim15", "kodim23"]
positions = [-2.0, 0.9, 3.1, 5.0]
t0 = time.time(); run = 0
for step in range(steps):
    rng = np.random.default_rng([11, step])
    pos = float(rng.uniform(-2, levels - 1))
    x = torch.from_numpy(random_batch(images, rng, 128, 8))
    mse = torch.mean((recon(x, pos, True) - x) ** 2)
    opt.zero_grad(); mse.backward(); opt.step()
    run = 0.98 * run + 0.02 * mse.item()
    if step % 100 == 0:
        print(step, f"mse {run:.6f} {time.time()-t0:.0f}s", flush=True)
    if step and step % 1000 == 0 or step == steps - 1:
        r = kodak(names, positions)
        print("kodak", " | ".join(f"pos {p}: {a:.3f} -> {b:.3f} ({b-a:+.3f})" for p, (a, b) in zip(positions, r)), flush=True)
