"""Encoder-side bit refinement for the rnn codec (the `refine=` save option).

The recurrent encoder proposes each iteration's bits in one pass: the sign of its code. The
decoder is a fixed function of the bits, so the encoder may search for bits that decode
better. For each iteration, a few Adam steps on the code's logits with every network frozen:
bits = sign(tanh(logits)) with a straight-through gradient, loss = squared error of that
iteration's reconstruction. Every step's forward pass decodes *hard* bits, so its loss is the
exact loss of those bits, and the best bits seen are kept; step 0 decodes the encoder's own
bits, so refinement never makes an iteration worse. Greedy, iteration by iteration, as the
encoder itself works. The file is an ordinary rnn file: decoders are untouched.

Memory stays bounded on large images: the latent grid is refined in tiles of TILE x TILE
positions with MARGIN positions of context around them, whose bits are held at their current
values. The decoder's 3x3 cells at 1, 2, 4 and 8 times the latent resolution see at most
1 + 1/2 + 1/4 + 1/8 < 2 positions away, so with a margin of 2 a tile's own pixels decode
exactly as in the whole image; the loss covers those pixels only.
"""
from __future__ import annotations

import numpy as np

STRIDE = 16
TILE = 24  # latent positions per tile side (384 pixels)
MARGIN = 2
# Adam on the logits: steps of about 1 flip the least decided bits first. On four 256 px Kodak
# crops, 10 steps (PSNR after iterations 1 / 4 / 16, the 14626-step weights): none
# 20.06/23.97/25.88 dB; lr 0.03 20.95/24.23/25.97; 0.1 21.45/24.34/26.08; 0.3 21.72/24.54/26.24;
# 1.0 21.66/24.49/26.34; 3.0 20.06/24.14/26.33 (TRAINING.md "rnn"; tools/rnn_refine_sweep.py).
# With the 26148-step weights: none 21.57/25.50/28.98; 1.0 21.57/25.61/28.80; 0.3 21.78/25.43/28.71:
# the greedy search now costs the last iterations, hence codecs/rnn.py's final comparison.
LEARNING_RATE = 1.0


def encode_bits_refined(net, xt, iterations: int, steps: int, lr: float = LEARNING_RATE) -> np.ndarray:
    """Bits (iterations, C, lh, lw) uint8 0/1 for the image xt (1, 3, 16 lh, 16 lw) in
    [-0.5, 0.5], each iteration's bits refined for `steps` Adam steps (module path)."""
    import torch

    from .rnn_models import hard_binarise

    lh, lw = xt.shape[2] // STRIDE, xt.shape[3] // STRIDE
    frozen = [p for p in net.parameters() if p.requires_grad]
    for p in frozen:  # gradients for the logits only
        p.requires_grad_(False)
    enc, dec = net.initial_states()
    recon = torch.zeros_like(xt)
    out = []
    try:
        for t in range(iterations):
            with torch.no_grad():
                code, enc = net.encode_step(xt, recon, enc, t)
                gain = net.block_gain(recon, t)
            bits = hard_binarise(code)
            refined = bits.clone()
            for y0 in range(0, lh, TILE):
                for x0 in range(0, lw, TILE):
                    box = (y0, min(y0 + TILE, lh), x0, min(x0 + TILE, lw))
                    _refine_tile(net, xt, recon, dec, gain, code, refined, box, steps, lr)
            with torch.no_grad():
                new, new_dec = net.decode_step(refined, recon, dec, t)
                if not torch.equal(refined, bits):  # tiles interact at their borders: check the whole
                    plain, plain_dec = net.decode_step(bits, recon, dec, t)
                    if torch.sum((plain - xt) ** 2) < torch.sum((new - xt) ** 2):
                        refined, new, new_dec = bits, plain, plain_dec
            recon, dec = new, new_dec
            out.append((refined[0] > 0).numpy().astype(np.uint8))
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return np.stack(out)


def tile_window(box, lh: int, lw: int):
    """The tile (y0, y1, x0, x1) grown by MARGIN, clipped to the grid, and the tile's place in it."""
    y0, y1, x0, x1 = box
    ya, yb, xa, xb = max(0, y0 - MARGIN), min(lh, y1 + MARGIN), max(0, x0 - MARGIN), min(lw, x1 + MARGIN)
    return (ya, yb, xa, xb), (slice(y0 - ya, y1 - ya), slice(x0 - xa, x1 - xa))


def crop_state(state, window, scale: int):
    """A decoder cell's state (a map, an LSTM's (h, c) pair or None) cut to a latent window;
    the cell runs at `scale` times the latent resolution."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(crop_state(s, window, scale) for s in state)
    ya, yb, xa, xb = window
    return state[..., ya * scale : yb * scale, xa * scale : xb * scale]


def tile_forward(net, bits, recon, dec, gain, window):
    """The reconstruction over a latent window after decoding `bits` (1, C, window): exact for
    pixels at least MARGIN positions from the window's edges (or at the image's edges)."""
    states = [crop_state(s, window, 2**i) for i, s in enumerate(dec)]
    out, _ = net.decoder(bits, states)
    return net.reconstruct(out, crop_state(recon, window, STRIDE), crop_state(gain, window, STRIDE))


def _refine_tile(net, xt, recon, dec, gain, code, refined, box, steps: int, lr: float) -> None:
    """Refine the bits of one tile in place in `refined` (1, C, lh, lw) of +-1."""
    import torch

    from .rnn_models import hard_binarise

    window, (rows, cols) = tile_window(box, refined.shape[2], refined.shape[3])
    ya, yb, xa, xb = window
    fixed = refined[..., ya:yb, xa:xb]
    free = torch.zeros_like(fixed, dtype=torch.bool)
    free[..., rows, cols] = True
    pixels = (slice(rows.start * STRIDE, rows.stop * STRIDE), slice(cols.start * STRIDE, cols.stop * STRIDE))
    target = crop_state(xt, window, STRIDE)[..., pixels[0], pixels[1]]
    logits = torch.atanh(code[..., ya:yb, xa:xb].clamp(-0.999, 0.999)).requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=lr)
    best_loss, best = None, fixed[..., rows, cols].clone()
    with torch.enable_grad():
        for step in range(steps + 1):
            soft = torch.tanh(logits)
            hard = hard_binarise(soft)
            bits = torch.where(free, soft + (hard - soft).detach(), fixed)
            new = tile_forward(net, bits, recon, dec, gain, window)
            loss = torch.sum((new[..., pixels[0], pixels[1]] - target) ** 2)
            if best_loss is None or loss.item() < best_loss:
                best_loss, best = loss.item(), hard[..., rows, cols].detach().clone()
            if step == steps:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
    refined[..., box[0] : box[1], box[2] : box[3]] = best
