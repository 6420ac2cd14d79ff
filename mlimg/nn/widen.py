"""Function-preserving widening (in the spirit of Net2Net, Chen et al. 2016): put a trained
network into a wider one of the same architecture so that the wide one computes exactly what
the trained one did, then train on from there instead of from scratch.

Every layer's weight has an output and an input channel axis. The trained tensor fills the
leading block; the weights from new input channels to old output channels are zero, so no old
channel ever reads a new one and every old activation (hence the output, when the output
width is unchanged) is what it was. The new channels keep the wide network's fresh
initialisation: they compute something from the start, and training opens the zero blocks
once that helps. Sub-pixel convolutions stay consistent because PixelShuffle maps conv
channel c*r*r + k to output channel c: the old channels are the leading ones on both sides.
"""
from __future__ import annotations

import torch
from torch import nn


def _axes(module: nn.Module, name: str, ndim: int) -> tuple[int, int | None]:
    """(output axis, input axis or None) of parameter `name` of `module`."""
    if ndim == 1:
        return 0, None
    if isinstance(module, nn.ConvTranspose2d) and name == "weight":
        return 1, 0  # ConvTranspose2d stores (in, out, kh, kw)
    return 0, 1  # Conv2d / Linear weights (out, in, ...), GDN gamma (out, in)


@torch.no_grad()
def widen_into(wide: nn.Module, narrow_state: dict) -> list[str]:
    """Copy `narrow_state` (a state dict of the same architecture, some channel counts smaller)
    into `wide` as described above; returns the names of the tensors that grew.

    ValueError when a tensor is missing, or differs in a way widening cannot explain
    (a smaller axis, or a kernel of another size)."""
    grown = []
    modules = dict(wide.named_modules())
    wide_state = wide.state_dict()
    missing = sorted(set(wide_state) - set(narrow_state))
    unexpected = sorted(set(narrow_state) - set(wide_state))
    if missing or unexpected:
        raise ValueError(f"not the same architecture: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for key, target in wide_state.items():
        source = narrow_state[key].to(target.dtype)
        if source.shape == target.shape:
            target.copy_(source)
            continue
        owner, _, name = key.rpartition(".")
        out_axis, in_axis = _axes(modules[owner], name, target.dim())
        for axis, (s, t) in enumerate(zip(source.shape, target.shape)):
            if s > t or (s != t and axis not in (out_axis, in_axis)):
                raise ValueError(f"{key}: cannot widen {tuple(source.shape)} to {tuple(target.shape)}")
        old = tuple(slice(0, n) for n in source.shape)
        if in_axis is not None:  # old outputs must not read new inputs
            rows = [slice(None)] * target.dim()
            rows[out_axis] = slice(0, source.shape[out_axis])
            target[tuple(rows)] = 0
        target[old] = source
        grown.append(key)
    return grown
