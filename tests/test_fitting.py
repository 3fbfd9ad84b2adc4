"""``--fit``: the evidence gradient, the loops against the closed-form evidence maximiser, presets, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_process import run as run_cli

from diffinv.benchmarks.gmm import make_problem
from diffinv.fitting import FitConfig, FreeParameter, PosteriorDiffusion, dense_problem, fit_parameters
from diffinv.fitting.estimator import corrected_average, evidence_terms, lagged_curvature, secant_curvature
from diffinv.fitting.images import free_parameters, parse_fit
from diffinv.problems import apply_overrides, load_problem, validate
from diffinv.rng import make_generator
from diffinv.samplers.registry import sampler_class

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fashion_test_0000.png"
DX, DY, SEED = 10, 5, 2  # a problem whose evidence has one clear maximum in σ_y (benchmarks/fit_gmm.py)


@pytest.fixture(scope="module")
def gmm():
    return make_problem(DX, DY, SEED)


def argmax_evidence(gmm, gain: bool = False) -> float:
    a, y, s0 = gmm.problem.operator.matrix(), gmm.problem.y, gmm.problem.sigma_y
    centre = 1.0 if gain else s0
    us = np.linspace(math.log(centre / 4), math.log(centre * 4), 4001)
    ev = [gmm.prior.mixture.log_evidence(math.exp(u) * a, y, s0) if gain else
          gmm.prior.mixture.log_evidence(a, y, math.exp(u)) for u in us]
    return math.exp(us[int(np.argmax(ev))])


def test_gradient_is_fisher_identity(gmm):
    """ḡ from exact posterior samples = d/du log p(y | e^u) (closed form), within 4 standard errors;
    the finite-difference gradient equals the analytic −m + ‖y − A x‖²/σ² per sample."""
    a, y, s0 = gmm.problem.operator.matrix(), gmm.problem.y, gmm.problem.sigma_y
    sigma = 0.8 * s0
    parametric = dense_problem(a, y, s0, [FreeParameter("noise.sigma_y", sigma, s0 / 30, s0 * 30)])
    x = gmm.prior.mixture.posterior(a, y, sigma).sample(4000, make_generator(0))
    terms = evidence_terms(parametric, [math.log(sigma)], x)
    resid = ((y - x @ a.T) ** 2).sum(-1)
    analytic = float((-DY + resid / sigma**2).mean())
    assert float(terms.grad[0]) == pytest.approx(analytic, abs=1e-4)  # central differences, h = 1e-3
    h = 1e-4
    exact = (gmm.prior.mixture.log_evidence(a, y, sigma * math.exp(h))
             - gmm.prior.mixture.log_evidence(a, y, sigma * math.exp(-h))) / (2 * h)
    assert abs(float(terms.grad[0]) - exact) < 4 * float(terms.grad_se[0])


def test_lagged_curvature():
    """The step divides by the mean of the last five earlier estimates, the current one only at the start."""
    now = torch.tensor([9.0], dtype=torch.float64)
    assert torch.equal(lagged_curvature([], now), now)
    history = [[float(k)] for k in range(1, 8)]
    assert float(lagged_curvature(history, now)[0]) == pytest.approx(5.0)  # mean of 3 … 7


@pytest.mark.parametrize("mult", [0.25, 4.0])
def test_nested_exact_finds_the_evidence_maximum(gmm, mult):
    a, y, s0 = gmm.problem.operator.matrix(), gmm.problem.y, gmm.problem.sigma_y
    best = argmax_evidence(gmm)
    parametric = dense_problem(a, y, s0, [FreeParameter("noise.sigma_y", s0 * mult, s0 / 30, s0 * 30)])
    fit = fit_parameters(gmm.prior, parametric, sampler_class("exact")(), FitConfig("nested", steps=40,
                         samples_per_step=16), num_samples=3, seed=1, dtype=torch.float64)
    value, se = fit.values["noise.sigma_y"], fit.se["noise.sigma_y"]
    assert abs(value - best) < 3 * se + 0.01 * best, (value, se, best)
    assert fit.samples.shape == (3, DX)
    assert len(fit.trace) == 40 and fit.trace[0]["step"] == 1
    rows = fit.trace  # burn-in (20 updates): at most the current Louis curvature; the tail: at most the
    # lagged mean of the tail's (lowered where the secant of earlier gradients is smaller)
    assert rows[5]["curvature"][0] <= rows[5]["curvature_estimate"][0] * (1 + 1e-9)
    assert rows[20]["curvature"][0] <= rows[20]["curvature_estimate"][0] * (1 + 1e-9)
    lagged = np.mean([r["curvature_estimate"][0] for r in rows[21:26]])
    assert rows[26]["curvature"][0] <= lagged * (1 + 1e-9)
    assert all(r["curvature"][0] > 0 for r in rows)


def test_secant_curvature_reads_the_slope():
    """On a linear gradient ḡ = H (u* − u) with small noise the secant gives H where it is below the Louis
    curvature, keeps the Louis one where the slope is larger, and the previous one where it is unresolved."""
    h, u_star = 50.0, 0.3
    us = [0.0, 0.05, 0.1, 0.15, 0.2]
    points = [([u], [h * (u_star - u)], [0.1]) for u in us]
    louis, complete, grad = torch.tensor([1000.0]), torch.tensor([2000.0]), torch.tensor([h * 0.1])
    assert float(secant_curvature(points, louis, complete, grad)[0]) == pytest.approx(h, rel=1e-6)
    assert float(secant_curvature(points, torch.tensor([20.0]), complete, grad)[0]) == pytest.approx(20.0)
    noisy = [([u], [g], [1e3]) for u, g in zip(us, [1.0, -2.0, 3.0, 0.0, 1.0], strict=True)]
    kept = secant_curvature(noisy, louis, complete, torch.tensor([0.0]), previous=torch.tensor([70.0]))
    assert float(kept[0]) == pytest.approx(70.0)


def test_corrected_average_is_unbiased_off_centre():
    """Iterates still on one side of u*: the Newton correction on the averaged gradient lands on u*."""
    h, u_star = 40.0, 1.0
    us = torch.linspace(0.5, 0.7, 20, dtype=torch.float64)[:, None]
    gs = h * (u_star - us)
    ses = torch.full_like(us, 0.5)
    u_hat, se = corrected_average(us, gs, ses, torch.full_like(us, 400.0))
    assert float(u_hat[0]) == pytest.approx(u_star, abs=1e-6)
    assert float(se[0]) > 0


def test_single_loop_fits_a_gain(gmm):
    """The queue of trajectories (exact posterior diffusion, 100 steps) finds the gain maximiser."""
    a, y, s0 = gmm.problem.operator.matrix(), gmm.problem.y, gmm.problem.sigma_y
    best = argmax_evidence(gmm, gain=True)
    parametric = dense_problem(a, y, s0, [FreeParameter("operator.gain", 0.25, 1 / 30, 30)])
    fit = fit_parameters(gmm.prior, parametric, PosteriorDiffusion(100),
                         FitConfig("single", steps=40, samples_per_step=16, slots=10), seed=3,
                         dtype=torch.float64)
    value, se = fit.values["operator.gain"], fit.se["operator.gain"]
    assert abs(value - best) < 4 * se + 0.02 * best, (value, se, best)
    assert fit.fit_nfe_forward > 0 and fit.nfe_forward > fit.fit_nfe_forward


def test_several_starts_find_the_global_maximum_of_a_multimodal_evidence():
    """A gain of the lattice-like mixture (d_x = 10, seed 3: maxima at 1.01, 2.01, …): from 4 one local fit
    stops in the basin of 4.4; five starts ranked by MCGDiff's evidence estimate keep the fit near θ*."""
    gmm = make_problem(10, 5, 3)
    a, y, s0 = gmm.problem.operator.matrix(), gmm.problem.y, gmm.problem.sigma_y
    best = argmax_evidence(gmm, gain=True)
    parametric = dense_problem(a, y, s0, [FreeParameter("operator.gain", 4.0, 1 / 30, 30)])
    runs = {k: fit_parameters(gmm.prior, parametric, sampler_class("exact")(),
                              FitConfig("nested", steps=20, samples_per_step=16, starts=k), seed=3,
                              dtype=torch.float64) for k in (1, 5)}
    assert runs[1].values["operator.gain"] > 2 * best  # a local ascent: the start's basin
    fit = runs[5]
    value, se = fit.values["operator.gain"], fit.se["operator.gain"]
    assert abs(value - best) < 4 * se + 0.02 * best, (value, se, best)
    candidates = fit.config["candidates"]
    assert len(candidates) == 5 and candidates[0]["start"] == {"operator.gain": 4.0}
    chosen = max(candidates, key=lambda c: c["log_evidence"])
    assert chosen["values"] == fit.values
    assert fit.fit_nfe_forward > 0  # the evidence filters are counted (the exact sampler costs nothing)


