"""The Feynman–Kac engine: unit potentials = the unconditional sampler; log Ẑ unbiased on a
linear-Gaussian model (both weighting points); every resampling scheme unbiased through the engine;
stepping; failure reporting."""

from __future__ import annotations

import math

import pytest
import torch

from diffinv.benchmarks.gmm import make_problem
from diffinv.rng import make_generator, randn
from diffinv.samplers import SamplingError
from diffinv.sampling import sample_prior
from diffinv.schedules import bridge_coefficients, grid_pairs, timestep_grid
from diffinv.smc import RESAMPLING
from diffinv.smc.engine import FeynmanKac, Resampling

D = torch.float64


class Unconditional:
    """DDIM(η) moves of a prior and no potentials."""

    name = "unconditional"

    def __init__(self, prior, num_steps, eta):
        self.prior, self.pairs = prior, grid_pairs(timestep_grid(prior.schedule.num_timesteps, num_steps))
        self.num_steps, self.eta = len(self.pairs), eta

    def initial(self, f, n, generator):
        return {"x": randn((f * n, *self.prior.shape), generator, like=torch.empty((), dtype=D))
                .reshape(f, n, -1)}, None

    def lookahead(self, k, state):
        return state, None

    def move(self, k, state, generator):
        (t, s), x = self.pairs[k], state["x"]
        f, n = x.shape[:2]
        flat = x.reshape(f * n, *self.prior.shape)
        c = bridge_coefficients(self.prior.schedule.alpha_bar_at(t), self.prior.schedule.alpha_bar_at(s),
                                self.eta)
        mean = c.mean(flat, self.prior.denoise(flat, t).x0)
        if c.sigma > 0:
            mean = mean + c.sigma * randn(flat.shape, generator, like=flat)
        return {"x": mean.reshape(f, n, -1)}, None


def test_unit_potentials_reproduce_the_unconditional_sampler():
    prior = make_problem(4, 1, seed=0).prior
    engine = FeynmanKac(Unconditional(prior, 20, 1.0), num_filters=4, num_particles=5)
    result = engine.run(make_generator(3))
    direct = sample_prior(prior, 20, num_steps=20, generator=make_generator(3), dtype=D)
    assert torch.equal(result.state["x"].reshape(20, -1), direct)
    assert torch.equal(result.log_z, torch.zeros(4, dtype=D))
    assert not bool(result.resampled.any()) and result.ess.shape == (4, 20)


class LinearGaussian:
    """x_0 ~ N(0, 1), x_k = a x_{k−1} + q ξ, y_k ~ N(x_k, r²) (k = 1 … K).

    ``adapted``: the fully adapted filter (look-ahead η_k = p(y_k | x_{k−1}), move from
    p(x_k | x_{k−1}, y_k)); otherwise the bootstrap filter (move from the prior, G_k = p(y_k | x_k)).
    """

    name = "linear-gaussian"
    a, q, r = 0.9, 0.7, 0.5

    def __init__(self, ys, adapted):
        self.ys, self.adapted, self.num_steps = ys, adapted, len(ys)

    @staticmethod
    def log_normal(x, mean, var):
        return -0.5 * ((x - mean) ** 2 / var + math.log(2 * math.pi * var))

    def initial(self, f, n, generator):
        return {"x": randn((f, n), generator, like=torch.empty((), dtype=D))}, None

    def lookahead(self, k, state):
        if not self.adapted:
            return state, None
        return state, self.log_normal(self.ys[k], self.a * state["x"], self.q**2 + self.r**2)

    def move(self, k, state, generator):
        x, a, q2, r2 = state["x"], self.a, self.q**2, self.r**2
        noise = randn(x.shape, generator, like=x)
        if self.adapted:
            var = 1 / (1 / q2 + 1 / r2)
            mean = var * (a * x / q2 + self.ys[k] / r2)
            return {"x": mean + math.sqrt(var) * noise}, None
        new = a * x + self.q * noise
        return {"x": new}, self.log_normal(self.ys[k], new, r2)


def kalman_log_evidence(ys, model) -> float:
    mean, var, total = 0.0, 1.0, 0.0
    for y in ys:
        mean, var = model.a * mean, model.a**2 * var + model.q**2
        s = var + model.r**2
        total += -0.5 * ((y - mean) ** 2 / s + math.log(2 * math.pi * s))
        gain = var / s
        mean, var = mean + gain * (y - mean), (1 - gain) * var
    return total


