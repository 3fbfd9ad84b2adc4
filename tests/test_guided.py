"""DPS, ΠGDM and DDRM: reduction to unconditional sampling, SVD vs CG equality, data consistency, NFE."""

from __future__ import annotations

import pytest
import torch

from diffinv.operators import DenseOperator, GaussianNoise, LinearOperator, SelectOperator
from diffinv.operators.spectral import SpectralView
from diffinv.priors import gaussian_prior
from diffinv.rng import make_generator
from diffinv.samplers import InverseProblem
from diffinv.samplers.ddrm import DDRMSampler
from diffinv.samplers.dps import DPSSampler
from diffinv.samplers.guidance import MeasurementFit
from diffinv.samplers.pgdm import PGDMSampler
from diffinv.sampling import sample_prior

D = torch.float64


class NoSVD(LinearOperator):
    """A dense operator hidden behind the plain protocol (forces ΠGDM's conjugate-gradient path)."""

    def __init__(self, op: DenseOperator) -> None:
        self.op, self.in_shape, self.out_shape = op, op.in_shape, op.out_shape

    def A(self, x):
        return self.op.A(x)

    def At(self, y):
        return self.op.At(y)


def problem_and_prior(sigma=0.3):
    g = make_generator(0)
    prior = gaussian_prior(torch.zeros(4, dtype=D), torch.diag(torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=D)))
    a = torch.randn(2, 4, generator=g, dtype=D)
    y = torch.tensor([0.7, -0.4], dtype=D)
    return prior, InverseProblem(DenseOperator(a), y, GaussianNoise(sigma))


def test_zero_guidance_is_unconditional_sampling():
    """ζ = 0 (DPS) and w = 0 (ΠGDM) draw the same random stream as the unconditional sampler."""
    prior, problem = problem_and_prior()
    ref = sample_prior(prior, 6, 40, 1.0, make_generator(5), dtype=D)
    dps = DPSSampler(num_steps=40, zeta=0.0).sample(prior, problem, 6, make_generator(5), dtype=D)
    pgdm = PGDMSampler(num_steps=40, weight=0.0).sample(prior, problem, 6, make_generator(5), dtype=D)
    assert torch.allclose(dps.samples, ref, atol=1e-12)
    assert torch.allclose(pgdm.samples, ref, atol=1e-12)


@pytest.mark.parametrize("step", ["paper", "tweedie"])
def test_pgdm_svd_equals_conjugate_gradients(step):
    prior, problem = problem_and_prior()
    hidden = InverseProblem(NoSVD(problem.operator), problem.y, problem.noise)
    a = PGDMSampler(num_steps=30, step=step).sample(prior, problem, 8, make_generator(2), dtype=D)
    b = PGDMSampler(num_steps=30, step=step).sample(prior, hidden, 8, make_generator(2), dtype=D)
    assert torch.allclose(a.samples, b.samples, atol=1e-6)


def test_pgdm_guidance_is_exact_for_standard_gaussian_prior():
    """For N(0, I), p(x0 | x_t) = N(√ᾱ_t x_t, (1 − ᾱ_t) I) exactly, so g_t = r_t² ∇ log p(y | x_t) with
    p(y | x_t) = N(√ᾱ_t A x_t, (1 − ᾱ_t) A Aᵀ + σ_y² I) — checked against autograd of that density."""
    g = make_generator(1)
    prior = gaussian_prior(torch.zeros(3, dtype=D), 1.0)
    a = torch.randn(2, 3, generator=g, dtype=D)
    y = torch.tensor([[1.0, -0.5]], dtype=D)
    sigma, t = 0.2, 400
    ab = prior.schedule.alpha_bar_at(t)
    x = torch.randn(5, 3, generator=g, dtype=D).requires_grad_(True)
    x0 = prior.denoise(x, t).x0
    # v = Aᵀ (A Aᵀ + λ I)⁻¹ r with λ = σ²/r_t²: MeasurementFit with σ_y² = λ and τ² = 1
    lam_root = sigma / (1 - ab) ** 0.5
    op = DenseOperator(a)
    v = MeasurementFit(op, y, lam_root, 50, SpectralView.of(op, y))(x0.detach(), 1.0)[1]
    (g_t,) = torch.autograd.grad((v * x0).sum(), x)
    cov = (1 - ab) * a @ a.T + sigma**2 * torch.eye(2, dtype=D)
    x2 = x.detach().requires_grad_(True)
    log_p = torch.distributions.MultivariateNormal(ab**0.5 * x2 @ a.T, cov).log_prob(y).sum()
    (exact,) = torch.autograd.grad(log_p, x2)
    assert torch.allclose(g_t, (1 - ab) * exact, atol=1e-10)
    q, v_cg = MeasurementFit(NoSVD(op), y, lam_root, 50)(x0.detach(), 1.0)
    q_svd = MeasurementFit(op, y, lam_root, 50, SpectralView.of(op, y))(x0.detach(), 1.0)[0]
    assert torch.allclose(v, v_cg, atol=1e-8)
    assert torch.allclose(q, q_svd, atol=1e-8)


