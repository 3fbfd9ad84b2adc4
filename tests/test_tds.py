"""TDS against exact posteriors: moments and log-evidence on a Gaussian, any operator (no SVD), GMM."""

from __future__ import annotations

import math

import pytest
import torch

from diffinv.benchmarks.gmm import make_problem
from diffinv.metrics import sliced_wasserstein
from diffinv.operators import ComposedOperator, GaussianNoise, SelectOperator
from diffinv.priors import CountingPrior
from diffinv.rng import make_generator
from diffinv.samplers import InverseProblem
from diffinv.samplers.tds import TDSConfig, TDSSampler, run_tds

D = torch.float64
CPU = torch.device("cpu")


def test_moments_and_log_evidence(gaussian_problem):
    """Weighted moments per filter (independent across 64 filters) match the posterior within 4 SE
    (Bonferroni over 8 tests); log of the mean Ẑ matches log p(y) within 4 SE of the filters' spread."""
    prior, problem, post = gaussian_problem
    cfg = TDSConfig(num_particles=128, num_steps=200)
    system = run_tds(CountingPrior(prior), problem, 64, cfg, make_generator(1), CPU, D)
    w = system.log_weights.exp()[..., None]
    first, second = (w * system.particles).sum(1), (w * system.particles**2).sum(1)
    mu, var = post.mean(), post.covariance().diagonal()
    assert bool(((first.mean(0) - mu).abs() <= 4 * first.std(0) / 8 + 1e-3).all())
    assert bool(((second.mean(0) - (var + mu**2)).abs() <= 4 * second.std(0) / 8 + 2e-3).all())
    truth = prior.mixture.log_evidence(problem.operator.matrix(), problem.y, problem.sigma_y)
    ratio = torch.exp(system.log_z - truth)
    assert abs(float(ratio.mean()) - 1) <= 4 * float(ratio.std()) / 8 + 0.02


class NoSVD(ComposedOperator):
    """A dense operator hidden behind a composition with the identity selection: no SVD."""

    def __init__(self, op):
        super().__init__(SelectOperator(op.out_dim, list(range(op.out_dim))), op)


def test_operators_without_an_svd_give_the_same_sampler(gaussian_problem):
    """Conjugate gradients instead of the SVD: same law (same seed → samples equal up to CG error)."""
    prior, problem, _ = gaussian_problem
    hidden = InverseProblem(NoSVD(problem.operator), problem.y, problem.noise)
    assert not hidden.operator.has_svd
    sampler = TDSSampler(num_particles=16, num_steps=30)
    a = sampler.sample(prior, problem, 50, make_generator(2), dtype=D)
    b = sampler.sample(prior, hidden, 50, make_generator(2), dtype=D)
    assert torch.allclose(a.samples, b.samples, atol=1e-5)
    assert a.nfe_forward == 50 * 16 * 30 and a.nfe_backward == 50 * 16 * 29  # no backward at t = 0


def test_gmm_within_twice_the_exact_floor():
    """25-component mixture, d = 6, d_y = 1: SW to the exact posterior ≤ 2 × exact-vs-exact (+0.05)."""
    gmm = make_problem(6, 1, seed=2)
    n = 600
    res = TDSSampler(num_particles=128, num_steps=50, samples_per_filter=2).sample(
        gmm.prior, gmm.problem, n, make_generator(0), dtype=torch.float32)
    a, b = gmm.posterior.sample(n, make_generator(1)), gmm.posterior.sample(n, make_generator(2))
    floor = sliced_wasserstein(a, b, generator=make_generator(3))
    assert sliced_wasserstein(res.samples.double(), a, generator=make_generator(3)) <= 2 * floor + 0.05


def test_needs_noise_and_validates_its_config(gaussian_problem):
    prior, problem, _ = gaussian_problem
    noiseless = InverseProblem(problem.operator, problem.y, GaussianNoise(0.0))
    with pytest.raises(ValueError, match="sigma_y"):
        TDSSampler().sample(prior, noiseless, 2, make_generator(0))
    with pytest.raises(ValueError, match="tds.num_particles"):
        TDSSampler(num_particles=0)
    with pytest.raises(ValueError, match="resampling"):
        TDSConfig(resampling="bogus")
    assert math.isfinite(TDSConfig().ess_threshold)
