"""Sliced Wasserstein and the mode-weight error."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from diffinv.metrics import estimate_mixture_weights, sliced_wasserstein, wasserstein_1d, weight_error
from diffinv.priors import GaussianMixture
from diffinv.rng import make_generator


def test_w1_matches_scipy_unequal_sizes(gen):
    a = torch.randn(4, 37, generator=gen, dtype=torch.float64)
    b = torch.randn(4, 91, generator=gen, dtype=torch.float64) * 2 + 0.5
    ours = wasserstein_1d(a, b)
    for i in range(4):
        ref = scipy.stats.wasserstein_distance(a[i].numpy(), b[i].numpy())
        assert float(ours[i]) == pytest.approx(ref, rel=1e-12)


def test_sliced_wasserstein_properties(gen):
    x = torch.randn(500, 5, generator=gen, dtype=torch.float64)
    assert sliced_wasserstein(x, x, generator=make_generator(0)) == 0.0
    shifted = x + torch.tensor([3.0, 0, 0, 0, 0], dtype=torch.float64)
    # projections of a shift c: W1 = |⟨θ, c⟩|, mean over the sphere of |θ_1|·3 = 3·E|θ_1| (d = 5: 3·0.375)
    sw = sliced_wasserstein(x, shifted, num_directions=4000, generator=make_generator(0))
    assert sw == pytest.approx(3 * 0.375, rel=0.03)
    a = sliced_wasserstein(x, shifted, generator=make_generator(7))
    assert a == sliced_wasserstein(x, shifted, generator=make_generator(7))
    with pytest.raises(ValueError, match="dimensions"):
        sliced_wasserstein(x, x[:, :3])


def test_weight_estimate_recovers_weights(gen):
    means = torch.tensor([[-8.0, 0.0], [0.0, 8.0], [8.0, 0.0]], dtype=torch.float64)
    truth = GaussianMixture.create(means, torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64), 1.0)
    x = truth.sample(20000, gen)
    est = estimate_mixture_weights(x, GaussianMixture.create(means, torch.ones(3), 1.0))
    se = np.sqrt(0.25 / 20000)
    assert torch.allclose(est, truth.weights, atol=5 * se)
    assert weight_error(x, truth) < 3 * 5 * se
    other = GaussianMixture.create(means, torch.tensor([0.6, 0.2, 0.2], dtype=torch.float64), 1.0)
    assert weight_error(x, other) == pytest.approx(0.8, abs=0.03)


def test_coverage_of_exact_samples_is_the_level():
    """Samples and truth from one law: the per-pixel central 90 % interval of 400 samples covers ≈ 90 % of
    1 024 independent pixels (binomial SE ≈ 0.01); one sample has no interval."""
    from diffinv.imaging.metrics import coverage

    g = torch.Generator().manual_seed(0)
    truth = torch.rand(1, 32, 32, generator=g, dtype=torch.float64)
    samples = torch.rand(400, 1, 32, 32, generator=g, dtype=torch.float64)
    assert abs(coverage(samples, truth, 0.9) - 0.9) < 0.04
    assert coverage(samples * 0.1 + 0.45, truth, 0.9) < 0.2  # under-dispersed samples cover little
    assert coverage(samples[:1], truth) is None
