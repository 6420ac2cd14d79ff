"""rnn method version 4: the logistic context model of the bits (nn/binary_logistic.py).

A per-bit transcription of spec/methods/rnn.md "Version 4: logistic contexts" checks the
vectorised contexts; round trips with random weights, masks and priors; the logits are exact
integers whatever the thread count; the fit finds redundancy that version 3's counts miss."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mlimg.nn import binary_logistic as bl


def _random_setup(rng, iterations, channels, h, w, masked):
    weights = rng.integers(-400, 401, (bl.WEIGHT_SETS, channels, bl.feature_count(channels)))
    counts = rng.integers(1, iterations + 1, (h, w)) if masked else np.full((h, w), iterations)
    bits = (rng.random((iterations, channels, h, w)) < rng.uniform(0.1, 0.9)).astype(np.uint8)
    bits *= counts[None, None] > np.arange(iterations)[:, None, None, None]  # inactive: 0
    return weights, counts, bits


def _spec_contexts(weights, bits, counts):
    """Per bit, straight from the spec text: [(t, c, y, x, ctx)] in coding order."""
    iterations, channels, h, w = bits.shape

    def sgn(t, k, y, x, decoded=None):
        if t < 0 or not (0 <= y < h and 0 <= x < w) or counts[y, x] <= t:
            return 0
        if decoded is not None and (y, x) not in decoded:
            return 0
        return 2 * int(bits[t, k, y, x]) - 1

    out = []
    for t in range(iterations):
        band = 0 if t == 0 else 1 if t == 1 else 2 if t < 4 else 3 if t < 8 else 4
        for c in range(channels):
            wt = weights[min(t, 15), c]
            anchors = {(y, x) for y in range(h) for x in range(w) if (y + x) % 2 == 0}
            for half in (0, 1):
                for y in range(h):
                    for x in range(w):
                        if ((y + x) % 2 == 0) != (half == 0) or counts[y, x] <= t:
                            continue
                        z = sum(int(wt[k]) * sgn(t - 1, k, y, x) for k in range(channels))
                        z += sum(int(wt[channels + k]) * sgn(t, k, y, x) for k in range(c))
                        z += int(wt[2 * channels]) * sgn(t - 2, c, y, x)
                        near = ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1))
                        z += int(wt[2 * channels + 1]) * sum(sgn(t - 1, c, yy, xx) for yy, xx in near)
                        if half:
                            n = sum(sgn(t, c, yy, xx, anchors) for yy, xx in near)
                            z += int(wt[2 * channels + 2]) * n + int(wt[2 * channels + 3])
                        z += int(wt[2 * channels + 4])
                        u = min(max(z // 64 + 32, 0), 63)
                        out.append((t, c, y, x, (band * 2 + half) * 64 + u))
    return out


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 18), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.integers(0, 2**32 - 1),
       st.booleans())
def test_contexts_follow_the_spec(iterations, channels, h, w, seed, masked):
    rng = np.random.default_rng(seed)
    weights, counts, bits = _random_setup(rng, iterations, channels, h, w, masked)
    wf = bl.check_weights(weights, channels)
    got, prev, prev2 = [], None, None
    for t in range(iterations):
        active = counts > t
        for ctx, _ in bl.iteration_contexts(wf, t, bits[t], prev, prev2, active):
            got.extend(int(v) for v in ctx)
        prev2, prev = prev, bl.signs(bits[t], active)
    assert got == [ctx for *_, ctx in _spec_contexts(weights, bits, counts)]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 10), st.integers(1, 4), st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**32 - 1),
       st.booleans(), st.booleans())
def test_coder_round_trips(iterations, channels, h, w, seed, masked, with_prior):
    rng = np.random.default_rng(seed)
    weights, counts, bits = _random_setup(rng, iterations, channels, h, w, masked)
    wf = bl.check_weights(weights, channels)
    prior = rng.integers(0, 5000, (bl.CONTEXTS, 2)) if with_prior else None
    enc_counts, dec_counts = bl.LogisticCounts(prior), bl.LogisticCounts(prior)
    enc_prev = enc_prev2 = dec_prev = dec_prev2 = None
    for t in range(iterations):
        active = counts > t
        data = bl.encode_iteration(wf, t, bits[t], enc_prev, enc_prev2, enc_counts, active)
        out = bl.decode_iteration(wf, t, data, bits.shape[1:], dec_prev, dec_prev2, dec_counts, active)
        assert np.array_equal(out, bits[t])
        enc_prev2, enc_prev = enc_prev, bl.signs(bits[t], active)
        dec_prev2, dec_prev = dec_prev, bl.signs(out, active)
    assert np.array_equal(enc_counts.counts, dec_counts.counts)
    assert enc_counts.counts.sum(axis=1).max() <= 4096


def test_prior_rows_over_the_threshold_start_halved_and_bad_tables_are_refused():
    prior = np.zeros((bl.CONTEXTS, 2), np.int64)
    prior[3] = (5000, 3)
    assert tuple(bl.LogisticCounts(prior).counts[3]) == (2500, 2)
    with pytest.raises(ValueError, match="prior has shape"):
        bl.LogisticCounts(np.zeros((10, 2)))
    with pytest.raises(ValueError, match="non-negative"):
        bl.LogisticCounts(-prior)
    with pytest.raises(ValueError, match="weights have shape"):
        bl.check_weights(np.zeros((bl.WEIGHT_SETS, 3, 7)), 3)
    with pytest.raises(ValueError, match="exceed"):
        bl.check_weights(np.full((bl.WEIGHT_SETS, 2, bl.feature_count(2)), 40000), 2)


def test_logits_are_exact_integers_under_any_thread_count():
    """The probability inputs come from integer sums done in float64 BLAS: equal to an int64
    computation of the same sums, and the same contexts under 1 or 2 BLAS threads."""
    threadpoolctl = pytest.importorskip("threadpoolctl")  # (ships with scikit-learn)
    from mlimg.nn.checkerboard import cross4

    rng = np.random.default_rng(7)
    channels, h, w = 32, 40, 56
    weights = rng.integers(-32767, 32768, (bl.WEIGHT_SETS, channels, bl.feature_count(channels)))
    bits = rng.integers(0, 2, (3, channels, h, w), dtype=np.uint8)
    wf = bl.check_weights(weights, channels)
    prev2, prev = bl.signs(bits[0], None), bl.signs(bits[1], None)
    results = []
    for threads in (1, 2):
        with threadpoolctl.threadpool_limits(limits=threads):
            results.append([ctx for ctx, _ in bl.iteration_contexts(wf, 2, bits[2], prev, prev2, None)])
    for a, b in zip(*results):
        assert np.array_equal(a, b)
    wi = weights[bl.weight_set(2)].astype(np.int64)
    p, p2 = prev.astype(np.int64).reshape(channels, -1), prev2.astype(np.int64).reshape(channels, -1)
    near = np.stack([cross4(plane) for plane in prev.astype(np.int64)]).reshape(channels, -1)
    exact = wi[:, :channels] @ p + wi[:, 2 * channels, None] * p2 + wi[:, 2 * channels + 1, None] * near + wi[:, -1:]
    model = bl.IterationModel(wf, 2, prev, prev2, bits.shape[1:])
    assert np.abs(exact).max() > 2**16  # large sums (of up to 69 terms of +-32767), still exact
    assert np.array_equal(model.base, exact.astype(np.float64))


def test_fit_finds_redundancy_the_counting_contexts_miss():
    """Bits where channel 1 repeats channel 0 of the previous iteration: version 3's contexts
    (same channel only) see noise, the fitted logistic model nearly all of it."""
    from mlimg.nn.binary_context import ContextCounts, encode_iteration as encode_v3

    rng = np.random.default_rng(3)
    iterations, channels, h, w = 4, 2, 16, 16

    def sample():
        b = rng.integers(0, 2, (iterations, channels, h, w), dtype=np.uint8)
        b[1:, 1] = b[:-1, 0]
        return b

    weights = bl.fit_weights([sample() for _ in range(6)])
    assert weights[bl.weight_set(1), 1, 0] > 256  # P_0 drives channel 1 (more than one logit)
    prior = bl.prior_counts([sample() for _ in range(2)], weights)
    test = sample()
    wf = bl.check_weights(weights, channels)
    v3, v4 = ContextCounts(channels, split=True), bl.LogisticCounts(prior)
    size3 = size4 = 0
    prev3 = prev = prev2 = None
    for t in range(iterations):
        size3 += len(encode_v3(t, test[t], prev3, v3))
        size4 += len(bl.encode_iteration(wf, t, test[t], prev, prev2, v4))
        prev3, prev2, prev = test[t], prev, bl.signs(test[t], None)
    assert size4 < 0.8 * size3
