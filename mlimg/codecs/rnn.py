"""rnn: recurrent progressive codec (Toderici et al. 2017, "Full Resolution Image Compression
with Recurrent Neural Networks"), one chunk per iteration.

Each iteration codes the residual left by the previous ones: recurrent encoder -> binariser
(32 bits per 16x16 block = 1/8 bpp before entropy coding) -> recurrent decoder, whose output is
added to the reconstruction. Method version 2 gives each 16x16 block its own number of
iterations, chosen by rate-distortion from `quality` (rnn_adaptive.py; map in the `RNNM`
chunk); `iterations=n`, `adaptive=False` and version 1 files use the same count everywhere.
The bits of iteration t are range-coded with an adaptive context model (nn/binary_context.py;
version 3 codes each plane as two checkerboard halves; version 4 takes each bit's context from
a learned logistic model of the bits around it, nn/binary_logistic.py) in their own `ITER`
chunk, so every
prefix of the file that ends at an ITER chunk is a valid, coarser image:
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
from .base import ChunkSpec, Codec, CodecError, Encoded, Header, Option, boolean, int_in, optional_str
from .cae import REFINE_OPTION
from .rnn_adaptive import choose_counts, decode_counts, encode_counts, slope_for_quality

STRIDE = 16
MAX_ITERATIONS = 32  # the model is trained for 16; beyond 32 nothing improves
QUALITY_ITERATIONS = 16  # iterations at quality 100; also the most an adaptive block gets
_HEAD = struct.Struct(">BBHHB")  # version 0, bits per position, latent h, latent w, iterations


def iterations_for_quality(quality: int) -> int:
    """quality 1..100 -> iterations 1..16, monotone."""
    return 1 + (quality - 1) * QUALITY_ITERATIONS // 100


def quality_for_iterations(n: int) -> int:
    """The smallest quality that gives n iterations."""
    return math.ceil((n - 1) * 100 / QUALITY_ITERATIONS) + 1


class RnnCodec(Codec):
    name = "rnn"
    # 4: contexts from a learned logistic model (nn/binary_logistic.py, tables in the weights);
    # 3: each bit plane coded as checkerboard halves (nn/binary_context.py); 2: per-block
    # iteration counts (RNNM chunk); 1: the same count everywhere
    version = 4
    modes = ("L", "RGB", "RGBA")  # RGBA: colour through the network, alpha lossless in ALPH
    needs_model = True
    chunk_specs = (
        ChunkSpec("RNNH", "u8 version 0, u8 bits per latent position, u16 latent h, u16 latent w, u8 iterations"),
        ChunkSpec("RNNM", "method version 2+, optional: u8 map coding 0, range-coded iteration count per block (u32 LE words)"),
        ChunkSpec("ITER", "u8 iteration index, range-coded bits of that iteration (u32 LE words)"),
        ALPHA_CHUNK,
    )
    options = {
        "quality": Option(75, int_in(1, 100), "an integer 1..100 (higher: more iterations, more bytes)"),
        "iterations": Option(None, int_in(1, MAX_ITERATIONS, allow_none=True),
                             f"None (from quality) or an integer 1..{MAX_ITERATIONS}: that many in every block"),
        "adaptive": Option(True, boolean, "True (each block's iteration count from quality, by rate-distortion) "
                           "or False (quality picks one count for all blocks)"),
        "model": Option(None, optional_str, "None (the installed default) or a registered rnn model id"),
        "refine": REFINE_OPTION,  # here: Adam steps on each iteration's bits (nn/rnn_refine.py)
    }
    loop_filter_default = "auto"  # fLTR: +0.1-0.8 dB on Kodak (README "Loop filter")
    bench_points = tuple({"quality": q} for q in (1, 14, 28, 42, 56, 70, 85, 100))

    # ------------------------------------------------------------ encode

    def encode(self, pixels, mode: str, opts) -> Encoded:
        from ..nn import store

        model_id = opts.get("model") or store.default_model(self.name)
        if model_id is None:
            raise ValueError("no rnn weights are installed; pass model=<id> of a registered model")
        loaded = store.load(model_id, self.name)
        pixels = np.asarray(pixels)
        refine = opts.get("refine", 0)
        adaptive = opts.get("adaptive", True) and opts.get("iterations") is None and self.version >= 2
        if adaptive and refine:
            raise ValueError(f"refine={refine} searches the same iteration count in every block: "
                             "valid is refine=0 (the default), or refine with adaptive=False or iterations=n")
        x = _to_rgb_float(pixels, mode)
        block_counts = bits = None
        if adaptive:
            block_counts, uniform_bits = allocate_iterations(loaded.net, x, slope_for_quality(opts["quality"]),
                                                             QUALITY_ITERATIONS)
            n_iter = int(block_counts.max())
            if (block_counts == n_iter).all():  # the same everywhere: no map, and the first pass's bits are the file's
                block_counts, bits = None, uniform_bits[:n_iter]
        else:
            n_iter = opts.get("iterations") or iterations_for_quality(opts["quality"])
        if bits is None:
            bits = encode_bits(loaded.net, x, n_iter, refine=refine, counts=block_counts)  # (T, C, lh, lw)
        _, channels, lh, lw = bits.shape
        stream = BitStream(channels, loaded.tables, self.version)
        chunks = [("RNNH", _HEAD.pack(0, channels, lh, lw, n_iter))]
        if block_counts is not None:
            chunks.append(("RNNM", bytes([0]) + encode_counts(block_counts, n_iter)))
        for t in range(n_iter):
            active = None if block_counts is None else block_counts > t
            chunks.append(("ITER", bytes([t]) + stream.encode(t, bits[t], active)))
        if mode == "RGBA":
            chunks.append(("ALPH", encode_alpha(pixels[:, :, 3])))
        info = {"iterations": n_iter, "model_id": model_id, **({"refine": refine} if refine else {})}
        if block_counts is not None:
            info["mean_iterations"] = round(float(block_counts.mean()), 2)
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
        block_counts = _parse_map(chunks, header, (lh, lw), n_iter)
        payloads = _iteration_payloads(chunks, n_iter, truncated)
        if iterations is not None:
            payloads = payloads[:iterations]
        bits = _decode_bits(payloads, (channels, lh, lw), loaded.tables, block_counts, header.method_version)
        rgb = decode_image(loaded.net, bits, lh, lw, counts=block_counts)[: header.height, : header.width]
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
                return {"iterations": data[-1], "iterations_present": sum(k == "ITER" for k, _ in chunks),
                        "adaptive": any(k == "RNNM" for k, _ in chunks)}
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


def _parse_map(chunks, header: Header, shape: tuple[int, int], n_iter: int) -> np.ndarray | None:
    """The per-block iteration counts of an RNNM chunk, or None (every block: n_iter)."""
    maps = [i for i, (kind, _) in enumerate(chunks) if kind == "RNNM"]
    if not maps:
        return None
    if header.method_version < 2:
        raise CodecError(f"chunk 'RNNM': not part of rnn method version {header.method_version} (version 2 added it)")
    if len(maps) != 1 or maps[0] != 1:
        raise CodecError("chunk 'RNNM': at most one, right after RNNH and before the ITER chunks")
    data = chunks[maps[0]][1]
    if len(data) < 1 or data[0] != 0:
        raise CodecError(f"chunk 'RNNM': map coding {data[0] if data else 'missing'} is not supported (0 is)")
    try:
        counts = decode_counts(data[1:], shape, n_iter)
    except Exception as exc:  # constriction reports corrupt streams in several ways
        raise CodecError(f"chunk 'RNNM': corrupt range-coded data ({exc})") from None
    return counts


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


class BitStream:
    """The context state one file's iterations share, coder and decoder alike: the adaptive
    counts, and (version 4) the signs of the two iterations before. Versions 1-3 code with
    nn/binary_context.py (version 3: checkerboard halves), version 4 with nn/binary_logistic.py,
    whose weights and prior are tables of the weights file."""

    def __init__(self, channels: int, tables: dict, version: int):
        from ..nn import binary_context, binary_logistic

        self.version = version
        self.prev = self.prev2 = None
        try:
            if version >= 4:
                if "logistic_weights" not in tables or "logistic_prior" not in tables:
                    raise CodecError("rnn method version 4 needs a model with a logistic context model "
                                     "(tables cdf.logistic_weights, cdf.logistic_prior); this model has none")
                self.weights = binary_logistic.check_weights(tables["logistic_weights"], channels)
                self.counts = binary_logistic.LogisticCounts(tables["logistic_prior"])
            else:
                self.counts = binary_context.ContextCounts(channels, tables.get("context_prior"), version >= 3,
                                                           tables.get("context_prior_split"))
        except ValueError as exc:  # a weights file whose tables do not fit its own network
            raise CodecError(f"the rnn model's context tables do not fit it: {exc}") from None

    def encode(self, t: int, bits: np.ndarray, active: np.ndarray | None) -> bytes:
        """Iteration t's bits (C, h, w) -> its range-coded stream; t counts up from 0."""
        from ..nn import binary_context, binary_logistic

        if self.version >= 4:
            data = binary_logistic.encode_iteration(self.weights, t, bits, self.prev, self.prev2, self.counts, active)
        else:
            data = binary_context.encode_iteration(t, bits, self.prev, self.counts, active)
        self._advance(bits, active)
        return data

    def decode(self, t: int, data: bytes, shape: tuple[int, int, int], active: np.ndarray | None) -> np.ndarray:
        """Inverse of encode. ValueError on a malformed stream."""
        from ..nn import binary_context, binary_logistic

        if self.version >= 4:
            bits = binary_logistic.decode_iteration(self.weights, t, data, shape, self.prev, self.prev2, self.counts, active)
        else:
            bits = binary_context.decode_iteration(t, data, shape, self.prev, self.counts, active)
        self._advance(bits, active)
        return bits

    def _advance(self, bits: np.ndarray, active: np.ndarray | None) -> None:
        if self.version >= 4:
            from ..nn.binary_logistic import signs

            self.prev2, self.prev = self.prev, signs(bits, active)
        else:
            self.prev = bits


