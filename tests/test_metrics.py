"""Sliced Wasserstein, the mode-weight error, and the intervals over seeds the benchmark reports give."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from diffinv.metrics import (
    binomial_interval,
    estimate_mixture_weights,
    median_interval,
    sliced_wasserstein,
    wasserstein_1d,
    weight_error,
)
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


def test_median_interval_covers_the_median_at_about_its_level():
    """400 data sets of 20 exponential draws (median ln 2): the percentile-bootstrap 90 % interval covers
    it on ≈ 90 % of them (binomial SE 0.015; the percentile bootstrap of a median is a little off its level
    at n = 20, hence ± 0.05); the same values and seed give the same interval."""
    rng = np.random.default_rng(1)
    data = rng.exponential(size=(400, 20))
    covered = [lo <= np.log(2) <= hi for lo, hi in (median_interval(x, draws=2000, seed=i)
                                                    for i, x in enumerate(data))]
    assert abs(np.mean(covered) - 0.9) < 0.05
    assert median_interval(data[0]) == median_interval(data[0])
    with pytest.raises(ValueError, match="values"):
        median_interval([])
    with pytest.raises(ValueError, match="level"):
        median_interval([1.0, 2.0], level=1.0)


def test_binomial_interval_is_exact():
    """Clopper–Pearson: k = 0 has the closed form 1 − (tail)^(1/n); its coverage, summed exactly over the
    binomial law, is at least the level for any rate."""
    assert binomial_interval(0, 240) == (0.0, pytest.approx(1 - 0.05 ** (1 / 240)))
    assert binomial_interval(240, 240)[1] == 1.0
    for rate in (0.004, 0.02, 0.3):
        k = np.arange(241)
        inside = np.array([lo <= rate <= hi for lo, hi in (binomial_interval(int(j), 240) for j in k)])
        assert scipy.stats.binom.pmf(k, 240, rate)[inside].sum() >= 0.9
    with pytest.raises(ValueError, match="k, n"):
        binomial_interval(3, 2)
