"""Shared by the experiments: Kodak images as tensors, and a cae/gmm network's rate-distortion
cost on them at a few gain levels (float model, real rounding, 8-bit output)."""
import math

import numpy as np
import torch
from PIL import Image

NAMES = ["kodim01", "kodim08", "kodim15", "kodim23"]
LEVELS = [0, 2, 5]


def kodak_tensors(names=NAMES):
    return [torch.from_numpy(np.array(Image.open(f"../shared/data/kodak/{n}.png").convert("RGB")))
            .permute(2, 0, 1)[None].float().div(255) for n in names]


def rd_cost(net, images, levels=LEVELS):
    """[(lambda * 255**2 * MSE + bpp, bpp, PSNR)] per level, averaged over the images."""
    lams = net.config["lambdas"]
    out = []
    with torch.no_grad():
        for lv in levels:
            J = b = p = 0.0
            for x in images:
                bits, xh = net.estimate(x, lv)
                mse = torch.mean((torch.round(xh.clamp(0, 1) * 255) - x * 255) ** 2).item() / 255**2
                bpp = bits.item() / (x.shape[2] * x.shape[3])
                J += (lams[lv] * 255**2 * mse + bpp) / len(images)
                b += bpp / len(images)
                p += 10 * math.log10(1 / mse) / len(images)
            out.append((J, b, p))
    return out