def _decode_bits(payloads: list[bytes], shape, tables: dict, block_counts=None, version: int = 4) -> np.ndarray:
    stream = BitStream(shape[0], tables, version)
    bits = np.zeros((len(payloads),) + tuple(shape), np.uint8)
    for t, data in enumerate(payloads):
        active = None if block_counts is None else block_counts > t
        try:
            bits[t] = stream.decode(t, data, shape, active)
        except Exception as exc:  # constriction reports corrupt streams in several ways
            raise CodecError(f"chunk 'ITER' {t}: corrupt range-coded data ({exc})") from None
    return bits


# ---------------------------------------------------------------- network driving


def _to_rgb_float(pixels: np.ndarray, mode: str) -> np.ndarray:
    if mode == "L":
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    return pixels[:, :, :3].astype(np.float32) / 255.0


def encode_bits(net, x: np.ndarray, iterations: int, fast: bool = True, refine: int = 0,
                counts: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) float image in [0, 1] -> bits (iterations, C, H/16, W/16) uint8 0/1.

    The encoder runs the decoder beside it so each iteration sees the residual the real
    decoder will have. `fast` uses nn/rnn_inference.py where it supports the network;
    False runs the training modules (the reference, for tests). `counts` (H/16, W/16):
    per-block iteration counts (None: `iterations` everywhere); a block past its count gets
    bits 0 and keeps its reconstruction. `refine` > 0 (uniform counts only): that many
    steps of bit refinement per iteration (nn/rnn_refine.py, module path), kept only if the
    last iteration decodes closer to the image than the encoder's own bits do: refinement is
    greedy, and better early iterations can leave later ones worse off.
    """
    h, w = x.shape[:2]
    xt, lh, lw = _padded_tensor(x)
    if refine:
        from ..nn.rnn_refine import encode_bits_refined

        refined = encode_bits_refined(net, xt, iterations, refine)
        plain = encode_bits(net, x, iterations, fast)
        target = _pixels(x[:h, :w])
        errors = [float(np.sum((_pixels(decode_image(net, b, lh, lw, fast)[:h, :w]) - target) ** 2)) for b in (refined, plain)]
        return refined if errors[0] < errors[1] else plain
    return _encoder_pass(net, xt, iterations, fast, counts)[0]


def allocate_iterations(net, x: np.ndarray, slope: float, iterations: int,
                        fast: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(per-block iteration counts (H/16, W/16) in 1..iterations for the rate-distortion
    slope, the uniform pass's bits): one uniform pass records every block's squared error
    after each iteration (pixels inside the image only, as the decoder rounds them), then
    rnn_adaptive picks."""
    xt, _, _ = _padded_tensor(x)
    bits, errors = _encoder_pass(net, xt, iterations, fast, None, _pixels(x))
    return choose_counts(errors, slope, net.bits), bits


