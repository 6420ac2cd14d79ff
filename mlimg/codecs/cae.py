"""cae: compressive autoencoder with a learned factorised prior (Ballé et al. 2017,
Theis et al. 2017), variable rate through gain units (Cui et al. 2021).

Pixels -> analysis network -> latent y (M channels at 1/16 resolution) ->
multiply by the gain for the chosen quality -> round -> range-code -> chunk LATN.
Version 2 codes the latent with context-adaptive integer tables measured per gain
level at export (nn/latent_context.py; 11-41 % fewer bytes on Kodak), version 1 with one
factorised table per channel; both tables live in the weights file. The decoder
reverses the coding bit-exactly (only stored integers decide the probabilities),
multiplies by the inverse gain and runs the float synthesis network (tolerance:
rmse + peak). Layout: spec/methods/cae.md.
"""
from __future__ import annotations

import struct

import numpy as np

from .alpha import ALPHA_CHUNK, decode_alpha, encode_alpha
from .base import ChunkSpec, Codec, CodecError, Encoded, Header, Option, int_in, optional_str
from .factorized import pack_channels, read_escapes, unpack_channels

STRIDE = 16
_HEAD = struct.Struct(">BBHHHI")  # quality, coding, latent height, latent width, channels, escape count
# Gain levels below the lowest trained one that quality 1 reaches (gains extrapolated),
# per method version.
LEVELS_BELOW = {1: 0.0, 2: 2.0}
CODING_FACTORISED, CODING_CONTEXT = 0, 1  # LATN's second byte (version 1: always 0)
CONTEXT_IMAGES = 200  # training images an export measures the context tables on
_TILE = 48  # latent positions per tile side (768 px): bounds memory on huge images
_MARGIN = 4  # latent positions of context around each tile (64 px)


def level_position(quality: int, levels: int, below: float = 0.0) -> float:
    """quality 1..100 -> continuous gain level in [-below, levels-1]; monotone.

    `below` > 0 extends the range under the lowest trained level (the gains are then
    extrapolated, see GMM.gains): gmm/gan version 2 use it to reach ~0.1 bpp.
    """
    return (quality - 1) / 99.0 * (levels - 1 + below) - below


# Encoder only (nn/refine.py; rnn: nn/rnn_refine.py): a refined file is an ordinary file of its method.
REFINE_OPTION = Option(0, int_in(0, 200), "an integer 0..200: refinement steps at encode time (0: off; "
                                          "more steps, slower encoding, better rate-distortion)")


