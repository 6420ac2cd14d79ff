"""Experiment: learn gain vectors for levels below the lowest trained one (network frozen)
and compare with the extrapolated gains, on Kodak (float estimate).

    python tools/experiments/learned_low_levels.py gmm STEPS [CROP [LR]]
(run from the repository root; Kodak in ../shared/data/kodak; TRAINING.md has the results)
"""
import sys, math, time
import numpy as np, torch
from pathlib import Path
from PIL import Image
from mlimg.nn import store
from mlimg.train import load_images, random_batch

torch.set_num_threads(2)
method = sys.argv[1]; steps = int(sys.argv[2]); crop = int(sys.argv[3]) if len(sys.argv) > 3 else 192
net = store.load(store.default_model(method), method).net.float()
for p in net.parameters():
    p.requires_grad_(False)
lam = net.config["lambdas"]
positions = [-2.0, -1.0]
lams = [lam[0] * (lam[0] / lam[1]) ** (-p) for p in positions]
print("lambdas", [f"{l:.5f}" for l in lams])
def extrap(p):
    g, ig = net.gains(p)
    return torch.log(g).clone(), torch.log(ig).clone()
params = []
for p in positions:
    lg, lig = extrap(p)
    params.append((torch.nn.Parameter(lg), torch.nn.Parameter(lig)))
opt = torch.optim.Adam([t for pair in params for t in pair], lr=float(sys.argv[4]) if len(sys.argv) > 4 else 3e-3)
images = load_images(Path("../shared/data/bsds500"))
from mlimg.nn.models import quantize_noise, quantize_ste, gmm_likelihood

def forward(x, lg, lig):
    g = torch.exp(lg).view(1, -1, 1, 1); ig = torch.exp(lig).view(1, -1, 1, 1)
    with torch.no_grad():
        ya = net.g_a(x)
    y = ya * g
    if method == "gmm":
        z = net.h_a(y)
        z_lik = net.z_prior.likelihood(quantize_noise(z))
        hyper = net.h_s(quantize_ste(z))
        y_round = quantize_ste(y)
        w, m, s = net.mixture(hyper, y_round)
        lik = torch.cat([gmm_likelihood(quantize_noise(y), w, m, s).flatten(), z_lik.flatten()])
    else:
        lik = net.prior.likelihood(quantize_noise(y)); y_round = quantize_ste(y)
    return net.g_s(y_round * ig), lik

def kodak(names, lg, lig):
    out = []
    with torch.no_grad():
        for n in names:
            x = torch.from_numpy(np.array(Image.open(f"../shared/data/kodak/{n}.png").convert("RGB"))).permute(2, 0, 1)[None].float().div(255)
            g = torch.exp(lg).view(1, -1, 1, 1); ig = torch.exp(lig).view(1, -1, 1, 1)
            y = torch.round(net.g_a(x) * g)
            bits = net.latent_bits(y, y).item()
            xh = net.g_s(y * ig).clamp(0, 1)
            mse = torch.mean((torch.round(xh * 255) - x * 255) ** 2).item()
            out.append((bits / (x.shape[2] * x.shape[3]), 10 * math.log10(255**2 / mse), mse / 255**2))
    return np.array(out)

names = ["kodim01", "kodim08", "kodim15", "kodim23"]
base = [kodak(names, *extrap(p)) for p in positions]
t0 = time.time()
for step in range(steps):
    rng = np.random.default_rng([7, step])
    i = step % len(positions)
    x = torch.from_numpy(random_batch(images, rng, crop, 4))
    xh, lik = forward(x, *params[i])
    bpp = -torch.log2(lik).sum() / (x.shape[0] * x.shape[2] * x.shape[3])
    mse = torch.mean((xh - x) ** 2)
    loss = lams[i] * 255**2 * mse + bpp
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 50 == 0 or step == steps - 1:
        print(step, i, f"loss {loss.item():.4f} bpp {bpp.item():.3f} psnr {10*math.log10(1/mse.item()):.2f} {time.time()-t0:.0f}s", flush=True)
for p, l, b, pr in zip(positions, lams, base, params):
    t = kodak(names, *[q.detach() for q in pr])
    J = lambda r: (l * 255**2 * r[:, 2] * 255**2 / 255**2 + r[:, 0]).mean()
    print(f"pos {p}: extrapolated {b[:,0].mean():.4f} bpp {b[:,1].mean():.2f} dB J {J(b):.4f} | trained {t[:,0].mean():.4f} bpp {t[:,1].mean():.2f} dB J {J(t):.4f}")
