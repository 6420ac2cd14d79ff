"""Would a linear post-filter help a learned method? Fits one 7x7x3 least-squares filter per output
channel from decoded to original pixels on kodim01/08/15/21 (every other pixel) and applies it to
kodim04/13/19/23 (held out): mean PSNR before and after.

    python tools/linear_postfilter_check.py rnn 28,70
"""
import io
import sys

import numpy as np
from PIL import Image
import mlimg
method = sys.argv[1]; qs = [int(v) for v in sys.argv[2].split(",")]
K = 7; r = K // 2
for q in qs:
    X, Y, names = [], [], []
    pairs = []
    for i in (1, 4, 8, 13, 15, 19, 21, 23):
        im = Image.open(f"../shared/data/kodak/kodim{i:02d}.png").convert("RGB")
        b = io.BytesIO(); im.save(b, format="MLIMG", method=method, quality=q)
        rec = np.asarray(Image.open(io.BytesIO(b.getvalue())).convert("RGB"), np.float64)
        pairs.append((np.asarray(im, np.float64), rec, len(b.getvalue()) * 8 / (im.size[0] * im.size[1])))
    # fit on even images, test on odd ones: luma-shared 7x7 filter per output channel over all 3 input channels
    def feats(rec):
        p = np.pad(rec, ((r, r), (r, r), (0, 0)), mode="edge"); h, w = rec.shape[:2]
        cols = [p[dy:dy + h, dx:dx + w, c] for c in range(3) for dy in range(K) for dx in range(K)]
        return np.stack(cols, -1)[::2, ::2].reshape(-1, 3 * K * K)
    A = np.concatenate([np.concatenate([feats(rec), np.ones((feats(rec).shape[0], 1))], 1) for _, rec, _ in pairs[::2]])
    B = np.concatenate([orig[::2, ::2].reshape(-1, 3) for orig, _, _ in pairs[::2]])
    coef, *_ = np.linalg.lstsq(A, B, rcond=None)
    gain = []
    for orig, rec, bpp in pairs[1::2]:
        p = np.pad(rec, ((r, r), (r, r), (0, 0)), mode="edge"); h, w = rec.shape[:2]
        F = np.stack([p[dy:dy + h, dx:dx + w, c] for c in range(3) for dy in range(K) for dx in range(K)], -1).reshape(-1, 3 * K * K)
        out = np.clip(np.round(np.concatenate([F, np.ones((F.shape[0], 1))], 1) @ coef), 0, 255).reshape(orig.shape)
        ps = lambda a: 10 * np.log10(255**2 / np.mean((a - orig) ** 2))
        gain.append((bpp, ps(rec), ps(out)))
    g = np.array(gain)
    print(method, q, "bpp %.3f psnr %.2f -> %.2f (held-out linear 7x7 filter: %+.3f dB)" % (g[:, 0].mean(), g[:, 1].mean(), g[:, 2].mean(), (g[:, 2] - g[:, 1]).mean()), flush=True)