class CaeCodec(Codec):
    name = "cae"
    version = 2  # 2: context-adaptive latent coding; quality spans 2 extrapolated gain levels below the trained ones
    modes = ("L", "RGB", "RGBA")  # RGBA: colour through the network, alpha lossless in ALPH
    needs_model = True
    chunk_specs = (
        ChunkSpec("LATN", "u8 quality, u8 coding, u16 latent h, u16 latent w, u16 channels, u32 n_escapes, "
                          "n_escapes x i16 escaped values, range-coded symbols (u32 LE words)"),
        ALPHA_CHUNK,
    )
    options = {
        "quality": Option(75, int_in(1, 100), "an integer 1..100 (higher: more bytes, better quality)"),
        "model": Option(None, optional_str, "None (the installed default) or a registered cae model id"),
        "refine": REFINE_OPTION,
    }
    loop_filter_default = "auto"  # fLTR: +0.1-0.8 dB on Kodak (README "Loop filter")
    bench_points = tuple({"quality": q} for q in (1, 12, 25, 40, 55, 70, 85, 100))

    # ------------------------------------------------------------ encode

    def encode(self, pixels, mode: str, opts) -> Encoded:
        from ..nn import store

        model_id = opts.get("model") or store.default_model(self.name)
        if model_id is None:
            raise ValueError("no cae weights are installed; pass model=<id> of a registered model")
        loaded = store.load(model_id, self.name)
        net = loaded.net
        quality = opts["quality"]
        x = _pad(_to_rgb_float(np.asarray(pixels), mode))
        position = gain_position(quality, net.log_gain.shape[0], self.version)
        coding = CODING_CONTEXT if self.version >= 2 and "context_tables" in loaded.tables else CODING_FACTORISED
        context = context_model(loaded.tables, net.log_gain.shape[0], self.version) if coding == CODING_CONTEXT else None
        from ..nn.refine import ANNEAL_FROM, TableRate

        rate = None
        if context is not None and opts.get("refine", 0) >= ANNEAL_FROM:  # only the annealed kind takes a rate
            rate = TableRate(context, quality)  # refine against the coder that will code it
        y = encoder_latent(net, x, position, opts.get("refine", 0), rate)
        q = np.clip(np.round(y), -32768, 32767).astype(np.int32)  # (M, lh, lw)
        payload = _pack_latent(q, quality, loaded.tables["prior"], context)
        chunks = [("LATN", payload)]
        if mode == "RGBA":
            chunks.append(("ALPH", encode_alpha(np.asarray(pixels)[:, :, 3])))
        info = {"quality": quality, "model_id": model_id, **({"refine": opts["refine"]} if opts.get("refine") else {})}
        return Encoded(chunks, info=info, model=(model_id, bytes.fromhex(loaded.sha256)))

    # ------------------------------------------------------------ decode

    def decode(self, header: Header, chunks, model=None):
        import torch

        from ..nn import store

        if model is None:
            raise CodecError("cae needs a model reference (MODL chunk) and the file has none")
        loaded = store.load(model[0], self.name, model[1])
        net = loaded.net
        latn = [data for kind, data in chunks if kind == "LATN"]
        if len(latn) != 1:
            raise CodecError(f"chunk 'LATN': expected exactly one, found {len(latn)}")
        alph = [data for kind, data in chunks if kind == "ALPH"]
        if len(alph) != (header.mode == "RGBA"):
            raise CodecError(f"chunk 'ALPH': {len(alph)} found, mode {header.mode} needs {int(header.mode == 'RGBA')}")
        quality, q = unpack_latent(latn[0], header, loaded.tables, net.log_gain.shape[0])
        with torch.inference_mode():
            _, inv_gain = net.gains(gain_position(quality, net.log_gain.shape[0], header.method_version))
            x = synthesis_tiled(net, q, inv_gain)[: header.height, : header.width]
        out = np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
        if header.mode == "L":
            out = np.round(out.astype(np.float32).mean(axis=2)).astype(np.uint8)
        elif header.mode == "RGBA":
            alpha = decode_alpha(alph[0], header.height, header.width)
            out = np.concatenate([out, alpha[:, :, None]], axis=2)
        return out

    def describe(self, header: Header, chunks):
        for kind, data in chunks:
            if kind == "LATN" and len(data) >= _HEAD.size:
                coding = {CODING_FACTORISED: "factorised", CODING_CONTEXT: "context"}.get(data[1], str(data[1]))
                return {"quality": data[0], "latent_coding": coding}
        return {}


# ---------------------------------------------------------------- payload


def gain_position(quality: int, levels: int, method_version: int, levels_below: dict = LEVELS_BELOW) -> float:
    """The gain level position of `quality` in a file of this method version (`levels` trained;
    `levels_below`: method version -> extrapolated levels, cae's by default)."""
    below = levels_below.get(method_version)
    if below is None:
        raise CodecError(f"method version {method_version} is not one this decoder knows "
                         f"(known: {', '.join(map(str, levels_below))})")
    return level_position(quality, levels, below)


def _pack_latent(q: np.ndarray, quality: int, prior: np.ndarray, context=None) -> bytes:
    """LATN payload: coding 1 with a ContextModel (`context`), else coding 0 with `prior`."""
    channels, lh, lw = q.shape
    if context is not None:
        from ..nn.latent_context import encode_latent

        escaped, stream = encode_latent(q, context, quality)
    else:
        escaped, stream = pack_channels(q, prior)
    coding = CODING_FACTORISED if context is None else CODING_CONTEXT
    head = _HEAD.pack(quality, coding, lh, lw, channels, escaped.size)
    return head + escaped.astype(">i2").tobytes() + stream


