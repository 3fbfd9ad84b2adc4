"""Analytic priors: closed-form denoiser, score and posterior against quadrature and brute-force Bayes."""

from __future__ import annotations

import math

import pytest
import torch

from diffinv.priors import CountingPrior, GaussianMixture, GaussianMixturePrior, gaussian_prior

D = torch.float64


def mixture_1d():
    return GaussianMixture.create(torch.tensor([[-2.0], [0.5], [3.0]], dtype=D),
                                  torch.tensor([0.2, 0.5, 0.3], dtype=D), torch.tensor([0.3, 1.0, 0.5]))


def mixture_2d_full():
    means = torch.tensor([[-1.5, 0.0], [1.0, 1.5]], dtype=D)
    covs = torch.tensor([[[0.5, 0.3], [0.3, 0.4]], [[0.8, -0.2], [-0.2, 0.3]]], dtype=D)
    return GaussianMixture.create(means, torch.tensor([0.4, 0.6], dtype=D), covs)


@pytest.mark.parametrize("t", [0, 50, 300, 700, 999])
def test_denoiser_is_posterior_mean_1d(t):
    """x̂0(x_t) = ∫ x0 p(x0) N(x_t; √ᾱ x0, 1−ᾱ) dx0 / ∫ p(x0) N(...) dx0, by quadrature on a fine grid."""
    prior = GaussianMixturePrior(mixture_1d())
    ab = prior.schedule.alpha_bar_at(t)
    grid = torch.linspace(-10, 10, 200001, dtype=D)
    log_p0 = prior.mixture.log_prob(grid[:, None])
    x_t = torch.tensor([[-1.3], [0.2], [2.4]], dtype=D)
    log_joint = log_p0[None] - (x_t - math.sqrt(ab) * grid[None]) ** 2 / (2 * (1 - ab))
    w = torch.softmax(log_joint, dim=1)
    expected = (w * grid[None]).sum(1, keepdim=True)
    out = prior.denoise(x_t, t)
    assert torch.allclose(out.x0, expected, atol=1e-6)
    assert torch.allclose(out.x0, (x_t - math.sqrt(1 - ab) * out.eps) / math.sqrt(ab), atol=1e-10)


def test_denoiser_is_posterior_mean_2d_full_covariance():
    prior = GaussianMixturePrior(mixture_2d_full())
    t = 200
    ab = prior.schedule.alpha_bar_at(t)
    axis = torch.linspace(-6, 6, 801, dtype=D)
    g = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    log_p0 = prior.mixture.log_prob(g)
    x_t = torch.tensor([[0.3, -0.4], [1.2, 0.9]], dtype=D)
    log_joint = log_p0[None] - ((x_t[:, None] - math.sqrt(ab) * g[None]) ** 2).sum(-1) / (2 * (1 - ab))
    w = torch.softmax(log_joint, dim=1)
    expected = w @ g
    assert torch.allclose(prior.denoise(x_t, t).x0, expected, atol=1e-5)


@pytest.mark.parametrize("mixture", [mixture_1d, mixture_2d_full])
def test_score_is_gradient_of_log_density(mixture, gen):
    prior = GaussianMixturePrior(mixture())
    x = torch.randn(6, prior.mixture.dim, generator=gen, dtype=D).requires_grad_(True)
    for t in (10, 500):
        (grad,) = torch.autograd.grad(prior.log_prob(x, t).sum(), x)
        assert torch.allclose(prior.score(x, t), grad, atol=1e-10)
        eps = prior.denoise(x, t).eps
        assert torch.allclose(eps, -math.sqrt(1 - prior.schedule.alpha_bar_at(t)) * grad, atol=1e-10)


def test_isotropic_path_equals_full_path(gen):
    means = torch.randn(4, 3, generator=gen, dtype=D)
    w = torch.rand(4, generator=gen, dtype=D)
    var = torch.tensor([0.5, 1.0, 2.0, 0.1], dtype=D)
    iso = GaussianMixturePrior(GaussianMixture.create(means, w, var))
    full = GaussianMixturePrior(GaussianMixture.create(means, w, var[:, None, None] * torch.eye(3, dtype=D)))
    x = torch.randn(5, 3, generator=gen, dtype=D)
    for t in (0, 400, 999):
        a, b = iso.denoise(x, t), full.denoise(x, t)
        assert torch.allclose(a.x0, b.x0, atol=1e-10) and torch.allclose(a.eps, b.eps, atol=1e-10)


