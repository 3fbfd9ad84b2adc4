"""Unconditional DDPM / DDIM sampling reproduces the 25-component mixture prior."""

from __future__ import annotations

import pytest
import torch

from diffinv.benchmarks.gmm import grid_means, make_problem
from diffinv.metrics import sliced_wasserstein
from diffinv.priors import GaussianMixture, GaussianMixturePrior
from diffinv.rng import make_generator
from diffinv.sampling import sample_prior


@pytest.mark.parametrize(("num_steps", "eta"), [(250, 1.0), (1000, 1.0)])
def test_prior_sampling_matches_gmm_prior(num_steps, eta):
    """SW(samples, exact) ≤ 2 × SW(exact, exact') at 2000 vs 2000 samples, dx = 10.

    The exact-vs-exact figure is the noise floor at this sample size (≈ 0.3-0.45 here); a correct
    sampler with enough steps sits at that floor, so 2× gives a margin of several standard deviations
    of the SW estimate (flake rate negligible at these fixed seeds).
    """
    prior = make_problem(10, 1, seed=3).prior
    n = 2000
    samples = sample_prior(prior, n, num_steps, eta, make_generator(0), dtype=torch.float64)
    exact_a = prior.sample(n, make_generator(1))
    exact_b = prior.sample(n, make_generator(2))
    floor = sliced_wasserstein(exact_a, exact_b, generator=make_generator(9))
    sw = sliced_wasserstein(samples, exact_a, generator=make_generator(9))
    assert sw <= 2 * floor, (sw, floor)


def test_same_seed_same_samples():
    prior = make_problem(4, 1, seed=0).prior
    a = sample_prior(prior, 64, 20, 1.0, make_generator(5))
    b = sample_prior(prior, 64, 20, 1.0, make_generator(5), batch_size=10)
    c = sample_prior(prior, 64, 20, 1.0, make_generator(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_grid_means_layout():
    m = grid_means(6)
    assert m.shape == (25, 6)
    assert torch.equal(m[:, 0], m[:, 2]) and torch.equal(m[:, 1], m[:, 5])
    assert set(m[:, 0].tolist()) == {-16.0, -8.0, 0.0, 8.0, 16.0}


def test_ddim_eta0_matches_compact_mixture():
    """Deterministic DDIM (η = 0, 100 steps) on a mixture whose means are small compared with 1/√ᾱ_T.

    On the benchmark mixture (means up to ±16 per coordinate) the probability-flow ODE transports the
    small mismatch between N(0, I) and q_T (mean offsets √ᾱ_T·16 ≈ 0.1 per coordinate) into visibly
    wrong mode weights, while the stochastic DDPM contracts it; so η = 0 is checked where the start
    law is exact to within the floor.
    """
    means = grid_means(10) * (1.5 / 8)
    mix = GaussianMixture.create(means, torch.rand(25, generator=make_generator(3), dtype=torch.float64), 0.1)
    prior = GaussianMixturePrior(mix)
    n = 2000
    samples = sample_prior(prior, n, 100, 0.0, make_generator(0), dtype=torch.float64)
    exact_a, exact_b = prior.sample(n, make_generator(1)), prior.sample(n, make_generator(2))
    floor = sliced_wasserstein(exact_a, exact_b, generator=make_generator(9))
    assert sliced_wasserstein(samples, exact_a, generator=make_generator(9)) <= 2 * floor
