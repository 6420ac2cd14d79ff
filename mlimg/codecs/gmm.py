"""gmm: Cheng et al. 2020 (hyperprior, discretised Gaussian-mixture likelihoods, attention)
with a two-pass checkerboard context (He et al. 2021) and gain units for variable rate.

Pixels -> analysis network -> latent y (gained, rounded) -> hyper-analysis -> z (rounded).
z is range-coded with stored integer tables (chunk HLAT). y is coded in two passes (chunk
GLAT): checkerboard anchors from the hyperprior alone, then the other half with a context
of the decoded anchors; a model with channel groups makes that two passes per group, each
also conditioned on the groups before it. Every probability comes from the fixed-point entropy model
(nn/gmm_entropy.py), so decoding is bit-exact everywhere; only the synthesis network that
turns the decoded y into pixels is floating point (tolerance class rmse + peak).
Layout: spec/methods/gmm.md.
"""
from __future__ import annotations

import struct

import numpy as np

from .alpha import ALPHA_CHUNK, decode_alpha, encode_alpha
from .base import ChunkSpec, Codec, CodecError, Encoded, Header, Option, int_in, optional_str
from .cae import REFINE_OPTION, STRIDE, _pad, _to_rgb_float, encoder_latent, synthesis_tiled
from .cae import gain_position as cae_gain_position
from .factorized import pack_channels, read_escapes, unpack_channels

HYPER_STRIDE = 4  # z is y downsampled twice by 2
_HLAT = struct.Struct(">HHHI")  # z height, z width, z channels, escape count
_GLAT = struct.Struct(">BBHHHI")  # quality, reserved, latent height, latent width, channels, escape count
# (steps, first step size) of the per-image choice of z (nn/hyper_refine.py), by default and
# with refine=: on kodim01/08/15/23 at quality 1 / 30 / 70, 5 steps at 0.1 cost 0.3-0.4 s and
# save 1.5 / 1.0 / 0.5 % of the latent's bytes, 20 at 0.05 1.2 s and 1.8 / 1.2 / 0.6 % (TRAINING.md)
HYPER_STEPS, HYPER_STEPS_REFINED = (5, 0.1), (20, 0.05)
# Above this many latent positions (about 2 megapixels) z is h_a's: the choice's memory grows
# with the image (about 35 kB per position: 1920x1080, 8160 positions, +285 MB peak RSS)
HYPER_MAX_POSITIONS = 8192
# Gain levels below the lowest trained one that quality 1 reaches (gains extrapolated),
# per method version: version 2 goes down to ~0.09 bpp on Kodak, version 1 stopped at ~0.19.
LEVELS_BELOW = {1: 0.0, 2: 2.0}