@pytest.mark.parametrize("mult", [0.25, 4.0])
def test_restarted_chain_fits_at_a_fraction_of_the_evaluations(gmm, mult):
    """One chain re-noised to t of the last quarter of the grid after each update (``restart`` 0.25):
    the same θ̂ as the nested loop, within its SE, for fewer than 60 % of its evaluations."""
    a, y, s0 = gmm.problem.operator.matrix(), gmm.problem.y, gmm.problem.sigma_y
    best = argmax_evidence(gmm)
    parametric = dense_problem(a, y, s0, [FreeParameter("noise.sigma_y", s0 * mult, s0 / 30, s0 * 30)])
    runs = {name: fit_parameters(gmm.prior, parametric, PosteriorDiffusion(200), cfg, seed=3,
                                 dtype=torch.float64)
            for name, cfg in (("nested", FitConfig("nested", steps=40, samples_per_step=16)),
                              ("chain", FitConfig("single", steps=40, samples_per_step=16, slots=1,
                                                  restart=0.25)))}
    for fit in runs.values():
        value, se = fit.values["noise.sigma_y"], fit.se["noise.sigma_y"]
        assert abs(value - best) < 3 * se + 0.01 * best, (value, se, best)
    assert runs["chain"].fit_nfe_forward < 0.6 * runs["nested"].fit_nfe_forward


