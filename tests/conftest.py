"""Shared fixtures: seeded generators only (no global RNG)."""

from __future__ import annotations

import pytest

from diffinv.rng import make_generator


@pytest.fixture
def gen():
    return make_generator(1234)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One intra-op thread: the tests are small, and several threads on a busy machine oversubscribe it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def gaussian_problem():
    """A 4-d Gaussian prior, a random 2×4 A, σ_y = 0.3: (prior, InverseProblem, exact posterior)."""
    import torch

    from diffinv.operators import DenseOperator, GaussianNoise
    from diffinv.priors import gaussian_prior
    from diffinv.samplers import InverseProblem

    g = make_generator(0)
    d = 4
    root = torch.randn(d, d, generator=g, dtype=torch.float64)
    cov = root @ root.T / d + 0.3 * torch.eye(d, dtype=torch.float64)
    prior = gaussian_prior(torch.randn(d, generator=g, dtype=torch.float64), cov)
    a = torch.randn(2, d, generator=g, dtype=torch.float64)
    sigma = 0.3
    y = a @ prior.sample(1, g)[0] + sigma * torch.randn(2, generator=g, dtype=torch.float64)
    return prior, InverseProblem(DenseOperator(a), y, GaussianNoise(sigma)), prior.posterior(a, y, sigma)
