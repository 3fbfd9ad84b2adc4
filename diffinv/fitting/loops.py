r"""Fit θ = (noise level, operator parameters) by maximum evidence while sampling.

θ̂ = argmax_θ log p(y | θ), with the gradient of Fisher's identity estimated from posterior samples
and a stochastic Newton step (:mod:`diffinv.fitting.estimator`), in u = log θ. Two loops, after
Marion, Korba, Bartlett, Blondel, De Bortoli, Doucet, Llinares-López, Paquette, Berthet, *Implicit
Diffusion: efficient optimization through stochastic sampling* (2024):

* ``nested`` (their Algorithm 1): each step k runs the sampler to the end at θ_k (b samples), then
  updates θ. Works with every sampler. Cost per θ update: one full run of b samples.
* ``single`` (their Algorithm 3 with a queue of M trajectories, the Algorithm 6 variant when M < n):
  trajectories of b rows enter a queue at every iteration, every trajectory in the queue advances
  L = ⌈n/M⌉ of the sampler's n steps under the *current* θ, and the one that reaches the end gives
  the samples of the θ update. θ moves while the trajectories run, so a finished trajectory has
  seen the last M values of θ (the method's bias; it vanishes as θ settles). Needs a stepwise
  sampler (:mod:`diffinv.fitting.steppers`). Once the queue is full, one iteration costs M·L·b ≈ n·b
  evaluations, as much as a nested step: the gain of the method is that the M trajectories of an
  iteration are independent (one parallel call each on an accelerator, not n sequential ones),
  and that no update waits for a full run.

Both loops are local ascents: where log p(y | θ) has several maxima (a gain of a lattice-like prior:
g and 2g explain y almost equally) they end at the maximum of the basin they start in
(benchmarks/results/fit_gmm/). Both loops take ``steps`` θ updates; θ̂ is exp of the mean of u over
the last ``average`` share of them (Polyak averaging), with a Monte Carlo standard error: the larger
of a batch-means estimate over the iterates and the gradient noise propagated through the
curvature, √(Σ_k (SE(ḡ_k)/H_k)²)/K (delta method: SE(θ̂) = θ̂ SE(ū)). The samples returned are a
fresh run of the sampler at θ̂ with the generator of ``seed`` (the loop draws from
``seed + FIT_SEED_OFFSET``): the samples a plain solve with θ̂ typed in would give.

Shapes: samples (num_samples, *prior.shape); ``trace`` one dict per update: step, θ, ḡ, SE(ḡ).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from diffinv.fitting.estimator import batch_means_se, evidence_terms, newton_step
from diffinv.fitting.params import ParametricProblem
from diffinv.fitting.steppers import draw_samples, is_stepwise
from diffinv.priors.base import CountingPrior, DiffusionPrior
from diffinv.rng import make_generator
from diffinv.samplers.base import InverseProblem

FIT_SEED_OFFSET = 2_000_029  # the fitting loop draws from seed + offset; the final run from seed itself


@dataclass(frozen=True)
class FitConfig:
    """Fitting settings: loop, θ updates, samples per update, queue length, step rate, averaging."""

    method: Literal["single", "nested"] = "single"
    steps: int = 40
    samples_per_step: int = 8
    slots: int = 10
    rate: float = 1.0
    average: float = 0.5

    def __post_init__(self) -> None:
        if self.method not in ("single", "nested"):
            raise ValueError(f"fit-method: expected single or nested, got {self.method!r}")
        for name in ("steps", "samples_per_step", "slots"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"fit-{name.replace('_', '-')}: expected a positive integer, got {value!r}")
        if self.steps < 4:
            raise ValueError(f"fit-steps: expected at least 4 updates (θ̂ averages the last ones), "
                             f"got {self.steps}")
        if not 0 < self.rate <= 2:
            raise ValueError(f"fit-rate: expected a number in (0, 2], got {self.rate}")
        if not 0 < self.average <= 1:
            raise ValueError(f"fit-average: expected a share in (0, 1], got {self.average}")


@dataclass
class FitResult:
    """θ̂ (name → value), its standard errors, the trace, the samples at θ̂ and the cost."""

    values: dict[str, float]
    se: dict[str, float]
    trace: list[dict[str, Any]]
    samples: Tensor
    problem: InverseProblem
    nfe_forward: int
    nfe_backward: int
    fit_nfe_forward: int
    fit_nfe_backward: int
    seconds: float
    prior_seconds: float
    method: str
    config: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The JSON record of metrics.json: values, SEs, trace and cost (no samples)."""
        return {"method": self.method, "values": self.values, "se": self.se, "trace": self.trace,
                "fit_nfe_forward": self.fit_nfe_forward, "fit_nfe_backward": self.fit_nfe_backward,
                "seconds": self.seconds, "config": self.config}


