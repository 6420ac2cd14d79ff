"""The learned part of the lossless coder: per-pass least-squares predictors and
context (scale) models, fitted to each image by the encoder and stored as integers.

For every pass and plane the encoder fits
  * a linear predictor of x(p) - x(n0) from neighbour differences of the same plane
    and, for later planes, differences of the already-decoded planes around p
    (cross-channel prediction), quantised to PRED_FRAC fractional bits;
  * a linear estimate of |residual| from local activity features, quantised to
    SCALE_FRAC bits, whose log2 picks the context class of the token model.
The decoder evaluates both in int64 arithmetic, so it reproduces them exactly.
"""
from __future__ import annotations

import numpy as np

from .lossless_geometry import NEAR, OFFSETS, Pass


def kernels():
    from . import lossless_kernels  # numba: loaded only when an image is coded

    return lossless_kernels


PRED_FRAC = 12
SCALE_FRAC = 8
FULL_MIN = 512  # passes with fewer pixels use the near neighbours only (fewer weights to store)
WEIGHT_LIMIT = 1 << 30
IRLS_ROUNDS = 3  # reweighted least-squares rounds (towards least absolute error)
CLASS_BITS = 1  # context classes per octave of the scale estimate: 2**CLASS_BITS
GROUPS = 4  # texture groups with their own predictor in large passes
GROUP_MIN = 16384
FIT_ROWS = 1 << 15  # the encoder fits each pass on at most about this many pixels
SCALE_FEATURES_FIRST = 4  # see kernels.scale_features
SCALE_FEATURES_LATER = 7


def n_classes(bits: int) -> int:
    return (bits + 4) << CLASS_BITS


def _layout(p: Pass) -> tuple[int, int]:
    """(own neighbours used, near neighbours used per earlier plane) for a pass."""
    if p.size >= FULL_MIN:
        return len(OFFSETS[p.kind]), NEAR[p.kind]
    return NEAR[p.kind], 1


def fit_rows(p: Pass) -> np.ndarray:
    """The pixels the encoder fits on: all of a small pass, a seeded random subsample of a large one."""
    if p.size <= FIT_ROWS:
        return np.arange(p.size)
    return np.sort(np.random.default_rng(p.size).choice(p.size, FIT_ROWS, replace=False))  # seeded: deterministic


def predictor_features(p: Pass, plane: int, values: np.ndarray, rows: np.ndarray):
    """(n0, F) of the given pixels for fitting: primary neighbour values and features, constant last.

    Feature order matches kernels.predict, which computes the same sum pixel by pixel.
    """
    n_own, near = _layout(p)
    nbrs, flat = p.neighbours[rows], p.flat[rows]
    own = values[plane][nbrs[:, :n_own]]
    n0 = own[:, 0]
    cols = [own[:, 1:] - n0[:, None]]
    for earlier in values[:plane]:
        q0 = earlier[nbrs[:, 0]]
        cols.append((earlier[flat] - q0)[:, None])
        if near > 1:
            cols.append(earlier[nbrs[:, 1:near]] - q0[:, None])
    cols.append(np.ones((rows.size, 1), np.int64))
    return n0, np.concatenate(cols, axis=1)


def predictor_size(p: Pass, plane: int) -> int:
    n_own, near = _layout(p)
    return n_own - 1 + plane * near + 1


def predictor_groups(p: Pass) -> int:
    """How many texture groups get their own predictor in this pass (fixed by the pass size)."""
    return 1 if p.size < GROUP_MIN else GROUPS


def texture(p: Pass, plane: int, values: np.ndarray) -> np.ndarray:
    """Local activity from known pixels: the spread of the near neighbours in all decoded planes."""
    return kernels().texture(values, plane, p.flat, p.neighbours, NEAR[p.kind])


def groups_from_texture(act: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.sort(thresholds), act, side="right")



def fit_thresholds(act: np.ndarray, groups: int) -> np.ndarray:
    if groups == 1 or act.size == 0:
        return np.zeros(groups - 1, np.int64)
    return np.quantile(act, np.arange(1, groups) / groups, method="lower").astype(np.int64)


def predict(p: Pass, plane: int, values: np.ndarray, weights: np.ndarray, groups: np.ndarray, bits: int) -> np.ndarray:
    """weights: (G, K) integer rows, one per texture group."""
    n_own, near = _layout(p)
    return kernels().predict(values, plane, p.flat, p.neighbours, n_own, near,
                             np.ascontiguousarray(weights, np.int64), groups.astype(np.int64), PRED_FRAC, (1 << bits) - 1)


def scale_features(p: Pass, plane: int, values: np.ndarray, errors: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Non-negative activity features whose linear blend estimates |residual|."""
    return kernels().scale_features(values, errors, plane, p.flat, p.neighbours, NEAR[p.kind], pred)


def scale_size(plane: int) -> int:
    return SCALE_FEATURES_LATER if plane else SCALE_FEATURES_FIRST


def classes_from_scale(feats: np.ndarray, weights: np.ndarray, bits: int) -> np.ndarray:
    """Context class ~ CLASS_STEPS * log2(1 + 4*sigma), from integers only."""
    sigma4 = np.clip((feats @ weights.astype(np.int64)) >> (SCALE_FRAC - 2), 0, 1 << 40) + 1
    n = np.frexp(sigma4.astype(np.float64))[1].astype(np.int64) - 1  # exact floor(log2): sigma4 < 2**53
    sub = ((sigma4 << CLASS_BITS) >> n) & ((1 << CLASS_BITS) - 1)  # the bits below the leading one
    return np.minimum((n << CLASS_BITS) + sub, n_classes(bits) - 1)


def _solve(feats: np.ndarray, target: np.ndarray, rounds: int) -> np.ndarray:
    """Least squares, then a few reweighted rounds towards least absolute error."""
    x = feats.astype(np.float64)
    t = target.astype(np.float64)
    k = x.shape[1]
    w_row = np.ones(x.shape[0])
    sol = np.zeros(k)
    for _ in range(rounds + 1):
        xw = x * w_row[:, None]
        gram = xw.T @ x
        ridge = 1e-6 * (np.trace(gram) / k + 1.0)
        sol = np.linalg.solve(gram + ridge * np.eye(k), xw.T @ t)
        w_row = 1.0 / np.maximum(np.abs(t - x @ sol), 1.0)
    return sol


def fit_predictor(n0, feats, actual) -> np.ndarray:
    if feats.shape[0] == 0:
        return np.zeros(feats.shape[1], np.int64)
    sol = _solve(feats, actual - n0, IRLS_ROUNDS)
    return np.clip(np.round(sol * (1 << PRED_FRAC)), -WEIGHT_LIMIT, WEIGHT_LIMIT).astype(np.int64)


def fit_scale(feats, abs_residual) -> np.ndarray:
    if feats.shape[0] == 0:
        return np.zeros(feats.shape[1], np.int64)
    sol = _solve(feats, abs_residual, 0)
    return np.clip(np.round(sol * (1 << SCALE_FRAC)), -WEIGHT_LIMIT, WEIGHT_LIMIT).astype(np.int64)
