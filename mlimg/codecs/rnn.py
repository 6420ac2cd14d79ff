"""rnn: recurrent progressive codec (Toderici et al. 2017, "Full Resolution Image Compression
with Recurrent Neural Networks"), one chunk per iteration.

Each iteration codes the residual left by the previous ones: recurrent encoder -> binariser
(32 bits per 16x16 block = 1/8 bpp before entropy coding) -> recurrent decoder, whose output is
added to the reconstruction. `quality` chooses the number of iterations. The bits of iteration
t are range-coded with an adaptive context model (nn/binary_context.py) in their own `ITER`
chunk, so every prefix of the file that ends at an ITER chunk is a valid, coarser image:
a truncated file decodes with ImageFile.LOAD_TRUNCATED_IMAGES, and the decode option
`iterations=n` decodes only the first n for a fast preview (Pillow's draft() uses it: half
the iterations, shrunk by 2/4/8). The networks run through nn/rnn_inference.py (fast,
channels-last) where it supports them. Layout: spec/methods/rnn.md.
"""
from __future__ import annotations

import math
import struct

import numpy as np

from .alpha import ALPHA_CHUNK, decode_alpha, encode_alpha
from .base import ChunkSpec, Codec, CodecError, Encoded, Header, Option, int_in, optional_str
from .cae import REFINE_OPTION

STRIDE = 16
MAX_ITERATIONS = 32  # the model is trained for 16; beyond 32 nothing improves
QUALITY_ITERATIONS = 16  # iterations at quality 100
_HEAD = struct.Struct(">BBHHB")  # version 0, bits per position, latent h, latent w, iterations


def iterations_for_quality(quality: int) -> int:
    """quality 1..100 -> iterations 1..16, monotone."""
    return 1 + (quality - 1) * QUALITY_ITERATIONS // 100


def quality_for_iterations(n: int) -> int:
    """The smallest quality that gives n iterations."""
    return math.ceil((n - 1) * 100 / QUALITY_ITERATIONS) + 1