def unpack_latent(payload: bytes, header: Header, tables: dict, levels: int) -> tuple[int, np.ndarray]:
    """LATN payload -> (quality, integer latent (M, lh, lw)); CodecError on any inconsistency.
    `levels`: the model's trained gain levels."""
    if len(payload) < _HEAD.size:
        raise CodecError(f"chunk 'LATN': {len(payload)} bytes is shorter than its {_HEAD.size}-byte header")
    quality, coding, lh, lw, channels, n_esc = _HEAD.unpack_from(payload)
    want_h, want_w = -(-header.height // STRIDE), -(-header.width // STRIDE)
    freqs = tables["prior"]
    if not 1 <= quality <= 100:
        raise CodecError(f"chunk 'LATN': quality {quality} is outside 1..100")
    valid = (CODING_FACTORISED,) if header.method_version < 2 else (CODING_FACTORISED, CODING_CONTEXT)
    if coding not in valid:
        raise CodecError(f"chunk 'LATN': coding byte is {coding}; method version {header.method_version} "
                         f"allows {' or '.join(map(str, valid))}")
    if (lh, lw) != (want_h, want_w):
        raise CodecError(f"chunk 'LATN': latent size {lh}x{lw} does not match the image ({want_h}x{want_w} expected)")
    if channels != freqs.shape[0]:
        raise CodecError(f"chunk 'LATN': {channels} latent channels, the model has {freqs.shape[0]}")
    escaped, body = read_escapes("LATN", payload, _HEAD.size, n_esc, channels * lh * lw)
    if coding == CODING_FACTORISED:
        q = unpack_channels("LATN", payload[body:], freqs, lh * lw, escaped)
        return quality, q.reshape(channels, lh, lw)
    from ..nn.latent_context import decode_latent

    context = context_model(tables, levels, header.method_version)
    try:
        q = decode_latent(payload[body:], escaped, context, quality, (channels, lh, lw))
    except Exception as exc:  # constriction reports corrupt streams in several ways
        raise CodecError(f"chunk 'LATN': corrupt range-coded data ({exc})") from None
    return quality, q


def context_model(tables: dict, levels: int, method_version: int):
    """The model's ContextModel (nn/latent_context.py), checked against a file of this method
    version; CodecError when it has none or it does not fit."""
    from ..nn.latent_context import ContextModel

    model = ContextModel.from_tables(tables)
    if model is None:
        raise CodecError("chunk 'LATN': context-adaptive coding, but the model has no context tables")
    problem = model.problem(tables["prior"].shape[0], levels + int(LEVELS_BELOW[method_version]))
    if problem:
        raise CodecError(f"the model's context tables do not fit a method version {method_version} file: {problem}")
    return model


def context_tables(net, prior: np.ndarray, images: list[np.ndarray], below: float = LEVELS_BELOW[2],
                   fit_every: int = 4) -> dict:
    """The tensors of version 2's context model (nn/latent_context.py), measured on `images`
    (uint8 RGB) at every gain position a version-2 quality reaches: the trained levels and
    `below` extrapolated ones. The activity predictor is fitted on every `fit_every`-th
    image (all positions), the tables counted on all. Export time only."""
    from dataclasses import replace

    from ..nn import latent_context as lc
    from ..nn.integer import freqs_to_probs

    positions = np.arange(-below, net.log_gain.shape[0])
    latents = [[np.clip(np.round(encoder_latent(net, _pad(img.astype(np.float32) / 255.0), float(p))),
                        -32768, 32767).astype(np.int16) for img in images] for p in positions]
    ranges = lc.channel_ranges([q for level in latents for q in level])
    model = lc.fit_activity([q for level in latents for q in level[::fit_every]], ranges)
    counts = np.stack([lc.measure_counts(level, model) for level in latents])
    return replace(model, tables=lc.tables_from_counts(counts, ranges, freqs_to_probs(prior))).as_tables()


# ---------------------------------------------------------------- pixels and tiling


def _to_rgb_float(pixels: np.ndarray, mode: str) -> np.ndarray:
    if mode == "L":
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    pixels = pixels[:, :, :3]
    return pixels.astype(np.float32) / 255.0


def _pad(x: np.ndarray) -> np.ndarray:
    """Edge-pad (H, W, 3) to a multiple of the network stride."""
    h, w = x.shape[:2]
    return np.pad(x, ((0, -h % STRIDE), (0, -w % STRIDE), (0, 0)), mode="edge")


def _spans(n: int):
    """Latent index ranges (core start, core end, window start, window end) covering 0..n."""
    for start in range(0, n, _TILE):
        end = min(start + _TILE, n)
        yield start, end, max(0, start - _MARGIN), min(n, end + _MARGIN)


def encoder_latent(net, x: np.ndarray, position: float, refine: int = 0, relaxed_bits=None) -> np.ndarray:
    """Padded (H, W, 3) image -> the float gained latent the encoder rounds: the analysis
    network's, then `refine` steps of latent refinement (the refine= option; nn/refine.py,
    whose annealed kind measures the rate with `relaxed_bits` when given)."""
    import torch

    with torch.inference_mode():
        gain, inv_gain = net.gains(position)
        y = analysis_tiled(net, x, gain)
    if refine:
        from ..nn.refine import refine_latent

        y = refine_latent(net, x, y, position, inv_gain, refine, relaxed_bits=relaxed_bits)
    return y


def analysis_tiled(net, x: np.ndarray, gain) -> np.ndarray:
    """Padded (H, W, 3) float image -> gained latent (M, H/16, W/16), tile by tile."""
    import torch

    lh, lw = x.shape[0] // STRIDE, x.shape[1] // STRIDE
    out = np.empty((gain.shape[0], lh, lw), np.float32)
    g = gain.view(1, -1, 1, 1)
    for y0, y1, wy0, wy1 in _spans(lh):
        for x0, x1, wx0, wx1 in _spans(lw):
            tile = x[wy0 * STRIDE : wy1 * STRIDE, wx0 * STRIDE : wx1 * STRIDE]
            t = torch.from_numpy(np.ascontiguousarray(tile))[None].permute(0, 3, 1, 2)  # channels-last
            y = (net.g_a(t) * g)[0].numpy()
            out[:, y0:y1, x0:x1] = y[:, y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0]
    return out


def synthesis_tiled(net, q: np.ndarray, inv_gain, synthesis=None) -> np.ndarray:
    """Integer latent (M, lh, lw) -> float image (16 lh, 16 lw, 3) in [0, 1]-ish, tile by tile.

    `synthesis` (default net.g_s) maps a (1, M, h, w) tensor of gained-back latents to pixels."""
    import torch

    synthesis = synthesis or net.g_s
    _, lh, lw = q.shape
    out = np.empty((lh * STRIDE, lw * STRIDE, 3), np.float32)
    ig = inv_gain.view(1, -1, 1, 1)
    for y0, y1, wy0, wy1 in _spans(lh):
        for x0, x1, wx0, wx1 in _spans(lw):
            t = torch.from_numpy(q[:, wy0:wy1, wx0:wx1].astype(np.float32))[None]
            # channels-last: oneDNN's transposed convolutions and GDN run 1.3-1.5x faster in it
            img = synthesis((t * ig).contiguous(memory_format=torch.channels_last))[0].numpy().transpose(1, 2, 0)
            oy, ox = (y0 - wy0) * STRIDE, (x0 - wx0) * STRIDE
            out[y0 * STRIDE : y1 * STRIDE, x0 * STRIDE : x1 * STRIDE] = img[oy : oy + (y1 - y0) * STRIDE, ox : ox + (x1 - x0) * STRIDE]
    return out