def test_same_seed_same_fit(gmm):
    a, y, s0 = gmm.problem.operator.matrix(), gmm.problem.y, gmm.problem.sigma_y
    parametric = dense_problem(a, y, s0, [FreeParameter("noise.sigma_y", s0, s0 / 30, s0 * 30)])
    runs = [fit_parameters(gmm.prior, parametric, PosteriorDiffusion(20), FitConfig("single", steps=6,
                           samples_per_step=4, slots=4), seed=5, dtype=torch.float64) for _ in range(2)]
    assert runs[0].values == runs[1].values
    assert torch.equal(runs[0].samples, runs[1].samples)


def test_single_loop_needs_a_stepwise_sampler(gmm):
    a, y, s0 = gmm.problem.operator.matrix(), gmm.problem.y, gmm.problem.sigma_y
    parametric = dense_problem(a, y, s0, [FreeParameter("noise.sigma_y", s0, s0 / 30, s0 * 30)])
    with pytest.raises(ValueError, match="fit-method: the single loop needs a stepwise sampler"):
        fit_parameters(gmm.prior, parametric, sampler_class("mcgdiff")(), FitConfig("single"))


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "joint"}, "fit-method: expected single or nested"),
    ({"steps": 2}, "fit-steps: expected at least 4"),
    ({"samples_per_step": 0}, "fit-samples-per-step: expected a positive integer"),
    ({"restart": 0.0}, "fit-restart: expected a share in"),
    ({"starts": 0}, "fit-starts: expected a positive integer"),
])
def test_fit_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FitConfig(**kwargs)


def test_free_parameter_errors():
    with pytest.raises(ValueError, match="fit noise.sigma_y: start 2.0 is outside its bounds"):
        FreeParameter("noise.sigma_y", 2.0, 0.001, 0.5)
    with pytest.raises(ValueError, match="expected bounds 0 < lower < upper"):
        FreeParameter("noise.sigma_y", 0.1, 0.5, 0.001)


def test_preset_parameters():
    problem = load_problem("deblur_gauss")
    params = {p.name: p for p in free_parameters(problem, parse_fit(["operator.sigma=2", "noise.sigma_y"]))}
    assert params["operator.sigma"].start == 2.0
    assert params["noise.sigma_y"].start == problem.sigma_y
    with pytest.raises(ValueError, match="fit: 'operator.size' is not fittable for the operator blur_gauss"):
        free_parameters(problem, parse_fit(["operator.size"]))
    with pytest.raises(ValueError, match="fit: 'operator.sigma' is not fittable for the operator sr_bicubic"):
        free_parameters(load_problem("sr4"), parse_fit(["operator.sigma"]))
    with pytest.raises(ValueError, match="fit: the start of noise.sigma_y must be a number > 0"):
        parse_fit(["noise.sigma_y=-1"])
    raw = {"operator": {"name": "blur_gauss", "size": 13, "sigma": 1.5},
           "fit": {"operator.sigma": {"start": 1.0, "lower": 0.5, "upper": 3.0}}}
    p = validate(raw)
    assert free_parameters(p, {"operator.sigma": None})[0].upper == 3.0
    assert apply_overrides(p, {"noise.sigma_y": 0.05}).fit == p.fit
    with pytest.raises(ValueError, match="unknown key 'fit.operator.sigma.step'"):
        validate({**raw, "fit": {"operator.sigma": {"step": 1.0}}})
    with pytest.raises(ValueError, match="unknown key 'fit.operator.size'"):
        validate({**raw, "fit": {"operator.size": {"start": 1.0}}})