def fit_parameters(prior: DiffusionPrior, parametric: ParametricProblem, sampler: Any,
                   config: FitConfig | None = None, num_samples: int = 4, seed: int = 0,
                   device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                   progress: Callable[[float], None] | None = None) -> FitResult:
    """Fit the free parameters of ``parametric`` by maximum evidence (module docstring) and sample at θ̂;
    ``progress`` gets the share of updates done."""
    config = config or FitConfig()
    device = torch.device(device)
    if config.method == "single" and not is_stepwise(sampler):
        raise ValueError(f"fit-method: the single loop needs a stepwise sampler (dps, pgdm); "
                         f"{getattr(sampler, 'name', type(sampler).__name__)} runs only as a whole "
                         "(use --fit-method nested)")
    counting = CountingPrior(prior)
    generator = make_generator(seed + FIT_SEED_OFFSET, device)  # the loop's draws
    start = time.perf_counter()
    loop = _single if config.method == "single" else _nested
    trace = loop(counting, parametric, sampler, config, generator, device, dtype, progress)
    fit_forward, fit_backward = counting.stats.forward, counting.stats.backward
    us = torch.tensor([[math.log(v) for v in row["theta"].values()] for row in trace], dtype=torch.float64)
    tail = us[-max(2, round(config.average * len(trace))):]
    u_hat = tail.mean(0)
    # Monte Carlo error of ū: the larger of batch means over the iterates and the gradient noise of the
    # averaged updates propagated through the curvature (SE(ḡ)/H per update, averaged over the tail)
    tail_rows = trace[-tail.shape[0]:]
    grad_se = torch.tensor([row["grad_se"] for row in tail_rows], dtype=torch.float64)
    curv = torch.tensor([row["curvature"] for row in tail_rows], dtype=torch.float64)
    se_u = torch.maximum(batch_means_se(tail).nan_to_num(0.0),
                         (grad_se / curv).pow(2).sum(0).sqrt() / tail.shape[0])
    names = parametric.names
    values = {n: math.exp(float(v)) for n, v in zip(names, u_hat, strict=True)}
    se = {n: values[n] * float(s) for n, s in zip(names, se_u, strict=True)}
    final = parametric.at(u_hat.tolist())
    # the returned samples: a plain run at θ̂ with the generator of ``seed``, as a solve with θ̂ given
    samples = draw_samples(sampler, counting, final, num_samples, make_generator(seed, device), device, dtype)
    return FitResult(values=values, se=se, trace=trace, samples=samples, problem=final,
                     nfe_forward=counting.stats.forward, nfe_backward=counting.stats.backward,
                     fit_nfe_forward=fit_forward, fit_nfe_backward=fit_backward,
                     seconds=time.perf_counter() - start, prior_seconds=counting.stats.seconds,
                     method=config.method,
                     config={"method": config.method, "steps": config.steps,
                             "samples_per_step": config.samples_per_step, "slots": config.slots,
                             "rate": config.rate, "average": config.average,
                             "start": {p.name: p.start for p in parametric.params},
                             "bounds": {p.name: [p.lower, p.upper] for p in parametric.params}})


def _update(parametric: ParametricProblem, u: list[float], samples: Tensor, config: FitConfig,
            trace: list[dict[str, Any]], counting: CountingPrior,
            progress: Callable[[float], None] | None) -> list[float]:
    terms = evidence_terms(parametric, u, samples)
    u = newton_step(parametric, u, terms, config.rate)
    trace.append({"step": len(trace) + 1, "theta": parametric.values(u),
                  "grad": terms.grad.tolist(), "grad_se": terms.grad_se.tolist(),
                  "curvature": terms.curvature.tolist(),
                  "nfe_forward": counting.stats.forward, "nfe_backward": counting.stats.backward})
    if progress is not None:
        progress(min(1.0, len(trace) / config.steps))
    return u


def _nested(counting: CountingPrior, parametric: ParametricProblem, sampler: Any, config: FitConfig,
            generator: torch.Generator, device: torch.device, dtype: torch.dtype,
            progress: Callable[[float], None] | None = None) -> list[dict[str, Any]]:
    """Algorithm 1: a full run at θ_k, then one update."""
    u, trace = parametric.start(), []
    for _ in range(config.steps):
        problem = parametric.at(u)
        samples = draw_samples(sampler, counting, problem, config.samples_per_step, generator, device, dtype)
        u = _update(parametric, u, samples, config, trace, counting, progress)
    return trace


def _single(counting: CountingPrior, parametric: ParametricProblem, sampler: Any, config: FitConfig,
            generator: torch.Generator, device: torch.device, dtype: torch.dtype,
            progress: Callable[[float], None] | None = None) -> list[dict[str, Any]]:
    """Algorithm 3 / 6: a queue of trajectories advanced under the current θ (module docstring)."""
    n = len(sampler.step_pairs(counting))
    slots = min(config.slots, n)
    per_iteration = -(-n // slots)
    b = config.samples_per_step
    u, trace = parametric.start(), []
    queue: list[list[Any]] = []  # [x, next step]
    while len(trace) < config.steps:
        ctx = sampler.prepare(counting, parametric.at(u), b, device, dtype)  # everything that depends on θ
        queue.append([sampler.start(counting, ctx, b, generator), 0])
        for slot in queue:
            for _ in range(per_iteration):
                if slot[1] == n:
                    break
                slot[0] = sampler.advance(counting, ctx, slot[0], slot[1], generator)
                slot[1] += 1
        done = [slot for slot in queue if slot[1] == n]
        queue = [slot for slot in queue if slot[1] < n]
        for slot in done:
            u = _update(parametric, u, slot[0].detach().cpu(), config, trace, counting, progress)
    return trace
