"""Schedules, grids, the DDIM(η) bridge and the ε / x̂0 / score conversions (known values, derivations)."""

from __future__ import annotations

import math

import pytest
import torch

from diffinv.schedules import (
    CLEAN,
    bridge_coefficients,
    cosine_schedule,
    eps_to_score,
    eps_to_x0,
    grid_pairs,
    linear_schedule,
    make_schedule,
    score_to_eps,
    sigma_spaced_grid,
    timestep_grid,
    x0_to_eps,
)


def test_linear_alpha_bar_known_values():
    sch = linear_schedule()
    # ᾱ_0 = 1 − β_0 = 0.9999 (0-indexed, no prepended 1.0)
    assert sch.alpha_bar_at(0) == pytest.approx(0.9999, abs=1e-12)
    # ᾱ_t = Π (1 − β_s), β = linspace(1e-4, 0.02, 1000); reference values of the official DCPS code's
    # 1001-entry ᾱ array shifted by one (a 1.0 is prepended there, so acp[t] = ᾱ_{t−1}):
    # acp[100] = 0.897 → ᾱ_99, acp[1000] = 4.04e-5 → ᾱ_999.
    assert sch.alpha_bar_at(99) == pytest.approx(0.897, abs=1e-3)
    assert sch.alpha_bar_at(332) == pytest.approx(0.321, abs=1e-3)
    assert sch.alpha_bar_at(999) == pytest.approx(4.04e-5, rel=1e-2)
    assert sch.alpha_bar_at(CLEAN) == 1.0
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    assert torch.allclose(sch.alpha_bar, torch.cumprod(1 - betas, 0), rtol=0, atol=1e-15)


def test_cosine_schedule_monotone_and_ends():
    sch = cosine_schedule()
    ab = sch.alpha_bar
    assert bool((ab[1:] < ab[:-1]).all())
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    assert sch.alpha_bar_at(0) == pytest.approx(f(1 / 1000) / f(0), rel=1e-9)
    assert sch.alpha_bar_at(999) < 1e-4
    assert make_schedule("cosine").kind == "cosine"
    with pytest.raises(ValueError, match="schedule"):
        make_schedule("quadratic")  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 100, 333, 999, 1000])
def test_grid_properties(n):
    grid = timestep_grid(1000, n)
    assert len(grid) == n and len(set(grid)) == n
    assert grid[-1] == 0 and (n == 1 or grid[0] == 999)
    assert all(a > b for a, b in zip(grid, grid[1:], strict=False))
    pairs = grid_pairs(grid)
    assert pairs[-1] == (0, CLEAN) and len(pairs) == n


@pytest.mark.parametrize("n", [2, 7, 100, 401])
def test_grid_from_a_later_start(n):
    grid = timestep_grid(1000, n, start=400)
    assert grid[0] == 400 and grid[-1] == 0 and len(set(grid)) == n == len(grid)
    with pytest.raises(ValueError, match="num_steps"):
        timestep_grid(1000, 402, start=400)
    for bad in (0, 1000, True, 2.5):
        with pytest.raises(ValueError, match="t_start"):
            timestep_grid(1000, 2, start=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [2, 10, 100])
def test_sigma_spaced_grid_is_uniform_in_the_ve_noise(n):
    sch = linear_schedule()
    grid = sigma_spaced_grid(sch, n, start=400)
    assert grid[0] == 400 and grid[-1] == 0 and len(grid) <= n
    assert all(a > b for a, b in zip(grid, grid[1:], strict=False))
    sigma = [((1 - sch.alpha_bar_at(t)) / sch.alpha_bar_at(t)) ** 0.5 for t in grid]
    gap = (sigma[0] - sigma[-1]) / (n - 1)
    steps = [a - b for a, b in zip(sigma, sigma[1:], strict=False)]
    assert max(steps) < 2 * gap  # nearest-timestep rounding and dropped repeats at most double a gap
    assert sigma_spaced_grid(sch, 5) == sigma_spaced_grid(sch, 5, start=999)
    assert sigma_spaced_grid(sch, 1, start=400) == [0]


def test_grid_rejects_bad_lengths():
    for n in (0, 1001):
        with pytest.raises(ValueError, match="num_steps"):
            timestep_grid(1000, n)


def test_ddim_eta1_is_ddpm_posterior():
    """η = 1 between consecutive steps is q(x_{t−1} | x_t, x_0): mean coefficients and variance β̃_t."""
    sch = linear_schedule()
    for t in (1, 10, 500, 999):
        ab_t, ab_s = sch.alpha_bar_at(t), sch.alpha_bar_at(t - 1)
        beta = float(sch.betas[t])
        c = bridge_coefficients(ab_t, ab_s, 1.0)
        beta_tilde = (1 - ab_s) / (1 - ab_t) * beta
        assert c.sigma**2 == pytest.approx(beta_tilde, rel=1e-10)
        assert c.c_x == pytest.approx(math.sqrt(1 - beta) * (1 - ab_s) / (1 - ab_t), rel=1e-10)
        assert c.c_0 == pytest.approx(math.sqrt(ab_s) * beta / (1 - ab_t), rel=1e-10)


def test_ddim_eta0_is_deterministic_and_clean_step_returns_x0():
    c = bridge_coefficients(0.3, 0.6, 0.0)
    assert c.sigma == 0.0
    assert c.c_x == pytest.approx(math.sqrt(0.4 / 0.7))
    last = bridge_coefficients(0.9999, 1.0, 1.0)  # 0 → CLEAN
    assert (last.c_x, last.c_0, last.sigma) == (0.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="eta"):
        bridge_coefficients(0.3, 0.6, 1.5)


def test_bridge_preserves_marginals(gen):
    """If x_t ~ N(√ᾱ_t x0, 1−ᾱ_t) and x̂0 = x0, the bridge gives x_s ~ N(√ᾱ_s x0, 1−ᾱ_s) (any η)."""
    for eta in (0.0, 0.5, 1.0):
        c = bridge_coefficients(0.2, 0.7, eta)
        var = c.c_x**2 * (1 - 0.2) + c.sigma**2
        assert var == pytest.approx(1 - 0.7, rel=1e-12)
        assert c.c_x * math.sqrt(0.2) + c.c_0 == pytest.approx(math.sqrt(0.7), rel=1e-12)


def test_conversions_round_trip(gen):
    x = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    eps = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    ab = 0.37
    x0 = eps_to_x0(x, eps, ab)
    assert torch.allclose(x0_to_eps(x, x0, ab), eps)
    assert torch.allclose(score_to_eps(eps_to_score(eps, ab), ab), eps)
    # x̂0 = (x + (1 − ᾱ) s) / √ᾱ
    assert torch.allclose((x + (1 - ab) * eps_to_score(eps, ab)) / math.sqrt(ab), x0)