@pytest.mark.parametrize("scheme", list(RESAMPLING))
@pytest.mark.parametrize("adapted", [False, True])
@pytest.mark.parametrize("threshold", [1.0, 0.5])
def test_log_evidence_is_unbiased(scheme, adapted, threshold):
    """mean over F filters of Ẑ/Z → 1: |log mean(Ẑ/Z)| within 4 standard errors of the filters' spread."""
    ys = [0.3, -0.8, 1.5, 0.2, 2.1, -0.4, 0.9, 0.0]
    model = LinearGaussian(ys, adapted)
    truth = kalman_log_evidence(ys, model)
    result = FeynmanKac(model, 2000, 16, Resampling(scheme, threshold)).run(make_generator(11))
    ratio = torch.exp(result.log_z - truth)
    se = float(ratio.std() / math.sqrt(ratio.numel()))
    assert abs(float(ratio.mean()) - 1) <= 4 * se + 1e-3, (float(ratio.mean()), se)
    if threshold >= 1:  # every weighted step (the bootstrap filter's first step has no weights yet)
        assert bool(result.resampled[:, 0 if adapted else 1:].all())
    else:
        assert not bool(result.resampled.all())


class FixedWeights:
    """One step: particles are their indices, weighted by fixed W; the move keeps them."""

    name = "fixed"
    num_steps = 1

    def __init__(self, log_w):
        self.log_w = log_w

    def initial(self, f, n, generator):
        return {"id": torch.arange(n).expand(f, n).clone()}, self.log_w.expand(f, n)

    def lookahead(self, k, state):
        return state, None

    def move(self, k, state, generator):
        return state, None


@pytest.mark.parametrize("scheme", list(RESAMPLING))
def test_resampling_through_the_engine_is_unbiased(scheme):
    """Offspring counts over 4000 filters average N·W within 5 standard errors (test_smc's bound)."""
    n, reps = 10, 4000
    w = torch.rand(n, generator=make_generator(0), dtype=D) ** 3
    w = w / w.sum()
    result = FeynmanKac(FixedWeights(w.log()), reps, n, Resampling(scheme)).run(make_generator(1))
    ids = result.state["id"]
    counts = torch.zeros(reps, n, dtype=D).scatter_add_(1, ids, torch.ones(reps, n, dtype=D))
    se = torch.sqrt(n * w * (1 - w) / reps)
    assert bool(((counts.mean(0) - n * w).abs() <= 5 * se + 1e-12).all())
    assert torch.equal(result.ancestors[:, 0], ids)


def test_stepping_yields_every_state_and_matches_run():
    ys = [0.3, -0.8, 1.5]
    engine = FeynmanKac(LinearGaussian(ys, True), 3, 8)
    states = list(engine.steps(make_generator(5)))
    assert [s.step for s in states] == [0, 1, 2, 3]
    result = FeynmanKac(LinearGaussian(ys, True), 3, 8).run(make_generator(5))
    assert torch.equal(states[-1].state["x"], result.state["x"])
    assert torch.equal(states[-1].log_z, result.log_z)


class Vanishing(LinearGaussian):
    def move(self, k, state, generator):
        new, log_g = super().move(k, state, generator)
        if k == 1:
            log_g = torch.full_like(log_g, -math.inf)
        return new, log_g


def test_vanishing_weights_are_reported_after_the_run():
    result = FeynmanKac(Vanishing([0.1, 0.2, 0.3], False), 2, 4).run(make_generator(0))
    with pytest.raises(SamplingError, match="at step 2"):
        result.check("vanishing")


def test_policy_is_validated():
    with pytest.raises(ValueError, match="resampling"):
        Resampling("bogus")
    with pytest.raises(ValueError, match="ess_threshold"):
        Resampling("systematic", 0.0)


def test_lineages_count_distinct_ancestors():
    """Identity ancestry keeps N lineages; a step that resamples everything onto one particle leaves one
    lineage there and before it."""
    from diffinv.smc.engine import lineages

    n = 5
    ident = torch.arange(n).expand(2, 3, n).clone()
    assert lineages(ident).tolist() == [[n] * 3] * 2
    anc = ident.clone()
    anc[0, 1] = 3  # filter 0: every particle of step 2 descends from particle 3 of step 1
    anc[1, 2] = torch.tensor([0, 0, 1, 1, 4])  # filter 1: three lineages from the last step back
    assert lineages(anc).tolist() == [[1, 1, n], [3, 3, 3]]
