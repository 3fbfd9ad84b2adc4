"""Resampling schemes and log-weight arithmetic."""

from __future__ import annotations

import math

import pytest
import torch

from diffinv.rng import make_generator
from diffinv.smc import RESAMPLING, ess, log_mean_exp, normalise, resample

SCHEMES = list(RESAMPLING)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_resampling_is_unbiased(scheme):
    """Mean offspring counts over R = 4000 independent filters equal N·W within 5 standard errors.

    The multinomial variance N·W(1−W) bounds the variance of every scheme here, so SE ≤ √(N W(1−W)/R);
    5 SE over 10 particles × 4 schemes gives a flake rate below 1e-5.
    """
    n, reps = 10, 4000
    w = torch.rand(n, generator=make_generator(0), dtype=torch.float64) ** 3
    w = w / w.sum()
    anc = resample(scheme, w.expand(reps, n).contiguous(), n, make_generator(1))
    assert anc.shape == (reps, n) and anc.dtype == torch.long
    ones = torch.ones(reps, n, dtype=torch.float64)
    counts = torch.zeros(reps, n, dtype=torch.float64).scatter_add_(1, anc, ones)
    se = torch.sqrt(n * w * (1 - w) / reps)
    assert bool(((counts.mean(0) - n * w).abs() <= 5 * se + 1e-12).all())
    f = torch.cos(torch.arange(n, dtype=torch.float64))
    assert float(f[anc].mean()) == pytest.approx(float((w * f).sum()), abs=5 * math.sqrt(1 / (n * reps)))


@pytest.mark.parametrize("scheme", ["systematic", "residual"])
def test_offspring_between_floor_and_ceil(scheme):
    n = 7
    w = torch.tensor([0.05, 0.3, 0.15, 0.2, 0.1, 0.12, 0.08], dtype=torch.float64)
    anc = resample(scheme, w.expand(200, n).contiguous(), n, make_generator(2))
    counts = torch.zeros(200, n).scatter_add_(1, anc, torch.ones(200, n))
    assert bool((counts >= torch.floor(n * w)).all())
    if scheme == "systematic":
        assert bool((counts <= torch.ceil(n * w)).all())


@pytest.mark.parametrize("scheme", SCHEMES)
def test_edge_cases(scheme):
    one_hot = torch.tensor([[0.0, 0.0, 1.0, 0.0]], dtype=torch.float64)
    assert resample(scheme, one_hot, 6, make_generator(0)).tolist() == [[2] * 6]
    # float32 weights whose cumulative sum ends below 1: indices stay within range
    w = torch.full((3, 1000), 1.0 / 1000, dtype=torch.float32)
    w[:, -1] = 0
    w = w / w.sum(-1, keepdim=True) * (1 - 1e-6)
    anc = resample(scheme, w, 1000, make_generator(3))
    assert int(anc.max()) <= 999 and int(anc.min()) >= 0
    assert resample(scheme, torch.full((5,), 0.2), 5, make_generator(0)).shape == (5,)


def test_same_generator_same_ancestors():
    w = torch.softmax(torch.randn(3, 50, generator=make_generator(4), dtype=torch.float64), -1)
    for scheme in SCHEMES:
        a = resample(scheme, w, 50, make_generator(9))
        assert torch.equal(a, resample(scheme, w, 50, make_generator(9)))


def test_unknown_scheme():
    with pytest.raises(ValueError, match="unknown scheme"):
        resample("nope", torch.ones(3) / 3)


def test_weights_arithmetic():
    equal = torch.zeros(2, 8)
    assert torch.allclose(ess(equal), torch.full((2,), 8.0, dtype=torch.float64))
    one_hot = torch.tensor([0.0, -math.inf, -math.inf, -math.inf])
    assert float(ess(one_hot)) == pytest.approx(1.0)
    with_nan = torch.tensor([0.0, math.nan, 0.0])
    assert torch.allclose(normalise(with_nan).exp(), torch.tensor([0.5, 0.0, 0.5], dtype=torch.float64))
    lw = torch.tensor([1000.0, 1000.0 + math.log(3)], dtype=torch.float64)
    assert float(log_mean_exp(lw)) == pytest.approx(1000 + math.log(2), rel=1e-12)
    assert normalise(lw).dtype == torch.float64