class RnnCodec(Codec):
    name = "rnn"
    version = 1
    modes = ("L", "RGB", "RGBA")  # RGBA: colour through the network, alpha lossless in ALPH
    needs_model = True
    chunk_specs = (
        ChunkSpec("RNNH", "u8 version 0, u8 bits per latent position, u16 latent h, u16 latent w, u8 iterations"),
        ChunkSpec("ITER", "u8 iteration index, range-coded bits of that iteration (u32 LE words)"),
        ALPHA_CHUNK,
    )
    options = {
        "quality": Option(75, int_in(1, 100), "an integer 1..100 (higher: more iterations, more bytes)"),
        "iterations": Option(None, int_in(1, MAX_ITERATIONS, allow_none=True), f"None (from quality) or an integer 1..{MAX_ITERATIONS}"),
        "model": Option(None, optional_str, "None (the installed default) or a registered rnn model id"),
        "refine": REFINE_OPTION,  # here: Adam steps on each iteration's bits (nn/rnn_refine.py)
    }
    bench_points = tuple({"quality": quality_for_iterations(n)} for n in (1, 2, 3, 4, 6, 8, 11, 16))

    # ------------------------------------------------------------ encode

    def encode(self, pixels, mode: str, opts) -> Encoded:
        from ..nn import store
        from ..nn.binary_context import ContextCounts, encode_iteration

        model_id = opts.get("model") or store.default_model(self.name)
        if model_id is None:
            raise ValueError("no rnn weights are installed; pass model=<id> of a registered model")
        loaded = store.load(model_id, self.name)
        n_iter = opts.get("iterations") or iterations_for_quality(opts["quality"])
        pixels = np.asarray(pixels)
        refine = opts.get("refine", 0)
        bits = encode_bits(loaded.net, _to_rgb_float(pixels, mode), n_iter, refine=refine)  # (T, C, lh, lw)
        _, channels, lh, lw = bits.shape
        counts = ContextCounts(channels, loaded.tables.get("context_prior"))
        chunks = [("RNNH", _HEAD.pack(0, channels, lh, lw, n_iter))]
        prev = None
        for t in range(n_iter):
            chunks.append(("ITER", bytes([t]) + encode_iteration(t, bits[t], prev, counts)))
            prev = bits[t]
        if mode == "RGBA":
            chunks.append(("ALPH", encode_alpha(pixels[:, :, 3])))
        info = {"iterations": n_iter, "model_id": model_id, **({"refine": refine} if refine else {})}
        return Encoded(chunks, info=info, model=(model_id, bytes.fromhex(loaded.sha256)))

    # ------------------------------------------------------------ decode

    def decode(self, header: Header, chunks, model=None, truncated: bool = False, iterations=None):
        from ..nn import store

        if model is None:
            raise CodecError("rnn needs a model reference (MODL chunk) and the file has none")
        if iterations is not None:
            try:
                iterations = int_in(1, MAX_ITERATIONS)(iterations)
            except (TypeError, ValueError):
                raise ValueError(f"decode option iterations={iterations!r}: valid is an integer 1..{MAX_ITERATIONS}") from None
        loaded = store.load(model[0], self.name, model[1])
        channels, lh, lw, n_iter = _parse_head(chunks, header, loaded.net.bits)
        payloads = _iteration_payloads(chunks, n_iter, truncated)
        if iterations is not None:
            payloads = payloads[:iterations]
        bits = _decode_bits(payloads, (channels, lh, lw), loaded.tables.get("context_prior"))
        rgb = decode_image(loaded.net, bits, lh, lw)[: header.height, : header.width]
        out = _pixels(rgb).astype(np.uint8)
        if header.mode == "L":
            return np.round(out.astype(np.float32).mean(axis=2)).astype(np.uint8)
        if header.mode == "RGBA":
            alph = [data for kind, data in chunks if kind == "ALPH"]
            if len(alph) != 1:
                if truncated:  # the alpha plane comes after the iterations: opaque until it arrives
                    return np.concatenate([out, np.full(out.shape[:2] + (1,), 255, np.uint8)], axis=2)
                raise CodecError(f"chunk 'ALPH': {len(alph)} found, mode RGBA needs 1")
            alpha = decode_alpha(alph[0], header.height, header.width)
            return np.concatenate([out, alpha[:, :, None]], axis=2)
        return out

    def draft(self, header: Header, chunks, size):
        """Pillow draft(): for a requested size at most 1/s of the image (s = 2, 4 or 8, the
        largest that fits) decode only the first ceil(T/2) of the T iterations present and
        shrink by s: about half the work. Measured on kodim01/23 at 16 iterations, the shrunken
        image loses 0.1-0.3 dB PSNR against shrinking the full decode (T/s iterations lose up
        to 1.6 dB at s = 4: the later iterations still correct coarse structure)."""
        want_w, want_h = size
        if want_w < 1 or want_h < 1:
            return None
        ratio = min(header.width // want_w, header.height // want_h)
        scale = next((s for s in (8, 4, 2) if ratio >= s), None)
        if scale is None:
            return None
        present = sum(kind == "ITER" for kind, _ in chunks)
        return {"iterations": max(1, -(-present // 2))}, scale

    def describe(self, header: Header, chunks):
        for kind, data in chunks:
            if kind == "RNNH" and len(data) == _HEAD.size:
                return {"iterations": data[-1], "iterations_present": sum(k == "ITER" for k, _ in chunks)}
        return {}


# ---------------------------------------------------------------- payloads


def _parse_head(chunks, header: Header, model_bits: int) -> tuple[int, int, int, int]:
    heads = [data for kind, data in chunks if kind == "RNNH"]
    if len(heads) != 1:
        raise CodecError(f"chunk 'RNNH': expected exactly one, found {len(heads)}")
    if chunks[0][0] != "RNNH":
        raise CodecError("chunk 'RNNH': must come before the ITER chunks")
    if len(heads[0]) != _HEAD.size:
        raise CodecError(f"chunk 'RNNH': {len(heads[0])} bytes, expected {_HEAD.size}")
    version, channels, lh, lw, n_iter = _HEAD.unpack(heads[0])
    if version != 0:
        raise CodecError(f"chunk 'RNNH': payload version {version} is not supported (0 is)")
    if channels != model_bits:
        raise CodecError(f"chunk 'RNNH': {channels} bits per position, the model produces {model_bits}")
    want = (-(-header.height // STRIDE), -(-header.width // STRIDE))
    if (lh, lw) != want:
        raise CodecError(f"chunk 'RNNH': latent size {lh}x{lw} does not match the image ({want[0]}x{want[1]} expected)")
    if not 1 <= n_iter <= MAX_ITERATIONS:
        raise CodecError(f"chunk 'RNNH': {n_iter} iterations is outside 1..{MAX_ITERATIONS}")
    return channels, lh, lw, n_iter


def _iteration_payloads(chunks, n_iter: int, truncated: bool) -> list[bytes]:
    """ITER payloads (index byte stripped) in order; CodecError on gaps, extras or missing ones."""
    iters = [data for kind, data in chunks if kind == "ITER"]
    if len(iters) > n_iter:
        raise CodecError(f"chunk 'ITER': {len(iters)} found, RNNH announces {n_iter}")
    out = []
    for t, data in enumerate(iters):
        if len(data) < 1 or data[0] != t:
            got = data[0] if data else "none"
            raise CodecError(f"chunk 'ITER' number {t}: iteration index {got}, expected {t}")
        if (len(data) - 1) % 4:
            raise CodecError(f"chunk 'ITER' {t}: range-coded data is not a whole number of 32-bit words")
        out.append(data[1:])
    if len(iters) < n_iter and not truncated:
        raise CodecError(f"chunk 'ITER': only {len(iters)} of the {n_iter} iterations RNNH announces")
    return out


def _decode_bits(payloads: list[bytes], shape, prior) -> np.ndarray:
    from ..nn.binary_context import ContextCounts, decode_iteration

    counts = ContextCounts(shape[0], prior)
    bits = np.zeros((len(payloads),) + tuple(shape), np.uint8)
    prev = None
    for t, data in enumerate(payloads):
        try:
            bits[t] = decode_iteration(t, data, shape, prev, counts)
        except Exception as exc:  # constriction reports corrupt streams in several ways
            raise CodecError(f"chunk 'ITER' {t}: corrupt range-coded data ({exc})") from None
        prev = bits[t]
    return bits


# ---------------------------------------------------------------- network driving


def _to_rgb_float(pixels: np.ndarray, mode: str) -> np.ndarray:
    if mode == "L":
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    return pixels[:, :, :3].astype(np.float32) / 255.0


def encode_bits(net, x: np.ndarray, iterations: int, fast: bool = True, refine: int = 0) -> np.ndarray:
    """(H, W, 3) float image in [0, 1] -> bits (iterations, C, H/16, W/16) uint8 0/1.

    The encoder runs the decoder beside it so each iteration sees the residual the real
    decoder will have. `fast` uses nn/rnn_inference.py where it supports the network;
    False runs the training modules (the reference, for tests). `refine` > 0: that many
    steps of bit refinement per iteration (nn/rnn_refine.py, module path), kept only if the
    last iteration decodes closer to the image than the encoder's own bits do: refinement is
    greedy, and better early iterations can leave later ones worse off.
    """
    import torch

    from ..nn import rnn_inference
    from ..nn.rnn_models import hard_binarise

    h, w = x.shape[:2]
    x = np.pad(x, ((0, -h % STRIDE), (0, -w % STRIDE), (0, 0)), mode="edge")
    lh, lw = x.shape[0] // STRIDE, x.shape[1] // STRIDE
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None] - 0.5
    if refine:
        from ..nn.rnn_refine import encode_bits_refined

        refined = encode_bits_refined(net, xt, iterations, refine)
        plain = encode_bits(net, x, iterations, fast)
        target = _pixels(x[:h, :w])
        errors = [float(np.sum((_pixels(decode_image(net, b, lh, lw, fast)[:h, :w]) - target) ** 2)) for b in (refined, plain)]
        return refined if errors[0] < errors[1] else plain
    recon = torch.zeros_like(xt)
    out = []
    with torch.inference_mode():
        if fast and rnn_inference.supports(net):
            runner = rnn_inference.FastRnn(net, lh, lw)
            enc_state, dec_state = runner.initial_states()
            for t in range(iterations):
                code, enc_state = runner.encode_step(xt, recon, enc_state, t)
                b = hard_binarise(code)  # (lh*lw, C) rows of +-1
                recon, dec_state = runner.decode_step(b, recon, dec_state, t)
                out.append((b > 0).numpy().T.reshape(-1, lh, lw).astype(np.uint8))
            return np.stack(out)
        enc_state, dec_state = net.initial_states()
        for t in range(iterations):
            code, enc_state = net.encode_step(xt, recon, enc_state, t)
            b = hard_binarise(code)
            recon, dec_state = net.decode_step(b, recon, dec_state, t)
            out.append((b[0] > 0).numpy().astype(np.uint8))
    return np.stack(out)


def _pixels(rgb: np.ndarray) -> np.ndarray:
    """8-bit values, as the decoder writes them (float64 for squared errors)."""
    return np.clip(np.round(rgb * 255.0), 0, 255)


def decode_image(net, bits: np.ndarray, lh: int, lw: int, fast: bool = True) -> np.ndarray:
    """Bits (T, C, lh, lw) -> (16 lh, 16 lw, 3) float image in [0, 1]; T = 0 gives mid-grey.

    `fast` as in encode_bits.
    """
    import torch

    from ..nn import rnn_inference

    recon = torch.zeros(1, 3, lh * STRIDE, lw * STRIDE)
    with torch.inference_mode():
        if fast and rnn_inference.supports(net):
            runner = rnn_inference.FastRnn(net, lh, lw)
            _, dec_state = runner.initial_states()
            for t in range(bits.shape[0]):
                b = rnn_inference.bits_to_rows(bits[t])
                recon, dec_state = runner.decode_step(b, recon, dec_state, t)
        else:
            _, dec_state = net.initial_states()
            for t in range(bits.shape[0]):
                b = torch.from_numpy(bits[t].astype(np.float32) * 2 - 1)[None]
                recon, dec_state = net.decode_step(b, recon, dec_state, t)
    return recon[0].numpy().transpose(1, 2, 0) + 0.5