@pytest.mark.parametrize("grid", [{}, {"t_start": 300}, {"t_start": 300, "spacing": "sigma"}])
def test_ddrm_data_consistency(grid):
    prior = gaussian_prior(torch.zeros(5, dtype=D), 1.0)
    op = SelectOperator(5, [1, 3])
    y = torch.tensor([0.8, -1.1], dtype=D)
    noiseless = InverseProblem(op, y, GaussianNoise(0.0))
    exact = DDRMSampler(**grid).sample(prior, noiseless, 50, make_generator(0), dtype=D)
    assert torch.allclose(exact.samples[:, [1, 3]], y.expand(50, 2), atol=1e-12)
    noisy = DDRMSampler(**grid).sample(prior, InverseProblem(op, y, GaussianNoise(1e-3)), 50,
                                       make_generator(0), dtype=D)
    # the last DDRM step keeps x̂0 at t = 0, whose noise level √(1 − ᾱ_0) = 0.01 exceeds σ_y
    assert float((noisy.samples[:, [1, 3]] - y).abs().max()) < 5 * 0.01
    assert (exact.nfe_forward, exact.nfe_backward) == (50 * 20, 0)


def test_ddrm_noise_scale():
    """c = 0 removes every injected noise (a deterministic chain); c = 1 is the default, bit for bit."""
    prior, problem = problem_and_prior()
    cold = DDRMSampler(noise_scale=0.0).sample(prior, problem, 8, make_generator(0), dtype=D).samples
    assert float(cold.std(0).max()) < 1e-12
    a = DDRMSampler(noise_scale=1.0).sample(prior, problem, 8, make_generator(0), dtype=D).samples
    assert torch.equal(a, DDRMSampler().sample(prior, problem, 8, make_generator(0), dtype=D).samples)
    with pytest.raises(ValueError, match="noise_scale"):
        DDRMSampler(noise_scale=2.0)


def test_ddrm_grid_options_are_checked():
    with pytest.raises(ValueError, match="spacing"):
        DDRMSampler(spacing="log")
    with pytest.raises(ValueError, match="t_start"):
        DDRMSampler(t_start=0)
    prior, problem = problem_and_prior()
    with pytest.raises(ValueError, match="t_start"):
        DDRMSampler(t_start=5000).sample(prior, problem, 2, make_generator(0), dtype=D)


def test_pgdm_truncated_spectral_start():
    """init = spectral at t_start: observed coordinates of x_t are √ᾱ y + √(1 − ᾱ) z (σ_y = 0), the others
    √(1 − ᾱ) z, i.e. DDRM's start mapped to the VP state; the grid starts at t_start."""
    prior = gaussian_prior(torch.zeros(5, dtype=D), 1.0)
    op = SelectOperator(5, [1, 3])
    y = torch.tensor([0.8, -1.1], dtype=D)
    sampler = PGDMSampler(num_steps=20, init="spectral", t_start=300)
    problem = InverseProblem(op, y, GaussianNoise(0.0))
    ctx = sampler.prepare(prior, problem, 20_000, torch.device("cpu"), D)
    assert ctx.pairs[0][0] == 300
    x = sampler.start(prior, ctx, 20_000, make_generator(0))
    ab = prior.schedule.alpha_bar_at(300)
    mean = torch.zeros(5, dtype=D)
    mean[[1, 3]] = ab**0.5 * y
    assert torch.allclose(x.mean(0), mean, atol=0.03)
    assert torch.allclose(x.std(0), torch.full((5,), (1 - ab) ** 0.5, dtype=D), rtol=0.03)
    out = sampler.sample(prior, problem, 50, make_generator(1), dtype=D)
    assert (out.nfe_forward, out.nfe_backward) == (50 * 20, 50 * 20)
    sigma_grid = PGDMSampler(num_steps=20, t_start=300, spacing="sigma").step_pairs(prior)
    assert sigma_grid[0][0] == 300 and sigma_grid[-1][0] == 0


