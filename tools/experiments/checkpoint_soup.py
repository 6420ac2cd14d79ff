"""Experiment: average (model soup / SWA-style) the float weights of gmm or cae checkpoints of
one lineage and compare the rate-distortion cost on Kodak (float model, real rounding).

    python tools/experiments/checkpoint_soup.py gmm runs/gmm-56361 runs/gmm-narrow [...]
(run from the repository root; Kodak in ../shared/data/kodak)
"""
import itertools, math, sys
import numpy as np, torch
from pathlib import Path
from PIL import Image
from safetensors.torch import load_file
from mlimg.nn.models import ARCH_KEYS, build

torch.set_num_threads(2)
method, runs = sys.argv[1], sys.argv[2:]
states = [{k[6:]: v.double() for k, v in load_file(f"{r}/checkpoint.safetensors").items() if k.startswith("model.")} for r in runs]
config = __import__("json").loads(Path(runs[0], "checkpoint.json").read_text())["config"]
net = build({k: v for k, v in config.items() if k in ARCH_KEYS}).eval()
lams = net.config["lambdas"]
names = ["kodim01", "kodim08", "kodim15", "kodim23"]
kx = [torch.from_numpy(np.array(Image.open(f"../shared/data/kodak/{n}.png").convert("RGB"))).permute(2, 0, 1)[None].float().div(255) for n in names]
levels = [0, 2, 5]

def cost(state):
    net.load_state_dict({k: v.float() for k, v in state.items()})
    out = []
    with torch.no_grad():
        for lv in levels:
            J = p = b = 0.0
            for x in kx:
                bits, xh = net.estimate(x, lv)
                mse = torch.mean((torch.round(xh.clamp(0, 1) * 255) - x * 255) ** 2).item() / 255**2
                bpp = bits.item() / (x.shape[2] * x.shape[3])
                J += (lams[lv] * 255**2 * mse + bpp) / len(kx); b += bpp / len(kx); p += 10 * math.log10(1 / mse) / len(kx)
            out.append((J, b, p))
    return out

base = None
for r in range(1, len(states) + 1):
    for combo in itertools.combinations(range(len(states)), r):
        avg = {k: sum(states[i][k] for i in combo) / len(combo) for k in states[0]}
        res = cost(avg)
        base = base or res
        label = " + ".join(Path(runs[i]).name for i in combo)
        print(f"{label:60s}", " | ".join(f"L{l}: {b:.4f} bpp {p:.3f} dB J {J:.4f} ({(J-J0)/J0:+.2%})"
                                        for l, (J, b, p), (J0, _, _) in zip(levels, res, base)), flush=True)
