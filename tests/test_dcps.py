"""DCPS pieces: tamed Langevin, the variational Gaussian fit, cost accounting, closeness to the posterior."""

from __future__ import annotations

import math

import pytest
import torch

from diffinv.mcmc import tamed_ula_step
from diffinv.operators import DenseOperator, GaussianNoise
from diffinv.priors import gaussian_prior
from diffinv.rng import make_generator
from diffinv.samplers import InverseProblem
from diffinv.samplers.dcps import DCPSSampler, block_boundaries, block_grid
from diffinv.samplers.variational import fit_gaussian_kernel, gaussian_kl

D = torch.float64


def test_tamed_ula_targets_standard_gaussian():
    """4000 chains, γ = 0.01, 400 steps on N(0, I₂): mean 0 and variance 1/(1 − γ/2) (the ULA bias for a
    Gaussian), within 5 standard errors (flake rate < 1e-5)."""
    gen = make_generator(0)
    x = 3 * torch.randn(4000, 2, generator=gen, dtype=D)
    for _ in range(400):
        x = tamed_ula_step(x, -x, 0.01, gen)
    n = x.shape[0]
    assert bool((x.mean(0).abs() <= 5 / math.sqrt(n)).all())
    target_var = 1 / (1 - 0.005)
    assert bool(((x.var(0) - target_var).abs() <= 5 * target_var * math.sqrt(2 / n)).all())
    with pytest.raises(ValueError, match="gamma"):
        tamed_ula_step(x, -x, 0.0, gen)


def test_variational_fit_recovers_gaussian_twist():
    """Twist e^{−‖u − c‖²/(2τ²)} of N(μ_p, σ_p² I): the optimum is
    N((τ²μ_p + σ_p² c)/(τ² + σ_p²), σ_p²τ²/(τ² + σ_p²)).

    Normalised steps of length lr leave the iterate within O(lr) of the optimum; 3000 steps of 0.005,
    with 64 draws of ξ per step so that the stochastic-gradient bias of normalised steps vanishes.
    """
    mu_p = torch.tensor([[0.0, 1.0, -1.0]], dtype=D)
    c = torch.tensor([[2.0, 0.0, 1.0]], dtype=D)
    sigma_p, tau = 0.8, 0.5

    def potential(u):
        return ((u - c) ** 2).sum(-1) / (2 * tau**2)

    m, s = fit_gaussian_kernel(mu_p, sigma_p, potential, 3000, 0.005, make_generator(1), num_mc=64)
    m_star = (tau**2 * mu_p + sigma_p**2 * c) / (tau**2 + sigma_p**2)
    std_star = math.sqrt(sigma_p**2 * tau**2 / (tau**2 + sigma_p**2))
    assert torch.allclose(m, m_star, atol=0.05)
    assert torch.allclose(s.exp(), torch.full_like(s, std_star), atol=0.05)
    assert float(gaussian_kl(mu_p, torch.full_like(mu_p, math.log(sigma_p)), mu_p, math.log(sigma_p))) == 0.0


def test_grids():
    assert block_boundaries(1000, 3) == [0, 333, 666, 999]
    grid = block_grid(0, 333, 1000)  # more steps than the block length: deduplicated, no repeats
    assert grid[0] == 333 and grid[-1] == 0 and len(grid) == len(set(grid)) == 334
    assert block_boundaries(1000, 2, (650,)) == [0, 650, 999]
    with pytest.raises(ValueError, match="boundaries"):
        block_boundaries(1000, 2, (999,))
    for bad in ((650,), (700, 650), (0, 500)):  # wrong count for 2 blocks; not increasing; not ≥ 1
        with pytest.raises(ValueError, match="boundaries"):
            DCPSSampler(num_blocks=3 if len(bad) == 2 else 1, boundaries=bad)


@pytest.fixture(scope="module")
def gaussian_problem():
    g = make_generator(3)
    prior = gaussian_prior(torch.zeros(3, dtype=D), torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.3],
                                                                  [0.0, 0.3, 1.0]], dtype=D))
    a = torch.randn(1, 3, generator=g, dtype=D)
    y = torch.tensor([1.2], dtype=D)
    return prior, InverseProblem(DenseOperator(a), y, GaussianNoise(0.2)), prior.posterior(a, y, 0.2)


def test_cost_matches_formula(gaussian_problem):
    """Per sample: L·M (fwd + bwd) + Σ_steps (1 + K) fwd and K bwd, minus the K fwd+bwd of every step
    that lands on a non-final block's lower end (identity bridge), plus 1 final denoising."""
    prior, problem, _ = gaussian_problem
    cfg = dict(num_blocks=3, num_steps=30, langevin_steps=4, gradient_steps=2)
    res = DCPSSampler(**cfg).sample(prior, problem, 5, make_generator(0), dtype=D)
    steps = 3 * 10
    fwd = 3 * 4 + steps * 3 - 2 * 2 + 1
    bwd = 3 * 4 + steps * 2 - 2 * 2
    assert (res.nfe_forward, res.nfe_backward) == (5 * fwd, 5 * bwd)


