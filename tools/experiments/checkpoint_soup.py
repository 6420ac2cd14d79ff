"""Experiment: average (model soup / SWA-style) the float weights of gmm or cae checkpoints of
one lineage and compare the rate-distortion cost on Kodak (float model, real rounding).

    python tools/experiments/checkpoint_soup.py gmm runs/gmm-56361 runs/gmm-narrow [...]
(run from the repository root; Kodak in ../shared/data/kodak)
"""
import itertools, sys
import torch
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
from kodak_cost import LEVELS, kodak_tensors, rd_cost
from safetensors.torch import load_file
from mlimg.nn.models import ARCH_KEYS, build

torch.set_num_threads(2)
method, runs = sys.argv[1], sys.argv[2:]
states = [{k[6:]: v.double() for k, v in load_file(f"{r}/checkpoint.safetensors").items() if k.startswith("model.")} for r in runs]
config = __import__("json").loads(Path(runs[0], "checkpoint.json").read_text())["config"]
net = build({k: v for k, v in config.items() if k in ARCH_KEYS}).eval()
kx, levels = kodak_tensors(), LEVELS

def cost(state):
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return rd_cost(net, kx, levels)

base = None
for r in range(1, len(states) + 1):
    for combo in itertools.combinations(range(len(states)), r):
        avg = {k: sum(states[i][k] for i in combo) / len(combo) for k in states[0]}
        res = cost(avg)
        base = base or res
        label = " + ".join(Path(runs[i]).name for i in combo)
        print(f"{label:60s}", " | ".join(f"L{l}: {b:.4f} bpp {p:.3f} dB J {J:.4f} ({(J-J0)/J0:+.2%})"
                                        for l, (J, b, p), (J0, _, _) in zip(levels, res, base)), flush=True)
