"""The PSNR-vs-evaluations benchmark's pieces: budgets spent as stated, the deepinv denoiser and physics
wrappers exact against closed forms (deepinv itself is not needed: the wrappers are plain torch)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from deepinv_adapter import PriorDenoiser, svd_physics  # noqa: E402
from psnr_nfe import DIFFINV, options_for_budget  # noqa: E402

from diffinv.operators import GaussianNoise  # noqa: E402
from diffinv.priors import gaussian_prior  # noqa: E402
from diffinv.priors.base import CountingPrior  # noqa: E402
from diffinv.problems import build_operator, load_problem  # noqa: E402
from diffinv.rng import make_generator  # noqa: E402
from diffinv.samplers import InverseProblem  # noqa: E402
from diffinv.samplers.registry import sampler_class  # noqa: E402

SHAPE = (1, 16, 16)


def image_prior():
    return gaussian_prior(torch.zeros(256, dtype=torch.float64), 0.3, shape=SHAPE)


@pytest.mark.parametrize("sampler", DIFFINV)
@pytest.mark.parametrize("budget", [40, 100, 600])
def test_budget_options_spend_about_the_budget(sampler, budget):
    """Measured forward + backward evaluations per sample within [0.5, 1.1] × the budget."""
    prior = image_prior()
    op = build_operator(load_problem("inpaint_box"), SHAPE)
    y = op.A(torch.rand(1, *SHAPE, generator=make_generator(0), dtype=torch.float64))[0]
    problem = InverseProblem(op, y.float(), GaussianNoise(0.05))
    result = sampler_class(sampler)(**options_for_budget(sampler, budget)).sample(
        prior, problem, 16, generator=make_generator(1))
    per_sample = (result.nfe_forward + result.nfe_backward) / 16
    assert 0.5 * budget <= per_sample <= 1.1 * budget, (sampler, budget, per_sample)


def test_prior_denoiser_is_the_exact_posterior_mean():
    """D(x, σ) = m + v/(v + w²σ²)(z − m) in prior units z = lo + w x, for a Gaussian prior N(m, v I)
    at a σ on the schedule's grid."""
    prior = image_prior()
    den = PriorDenoiser(CountingPrior(prior))
    t = 400
    sigma = float(den.noise_ratio[t]) / den.units.width
    assert den.time_of(sigma) == t
    x = torch.rand(3, *SHAPE, generator=make_generator(2), dtype=torch.float64)
    z = den.units.to_prior(x)
    expected = den.units.to_pixels(0.3 / (0.3 + (den.units.width * sigma) ** 2) * z)
    torch.testing.assert_close(den(x, sigma), expected.to(x.dtype), atol=1e-5, rtol=1e-5)
    per_row = den(x, torch.tensor([sigma, 10 * sigma, sigma]))  # rows at different noise levels
    torch.testing.assert_close(per_row[[0, 2]], expected[[0, 2]].to(x.dtype), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["sr4", "inpaint_box", "deblur_gauss"])
def test_svd_physics_reproduces_the_operator(name):
    """U(s ⊙ V*(x)) = A x, U(U*(y)) = y, and V(V*(x)) = x for the wrapped operator."""
    op = build_operator(load_problem(name), SHAPE)
    fake = SimpleNamespace(physics=SimpleNamespace(DecomposablePhysics=lambda **kw: SimpleNamespace(**kw),
                                                   GaussianNoise=lambda sigma: sigma))
    ph = svd_physics(fake, op, 0.05)
    x = torch.rand(2, *SHAPE, generator=make_generator(3))
    ax = op.A(x.double()).float()
    torch.testing.assert_close(ph.U(ph.mask * ph.V_adjoint(x)), ax, atol=1e-5, rtol=1e-5)
    y = op.A(x.double()).float()
    torch.testing.assert_close(ph.U(ph.U_adjoint(y)), y, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ph.V(ph.V_adjoint(x)), x, atol=1e-5, rtol=1e-5)
    assert ph.noise_model == 0.05


def test_preset_rule_trades_little_psnr_for_calibration():
    """tune_presets.choose: coverage nearest 0.90 among candidates within the PSNR tolerance, so a
    diverging candidate whose scattered samples cover the truth cannot win (the first rule's failure)."""
    from tune_presets import choose

    rows = [{"name": "sharp", "psnr_all": 23.7, "coverage": 0.71},
            {"name": "near", "psnr_all": 23.4, "coverage": 0.80},
            {"name": "diverging", "psnr_all": 19.4, "coverage": 0.97}]
    assert choose(rows, 0.5)["name"] == "near"
    assert choose(rows, 0.1)["name"] == "sharp"
    assert choose(rows, 10.0)["name"] == "diverging"  # the tolerance is the only licence to lose PSNR


def test_versus_pairs_images_and_keeps_exact_apart():
    """psnr_nfe.versus: paired differences over common images; the exact reference never counts as
    diffinv's best, and gets its own table when asked for."""
    from psnr_nfe import EXACT, versus

    def rec(method, budget, image, p, nfe=100):
        return {"problem": "p", "method": method, "budget": budget, "image": image, "psnr4": p,
                "coverage": 0.8, "nfe_forward": nfe, "nfe_backward": 0}

    records = [rec("deepinv-ddrm", 100, i, 20.0 + i) for i in range(3)]
    records += [rec("pgdm", 100, i, 20.5 + i) for i in range(3)]
    records += [rec(EXACT, 20, i, 30.0, nfe=0) for i in range(3)]
    (row,) = [line for line in versus(records) if line.startswith("| p |")]
    assert "pgdm" in row and "+0.50 ± 0.00" in row
    (row,) = [line for line in versus(records, cap=float("inf"), candidates=(EXACT,), label="Exact")
              if line.startswith("| p |")]
    assert EXACT in row