def test_gaussian_denoiser_linear_formula(gen):
    m = torch.tensor([1.0, -2.0], dtype=D)
    cov = torch.tensor([[1.0, 0.4], [0.4, 0.5]], dtype=D)
    prior = gaussian_prior(m, cov)
    x = torch.randn(3, 2, generator=gen, dtype=D)
    t = 321
    ab = prior.schedule.alpha_bar_at(t)
    c = ab * cov + (1 - ab) * torch.eye(2, dtype=D)
    expected = m + math.sqrt(ab) * (cov @ torch.linalg.solve(c, (x - math.sqrt(ab) * m).T)).T
    assert torch.allclose(prior.denoise(x, t).x0, expected, atol=1e-12)


def test_posterior_matches_grid_bayes_2d():
    """Closed-form mixture posterior vs p(x) N(y; A x, σ²) normalised on a 2-D grid."""
    mix = mixture_2d_full()
    a = torch.tensor([[1.0, -0.5]], dtype=D)
    y, sigma = torch.tensor([0.7], dtype=D), 0.4
    post = mix.posterior(a, y, sigma)
    axis = torch.linspace(-7, 7, 701, dtype=D)
    g = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    log_un = mix.log_prob(g) - ((g @ a.T - y) ** 2).sum(-1) / (2 * sigma**2)
    w = torch.softmax(log_un, 0)
    mean = w @ g
    cov = (w[:, None] * (g - mean)).T @ (g - mean)
    assert torch.allclose(post.mean(), mean, atol=1e-6)
    assert torch.allclose(post.covariance(), cov, atol=1e-6)
    cell = (axis[1] - axis[0]) ** 2
    assert torch.allclose(post.log_prob(g[::997]), torch.log(w[::997] / cell), atol=1e-5)
    # evidence: log p(y) = log ∫ p(x) N(y; Ax, σ²) dx
    log_ev = torch.logsumexp(log_un, 0) + torch.log(cell) - 0.5 * math.log(2 * math.pi * sigma**2)
    assert mix.log_evidence(a, y, sigma) == pytest.approx(float(log_ev), abs=1e-6)


def test_posterior_1d_gaussian_closed_form():
    mix = GaussianMixture.create(torch.tensor([[1.0]], dtype=D), torch.ones(1, dtype=D), 2.0)
    post = mix.posterior(torch.tensor([[3.0]], dtype=D), torch.tensor([2.0], dtype=D), 0.5)
    prec = 1 / 2.0 + 9 / 0.25
    assert float(post.covariance()) == pytest.approx(1 / prec)
    assert float(post.mean()) == pytest.approx((1 / 2.0 + 3 * 2.0 / 0.25) / prec)


def test_sampling_moments(gen):
    mix = mixture_2d_full()
    x = mix.sample(40000, gen)
    se = (mix.covariance().diagonal() / 40000).sqrt()
    assert bool(((x.mean(0) - mix.mean()).abs() < 4.5 * se).all())  # 4.5σ: flake rate < 1e-5


def test_bad_mixture_inputs():
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture.create(torch.zeros(2, 2), torch.tensor([1.0, -1.0]), 1.0)
    with pytest.raises(ValueError, match="cov"):
        GaussianMixture.create(torch.zeros(2, 2), torch.ones(2), torch.ones(3))
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixture.create(torch.zeros(1, 2), torch.ones(1), torch.tensor([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="sigma_y"):
        mixture_1d().posterior(torch.ones(1, 1), torch.ones(1), 0.0)
    prior = GaussianMixturePrior(mixture_1d())
    with pytest.raises(ValueError, match="x_t"):
        prior.denoise(torch.zeros(2, 3), 5)
    with pytest.raises(ValueError, match="t:"):
        prior.denoise(torch.zeros(2, 1), 1000)


def test_counting_prior_counts_and_chunks(gen):
    prior = GaussianMixturePrior(mixture_2d_full())
    counting = CountingPrior(prior, max_batch=3)
    x = torch.randn(7, 2, generator=gen, dtype=D)
    out = counting.denoise(x, 100)
    assert torch.allclose(out.x0, prior.denoise(x, 100).x0)
    assert counting.stats.forward == 7 and counting.stats.backward == 0
    xr = x.clone().requires_grad_(True)
    o = counting.denoise(xr, 100)
    (g,) = torch.autograd.grad((o.x0.sum() + o.eps.sum()), xr)
    assert counting.stats.forward == 14 and counting.stats.backward == 7
    assert counting.stats.forward_seconds > 0 and counting.stats.backward_seconds > 0
    xr2 = x.clone().requires_grad_(True)
    o2 = prior.denoise(xr2, 100)
    (g2,) = torch.autograd.grad((o2.x0.sum() + o2.eps.sum()), xr2)
    assert torch.allclose(g, g2)
