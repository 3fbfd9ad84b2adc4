r"""Samplers as sequences of steps, for the single-loop estimator (:mod:`diffinv.fitting.loops`).

A *stepwise* sampler runs a fixed list of steps k = 0 … n−1 (``step_pairs(prior)``, pairs of times
t → s) through four methods; its ``_run`` is these steps in a row, so a fitting loop and a plain
solve share the code:

    ctx = prepare(prior, problem, per_item, device, dtype)   # what depends on θ (A, y, σ_y)
    x = start(prior, ctx, rows, generator)                   # (rows, *shape)
    x = advance(prior, ctx, x, k, generator)                 # step k, for k = 0 … n−1

DPS and ΠGDM implement them. :class:`PosteriorDiffusion` is the exact reference for analytic priors:
the reverse DDPM (η = 1) of the closed-form posterior mixture p(x | y, θ) itself, whose denoiser
E[x₀ | x_t, y, θ] is exact; with θ fixed its samples are posterior samples up to the discretisation
(1000 steps by default). It isolates the fitting loop's own error (stale θ, Monte Carlo noise) from
a sampler's bias.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from diffinv.priors.analytic import GaussianMixturePrior
from diffinv.priors.base import CountingPrior
from diffinv.rng import randn
from diffinv.samplers.base import InverseProblem, Sampler
from diffinv.schedules import bridge_coefficients, ddim_sample, grid_pairs, timestep_grid


class Stepwise(Protocol):
    """The step interface (module docstring)."""

    def step_pairs(self, prior: CountingPrior) -> list[tuple[int, int]]: ...

    def prepare(self, prior: CountingPrior, problem: InverseProblem, per_item: int, device: torch.device,
                dtype: torch.dtype) -> Any: ...

    def start(self, prior: CountingPrior, ctx: Any, rows: int,
              generator: torch.Generator | None) -> Tensor: ...

    def advance(self, prior: CountingPrior, ctx: Any, x: Tensor, k: int,
                generator: torch.Generator | None) -> Tensor: ...


def is_stepwise(sampler: Any) -> bool:
    return all(callable(getattr(sampler, m, None)) for m in ("step_pairs", "prepare", "start", "advance"))


@dataclass
class _Posterior:
    prior: GaussianMixturePrior
    pairs: list[tuple[int, int]]


class PosteriorDiffusion:
    """Reverse DDPM of the exact posterior of a Gaussian-mixture prior (module docstring).

    ``name`` "posterior-diffusion"; one evaluation of the posterior denoiser per row and step is
    counted as a forward evaluation.
    """

    name = "posterior-diffusion"

    def __init__(self, num_steps: int = 1000) -> None:
        self.num_steps = int(num_steps)

    def step_pairs(self, prior: CountingPrior) -> list[tuple[int, int]]:
        return grid_pairs(timestep_grid(prior.schedule.num_timesteps, self.num_steps))

    def prepare(self, prior: CountingPrior, problem: InverseProblem, per_item: int, device: torch.device,
                dtype: torch.dtype) -> _Posterior:
        inner = getattr(prior, "prior", prior)
        if not isinstance(inner, GaussianMixturePrior):
            raise ValueError(f"sampler: posterior-diffusion needs a Gaussian-mixture prior, got "
                             f"{type(inner).__name__}")
        if problem.batched:
            raise ValueError("problem: posterior-diffusion takes one observation")
        post = inner.posterior(problem.operator.matrix(torch.float64), problem.y.reshape(-1), problem.sigma_y)
        return _Posterior(GaussianMixturePrior(post, inner.schedule), self.step_pairs(prior))

    def start(self, prior: CountingPrior, ctx: _Posterior, rows: int,
              generator: torch.Generator | None) -> Tensor:
        return randn((rows, *prior.shape), generator, like=torch.empty((), dtype=torch.float64))

    def advance(self, prior: CountingPrior, ctx: _Posterior, x: Tensor, k: int,
                generator: torch.Generator | None) -> Tensor:
        t, s = ctx.pairs[k]
        sched = prior.schedule
        coeffs = bridge_coefficients(sched.alpha_bar_at(t), sched.alpha_bar_at(s), 1.0)
        if isinstance(prior, CountingPrior):
            prior.stats.forward += x.shape[0]
        return ddim_sample(x, ctx.prior.denoise(x, t).x0, coeffs, generator)


def run_steps(stepper: Any, prior: CountingPrior, problem: InverseProblem, rows: int,
              generator: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> Tensor:
    """A whole run of a stepwise sampler: (rows, *shape)."""
    ctx = stepper.prepare(prior, problem, rows, device, dtype)
    x = stepper.start(prior, ctx, rows, generator)
    for k in range(len(stepper.step_pairs(prior))):  # once: the grid is a host computation
        x = stepper.advance(prior, ctx, x, k, generator)
    return x.detach()


def draw_samples(sampler: Any, prior: CountingPrior, problem: InverseProblem, rows: int,
                 generator: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``rows`` samples (on the CPU) of a whole run of ``sampler`` (a :class:`Sampler` or a stepwise one),
    its network evaluations added to ``prior``'s counts."""
    if isinstance(sampler, Sampler):  # it counts its own evaluations: add them to the fit's
        result = sampler.sample(prior.prior, problem, rows, generator=generator, device=device, dtype=dtype)
        prior.stats.forward += result.nfe_forward
        prior.stats.backward += result.nfe_backward
        prior.stats.forward_seconds += result.prior_seconds
        return result.samples
    return run_steps(sampler, prior, problem, rows, generator, device, dtype).cpu()