class GmmCodec(Codec):
    name = "gmm"
    version = 2  # 2: quality 1..100 spans 2 extrapolated gain levels below the trained ones
    modes = ("L", "RGB", "RGBA")  # RGBA: colour through the network, alpha lossless in ALPH
    needs_model = True
    chunk_specs = (
        ChunkSpec("HLAT", "u16 zh, u16 zw, u16 z channels, u32 n_escapes, n_escapes x i16, "
                          "range-coded hyper-latent symbols (u32 LE words)"),
        ChunkSpec("GLAT", "u8 quality, u8 0, u16 latent h, u16 latent w, u16 channels, u32 n_escapes, "
                          "n_escapes x i16, range-coded latent symbols: anchors, then non-anchors, each group of "
                          "channels in turn (u32 LE words)"),
        ALPHA_CHUNK,
    )
    options = {
        "quality": Option(75, int_in(1, 100), "an integer 1..100 (higher: more bytes, better quality)"),
        "model": Option(None, optional_str, "None (the installed default) or a registered gmm model id"),
        "refine": REFINE_OPTION,
    }
    loop_filter_default = "auto"  # fLTR: +0.1-0.8 dB on Kodak (README "Loop filter")
    bench_points = tuple({"quality": q} for q in (1, 12, 25, 40, 55, 70, 85, 100))  # ~0.1..0.6 bpp on Kodak

    # ------------------------------------------------------------ encode

    def encode(self, pixels, mode: str, opts) -> Encoded:
        from ..nn import store

        model_id = opts.get("model") or store.default_model(self.name)
        if model_id is None:
            raise ValueError(f"no {self.name} weights are installed; pass model=<id> of a registered model")
        loaded = store.load(model_id, self.name)
        net, entropy = loaded.net, _entropy_model(loaded)
        quality = opts["quality"]
        x = _pad(_to_rgb_float(np.asarray(pixels), mode))
        position = gain_position(quality, net.log_gain.shape[0], self.version)
        y = encoder_latent(net, x, position, opts.get("refine", 0))
        y = np.clip(np.round(y), -32768, 32767).astype(np.int64)
        z = hyper_latent(net, y, *(HYPER_STEPS_REFINED if opts.get("refine") else HYPER_STEPS))
        chunks = [("HLAT", _pack_hyper(z, entropy.t["z_prior"])), ("GLAT", _pack_latent(y, z, quality, entropy))]
        if mode == "RGBA":
            chunks.append(("ALPH", encode_alpha(np.asarray(pixels)[:, :, 3])))
        info = {"quality": quality, "model_id": model_id, **({"refine": opts["refine"]} if opts.get("refine") else {})}
        return Encoded(chunks, info=info, model=(model_id, bytes.fromhex(loaded.sha256)),
                       reconstruct=self.reconstruction(net, y, quality, np.asarray(pixels), mode))

    def reconstruction(self, net, y: np.ndarray, quality: int, pixels: np.ndarray, mode: str):
        """What a decoder of the encoded latent y makes (Encoded.reconstruct), without range
        decoding the latent back: the coder is lossless, so it is the synthesis of y itself."""
        header = Header(pixels.shape[1], pixels.shape[0], mode, self.name, self.version)
        alpha = pixels[:, :, 3] if mode == "RGBA" else None  # ALPH is lossless
        return lambda: _pixels(net, y, quality, header, net.g_s, alpha)

    # ------------------------------------------------------------ decode

    def decode(self, header: Header, chunks, model=None):
        return self.decode_with(header, chunks, model, lambda net: net.g_s)

    def decode_with(self, header: Header, chunks, model, synthesis):
        """Decode with `synthesis(net)` as the float network from latents to pixels
        (gmm: the synthesis transform; gan: its generator)."""
        from ..nn import store

        if model is None:
            raise CodecError(f"{self.name} needs a model reference (MODL chunk) and the file has none")
        loaded = store.load(model[0], self.name, model[1])
        net, entropy = loaded.net, _entropy_model(loaded)
        hlat, glat = _one(chunks, "HLAT"), _one(chunks, "GLAT")
        alph = [data for kind, data in chunks if kind == "ALPH"]
        if len(alph) != (header.mode == "RGBA"):
            raise CodecError(f"chunk 'ALPH': {len(alph)} found, mode {header.mode} needs {int(header.mode == 'RGBA')}")
        lh, lw = -(-header.height // STRIDE), -(-header.width // STRIDE)
        z = unpack_hyper(hlat, lh, lw, entropy.t["z_prior"])
        quality, y = unpack_latent(glat, lh, lw, z, entropy)
        alpha = decode_alpha(alph[0], header.height, header.width) if header.mode == "RGBA" else None
        return _pixels(net, y, quality, header, synthesis(net), alpha)

    def describe(self, header: Header, chunks):
        for kind, data in chunks:
            if kind == "GLAT" and len(data) >= _GLAT.size:
                return {"quality": data[0]}
        return {}


def hyper_latent(net, y: np.ndarray, steps: int, lr: float) -> np.ndarray:
    """The integer hyper-latent (N, zh, zw) to code with the integer latent y (M, lh, lw):
    h_a's, then chosen for this y by `steps` gradient steps on its bits, the first of size `lr`
    (nn/hyper_refine.py)."""
    import torch

    from ..nn.hyper_refine import refine_hyper

    yt = torch.from_numpy(y.astype(np.float32))[None]
    with torch.no_grad():
        z = net.h_a(yt)
    if y[0].size > HYPER_MAX_POSITIONS:
        steps = 0
    z = refine_hyper(net, yt, z, steps, lr)
    return np.clip(z[0].numpy(), -32768, 32767).astype(np.int64)


def _pixels(net, y: np.ndarray, quality: int, header: Header, synthesis, alpha: np.ndarray | None) -> np.ndarray:
    """Decoded pixels (H, W[, C]) uint8 from the integer latent y, by the float `synthesis`."""
    import torch

    with torch.inference_mode():
        _, inv_gain = net.gains(gain_position(quality, net.log_gain.shape[0], header.method_version))
        x = synthesis_tiled(net, y.astype(np.float32), inv_gain, synthesis)
    x = x[: header.height, : header.width]
    out = np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
    if header.mode == "L":
        out = np.round(out.astype(np.float32).mean(axis=2)).astype(np.uint8)
    elif header.mode == "RGBA":
        out = np.concatenate([out, alpha[:, :, None]], axis=2)
    return out


def gain_position(quality: int, levels: int, method_version: int) -> float:
    """The gain level position of `quality` in a gmm file of this method version (`levels` trained)."""
    return cae_gain_position(quality, levels, method_version, LEVELS_BELOW)


def _entropy_model(loaded):
    """The fixed-point entropy model of loaded weights (built once per load, then cached)."""
    from ..nn.gmm_entropy import IntegerEntropyModel

    cached = getattr(loaded, "_integer_entropy", None)
    if cached is None:
        config = loaded.net.config
        cached = IntegerEntropyModel(loaded.tables, loaded.net.M, loaded.net.K, config.get("groups"), config.get("order"))
        loaded._integer_entropy = cached
    return cached


def _one(chunks, kind: str) -> bytes:
    found = [data for k, data in chunks if k == kind]
    if len(found) != 1:
        raise CodecError(f"chunk {kind!r}: expected exactly one, found {len(found)}")
    return found[0]


def _reader(kind: str, data: bytes):
    from ..entropy import CategoricalReader

    try:
        return CategoricalReader(data)
    except ValueError as exc:
        raise CodecError(f"chunk {kind!r}: {exc}") from None


def _decoding(kind: str, fn, *args):
    """Run a range-decoder call; constriction reports corrupt streams in several ways."""
    try:
        return fn(*args)
    except CodecError:
        raise
    except Exception as exc:
        raise CodecError(f"chunk {kind!r}: corrupt range-coded data ({exc})") from None


# ---------------------------------------------------------------- HLAT: z with the factorised prior


def _pack_hyper(z: np.ndarray, freqs: np.ndarray) -> bytes:
    channels, zh, zw = z.shape
    escaped, stream = pack_channels(z, freqs)
    return _HLAT.pack(zh, zw, channels, escaped.size) + escaped.astype(">i2").tobytes() + stream


def unpack_hyper(payload: bytes, lh: int, lw: int, freqs: np.ndarray) -> np.ndarray:
    """HLAT payload -> integer z (channels, zh, zw); CodecError on any inconsistency."""
    if len(payload) < _HLAT.size:
        raise CodecError(f"chunk 'HLAT': {len(payload)} bytes is shorter than its {_HLAT.size}-byte header")
    zh, zw, channels, n_esc = _HLAT.unpack_from(payload)
    want = (-(-lh // HYPER_STRIDE), -(-lw // HYPER_STRIDE))
    if (zh, zw) != want:
        raise CodecError(f"chunk 'HLAT': hyper-latent size {zh}x{zw} does not match the image ({want[0]}x{want[1]} expected)")
    if channels != freqs.shape[0]:
        raise CodecError(f"chunk 'HLAT': {channels} hyper-latent channels, the model has {freqs.shape[0]}")
    escaped, body = read_escapes("HLAT", payload, _HLAT.size, n_esc, channels * zh * zw)
    return unpack_channels("HLAT", payload[body:], freqs, zh * zw, escaped).reshape(channels, zh, zw)


# ---------------------------------------------------------------- GLAT: y in two checkerboard passes


def _pack_latent(y: np.ndarray, z: np.ndarray, quality: int, entropy) -> bytes:
    from ..entropy import CategoricalWriter
    from ..nn.gmm_entropy import WINDOW

    channels, lh, lw = y.shape
    hyper = entropy.hyper(z, lh, lw)
    y_flat = y.reshape(channels, -1)
    writer = CategoricalWriter()
    escaped, shared = [], {}
    for anchors, group in entropy.passes():
        chans = entropy.group_channels[group]
        for pos, centre, probs in entropy.pass_blocks(hyper, y, anchors, group, shared):
            values = y_flat[chans][:, pos].T.ravel()  # (position, channel) order
            offset = values - centre
            outside = np.abs(offset) > WINDOW
            symbols = np.where(outside, 2 * WINDOW + 1, offset + WINDOW)
            writer.encode_rows(symbols, probs)
            escaped.append(values[outside])
    escaped = np.concatenate(escaped) if escaped else np.zeros(0, np.int64)
    head = _GLAT.pack(quality, 0, lh, lw, channels, escaped.size)
    return head + escaped.astype(">i2").tobytes() + writer.finish()


def unpack_latent(payload: bytes, lh: int, lw: int, z: np.ndarray, entropy) -> tuple[int, np.ndarray]:
    """GLAT payload -> (quality, integer y (channels, lh, lw)); CodecError on any inconsistency."""
    from ..nn.gmm_entropy import WINDOW

    if len(payload) < _GLAT.size:
        raise CodecError(f"chunk 'GLAT': {len(payload)} bytes is shorter than its {_GLAT.size}-byte header")
    quality, reserved, h, w, channels, n_esc = _GLAT.unpack_from(payload)
    if not 1 <= quality <= 100:
        raise CodecError(f"chunk 'GLAT': quality {quality} is outside 1..100")
    if reserved != 0:
        raise CodecError(f"chunk 'GLAT': reserved byte is {reserved}, must be 0")
    if (h, w) != (lh, lw):
        raise CodecError(f"chunk 'GLAT': latent size {h}x{w} does not match the image ({lh}x{lw} expected)")
    if channels != entropy.M:
        raise CodecError(f"chunk 'GLAT': {channels} latent channels, the model has {entropy.M}")
    escaped, body = read_escapes("GLAT", payload, _GLAT.size, n_esc, channels * lh * lw)
    reader = _reader("GLAT", payload[body:])
    hyper = entropy.hyper(z, lh, lw)
    y = np.zeros((channels, lh * lw), np.int64)
    used, shared = 0, {}
    for anchors, group in entropy.passes():
        chans = entropy.group_channels[group]
        for pos, centre, probs in entropy.pass_blocks(hyper, y.reshape(channels, lh, lw), anchors, group, shared):
            symbols = _decoding("GLAT", reader.decode_rows, probs).astype(np.int64)
            values = centre + symbols - WINDOW
            outside = np.flatnonzero(symbols == 2 * WINDOW + 1)
            if used + outside.size > n_esc:
                raise CodecError(f"chunk 'GLAT': more escape symbols decoded than the {n_esc} the header lists")
            values[outside] = escaped[used : used + outside.size]
            used += outside.size
            y[chans[:, None], pos[None]] = values.reshape(pos.size, chans.size).T
    if used != n_esc:
        raise CodecError(f"chunk 'GLAT': {used} escape symbols decoded, header says {n_esc}")
    return quality, y.reshape(channels, lh, lw)
