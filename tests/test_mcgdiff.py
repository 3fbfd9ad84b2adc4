"""MCGDiff against exact posteriors: moments converge as N grows, log-evidence, noiseless case, GMM."""

from __future__ import annotations

import math

import pytest
import torch

from diffinv.benchmarks.gmm import make_problem
from diffinv.metrics import sliced_wasserstein
from diffinv.operators import GaussianNoise, SelectOperator
from diffinv.priors import CountingPrior, gaussian_prior
from diffinv.rng import make_generator
from diffinv.samplers import InverseProblem
from diffinv.samplers.mcgdiff import MCGDiffConfig, MCGDiffSampler, run_filters

D = torch.float64
CPU = torch.device("cpu")


def filter_estimates(prior, problem, num_particles, num_filters, seed, num_steps=100):
    """Per-filter weighted means and second moments (F, d): independent across filters."""
    cfg = MCGDiffConfig(num_particles=num_particles, num_steps=num_steps)
    system = run_filters(CountingPrior(prior), problem, num_filters, cfg, make_generator(seed), CPU, D)
    w = system.log_weights.exp()[..., None]
    return (w * system.particles).sum(1), (w * system.particles**2).sum(1), system


def test_moments_converge_as_particles_grow(gaussian_problem):
    """The bias of MCGDiff's weighted moments shrinks with N; at N = 256 it is within 4 standard errors.

    Filters are independent, so the standard error of the filter-averaged estimate is the
    between-filter standard deviation / √F (this accounts for weight degeneracy: it is an ESS-aware
    error). 4 SE per coordinate with a Bonferroni factor of 8 tests gives a flake rate < 1e-3.
    400 steps keep the time-discretisation bias of the DDPM chain (≈ 0.07 in variance at 100 steps,
    measured) below the statistical error.
    """
    prior, problem, post = gaussian_problem
    mu, var = post.mean(), post.covariance().diagonal()
    errors = {}
    for n in (4, 256):
        first, second, _ = filter_estimates(prior, problem, n, 64, seed=n, num_steps=400)
        mean_err = (first.mean(0) - mu).abs()
        var_est = second.mean(0) - first.mean(0) ** 2
        errors[n] = float(mean_err.sum() + (var_est - var).abs().sum())
        if n == 256:
            assert bool((mean_err <= 4 * first.std(0) / math.sqrt(64)).all())
            # second moment: SE from the between-filter spread of the per-filter second moments
            se2 = second.std(0) / math.sqrt(64)
            assert bool(((second.mean(0) - (var + mu**2)).abs() <= 4 * se2 + 1e-3).all())
    assert errors[256] < errors[4]


def test_log_evidence_estimate(gaussian_problem):
    """log-mean over filters of Ẑ estimates log p(y) (unbiased in Z; tolerance from the filter spread)."""
    prior, problem, _ = gaussian_problem
    _, _, system = filter_estimates(prior, problem, 256, 32, seed=7)
    estimate = float(torch.logsumexp(system.log_z, 0) - math.log(32))
    truth = prior.mixture.log_evidence(problem.operator.matrix(), problem.y, problem.sigma_y)
    spread = float(system.log_z.std()) / math.sqrt(32)
    assert abs(estimate - truth) <= 4 * spread + 0.05
    # every weighted step resamples; the propagation phase after τ_min has no weights to resample
    res = system.resampled
    weighted = int(res[0].sum())
    assert system.ess.shape == res.shape == (32, 100) and weighted > 0
    assert bool(res[:, :weighted].all()) and not bool(res[:, weighted:].any())


def test_noiseless_select_operator():
    """σ_y = 0: observed coordinates are exact; the free ones follow the conditional Gaussian."""
    d = 3
    cov = torch.tensor([[1.0, 0.6, 0.2], [0.6, 1.0, 0.3], [0.2, 0.3, 1.0]], dtype=D)
    prior = gaussian_prior(torch.zeros(d, dtype=D), cov)
    op = SelectOperator(d, [0])
    y = torch.tensor([1.5], dtype=D)
    problem = InverseProblem(op, y, GaussianNoise(0.0))
    sampler = MCGDiffSampler(num_particles=64, num_steps=50)
    res = sampler.sample(prior, problem, 1000, make_generator(1), dtype=D)
    assert torch.equal(res.samples[:, 0], torch.full((1000,), 1.5, dtype=D))
    cond_mean = cov[1:, 0] * 1.5  # Σ_{·0} Σ_00⁻¹ y
    se = (1.0 / math.sqrt(1000)) * torch.ones(2)
    assert bool(((res.samples[:, 1:].mean(0) - cond_mean).abs() <= 5 * se).all())


def test_gmm_within_twice_the_exact_floor():
    """25-component mixture, d = 6, d_y = 1: SW to the exact posterior ≤ 2 × exact-vs-exact (+0.05)."""
    gmm = make_problem(6, 1, seed=2)
    n = 600
    res = MCGDiffSampler(num_particles=32, num_steps=50).sample(gmm.prior, gmm.problem, n, make_generator(0),
                                                                dtype=D)
    a, b = gmm.posterior.sample(n, make_generator(1)), gmm.posterior.sample(n, make_generator(2))
    floor = sliced_wasserstein(a, b, generator=make_generator(3))
    assert sliced_wasserstein(res.samples, a, generator=make_generator(3)) <= 2 * floor + 0.05
    assert res.nfe_forward == n * 32 * 50 and res.nfe_backward == 0


def test_adaptive_resampling_and_draw(gaussian_problem):
    prior, problem, _ = gaussian_problem
    cfg = MCGDiffConfig(num_particles=32, num_steps=20, ess_threshold=0.5, resampling="residual")
    system = run_filters(CountingPrior(prior), problem, 3, cfg, make_generator(0), CPU, D)
    assert not bool(system.resampled.all())  # some steps keep their weights
    assert system.draw(5, make_generator(1)).shape == (15, 4)
    with pytest.raises(ValueError, match="kappa"):
        run_filters(CountingPrior(prior), problem, 1, MCGDiffConfig(kappa=0.0), None, CPU, D)
