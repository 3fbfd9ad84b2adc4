"""The generic battery for every registered sampler: shapes, determinism, no graph leak, beats the prior."""

from __future__ import annotations

import dataclasses
import importlib
import math
import pkgutil

import pytest
import torch

import diffinv.samplers as samplers_pkg
from diffinv.benchmarks.gmm import make_problem
from diffinv.benchmarks.gmm_presets import gmm_preset
from diffinv.metrics import sliced_wasserstein
from diffinv.operators import DenseOperator, GaussianNoise
from diffinv.priors.base import Denoised
from diffinv.rng import make_generator
from diffinv.samplers import SAMPLERS, InverseProblem, Sampler, SamplingError

NAMES = list(SAMPLERS)


def quick_sampler(name: str, dx: int):
    """The sampler with its GMM preset, capped to short grids / few particles (fast tests)."""
    cls = SAMPLERS[name]
    options = gmm_preset(name, dx)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    caps = {"num_steps": 50, "langevin_steps": 20, "num_particles": 32}
    for key, cap in caps.items():
        if key in fields:
            options[key] = min(options.get(key, cap), cap)
    return cls(**options)


@pytest.fixture(scope="module")
def tiny():
    return make_problem(4, 2, seed=1)


def test_every_sampler_class_is_registered():
    found = set()
    for info in pkgutil.iter_modules(samplers_pkg.__path__):
        module = importlib.import_module(f"diffinv.samplers.{info.name}")
        found |= {obj for obj in vars(module).values() if isinstance(obj, type) and issubclass(obj, Sampler)
                  and obj is not Sampler and obj.__module__ == module.__name__}
    missing = found - set(SAMPLERS.values())
    assert not missing, f"sampler classes missing from the registry: {missing}"
    for name, cls in SAMPLERS.items():
        assert cls.name == name
        assert cls.__doc__ and cls.__doc__.strip(), f"{name}: needs a one-line summary docstring"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_dtype_and_no_graph(name, dtype, tiny):
    res = quick_sampler(name, tiny.dx).sample(tiny.prior, tiny.problem, 8, make_generator(0), dtype=dtype)
    assert res.samples.shape == (8, *tiny.prior.shape)
    assert res.samples.dtype == dtype and res.samples.device.type == "cpu"
    assert not res.samples.requires_grad and res.samples.grad_fn is None
    assert bool(torch.isfinite(res.samples).all())
    assert res.nfe_forward >= 0 and res.nfe_backward >= 0 and res.seconds > 0


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_samples(name, tiny):
    s = quick_sampler(name, tiny.dx)
    a = s.sample(tiny.prior, tiny.problem, 6, make_generator(11), dtype=torch.float64).samples
    b = s.sample(tiny.prior, tiny.problem, 6, make_generator(11), dtype=torch.float64).samples
    c = s.sample(tiny.prior, tiny.problem, 6, make_generator(12), dtype=torch.float64).samples
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", NAMES)
def test_beats_the_prior(name, tiny):
    """Samples are closer (SW) to the exact posterior than prior samples are.

    On this problem the prior is far from the posterior (SW ≈ 3-5); a margin of a factor 2 over the
    posterior-vs-posterior noise floor would be too strict for the approximate samplers, so the
    check is the ordering only, with 400 samples (SW standard error ≈ 0.05).
    """
    n = 400
    res = quick_sampler(name, tiny.dx).sample(tiny.prior, tiny.problem, n, make_generator(3),
                                              dtype=torch.float64)
    exact = tiny.posterior.sample(n, make_generator(4))
    prior_samples = tiny.prior.sample(n, make_generator(5))
    sw = sliced_wasserstein(res.samples, exact, generator=make_generator(6))
    sw_prior = sliced_wasserstein(prior_samples, exact, generator=make_generator(6))
    assert sw < sw_prior, (sw, sw_prior)


@pytest.mark.parametrize("name", NAMES)
def test_mismatched_operator_is_rejected(name, tiny):
    op = DenseOperator(torch.ones(2, 6, dtype=torch.float64))
    bad = InverseProblem(op, torch.zeros(2), GaussianNoise(0.1))
    with pytest.raises(ValueError, match="operator"):
        quick_sampler(name, tiny.dx).sample(tiny.prior, bad, 4, make_generator(0))


class NaNPrior:
    """Delegates to a prior but returns NaN from t ≤ 500 on (simulates a diverging network)."""

    def __init__(self, prior):
        self.inner = prior
        self.schedule, self.shape = prior.schedule, prior.shape
        self.value_range, self.differentiable = prior.value_range, True

    def denoise(self, x_t, t):
        out = self.inner.denoise(x_t, t)
        if t <= 500:
            return Denoised(x0=out.x0 * math.nan, eps=out.eps * math.nan)
        return out


@pytest.mark.parametrize("name", [n for n in NAMES if n != "exact"])
def test_nan_during_sampling_is_a_clear_error(name, tiny):
    with pytest.raises(SamplingError, match=name):
        quick_sampler(name, tiny.dx).sample(NaNPrior(tiny.prior), tiny.problem, 4, make_generator(0))


def test_unknown_option_is_rejected():
    for name, cls in SAMPLERS.items():
        with pytest.raises(ValueError, match="unknown option"):
            cls(not_an_option=1)
        assert cls().config == cls.Config(), name


@pytest.mark.parametrize("name", NAMES)
def test_a_batch_of_observations_matches_one_run_per_item(name, tiny):
    """B observations in one call (item-by-item rows, one generator per item) give each item the
    samples of its own run, at the sum of the items' network evaluations."""
    from diffinv.rng import GeneratorBatch

    ys = torch.stack([tiny.problem.y, tiny.problem.y + 0.3, tiny.problem.y - 0.2])
    batch = InverseProblem.batch(tiny.problem.operator, ys, tiny.problem.noise)
    sampler, seeds = quick_sampler(name, tiny.dx), [5, 9, 7]
    res = sampler.sample(tiny.prior, batch, 3, GeneratorBatch.of_seeds(seeds), dtype=torch.float64)
    assert res.samples.shape == (3, 3, *tiny.prior.shape)
    nfe = 0
    for i, seed in enumerate(seeds):
        one = sampler.sample(tiny.prior, batch.item(i), 3, make_generator(seed), dtype=torch.float64)
        torch.testing.assert_close(res.samples[i], one.samples, rtol=1e-6, atol=1e-8)
        nfe += one.nfe_forward
    assert res.nfe_forward == nfe