def _padded_tensor(x: np.ndarray):
    """(H, W, 3) floats in [0, 1] -> ((1, 3, 16 lh, 16 lw) tensor in [-0.5, 0.5] with edges
    replicated, lh, lw)."""
    import torch

    h, w = x.shape[:2]
    x = np.pad(x, ((0, -h % STRIDE), (0, -w % STRIDE), (0, 0)), mode="edge")
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None] - 0.5
    return xt, x.shape[0] // STRIDE, x.shape[1] // STRIDE


def _encoder_pass(net, xt, iterations: int, fast: bool, counts, target=None):
    """Run encoder and decoder: bits (T, C, lh, lw), and with `target` ((h, w, 3) 8-bit values
    of the unpadded image) also each block's squared error after 0..T iterations
    (T+1, lh, lw), over the pixels inside the image."""
    import torch

    from ..nn import rnn_inference
    from ..nn.rnn_models import hard_binarise

    lh, lw = xt.shape[2] // STRIDE, xt.shape[3] // STRIDE
    recon = torch.zeros_like(xt)
    out, errors = [], []

    def measure(r):
        if target is not None:  # whole numbers below 2**24 per pixel: exact in float32
            h, w = target.shape[:2]
            err = ((_pixels(r[0, :, :h, :w].numpy().transpose(1, 2, 0) + 0.5) - target) ** 2).sum(axis=2)
            err = np.pad(err, ((0, lh * STRIDE - h), (0, lw * STRIDE - w)))
            errors.append(err.reshape(lh, STRIDE, lw, STRIDE).sum(axis=(1, 3), dtype=np.float64))

    measure(recon)
    with torch.inference_mode():
        if fast and rnn_inference.supports(net):
            runner = rnn_inference.FastRnn(net, lh, lw)
            enc_state, dec_state = runner.initial_states()
            for t in range(iterations):
                code, enc_state = runner.encode_step(xt, recon, enc_state, t)
                b = hard_binarise(code)  # (lh*lw, C) rows of +-1
                recon, dec_state = runner.decode_step(b, recon, dec_state, t, _active(counts, t))
                out.append((b > 0).numpy().T.reshape(-1, lh, lw).astype(np.uint8))
                measure(recon)
        else:
            enc_state, dec_state = net.initial_states()
            for t in range(iterations):
                code, enc_state = net.encode_step(xt, recon, enc_state, t)
                b = hard_binarise(code)
                recon, dec_state = net.decode_step(b, recon, dec_state, t, _active(counts, t, nchw=True))
                out.append((b[0] > 0).numpy().astype(np.uint8))
                measure(recon)
    bits = np.stack(out)
    if counts is not None:  # blocks past their count send nothing: 0 by convention
        bits *= (counts[None, None] > np.arange(iterations)[:, None, None, None])
    return bits, (np.stack(errors) if target is not None else None)


