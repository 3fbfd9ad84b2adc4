"""Every sampler × every problem preset, end to end through ``diffinv.solve`` on a tiny random UNet,
and on the analytic Gaussian prior at 8×8 against the exact Gaussian posterior."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_prior import save_tiny_prior

from diffinv.imaging.io import save_png
from diffinv.priors.analytic import gaussian_prior
from diffinv.problems import apply_overrides, build_operator, load_problem, preset_names
from diffinv.rng import make_generator
from diffinv.solve import SolveConfig, prepare, solve

SAMPLERS = ("dps", "pgdm", "mcgdiff", "dcps", "ddrm")
FAST = {"dps": {"num_steps": 4}, "pgdm": {"num_steps": 4}, "ddrm": {"num_steps": 4},
        "mcgdiff": {"num_steps": 4, "num_particles": 4}, "dcps": {"num_steps": 6, "langevin_steps": 2}}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    gen = make_generator(0)
    for c in (1, 3):
        save_tiny_prior(root / f"tiny{c}", channels=c, size=16)
        save_png(torch.rand(c, 16, 16, generator=gen), root / f"img{c}.png")
    return root


def fast_overrides(sampler: str) -> dict:
    return {f"{sampler}.{k}": v for k, v in FAST[sampler].items()}


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("problem", preset_names())
def test_every_sampler_on_every_problem(assets, problem, sampler):
    c = 3 if problem == "colorize" else 1
    config = SolveConfig(image=str(assets / f"img{c}.png"), problem=problem, sampler=sampler, num_samples=2,
                         checkpoint=str(assets / f"tiny{c}"), simulate=True, device="cpu",
                         overrides=fast_overrides(sampler))
    report = solve(config, write=False)
    assert report.samples.shape == (2, c, 16, 16)
    assert bool(torch.isfinite(report.samples).all())
    assert 0 <= float(report.samples.min()) and float(report.samples.max()) <= 1
    m = report.metrics
    assert m["nfe_forward"] > 0 and math.isfinite(m["psnr"]) and -1 <= m["ssim"] <= 1
    assert (m["nfe_backward"] > 0) == (sampler in ("dps", "pgdm", "dcps"))


def smooth_gaussian(size: int = 8, std: float = 0.25, length: float = 2.0):
    """N(0, Σ) on (1, size, size), Σ_ij = std² exp(−|p_i − p_j|²/(2ℓ²)) + 1e-3 std² δ_ij (network units)."""
    r = torch.arange(size, dtype=torch.float64)
    pos = torch.stack(torch.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2)
    cov = std**2 * torch.exp(-torch.cdist(pos, pos) ** 2 / (2 * length**2))
    cov = cov + 1e-3 * std**2 * torch.eye(size * size, dtype=torch.float64)
    return gaussian_prior(torch.zeros(size * size), cov, shape=(1, size, size))


@pytest.mark.parametrize("sampler", ("exact", "mcgdiff", "dps", "pgdm", "dcps", "ddrm"))
def test_gaussian_prior_against_exact_posterior(tmp_path, sampler):
    """Posterior mean of k samples vs the closed-form one: MCGDiff / exact within 4 standard errors
    (SE from the exact posterior variance / k), every sampler closer than the prior mean."""
    prior = smooth_gaussian()
    truth = ((prior.mixture.sample(1, make_generator(5))[0] + 1) / 2).reshape(1, 8, 8)
    np.save(tmp_path / "truth.npy", truth.numpy())
    k = 200
    problem = apply_overrides(load_problem("sr4"), {"operator.factor": 2, "noise.sigma_y": 0.05})
    config = SolveConfig(image=str(tmp_path / "truth.npy"), problem="sr4", sampler=sampler, num_samples=k,
                         simulate=True, device="cpu", seed=1,
                         overrides={"operator.factor": 2, "noise.sigma_y": 0.05, "mcgdiff.num_particles": 128,
                                   "dcps.lr": 0.03})
    report = solve(config, prior=prior, write=False)
    op = build_operator(problem, (1, 8, 8))
    # the exact posterior in network units, from the same simulated observation
    y_obs = prepare(config, prior).y01
    y_net = 2 * y_obs - op.A(torch.ones(1, 1, 8, 8, dtype=torch.float64))[0]
    post = prior.mixture.posterior(op.matrix(), y_net.reshape(-1), 2 * 0.05)
    mean_exact = ((post.means[0] + 1) / 2)
    var_exact = torch.diagonal(post.covariances()[0]) / 4
    got = report.samples.double().mean(0).reshape(-1)
    err = (got - mean_exact).norm()
    prior_err = (torch.full_like(mean_exact, 0.5) - mean_exact).norm()
    assert err < prior_err
    if sampler in ("exact", "mcgdiff"):
        se = (var_exact.sum() / k).sqrt()
        assert err < 4 * se + 0.01, (float(err), float(se))
