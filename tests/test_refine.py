"""``diffinv refine``: the refined prior's formula and gradients, the 2-D exact check, save/load, resume, CLI.

The exact checks: (1) a hand-written u whose ℓ is the exact log ratio between two diffused Gaussians turns
the base's denoiser into the target's, to rounding; (2) on the 2-D toy of :mod:`diffinv.refine.toy` a
correction trained with J_MSE moves the model's samples towards the target by far more than the seed spread
(numbers in benchmarks/results/refine_toy/report.md) and restores the mode the model misses.
"""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from cli.main import app
from diffinv.checkpoints import load_prior
from diffinv.priors.analytic import gaussian_prior
from diffinv.refine.losses import LossSpec, base_eps_error, losses
from diffinv.refine.potential import MLPConfig, PotentialMLP, correction
from diffinv.refine.prior import RefinedPrior
from diffinv.refine.run import RefineConfig, evaluate_folder, refine
from diffinv.refine.toy import run_toy
from diffinv.rng import make_generator
from tests.tiny_prior import save_tiny_prior

runner = CliRunner()
MEAN, STD = torch.tensor([0.7, -0.4], dtype=torch.float64), 0.5


class ExactGaussianRatio(nn.Module):
    """u(x, t) = a_t x + b_t with ½⟨x, u⟩ = log N(x; √ᾱ m, v_t) − log N(x; 0, 1) + const, v_t = ᾱ s² + 1 − ᾱ:
    ∇ℓ = a_t x + b_t/2 = x − (x − √ᾱ m)/v_t, so a_t = 1 − 1/v_t and b_t = 2 √ᾱ m / v_t."""

    def __init__(self, alpha_bar: torch.Tensor) -> None:
        super().__init__()
        self.alpha_bar = alpha_bar
        self.dummy = nn.Parameter(torch.zeros(()))  # a parameter fixes the dtype/device u runs in

    def forward(self, x, t):
        ab = self.alpha_bar[t].to(x).unsqueeze(1)
        v = ab * STD**2 + 1 - ab
        return (1 - 1 / v) * x + 2 * ab.sqrt() * MEAN.to(x) / v + 0 * self.dummy


def gaussians():
    base = gaussian_prior(torch.zeros(2), 1.0)
    target = gaussian_prior(MEAN, STD**2)
    return base, target