def _active(counts, t: int, nchw: bool = False):
    """The blocks that code iteration t as 0/1 floats, (lh, lw) or with `nchw` (1, 1, lh, lw)
    for the module path; None when every block does (no count map)."""
    import torch

    if counts is None:
        return None
    active = torch.from_numpy((counts > t).astype(np.float32))
    return active[None, None] if nchw else active


def _pixels(rgb: np.ndarray) -> np.ndarray:
    """8-bit values (as floats), as the decoder writes them."""
    return np.clip(np.round(rgb * 255.0), 0, 255)


def decode_image(net, bits: np.ndarray, lh: int, lw: int, fast: bool = True, counts=None) -> np.ndarray:
    """Bits (T, C, lh, lw) -> (16 lh, 16 lw, 3) float image in [0, 1]; T = 0 gives mid-grey.

    `fast` and `counts` as in encode_bits.
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
                recon, dec_state = runner.decode_step(b, recon, dec_state, t, _active(counts, t))
        else:
            _, dec_state = net.initial_states()
            for t in range(bits.shape[0]):
                b = torch.from_numpy(bits[t].astype(np.float32) * 2 - 1)[None]
                recon, dec_state = net.decode_step(b, recon, dec_state, t, _active(counts, t, nchw=True))
    return recon[0].numpy().transpose(1, 2, 0) + 0.5