def test_cli_solve_fits_blur_and_noise(tmp_path):
    """`diffinv solve --fit`: metrics.json has θ̂, its SE, the trace and the cost; a bad name fails in one
    line."""
    out = tmp_path / "fit"
    result = run_cli("solve", str(EXAMPLE), "--problem", "deblur_gauss", "--sampler", "pgdm",
                     "--simulate", "--steps", "10", "--num-samples", "2", "--fit", "operator.sigma=2.5",
                     "--fit", "noise.sigma_y=0.05", "--fit-steps", "6", "--fit-samples", "2",
                     "--out", str(out), "--quiet", "--threads", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    fit = metrics["fit"]
    assert set(fit["values"]) == {"operator.sigma", "noise.sigma_y"}
    assert len(fit["trace"]) == 6 and fit["cost_vs_solve"] > 1
    assert metrics["config"]["operator"]["sigma"] == pytest.approx(fit["values"]["operator.sigma"])
    bad = run_cli("solve", str(EXAMPLE), "--problem", "sr4", "--sampler", "pgdm", "--simulate",
                  "--fit", "operator.sigma", "--out", str(tmp_path / "bad"), "--quiet", cwd=tmp_path)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1].startswith("error: fit: 'operator.sigma' is not fittable")
    assert "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()
    zero = run_cli("solve", str(EXAMPLE), "--problem", "deblur_gauss", "--sampler", "pgdm", "--simulate",
                   "--fit", "operator.sigma", "--fit-starts", "0", "--out", str(tmp_path / "zero"), "--quiet",
                   cwd=tmp_path)
    assert zero.returncode == 2
    assert zero.stderr.strip().splitlines()[-1].startswith("error: fit-starts: expected a positive integer")
    assert not (tmp_path / "zero").exists()


def test_batch_fits_every_item(tmp_path):
    """`diffinv batch --fit`: each item's metrics.json and manifest line carry its own θ̂."""
    from tiny_prior import save_tiny_prior

    from diffinv.batch import BatchConfig, run_batch
    from diffinv.imaging.io import save_png
    from diffinv.job import SolveConfig

    save_tiny_prior(tmp_path / "tiny", channels=1, size=16)
    (tmp_path / "in").mkdir()
    gen = torch.Generator().manual_seed(0)
    for name in ("a", "b"):
        save_png(torch.rand(1, 16, 16, generator=gen, dtype=torch.float64), tmp_path / "in" / f"{name}.png")
    job = SolveConfig(image="", problem="deblur_gauss", sampler="pgdm", steps=4, num_samples=2, simulate=True,
                      device="cpu", checkpoint=str(tmp_path / "tiny"), fit=("noise.sigma_y=0.05",),
                      fit_steps=4, fit_samples=2, overrides={"operator.size": 5})
    report = run_batch(BatchConfig(inputs=str(tmp_path / "in"), out=str(tmp_path / "out"), job=job))
    assert report.finished == ["a", "b"]
    for name in ("a", "b"):
        fit = json.loads((tmp_path / "out" / name / "metrics.json").read_text())["fit"]
        assert set(fit["values"]) == {"noise.sigma_y"} and len(fit["trace"]) == 4


def test_motion_length_is_fittable_and_continuous():
    """blur_motion declares its path length fittable; the kernel moves continuously with it and a preset
    without a length needs a start."""
    from diffinv.operators.blur import motion_kernel

    k = [motion_kernel(13, 0.5, torch.Generator().manual_seed(0), length=v) for v in (6.0, 6.001, 8.0)]
    assert float((k[0] - k[1]).abs().sum()) < 1e-3 < float((k[0] - k[2]).abs().sum())
    default = motion_kernel(13, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(default, motion_kernel(13, 0.5, torch.Generator().manual_seed(0), length=None))
    problem = load_problem("deblur_motion")
    assert free_parameters(problem, parse_fit(["operator.length=5"]))[0].start == 5.0
    with pytest.raises(ValueError, match="fit: operator.length has no value in the preset"):
        free_parameters(problem, parse_fit(["operator.length"]))