def test_closer_to_posterior_mean_than_prior(gaussian_problem):
    """The DCPS sample mean is within 6 SE + 0.1 of the posterior mean (DCPS is approximate), and much
    closer to it than the prior mean is."""
    prior, problem, post = gaussian_problem
    res = DCPSSampler(langevin_steps=20, lr=0.1).sample(prior, problem, 800, make_generator(1), dtype=D)
    err = (res.samples.mean(0) - post.mean()).norm()
    se = post.covariance().diagonal().sum().sqrt() / math.sqrt(800)
    assert err <= 6 * se + 0.1
    assert err < 0.5 * (prior.mixture.mean() - post.mean()).norm()


def test_predictive_ula_variance_and_boundaries(gaussian_problem):
    """The options keep DCPS near the posterior: the same bound as above with a predictive ULA potential
    (dense A: conjugate gradients) and explicit block ends."""
    prior, problem, post = gaussian_problem
    res = DCPSSampler(langevin_steps=20, lr=0.1, ula_variance="predictive", num_blocks=2,
                      boundaries=(600,)).sample(prior, problem, 800, make_generator(1), dtype=D)
    err = (res.samples.mean(0) - post.mean()).norm()
    se = post.covariance().diagonal().sum().sqrt() / math.sqrt(800)
    assert err <= 6 * se + 0.1
    with pytest.raises(ValueError, match="ula_variance"):
        DCPSSampler(ula_variance="exact")
    with pytest.raises(ValueError, match="block_variance"):
        DCPSSampler(block_variance="exact")


def test_evidence_variances_stay_near_posterior(gaussian_problem):
    """The GMM preset's potentials (``ula_variance`` and ``block_variance`` "evidence") keep DCPS as close
    to the Gaussian posterior's mean as the code's σ_y² (same bound as above)."""
    prior, problem, post = gaussian_problem
    res = DCPSSampler(langevin_steps=20, lr=0.1, ula_variance="evidence", block_variance="evidence").sample(
        prior, problem, 800, make_generator(1), dtype=D)
    err = (res.samples.mean(0) - post.mean()).norm()
    se = post.covariance().diagonal().sum().sqrt() / math.sqrt(800)
    assert err <= 6 * se + 0.1


def test_rejects_noiseless(gaussian_problem):
    prior, problem, _ = gaussian_problem
    noiseless = InverseProblem(problem.operator, problem.y, GaussianNoise(0.0))
    with pytest.raises(ValueError, match="sigma_y"):
        DCPSSampler().sample(prior, noiseless, 2, make_generator(0))


@pytest.mark.parametrize("kind", ["evidence", "sigma_y"])
def test_evidence_ula_variance_gives_posterior_mode_weights(kind):
    """For two unit-covariance prior components N(μ_j, I), the ULA target β̂(x) p_{k_high}(x) gives
    component j the mass w_j E_{x ~ N(√ᾱ_h μ_j, I)}[β̂(x)]. With ``ula_variance = "evidence"`` the ratio of
    the two expectations (Monte Carlo, 2·10⁵ draws each, within 5 standard errors) is the posterior's
    N(y; A μ_1, A Aᵀ + σ_y²) / N(y; A μ_2, A Aᵀ + σ_y²); the code's σ_y² alone misses it by far."""
    from diffinv.samplers.dcps import ula_log_potential

    a_h, a_l, sigma = 0.3, 0.7, 0.5
    a = torch.tensor([[0.3, 1.0]], dtype=D)
    y = torch.tensor([0.8], dtype=D)
    problem = InverseProblem(DenseOperator(a), y, GaussianNoise(sigma))
    op = problem.operator.to(torch.device("cpu"), D)
    log_g = ula_log_potential(problem, op, problem.rows(1, torch.device("cpu"), D), a_h, a_l, kind, 1,
                              torch.device("cpu"))
    means = [torch.tensor([1.0, 2.0], dtype=D), torch.tensor([-1.0, -1.5], dtype=D)]
    gen = make_generator(5)
    log_ev, se2 = [], 0.0
    for mu in means:
        x = math.sqrt(a_h) * mu + torch.randn(200_000, 2, generator=gen, dtype=D)
        x0 = mu + math.sqrt(a_h) * (x - math.sqrt(a_h) * mu)  # Tweedie for N(μ, I)
        lg = log_g(x, x0)
        w = (lg - lg.max()).exp()
        log_ev.append(float(lg.max() + w.mean().log()))
        se2 += float(w.var() / w.mean() ** 2 / w.numel())
    pred_var = float(a @ a.T) + sigma**2
    exact = [-0.5 * float(y - a @ mu) ** 2 / pred_var for mu in means]
    gap = abs((log_ev[0] - log_ev[1]) - (exact[0] - exact[1]))
    if kind == "evidence":
        assert gap <= 5 * math.sqrt(se2)
    else:
        assert gap > 0.3  # 0.51 (over-sharp: q A Aᵀ + σ_y² against ᾱ_l (A Aᵀ + σ_y²))
