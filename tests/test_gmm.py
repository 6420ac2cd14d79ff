"""gmm (draft): the network, its checkerboard context, training step, and the exact
fixed-point convolution its decoder will use. The codec itself is not registered yet."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mlimg.nn.integer import int_conv2d, int_matmul  # noqa: E402
from mlimg.nn.models import GMM, anchor_mask, build  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = {"arch": "gmm", "N": 8, "M": 8, "K": 3, "lambdas": [0.01, 0.05]}


def test_forward_shapes_and_likelihoods():
    torch.manual_seed(0)
    net = build(TINY)
    x = torch.rand(2, 3, 64, 48)
    x_hat, lik = net(x, 1)
    assert x_hat.shape == x.shape
    assert lik.numel() == 2 * 8 * 4 * 3 + 2 * 8 * 1 * 1  # y elements + z elements (z is y/4 rounded up)
    assert torch.all(lik > 0) and torch.all(lik <= 1)


def test_context_sees_only_decoded_anchors():
    """Anchor parameters may not depend on y at all; non-anchor parameters only on anchors."""
    torch.manual_seed(0)
    net = build(TINY).eval()
    hyper = torch.randn(1, 16, 6, 6)
    y = torch.round(torch.randn(1, 8, 6, 6) * 3)
    anchors = anchor_mask(y).bool().expand_as(y)
    with torch.no_grad():
        base = net.mixture(hyper, y)
        y_other_nonanchors = torch.where(anchors, y, y + 5)
        same = net.mixture(hyper, y_other_nonanchors)
        y_other_anchors = torch.where(anchors, y + 5, y)
        changed = net.mixture(hyper, y_other_anchors)
    for a, b in zip(base, same):
        assert torch.equal(a, b)
    anchor_pos = anchors[0, 0]
    for a, c in zip(base, changed):
        assert torch.equal(a[..., anchor_pos], c[..., anchor_pos])
    assert not torch.equal(base[1][..., ~anchor_pos], changed[1][..., ~anchor_pos])


def test_training_steps_reduce_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    net = build(TINY)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.rand(2, 3, 32, 32)
    losses = []
    for _ in range(6):
        x_hat, lik = net(x, 1)
        loss = 0.05 * 255**2 * torch.mean((x_hat - x) ** 2) - torch.log2(lik).sum() / (2 * 32 * 32)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_estimate_runs_with_real_rounding():
    net = build(TINY).eval()
    with torch.no_grad():
        bits, x_hat = net.estimate(torch.rand(1, 3, 64, 64), 0.5)
    assert bits.item() > 0 and x_hat.shape == (1, 3, 64, 64)


def test_integer_conv_is_exact_and_thread_independent():
    """The decoder-probability path of gmm: identical under 1/2 threads, vs int64 and float64 references."""
    rng = np.random.default_rng(1)
    x = rng.integers(-(2**19), 2**19, (6, 7, 9))
    w = rng.integers(-(2**15), 2**15, (5, 6, 3, 3))
    b = rng.integers(-(2**30), 2**30, 5)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(int_conv2d(x, w, b, 12, stride=1, pad=1))
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(results[0], results[1])
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    ref = np.zeros((5, 7, 9), np.int64)
    for dy in range(3):
        for dx in range(3):
            ref += np.einsum("oc,chw->ohw", w[:, :, dy, dx], xp[:, dy : dy + 7, dx : dx + 9])
    assert np.array_equal(results[0], (ref + b[:, None, None]) >> 12)
    f64 = torch.nn.functional.conv2d(torch.from_numpy(x)[None].double(), torch.from_numpy(w).double(),
                                     torch.from_numpy(b).double(), padding=1)[0].numpy()
    assert np.array_equal(results[0], np.floor(f64 / 4096).astype(np.int64))


def test_int_matmul_refuses_inexact_sizes():
    with pytest.raises(ValueError, match="2\\*\\*53"):
        int_matmul(np.full((1, 4), 2**40), np.full((4, 1), 2**14))


def test_gmm_default_size_fits_the_weight_budget():
    net = GMM()
    assert sum(p.numel() for p in net.parameters()) * 4 < 25 * 2**20


def test_integer_mixture_pmf_matches_the_float_mixture():
    from mlimg.nn import integer as it

    scales = it.scale_table()
    tables = it.gaussian_tables(scales, 64)
    frac = 8
    thresholds = it.scale_thresholds(scales, frac)
    rng = np.random.default_rng(0)
    n, k, r = 50, 3, 40
    means = rng.uniform(-10, 10, (n, k))
    sigma = rng.uniform(0.3, 8, (n, k))
    logits = rng.normal(0, 1, (n, k))
    w = it.int_softmax(np.round(logits * (1 << frac)).astype(np.int64), it.exp_table(frac))
    si = np.searchsorted(thresholds, np.round(np.log(sigma) * (1 << frac)).astype(np.int64), side="right")
    freqs = it.mixture_freqs(w, np.floor(means * 16).astype(np.int64), si, tables, r)
    assert freqs.shape == (n, 2 * r + 2) and np.all(freqs >= 1)
    assert np.array_equal(freqs, it.mixture_freqs(w, np.floor(means * 16).astype(np.int64), si, tables, r))
    # close to the float mixture: small KL divergence
    v = torch.arange(-r, r + 1, dtype=torch.float64).view(1, -1)
    from mlimg.nn.entropy_models import gaussian_likelihood

    soft = torch.softmax(torch.from_numpy(logits), 1)
    pf = sum(soft[:, j : j + 1] * gaussian_likelihood(v, torch.from_numpy(means[:, j : j + 1]), torch.from_numpy(sigma[:, j : j + 1]))
             for j in range(k)).numpy()
    pi = freqs[:, :-1] / freqs.sum(axis=1, keepdims=True)
    kl = np.sum(pf * np.log2(pf / pi), axis=1)
    assert np.median(kl) < 0.05