def test_pgdm_spectral_start_needs_an_svd():
    prior, problem = problem_and_prior()
    hidden = InverseProblem(NoSVD(problem.operator), problem.y, problem.noise)
    with pytest.raises(ValueError, match="init"):
        PGDMSampler(init="spectral", t_start=300).sample(prior, hidden, 2, make_generator(0), dtype=D)
    with pytest.raises(ValueError, match="spacing"):
        PGDMSampler(spacing="log")


class InputRecorder:
    """A prior that records the largest |x_t| it is asked to denoise."""

    def __init__(self, prior):
        self.prior, self.largest = prior, 0.0

    def __getattr__(self, name):
        return getattr(self.prior, name)

    def denoise(self, x_t, t):
        self.largest = max(self.largest, float(x_t.abs().max()))
        return self.prior.denoise(x_t, t)


def test_ddrm_ignores_observations_buried_in_noise():
    """A singular value with σ_y/s_i > σ_T (a blur's tail) must not start the chain at ȳ_i/s_i: A⁺y
    puts σ_y/s_i = 10⁵ of noise there, far outside what a network was trained on (x_t = O(1))."""
    prior = InputRecorder(gaussian_prior(torch.zeros(2, dtype=D), 1.0))
    op = DenseOperator(torch.diag(torch.tensor([1.0, 1e-6], dtype=D)))
    problem = InverseProblem(op, torch.tensor([0.5, 0.05], dtype=D), GaussianNoise(0.1))
    x = DDRMSampler().sample(prior, problem, 400, make_generator(1), dtype=D).samples
    assert prior.largest < 6
    assert float(x[:, 1].abs().max()) < 6 and 0.5 < float(x[:, 1].std()) < 1.5
    assert abs(float(x[:, 0].mean()) - 0.5 / 1.01) < 0.05


def test_nfe_counts():
    prior, problem = problem_and_prior()
    dps = DPSSampler(num_steps=25).sample(prior, problem, 3, make_generator(0), dtype=D)
    pgdm = PGDMSampler(num_steps=25).sample(prior, problem, 3, make_generator(0), dtype=D)
    assert (dps.nfe_forward, dps.nfe_backward) == (75, 75)
    assert (pgdm.nfe_forward, pgdm.nfe_backward) == (75, 75)


def test_tikhonov_baseline_is_the_gaussian_posterior_mean():
    """x = m𝟙 + Aᵀ(AAᵀ + σ_y²/σ_x² I)⁻¹(y − A m𝟙), clamped to [0, 1] (the shared measurement fit)."""
    from diffinv.imaging.baselines import tikhonov

    g = make_generator(4)
    a = torch.randn(3, 6, generator=g, dtype=D) * 0.2
    y = torch.rand(3, generator=g, dtype=D)
    lam = (0.05 / 0.3) ** 2
    m = torch.full((6,), 0.5, dtype=D)
    dense = m + a.T @ torch.linalg.solve(a @ a.T + lam * torch.eye(3, dtype=D), y - a @ m)
    assert torch.allclose(tikhonov(DenseOperator(a), y, 0.05), dense.clamp(0, 1), atol=1e-10)


