"""gan: HiFiC-style generative decoding (Mentzer et al. 2020) of gmm latents.

The bitstream is gmm's (HLAT + GLAT, same fixed-point entropy model, same rates):
a gan model is a trained gmm whose encoder and entropy model are frozen, plus a
generator trained as a conditional GAN to turn the decoded latents into sharp,
textured pixels. The generator takes a realism value (Agustsson et al. 2023):
0 decodes towards the original (distortion-trained), 1 towards full realism; the
same file can be decoded either way (`Image.open` then
`im.decode_options["realism"] = 0.3`, or `mlimg decode --realism 0.3`).
Layout: spec/methods/gan.md.
"""
from __future__ import annotations

from .base import Header, Option, int_in, optional_str
from .gmm import GmmCodec

DEFAULT_REALISM = 1.0


def check_realism(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"decode option realism={value!r}: valid is a number from 0 (closest to the original) "
                         f"to 1 (most realistic)")
    return float(value)


class GanCodec(GmmCodec):
    name = "gan"
    version = 2  # as gmm's version 2 (quality reaches two gain levels lower)
    options = {
        "quality": Option(30, int_in(1, 100), "an integer 1..100 (higher: more bytes, better quality)"),
        "model": Option(None, optional_str, "None (the installed default) or a registered gan model id"),
    }
    # Generative decoding matters at low rates: trace the low half of the quality range more densely.
    loop_filter_default = False  # a least-squares filter pulls the generator's texture back towards blur
    bench_points = tuple({"quality": q} for q in (1, 8, 16, 25, 35, 50, 70, 85))  # ~0.1..0.5 bpp

    def reconstruction(self, *args):
        return None  # its pixels come from the generator at the decoder's realism: decode the chunks

    def decode(self, header: Header, chunks, model=None, realism=DEFAULT_REALISM):
        realism = check_realism(realism)
        return self.decode_with(header, chunks, model, lambda net: (lambda y: net.generator(y, realism)))