def test_exact_log_ratio_turns_the_base_into_the_target():
    base, target = gaussians()
    refined = RefinedPrior(base, ExactGaussianRatio(base.schedule.alpha_bar).double())
    x = torch.randn(5, 2, generator=make_generator(0), dtype=torch.float64)
    for t in (0, 10, 300, 999):
        got, want = refined.denoise(x, t), target.denoise(x, t)
        torch.testing.assert_close(got.eps, want.eps, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(got.x0, want.x0, rtol=1e-9, atol=1e-9)


def test_gradients_flow_through_the_correction():
    """A sampler that differentiates x̂0 (DPS) gets the target's Jacobian, second-order terms included."""
    base, target = gaussians()
    refined = RefinedPrior(base, ExactGaussianRatio(base.schedule.alpha_bar).double())
    x = torch.randn(3, 2, generator=make_generator(1), dtype=torch.float64, requires_grad=True)
    (g_ref,) = torch.autograd.grad(refined.denoise(x, 400).x0.pow(2).sum(), x)
    (g_tar,) = torch.autograd.grad(target.denoise(x, 400).x0.pow(2).sum(), x)
    torch.testing.assert_close(g_ref, g_tar, rtol=1e-8, atol=1e-10)


def test_zero_correction_and_time_window_leave_the_base_unchanged():
    base, _ = gaussians()
    net = PotentialMLP(MLPConfig(dim=2, hidden=16)).double()
    refined = RefinedPrior(base, net)
    x = torch.randn(4, 2, generator=make_generator(2), dtype=torch.float64)
    torch.testing.assert_close(refined.denoise(x, 500).eps, base.denoise(x, 500).eps)  # zero last layer
    windowed = RefinedPrior(base, ExactGaussianRatio(base.schedule.alpha_bar).double(), t_range=(100, 200))
    assert torch.equal(windowed.denoise(x, 50).eps, base.denoise(x, 50).eps)
    assert not torch.equal(windowed.denoise(x, 150).eps, base.denoise(x, 150).eps)
    with pytest.raises(ValueError, match="t_range"):
        RefinedPrior(base, net, t_range=(10, 1000))


def test_mse_loss_is_smaller_at_the_exact_correction():
    """J_MSE's minimiser is ∇ log p_t/p̃_t: the exact ratio beats the zero correction on target data."""
    base, target = gaussians()
    x0 = target.mixture.sample(4096, make_generator(3))
    spec = LossSpec(loss="mse", t_range=(0, 999), groups=8)
    exact = float(losses(ExactGaussianRatio(base.schedule.alpha_bar).double(), base, spec, x0, None,
                         make_generator(4))["mse"].detach())
    zero = float(losses(PotentialMLP(MLPConfig(dim=2, hidden=8)).double(), base, spec, x0, None,
                        make_generator(4))["mse"].detach())
    own = float(losses(PotentialMLP(MLPConfig(dim=2, hidden=8)).double(), target, spec, x0, None,
                       make_generator(4))["mse"].detach())  # the target's own denoiser, same draws
    assert exact < 0.6 * zero
    assert exact == pytest.approx(own, rel=1e-9)
    exact_net = ExactGaussianRatio(base.schedule.alpha_bar).double()
    ell, grad = correction(exact_net, x0[:3].clone().requires_grad_(), torch.tensor([5, 5, 5]),
                           create_graph=False)
    assert ell.shape == (3,) and grad.shape == (3, 2)


def test_toy_mse_refinement_beats_the_model_and_finds_the_missed_mode():
    results = [run_toy("mse", seed=s, steps=1000, train_size=3000, num_samples=2000) for s in range(3)]
    model = [r.sw_model for r in results]
    refined = [r.sw_refined for r in results]
    gap = [m - r for m, r in zip(model, refined, strict=True)]
    se = statistics.stdev(gap) / len(gap) ** 0.5
    assert statistics.fmean(gap) > 4 * se and min(gap) > 0, (model, refined)
    assert all(r.missed_share_model < 0.01 for r in results)
    shares = [r.missed_share_refined for r in results]
    assert all(0.12 < share < 0.38 for share in shares), shares


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    root = tmp_path_factory.mktemp("refine")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, size=(16, 16), dtype=np.uint8)).save(images / f"{i:02d}.png")
    save_tiny_prior(root / "tiny", channels=1, size=16)
    return root, images


def config(root, images, **kw) -> RefineConfig:
    base = dict(checkpoint=str(root / "tiny"), data=str(images), out=str(root / "tiny-dg"), loss="mse+ce",
                steps=4, batch_size=4, model_samples=4, sample_steps=3, eval_draws=2, eval_samples=3,
                t_range=(300, 999), save_every=2, width=8)
    return RefineConfig(**{**base, **kw})


def test_pipeline_saves_a_prior_loadable_by_name_with_side_by_side_figures(setting, monkeypatch):
    root, images = setting
    result = refine(config(root, images))
    assert result.step == 4 and set(result.losses) == {"mse", "ce", "total"}
    card = json.loads((root / "tiny-dg" / "card.json").read_text())
    assert card["format"] == "diffinv-refined/1" and card["t_range"] == [300, 999]
    figures = card["figures"]
    assert len(figures["denoising_mse"]["base"]) == len(figures["denoising_mse"]["refined"]) == 4
    assert len(figures["frechet"]["base"]) == len(figures["frechet"]["refined"]) == 2
    again = evaluate_folder(root / "tiny-dg")  # recomputed from the card's recipe and the cache: the same
    assert again["frechet"]["base"] == figures["frechet"]["base"]
    assert again["frechet"]["refined_minus_base"] == figures["frechet"]["refined_minus_base"]
    monkeypatch.chdir(root)
    prior = load_prior("tiny-dg")
    assert isinstance(prior, RefinedPrior) and prior.t_range == (300, 999)
    x = torch.randn(2, 1, 16, 16, generator=make_generator(0))
    assert prior.denoise(x, 500).x0.shape == x.shape