def test_dps_likelihood_cap_is_score_consistent_on_a_unit_gaussian():
    """N(0, I) prior: x̂0 = √ᾱ_t x_t and Σ_t = σ_y² I + (1 − ᾱ_t) A Aᵀ exactly, so DPS with its step bounded
    per spectral direction by the score-consistent one (ζ' large: the bound is active at every step) is the
    reverse DDPM of the exact posterior. Two directions with s = 1 and 0.3; along each, the mean and variance
    of the samples' coordinate within 4 standard errors (+ 0.01) of the exact posterior's."""
    g = make_generator(1)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=D))
    s_vals, sigma, n = torch.tensor([1.0, 0.3], dtype=D), 0.3, 4000
    a = torch.diag(s_vals) @ q[:, :2].T  # A = S Vᵀ (U = I)
    y = torch.tensor([0.8, -0.2], dtype=D)
    prior = gaussian_prior(torch.zeros(4, dtype=D), torch.eye(4, dtype=D))
    problem = InverseProblem(DenseOperator(a), y, GaussianNoise(sigma))
    dps = DPSSampler(num_steps=1000, zeta=1e6, likelihood_cap=1.0)
    out = dps.sample(prior, problem, n, make_generator(3), dtype=D)
    z = out.samples.reshape(n, 4) @ q[:, :2]  # coordinates along the right singular vectors
    var = 1 / (1 + s_vals**2 / sigma**2)  # posterior of z_i: N(s_i y_i var_i / σ², var_i)
    mean = s_vals * y * var / sigma**2
    assert torch.all((z.mean(0) - mean).abs() < 4 * (var / n).sqrt() + 0.01), (z.mean(0), mean)
    assert torch.all((z.var(0) - var).abs() < 4 * var * (2 / n) ** 0.5 + 0.01), (z.var(0), var)
    assert 0.5 < out.diagnostics["data_residual"] < 1.5


def test_largest_singular_with_and_without_svd():
    from diffinv.samplers.dps import largest_singular
    prior, problem = problem_and_prior()
    s = float(torch.linalg.svdvals(problem.operator.matrix()).max())
    assert abs(largest_singular(problem.operator) - s) < 1e-9
    assert abs(largest_singular(NoSVD(problem.operator)) - s) < 1e-6


def test_dps_likelihood_cap_without_an_svd_matches_one_observed_direction():
    """With one row A has one singular value, so the power-iteration bound equals the spectral one."""
    prior = gaussian_prior(torch.zeros(4, dtype=D), torch.eye(4, dtype=D))
    a = torch.tensor([[0.3, -0.6, 0.2, 0.1]], dtype=D)
    problem = InverseProblem(DenseOperator(a), torch.tensor([0.5], dtype=D), GaussianNoise(0.2))
    hidden = InverseProblem(NoSVD(problem.operator), problem.y, problem.noise)
    dps = DPSSampler(num_steps=50, zeta=1.0, likelihood_cap=1.0)
    x = dps.sample(prior, problem, 8, make_generator(4), dtype=D).samples
    z = dps.sample(prior, hidden, 8, make_generator(4), dtype=D).samples
    assert torch.allclose(x, z, atol=1e-6)


@pytest.mark.parametrize("v", [1.0, 4.0])
def test_pgdm_data_variance_makes_its_guidance_exact_for_a_wide_gaussian(v):
    """For N(0, v I), p(x0 | x_t) = N(√ᾱ v x_t / (v ᾱ + 1 − ᾱ), r_t² I) with r_t² = v(1 − ᾱ)/(v ᾱ + 1 − ᾱ)
    (``posterior_variance``), so one ΠGDM step with ``data_variance = v`` adds
    w √ᾱ_s √ᾱ_t r_t² ∇ log p(y | x_t) for the exact p(y | x_t) = N(A E[x0 | x_t], σ_y² I + r_t² A Aᵀ)."""
    from diffinv.samplers.guidance import posterior_variance

    g = make_generator(3)
    prior = gaussian_prior(torch.zeros(3, dtype=D), v)
    a = torch.randn(2, 3, generator=g, dtype=D)
    y = torch.tensor([1.0, -0.5], dtype=D)
    problem = InverseProblem(DenseOperator(a), y, GaussianNoise(0.2))
    x = torch.randn(5, 3, generator=g, dtype=D)
    steps = {}
    for w in (0.0, 1.0):
        sampler = PGDMSampler(num_steps=10, weight=w, data_variance=v)
        ctx = sampler.prepare(prior, problem, 5, x.device, D)
        steps[w] = sampler.advance(prior, ctx, x, 3, make_generator(9))
    t, s = ctx.pairs[3]
    ab, ab_s = prior.schedule.alpha_bar_at(t), prior.schedule.alpha_bar_at(s)
    r2 = posterior_variance(ab, v)
    assert r2 == pytest.approx(v - v * v * ab / (v * ab + 1 - ab))  # Gaussian conditioning, directly
    x2 = x.clone().requires_grad_(True)
    mean = ab**0.5 * v * x2 / (v * ab + 1 - ab)
    cov = r2 * a @ a.T + 0.04 * torch.eye(2, dtype=D)
    log_p = torch.distributions.MultivariateNormal(mean @ a.T, cov).log_prob(y).sum()
    (score,) = torch.autograd.grad(log_p, x2)
    assert torch.allclose(steps[1.0] - steps[0.0], (ab_s * ab) ** 0.5 * r2 * score, atol=1e-10)
    with pytest.raises(ValueError, match="data_variance"):
        PGDMSampler(data_variance=0.0)


