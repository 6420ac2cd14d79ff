"""The method registry: method name -> codec instance, imported lazily.

Codec modules import torch / scikit-learn only inside encode/decode, so listing
them here keeps `import mlimg` light.
"""
from __future__ import annotations

import importlib

from .base import Codec

# name -> "module:Class". Adding a method is one line here plus its module.
_REGISTRY = {
    "raw": "mlimg.codecs.raw:RawCodec",
    "cae": "mlimg.codecs.cae:CaeCodec",
    "gmm": "mlimg.codecs.gmm:GmmCodec",
    "gan": "mlimg.codecs.gan:GanCodec",
    "kmeans": "mlimg.codecs.kmeans:KMeansCodec",
    "vq": "mlimg.codecs.vq:VQCodec",
    "pca": "mlimg.codecs.pca:PCACodec",
    "lossless": "mlimg.codecs.lossless:LosslessCodec",
    "rnn": "mlimg.codecs.rnn:RnnCodec",
}

_cache: dict[str, Codec] = {}


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> Codec:
    """Return the codec for a method name; ValueError lists the valid names."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(names())}")
    if name not in _cache:
        module_name, cls_name = _REGISTRY[name].split(":")
        _cache[name] = getattr(importlib.import_module(module_name), cls_name)()
    return _cache[name]


def all_codecs() -> list[Codec]:
    return [get(n) for n in names()]
