"""cae version 2's context-adaptive latent coding (mlimg/nn/latent_context.py): round trips
on any shape with escapes, the integer table interpolation, the contexts, corrupt streams."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mlimg.nn import latent_context as lc

pytest.importorskip("constriction")


def _latent(rng, shape, scale):
    """Laplace-like integers with a few large values (escapes for small ranges)."""
    q = np.round(rng.laplace(0, scale, shape)).astype(np.int64)
    q.ravel()[rng.integers(0, q.size, max(1, q.size // 50))] = rng.integers(-300, 300)
    return np.clip(q, -32768, 32767)


def _tables(rng, levels, ranges):
    """Random valid tables: what an export would measure on random latents."""
    latents = [_latent(rng, (len(ranges), 9, 11), 2.0) for _ in range(3)]
    counts = np.stack([lc.measure_counts(latents, ranges) for _ in range(levels)])
    centred = np.zeros((len(ranges), 256))  # a factorised prior (values -127..127, escape): flat inside r_c
    for c, r in enumerate(ranges):
        centred[c, 127 - r : 127 + r + 1] = 1.0
        centred[c, 255] = 0.01
    return lc.tables_from_counts(counts + rng.integers(0, 5, counts.shape), ranges, centred / centred.sum(1, keepdims=True))


@settings(max_examples=30, deadline=None)
@given(channels=st.integers(1, 12), h=st.integers(1, 19), w=st.integers(1, 19), quality=st.integers(1, 100),
       scale=st.floats(0.1, 30.0), seed=st.integers(0, 10**6))
def test_round_trip_any_shape_with_escapes(channels, h, w, quality, scale, seed):
    rng = np.random.default_rng(seed)
    ranges = rng.integers(1, 40, channels)
    tables = _tables(rng, 4, ranges)
    q = _latent(rng, (channels, h, w), scale)
    escaped, stream = lc.encode_latent(q, lc.level_tables(tables, ranges, quality), ranges)
    assert escaped.size == int((np.abs(q) > ranges[:, None, None]).sum())
    back = lc.decode_latent(stream, escaped, lc.level_tables(tables, ranges, quality), ranges, q.shape)
    assert np.array_equal(back, q)


def test_adaptation_and_context_save_bits_on_structured_latents():
    """Latents whose scale varies smoothly across the image and is shared by neighbouring
    channels: the context model must code them in fewer bytes than without its contexts
    (all contexts given the same table) and adaptation must not cost."""
    rng = np.random.default_rng(0)
    ranges = np.full(16, 30)
    yy, xx = np.mgrid[:24, :24]
    scale = 0.2 + 6.0 * (xx > 12)  # a flat half and a busy half
    make = lambda: np.round(rng.laplace(0, 1, (16, 24, 24)) * scale).astype(np.int64)
    train = [make() for _ in range(6)]
    counts = lc.measure_counts(train, ranges)[None].repeat(2, axis=0)
    flat_prior = np.ones((16, 256)) / 256
    tables = lc.tables_from_counts(counts, ranges, flat_prior)
    pooled = tables.astype(np.int64).sum(axis=1, keepdims=True) // lc.CONTEXTS  # one table for every context
    pooled = np.repeat(np.maximum(pooled, 1), lc.CONTEXTS, axis=1).astype(np.uint16)
    q = make()
    with_ctx = len(lc.encode_latent(q, lc.level_tables(tables, ranges, 50), ranges)[1])
    without = len(lc.encode_latent(q, lc.level_tables(pooled, ranges, 50), ranges)[1])
    assert with_ctx < 0.9 * without


def test_level_tables_hit_the_stored_rows_at_the_ends_and_stay_positive():
    rng = np.random.default_rng(1)
    ranges = np.array([3, 5])
    tables = rng.integers(1, 1000, (5, lc.CONTEXTS, int((2 * ranges + 2).sum()))).astype(np.uint16)
    first = lc.level_tables(tables, ranges, 1)
    last = lc.level_tables(tables, ranges, 100)
    assert [t.shape for t in first] == [(lc.CONTEXTS, 8), (lc.CONTEXTS, 12)]
    assert np.array_equal(np.concatenate(first, axis=1), tables[0])
    assert np.array_equal(np.concatenate(last, axis=1), tables[-1])
    for quality in range(1, 101):
        assert min(t.min() for t in lc.level_tables(tables, ranges, quality)) >= 1
    # quality 34: (33 * 4) / 99 = 1.33 -> a third of the way from row 1 to row 2, in integers
    mid = np.concatenate(lc.level_tables(tables, ranges, 34), axis=1)
    assert np.array_equal(mid, (tables[1].astype(np.int64) * 66 + tables[2].astype(np.int64) * 33) // 99)


def test_contexts_follow_the_spec():
    mags = np.zeros((3, 4), np.int64)
    mags[0, 0], mags[1, 1] = 1, 2  # two anchors (y + x even)
    bucket = np.full((3, 4), 3)
    assert (lc.context_ids(bucket, None) == 12).all()
    ctx = lc.context_ids(bucket, mags)
    assert ctx[0, 1] == 12 + 1 + 2  # neighbours (0,0)=1 and (1,1)=2: sum 3 -> both edges
    assert ctx[1, 0] == 12 + 1 + 2
    assert ctx[2, 1] == 12 + 1 + 1  # neighbour (1,1)=2 only
    assert ctx[0, 3] == 12 + 1 + 0
    tracker = lc.ActivityTracker(3, 4)
    for c in range(lc.ACTIVITY_CHANNELS + 1):
        tracker.push(np.full((3, 4), 1 if c == 0 else 0, np.int64))
    # the first channel's 3x3 sums have left the window of the last 8
    assert (tracker.bucket() == 0).all()
    tracker = lc.ActivityTracker(3, 4)
    tracker.push(np.ones((3, 4), np.int64))
    assert tracker.total[1, 1] == 9 and tracker.total[0, 0] == 4  # outside counts 0


def test_measure_counts_counts_every_value_once():
    rng = np.random.default_rng(2)
    ranges = np.array([2, 7, 4])
    latents = [_latent(rng, (3, 5, 6), 3.0) for _ in range(2)]
    counts = lc.measure_counts(latents, ranges)
    widths = 2 * ranges + 2
    per_channel = np.split(counts, np.cumsum(widths)[:-1], axis=1)
    for c, table in enumerate(per_channel):
        assert table.sum() == 2 * 5 * 6
        escapes = sum(int((np.abs(q[c]) > ranges[c]).sum()) for q in latents)
        assert table[:, -1].sum() == escapes


def test_corrupt_stream_or_escape_count_is_a_value_error():
    rng = np.random.default_rng(3)
    ranges = np.array([4, 4])
    tables = _tables(rng, 3, ranges)
    q = _latent(rng, (2, 6, 7), 3.0)
    escaped, stream = lc.encode_latent(q, lc.level_tables(tables, ranges, 70), ranges)
    with pytest.raises(ValueError, match="escape"):
        lc.decode_latent(stream, np.concatenate([escaped, [99]]), lc.level_tables(tables, ranges, 70), ranges, q.shape)
    with pytest.raises(ValueError):
        lc.decode_latent(stream[:-1], escaped, lc.level_tables(tables, ranges, 70), ranges, q.shape)