def test_resume_gives_the_same_weights(setting):
    root, images = setting
    straight = refine(config(root, images, out=str(root / "a"), steps=4, evaluate=False))
    refine(config(root, images, out=str(root / "b"), steps=2, evaluate=False))
    resumed = refine(config(root, images, out=str(root / "b"), steps=4, evaluate=False))
    assert straight.step == resumed.step == 4 and resumed.resumed_from == 2
    a = load_prior(root / "a").net.state_dict()
    b = load_prior(root / "b").net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="resume"):
        refine(config(root, images, out=str(root / "b"), steps=6, lr=0.5, evaluate=False))


def test_changed_base_and_bad_out_are_refused(setting):
    root, images = setting
    refine(config(root, images, out=str(root / "c"), steps=2, evaluate=False))
    save_tiny_prior(root / "tiny2", channels=1, size=16, seed=9)
    card = json.loads((root / "c" / "card.json").read_text())
    card["base"]["checkpoint"] = str(root / "tiny2")
    (root / "c" / "card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="has changed"):
        load_prior(root / "c")
    with pytest.raises(ValueError, match="holds another prior"):
        refine(config(root, images, out=str(root / "tiny2")))
    with pytest.raises(ValueError, match="not a refine run"):
        refine(config(root, images, out=str(images)))  # a user's folder of images is never written into


def test_cli_refine_one_line_errors_and_run(setting):
    root, images = setting
    res = runner.invoke(app, ["refine", "--checkpoint", str(root / "tiny"), "--data", str(images), "--out",
                              str(root / "d"), "--loss", "hinge"])
    assert res.exit_code == 2 and "loss: expected one of mse, ce, mse+ce" in res.output
    res = runner.invoke(app, ["refine", "--checkpoint", str(root / "tiny"), "--data", str(images), "--out",
                              str(root / "d"), "--t-range", "5"])
    assert res.exit_code == 2 and "t-range" in res.output
    res = runner.invoke(app, ["refine", "--checkpoint", str(root / "tiny"), "--data", str(images), "--out",
                              str(root / "d"), "--steps", "2", "--batch-size", "4", "--model-samples", "4",
                              "--sample-steps", "2", "--eval-draws", "2", "--eval-samples", "2",
                              "--t-range", "0,999", "-q"])
    assert res.exit_code == 0, res.output
    assert "refined prior in" in res.output and "Fréchet to test" in res.output


def test_base_eps_error_and_the_relative_weighting():
    """For data and base both N(0, I), E[ε | x_t] = √(1−ᾱ) x_t and e_θ(t) = ᾱ_t exactly; the relative
    J_MSE of a zero correction is then 1 in expectation."""
    base = gaussian_prior(torch.zeros(2), 1.0)
    x0 = torch.randn(4096, 2, generator=make_generator(5), dtype=torch.float64)
    error = base_eps_error(base, x0, (0, 999), make_generator(6), points=8)
    grid = torch.linspace(0, 999, 8).round().long()
    torch.testing.assert_close(error[grid], base.schedule.alpha_bar[grid].double(), rtol=0.08, atol=1e-4)
    spec = LossSpec(loss="mse", weighting="relative", t_range=(0, 999), groups=8)
    value = float(losses(PotentialMLP(MLPConfig(dim=2, hidden=8)).double(), base, spec, x0, None,
                         make_generator(7), eps_error=error)["mse"].detach())
    assert value == pytest.approx(1.0, abs=0.12)
    with pytest.raises(ValueError, match="weighting"):
        LossSpec(weighting="snr").validate()
