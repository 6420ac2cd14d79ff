"""Code a stack of integer planes losslessly: the pass loop shared by encoder and decoder.

Passes run coarse to fine (lossless_geometry); inside a pass the planes are coded in
order, so a later plane sees the earlier planes at its own pixel and at every
neighbour. Per pass and plane:
  predictor weights, scale weights   -> params (zig-zag LEB128 varints)
  tokens                             -> one range-coded stream
  raw low bits                       -> one bit stream
See spec/methods/lossless.md for the byte layout.
"""
from __future__ import annotations

import contextlib

import numpy as np

from ..entropy import CategoricalReader, CategoricalWriter
from . import lossless_model as model
from .lossless_geometry import Pass, pass_sizes, passes
from .lossless_tokens import BitReader, BitWriter, TokenBudget, decode_classes, encode_classes, from_tokens, raw_bit_counts, to_tokens, token_count, wrap


def write_varints(values) -> bytes:
    out = bytearray()
    for v in np.asarray(values, np.int64).tolist():
        z = (v << 1) ^ (v >> 63)
        while z >= 0x80:
            out.append((z & 0x7F) | 0x80)
            z >>= 7
        out.append(z)
    return bytes(out)


class VarintReader:
    def __init__(self, data: bytes, pos: int = 0):
        self._data = data
        self.pos = pos

    def remaining(self) -> int:
        return len(self._data) - self.pos

    def read(self, count: int) -> np.ndarray:
        out = np.zeros(count, np.int64)
        data, pos = self._data, self.pos
        for i in range(count):
            z = shift = 0
            while True:
                if pos >= len(data) or shift > 63:
                    raise ValueError("model parameters truncated or malformed")
                byte = data[pos]
                pos += 1
                z |= (byte & 0x7F) << shift
                shift += 7
                if byte < 0x80:
                    break
            out[i] = (z >> 1) ^ -(z & 1)
        self.pos = pos
        return out


