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
* ``single`` with ``restart`` r < 1 (chains): a finished trajectory is not dropped but re-noised to the
  time of step k* = n − rn of the grid (:func:`renoise`) and continues from there under the new θ, so an
  update costs r·n·b evaluations instead of n·b, like the seed's Algorithm 2, whose Langevin chain runs on
  across θ updates. For an exact sampler the re-noise-and-denoise cycle leaves p(x | y, θ) invariant; it
  mixes more slowly the smaller r is, and a chain remembers the θ it came from, so while the evidence
  gradient is more than ``RESTART_Z`` SEs from zero (θ still drifting) a chain restarts from noise instead.
  With ``slots`` = 1 it is one chain (measured: benchmarks/results/fit_gmm/, fit_images_chain/).

Both loops are local ascents: where log p(y | θ) has several maxima (a gain of a lattice-like prior:
g and 2g explain y almost equally) they end at the maximum of the basin they start in
(benchmarks/results/fit_gmm/). ``starts`` = K > 1 runs K local fits (the user's start and K − 1
spread over the bounds) and keeps the one with the largest MCGDiff evidence estimate
(:mod:`diffinv.fitting.evidence`; K times the cost, plus the estimates).
Both loops take ``steps`` θ updates. The nested loop's step curvature is lowered to the secant slope of
its earlier gradients where that is smaller (:func:`estimator.secant_curvature`: where the missing
information dominates, the Louis curvature's floor made the ascent EM-slow). θ̂ is exp of û, the mean of
the points of the last ``average`` share of updates plus one Newton step on their mean gradient, with the
larger of its gradient-noise SE and an AR(1) long-run SE of the points
(:func:`estimator.corrected_average`; delta method: SE(θ̂) = θ̂ SE(û)). The samples returned are a
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

from diffinv.fitting.estimator import (
    SECANT_WINDOW,
    corrected_average,
    evidence_terms,
    lagged_curvature,
    newton_step,
    secant_curvature,
)
from diffinv.fitting.evidence import log_evidence, start_points
from diffinv.fitting.params import ParametricProblem
from diffinv.fitting.steppers import draw_samples, is_stepwise
from diffinv.priors.base import CountingPrior, DiffusionPrior
from diffinv.rng import make_generator, randn
from diffinv.samplers.base import InverseProblem

RESTART_Z = 2.0  # a chain restarts from noise while some evidence gradient is this many SEs from zero
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
    restart: float = 1.0  # single loop: share of the steps a finished trajectory re-runs (1 = from noise)
    starts: int = 1  # local fits from this many starts; the best by an evidence estimate (fitting.evidence)

    def __post_init__(self) -> None:
        if self.method not in ("single", "nested"):
            raise ValueError(f"fit-method: expected single or nested, got {self.method!r}")
        for name in ("steps", "samples_per_step", "slots", "starts"):
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
        if not 0 < self.restart <= 1:
            raise ValueError(f"fit-restart: expected a share in (0, 1], got {self.restart}")


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
    candidates: list[dict[str, Any]] = []
    if config.starts == 1:
        trace = loop(counting, parametric, sampler, config, generator, device, dtype, progress)
    else:  # local fits from several starts, the best by an SMC evidence estimate (fitting.evidence)
        best = None
        for k, problem_k in enumerate(start_points(parametric, config.starts)):
            share = (lambda done, k=k: progress((k + done) / config.starts)) if progress else None
            trace_k = loop(counting, problem_k, sampler, config, generator, device, dtype, share)
            values_k, se_k, u_k = _estimate(trace_k, config, parametric)
            log_ev, spread = log_evidence(counting, parametric.at(u_k), generator, device, dtype)
            candidates.append({"start": {p.name: p.start for p in problem_k.params}, "values": values_k,
                               "se": se_k, "log_evidence": log_ev, "log_evidence_spread": spread,
                               "nfe_forward": counting.stats.forward})
            if best is None or log_ev > best[0]:
                best = (log_ev, trace_k)
        trace = best[1]
    fit_forward, fit_backward = counting.stats.forward, counting.stats.backward
    values, se, u_hat = _estimate(trace, config, parametric)
    final = parametric.at(u_hat)
    # the returned samples: a plain run at θ̂ with the generator of ``seed``, as a solve with θ̂ given
    samples = draw_samples(sampler, counting, final, num_samples, make_generator(seed, device), device, dtype)
    return FitResult(values=values, se=se, trace=trace, samples=samples, problem=final,
                     nfe_forward=counting.stats.forward, nfe_backward=counting.stats.backward,
                     fit_nfe_forward=fit_forward, fit_nfe_backward=fit_backward,
                     seconds=time.perf_counter() - start, prior_seconds=counting.stats.seconds,
                     method=config.method,
                     config={"method": config.method, "steps": config.steps,
                             "samples_per_step": config.samples_per_step, "slots": config.slots,
                             "rate": config.rate, "average": config.average, "restart": config.restart,
                             "starts": config.starts, "candidates": candidates,
                             "start": {p.name: p.start for p in parametric.params},
                             "bounds": {p.name: [p.lower, p.upper] for p in parametric.params}})


def _estimate(trace: list[dict[str, Any]], config: FitConfig, parametric: ParametricProblem
              ) -> tuple[dict[str, float], dict[str, float], list[float]]:
    """θ̂, its SE and û from the averaged tail: the mean of its points plus a Newton step on its mean
    gradient (:func:`estimator.corrected_average`), clipped to the bounds."""
    tail = trace[-tail_length(config):]
    us = torch.tensor([[math.log(v) for v in row["grad_at"].values()] for row in tail], dtype=torch.float64)
    gs, ses, curv = (torch.tensor([row[key] for row in tail], dtype=torch.float64)
                     for key in ("grad", "grad_se", "curvature"))
    u_hat, se_u = corrected_average(us, gs, ses, curv)
    u_hat = [p.clip_log(float(v)) for p, v in zip(parametric.params, u_hat, strict=True)]
    names = parametric.names
    values = {n: math.exp(v) for n, v in zip(names, u_hat, strict=True)}
    se = {n: values[n] * float(s) for n, s in zip(names, se_u, strict=True)}
    return values, se, u_hat


def _update(parametric: ParametricProblem, u: list[float], samples: Tensor, config: FitConfig,
            trace: list[dict[str, Any]], counting: CountingPrior,
            progress: Callable[[float], None] | None, secant: bool = True) -> list[float]:
    terms = evidence_terms(parametric, u, samples)
    # burn-in: the current curvature (steps shrink at once where θ enters a narrow peak); the averaged
    # tail: the lagged one, whose fixed point is unbiased (estimator.lagged_curvature)
    in_tail = len(trace) >= burn_in(config)
    louis = (lagged_curvature([row["curvature_estimate"] for row in trace[burn_in(config):]],
                              terms.curvature) if in_tail else terms.curvature)
    curvature = louis
    if secant:  # lowered to the secant slope of the earlier gradients where they show it smaller
        points = [([math.log(v) for v in row["grad_at"].values()], row["grad"], row["grad_se"])
                  for row in trace]
        previous = torch.tensor(trace[-1]["curvature"], dtype=torch.float64) if trace else None
        window = max(SECANT_WINDOW, len(trace) - burn_in(config))  # the tail: every tail point
        curvature = secant_curvature(points, louis, terms.complete_info, terms.grad, previous, window)
    at = parametric.values(u)
    u = newton_step(parametric, u, terms, config.rate, curvature)
    trace.append({"step": len(trace) + 1, "theta": parametric.values(u), "grad_at": at,
                  "grad": terms.grad.tolist(), "grad_se": terms.grad_se.tolist(),
                  "curvature": curvature.tolist(), "curvature_estimate": terms.curvature.tolist(),
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
    """Algorithm 3 / 6: a queue of trajectories advanced under the current θ (module docstring); with
    ``restart`` < 1 the finished trajectories are re-noised and continue as chains (:func:`renoise`)."""
    pairs = sampler.step_pairs(counting)
    n = len(pairs)
    slots = min(config.slots, n)
    reentry = restart_step(n, config.restart)
    per_iteration = -(-(n - reentry) // slots)
    b = config.samples_per_step
    u, trace = parametric.start(), []
    queue: list[list[Any]] = []  # [x, next step]
    while len(trace) < config.steps:
        ctx = sampler.prepare(counting, parametric.at(u), b, device, dtype)  # everything that depends on θ
        if reentry == 0 or len(queue) < slots:  # chains: the queue fills once, then its slots are reused
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
            # no secant: a trajectory's ḡ is from samples that saw the last M values of θ, not u alone
            # (with it, the test gain fit from 0.25 overshot into the basin of 2θ*)
            u = _update(parametric, u, slot[0].detach().cpu(), config, trace, counting, progress,
                        secant=False)
            if reentry:
                row = trace[-1]
                drifting = any(abs(g) > RESTART_Z * se
                               for g, se in zip(row["grad"], row["grad_se"], strict=True))
                if drifting:  # θ still moves: the chain's memory would hold it back
                    queue.append([sampler.start(counting, ctx, b, generator), 0])
                else:
                    queue.append([renoise(counting, slot[0], pairs[reentry][0], generator), reentry])
    return trace


def tail_length(config: FitConfig) -> int:
    """The number of final updates that θ̂ averages (at least 2)."""
    return max(2, round(config.average * config.steps))


def burn_in(config: FitConfig) -> int:
    """The number of updates before the averaged tail."""
    return config.steps - tail_length(config)


def restart_step(n: int, restart: float) -> int:
    """The step k* = n − round(restart · n) at which a re-noised chain re-enters (0: restart from noise)."""
    return 0 if restart >= 1 else min(n - 1, max(1, n - round(restart * n)))


def renoise(prior: CountingPrior, x0: Tensor, t: int, generator: torch.Generator | None) -> Tensor:
    r"""x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε: a finished sample sent back to time t of the sampler's grid.

    If x0 ~ p(x | y, θ) and the sampler from t on were exact, the result would again be a sample of
    p(x | y, θ): the forward noising of a posterior sample is the posterior's diffused law at t, and the
    reverse diffusion of the posterior maps it back. So the chain x0 → x_t → x0' leaves p(x | y, θ)
    invariant and costs only the steps after t; for an approximate sampler (DPS, ΠGDM) it is that sampler
    started at t from a warm state. This is the continuing dynamics of the seed's Algorithm 2 (a Langevin
    chain kept across θ updates) carried over to diffusion samplers."""
    a = prior.schedule.alpha_bar_at(t)
    return a**0.5 * x0 + (1 - a) ** 0.5 * randn(x0.shape, generator, like=x0)