@pytest.mark.parametrize("v", [1.0, 4.0])
def test_pgdm_tweedie_step_samples_the_exact_posterior_of_a_gaussian(v):
    """N(0, v I) prior with ``data_variance = v``: ΠGDM's p̂(y | x_t) is exact, so the Tweedie step (x̂0 +
    (1 − ᾱ_t)/√ᾱ_t ∇ log p̂(y | x_t) in the η = 1 bridge) is the reverse DDPM of the exact posterior. Along
    the two right singular vectors (s = 1, 0.3) the samples' mean and variance are within 4 standard errors
    (+ 0.01) of the exact posterior's, and so are those of the paper's weight bounded by the Tweedie step
    (``likelihood_cap = 1``); the paper's weight w √ᾱ_s √ᾱ_t alone is not (its variance is off)."""
    g = make_generator(1)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=D))
    s_vals, sigma, n = torch.tensor([1.0, 0.3], dtype=D), 0.3, 4000
    a = torch.diag(s_vals) @ q[:, :2].T  # A = S Vᵀ (U = I)
    y = torch.tensor([0.8, -0.2], dtype=D)
    prior = gaussian_prior(torch.zeros(4, dtype=D), v)
    problem = InverseProblem(DenseOperator(a), y, GaussianNoise(sigma))
    var = 1 / (1 / v + s_vals**2 / sigma**2)  # posterior of z_i = v_iᵀ x: N(s_i y_i var_i / σ², var_i)
    mean = s_vals * y * var / sigma**2
    moments = {}
    variants = {"tweedie": {"step": "tweedie"}, "capped": {"likelihood_cap": 1.0}, "paper": {}}
    for name, options in variants.items():
        out = PGDMSampler(num_steps=1000, data_variance=v, **options).sample(prior, problem, n,
                                                                              make_generator(3), dtype=D)
        z = out.samples.reshape(n, 4) @ q[:, :2]  # coordinates along the right singular vectors
        moments[name] = (z.mean(0), z.var(0))
    for name in ("tweedie", "capped"):  # the paper's weight bounded by the Tweedie one: exact here too
        m, s2 = moments[name]
        assert torch.all((m - mean).abs() < 4 * (var / n).sqrt() + 0.01), (name, m, mean)
        assert torch.all((s2 - var).abs() < 4 * var * (2 / n) ** 0.5 + 0.01), (name, s2, var)
    m, s2 = moments["paper"]
    assert not torch.all((s2 - var).abs() < 4 * var * (2 / n) ** 0.5 + 0.01), (s2, var)


def test_pgdm_tweedie_step_is_dps_with_only_its_score_consistent_step():
    """With r_t² = 1 − ᾱ_t, ΠGDM's Tweedie step c_0 (1 − ᾱ_t)/(√ᾱ_t r_t²) g_t equals DPS's step bounded by the
    score-consistent one per spectral direction when ζ' is so large that the bound is always the smaller."""
    prior, problem = problem_and_prior()
    x = PGDMSampler(num_steps=50, step="tweedie").sample(prior, problem, 6, make_generator(5), dtype=D)
    z = DPSSampler(num_steps=50, zeta=1e12, likelihood_cap=1.0).sample(prior, problem, 6, make_generator(5),
                                                                       dtype=D)
    assert torch.allclose(x.samples, z.samples, atol=1e-10)
    with pytest.raises(ValueError, match="step"):
        PGDMSampler(step="exact")