def _base_prediction(p: Pass, plane: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Base lattice: left neighbour on the first row, upper neighbour below it (by cumulative sums)."""
    rows, cols = p.shape
    grid = plane[p.flat].reshape(rows, cols)
    pred = np.empty_like(grid)
    pred[0, 0] = 1 << (bits - 1)
    pred[0, 1:] = grid[0, :-1]
    pred[1:, :] = grid[:-1, :]
    return pred.ravel()


def _base_reconstruct(p: Pass, residual: np.ndarray, bits: int) -> np.ndarray:
    rows, cols = p.shape
    e = residual.reshape(rows, cols).copy()
    e[0, 0] += 1 << (bits - 1)
    first = np.cumsum(e[0])
    grid = np.cumsum(np.concatenate([first[None, :], e[1:]], axis=0), axis=0)
    return (grid & ((1 << bits) - 1)).ravel()


def _single_thread_blas():
    """The least-squares fits are many small products: BLAS threads only fight over the cores."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _fit_pass(p: Pass, c: int, planes: np.ndarray, errors: np.ndarray, bits: int):
    """Encoder side of a D/H/V pass: fit its models -> (predictions, classes, parameters in file order)."""
    actual = planes[c][p.flat]
    rows = model.fit_rows(p)
    n0, feats = model.predictor_features(p, c, planes, rows)
    act = model.texture(p, c, planes)
    thresholds = model.fit_thresholds(act, model.predictor_groups(p))
    groups = model.groups_from_texture(act, thresholds)
    fit_groups, fit_actual = groups[rows], actual[rows]
    weights = np.stack([
        model.fit_predictor(n0[fit_groups == g], feats[fit_groups == g], fit_actual[fit_groups == g])
        for g in range(thresholds.size + 1)
    ])
    pred = model.predict(p, c, planes, weights, groups, bits)
    sfeats = model.scale_features(p, c, planes, errors, pred)
    scale = model.fit_scale(sfeats[rows], np.abs(wrap(actual[rows] - pred[rows], bits)))
    return pred, model.classes_from_scale(sfeats, scale, bits), [thresholds, weights.ravel(), scale]


def encode_planes(planes: list[np.ndarray], bits: int, height: int, width: int):
    """planes: flat int64 arrays of height*width values in [0, 2**bits). -> (params, tokens, raw bits)."""
    with _single_thread_blas():
        return _encode_planes(planes, bits, height, width)


def _encode_planes(planes, bits, height, width):
    params: list[np.ndarray] = []
    writer, bit_writer = CategoricalWriter(), BitWriter()
    planes = np.stack(planes) if len(planes) else np.zeros((0, height * width), np.int64)
    errors = np.zeros_like(planes)
    ncls = model.n_classes(bits)
    counts = np.zeros((len(planes), ncls, token_count(bits)), np.int64)  # token statistics per plane
    for p in passes(height, width):
        for c in range(len(planes)):
            actual = planes[c][p.flat]
            if p.kind == "B":
                pred = _base_prediction(p, planes[c], bits)
                classes = np.full(p.size, ncls - 1, np.int64)
            else:
                pred, classes, fitted = _fit_pass(p, c, planes, errors, bits)
                params += fitted
            residual = wrap(actual - pred, bits)
            tokens, raw, nraw = to_tokens(residual)
            encode_classes(writer, counts[c], tokens, classes)
            bit_writer.write(raw, nraw)
            errors[c][p.flat] = np.abs(residual)
    flat_params = np.concatenate(params) if params else np.zeros(0, np.int64)
    return write_varints(flat_params), writer.finish(), bit_writer.finish()


class _Shape:
    """Kind and size of a pass without its index tables (all the model layout depends on)."""

    def __init__(self, kind: str, size: int):
        self.kind, self.size = kind, size


def _param_count(n_planes: int, height: int, width: int) -> int:
    """How many varints the model parameters of an image of this size hold."""
    total = 0
    for kind, size in pass_sizes(height, width):
        if kind == "B":
            continue
        p = _Shape(kind, size)
        n_groups = model.predictor_groups(p)
        for c in range(n_planes):
            total += n_groups - 1 + n_groups * model.predictor_size(p, c) + model.scale_size(c)
    return total


def check_sizes(n_planes: int, bits: int, height: int, width: int, n_params: int, n_tokens: int) -> TokenBudget:
    """Reject streams that cannot belong to an image of the claimed size, before anything is allocated.

    n_params: bytes of model parameters, n_tokens: bytes of the token stream. Each parameter
    is a varint of 1 to 10 bytes; every pixel of every plane is one range-coded token, which
    costs at least TokenBudget.min_cost bits. Returns the budget that decode_planes then
    spends token by token, so a stream that runs out mid-image fails at that point.
    """
    count = _param_count(n_planes, height, width)
    if not count <= n_params <= 10 * count:
        raise ValueError(f"'LLHD' holds {n_params} bytes of model parameters, a {width}x{height} image has {count}")
    budget = TokenBudget(n_tokens, bits, n_planes * height * width)
    budget.check()
    return budget


def decode_planes(n_planes: int, bits: int, height: int, width: int, params: VarintReader, tokens: bytes, raw: bytes):
    """Inverse of encode_planes -> list of flat int32 planes. Raises ValueError on inconsistent data,
    as early as the data allows: sizes are checked before the planes are allocated, the token
    stream after every block, the raw bits after every pass."""
    budget = check_sizes(n_planes, bits, height, width, params.remaining(), len(tokens))
    reader, bit_reader = CategoricalReader(tokens), BitReader(raw)
    # int32 holds every sample and |residual| (< 2**16); the kernels compute in int64 all the same
    planes = np.zeros((n_planes, height * width), np.int32)
    errors = np.zeros_like(planes)
    ncls = model.n_classes(bits)
    counts = np.zeros((n_planes, ncls, token_count(bits)), np.int64)
    for p in passes(height, width):
        for c in range(n_planes):
            if p.kind == "B":
                classes = np.full(p.size, ncls - 1, np.int64)
            else:
                n_groups = model.predictor_groups(p)
                groups = model.groups_from_texture(model.texture(p, c, planes), params.read(n_groups - 1))
                w = params.read(n_groups * model.predictor_size(p, c)).reshape(n_groups, -1)
                pred = model.predict(p, c, planes, w, groups, bits)
                sfeats = model.scale_features(p, c, planes, errors, pred)
                classes = model.classes_from_scale(sfeats, params.read(model.scale_size(c)), bits)
            toks = decode_classes(reader, counts[c], classes, budget)
            residual = from_tokens(toks, bit_reader.read(raw_bit_counts(toks)))
            if p.kind == "B":
                planes[c][p.flat] = _base_reconstruct(p, residual, bits)
            else:
                planes[c][p.flat] = (pred + residual) & ((1 << bits) - 1)
            errors[c][p.flat] = np.abs(residual)
    bit_reader.check_end()
    return list(planes)
