r"""DPS — Diffusion Posterior Sampling (Chung, Kim, McCann, Klasky, Ye, ICLR 2023, Algorithm 1).

Sketch: on a descending grid t_{n−1} > … > t_0 = 0 → clean, from x ~ N(0, I):

    x̂0 = x̂0(x_t, t)                                   (1 forward pass, with autograd)
    r   = y − A x̂0,   ζ_t = ζ / ‖r‖                    (norm per sample)
    x_s = c_x x_t + c_0 x̂0 + σ_{t→s} z  −  ζ_t ∇_{x_t} ‖r‖²   (DDIM(η) step + guidance; 1 backward)

The last step (0 → clean) returns x̂0 minus one more guidance step (the DCPS / MGPS variant of the
paper's "return x̂0"). Cost: n forward + n backward evaluations per sample.

``likelihood_cap`` κ (0 = off) bounds the step by κ times the score-consistent one: adding
∇ log N(y; A x̂0, Σ_t) to the prior score moves x̂0 by (1 − ᾱ_t)/√ᾱ_t times it, hence x_s by c_0 times that.
With A = U S Vᵀ and Σ_t = σ_y² I + (1 − ᾱ_t) A Aᵀ (ΠGDM's r_t² = 1 − ᾱ_t), diagonal in U, the step is taken
per spectral direction i of y as the smaller of the two:

    x_s = DDIM(x_t, x̂0) − ∇_{x_t} Σ_i ζ_{t,i} (Uᵀ r)_i²,
    ζ_{t,i} = min(ζ / ‖r‖,  κ c_0 (1 − ᾱ_t) / (2 √ᾱ_t (σ_y² + (1 − ᾱ_t) s_i²)))      (ζ_{t,i} held fixed)

(an operator without an SVD uses s_max for every direction, from power iteration). The normalised step is
far above the bound once t is small, since it shrinks with neither σ_y nor the step length; it pins A x̂0
to y and so over-fits the noise (measured in ``diffinv/benchmarks/gmm_presets.py``).

Choices (against the paper and the official DPS code, DPS2022/diffusion-posterior-sampling):
* ζ is the paper's ζ' on ∇‖r‖² / ‖r‖; the official code's ``scale`` multiplies ∇‖r‖, so scale = 2ζ.
* ‖r‖ is per sample; the official code takes one norm over the whole batch, coupling samples.
* Fixed variance of the DDIM(η) bridge (η = 1: DDPM β̃_t), not the ADM learned variance.
* x̂0 is clamped to the prior's value range only when ``clip_x0`` is set (official code: clamped).

Notation: ``zeta`` ζ', ``resid`` r = y − A x̂0, ``coeffs`` (c_x, c_0, σ) of the bridge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from diffinv.priors.base import CountingPrior
from diffinv.rng import randn
from diffinv.samplers.base import InverseProblem, Sampler, check_options
from diffinv.samplers.guidance import guided_denoise, per_sample, tweedie_scale
from diffinv.schedules import bridge_coefficients, ddim_sample, grid_pairs, timestep_grid


@dataclass(frozen=True)
class DPSConfig:
    """DPS settings; defaults from the paper (1000 steps, ζ' = 1.0, DDPM η = 1)."""

    num_steps: int = 1000
    eta: float = 1.0
    zeta: float = 1.0
    clip_x0: bool = False
    likelihood_cap: float = 0.0
    antithetic: bool = False  # pair the samples' noise (diffinv.rng.Antithetic): a lower-variance mean

    def __post_init__(self) -> None:
        check_options(self, positive=("num_steps",), unit=("eta",),
                      nonnegative=("zeta", "likelihood_cap"))


class DPSSampler(Sampler):
    """DPS: DDPM/DDIM steps plus the gradient of ‖y − A x̂0(x_t)‖² scaled by ζ/‖y − A x̂0‖ (per sample)."""

    name = "dps"
    Config = DPSConfig
    needs_grad = True

    def _run(self, prior: CountingPrior, problem: InverseProblem, num_samples: int,
             generator: torch.Generator | None, device: torch.device,
             dtype: torch.dtype) -> tuple[Tensor, dict[str, Any]]:
        ctx = self.prepare(prior, problem, num_samples, device, dtype)
        x = self.start(prior, ctx, problem.num_items * num_samples, generator)
        for k in range(len(ctx.pairs)):
            x = self.advance(prior, ctx, x, k, generator)
        return x.detach(), {"residual_norm": torch.stack(ctx.residual_norms).tolist()}

    # the run as steps (:mod:`diffinv.samplers.stepwise`): ``_run`` and the fitting loops share them
    def step_pairs(self, prior: CountingPrior) -> list[tuple[int, int]]:
        return grid_pairs(timestep_grid(prior.schedule.num_timesteps, self.config.num_steps))

    def prepare(self, prior: CountingPrior, problem: InverseProblem, per_item: int, device: torch.device,
                dtype: torch.dtype) -> StepContext:
        y = problem.rows(per_item, device, dtype)
        op = problem.operator.to(device, dtype)
        s2 = None
        if self.config.likelihood_cap > 0:
            if getattr(op, "has_svd", False):  # s_i² per direction of y (0 where A has no singular value)
                sing = problem.operator.original.singulars()
                s2 = op.pad((sing ** 2)[None], op.out_dim)[0].to(device=device, dtype=torch.float64)
            else:
                s2 = torch.full((1,), largest_singular(problem.operator) ** 2, dtype=torch.float64,
                                device=device)
        return StepContext(op, y, self.step_pairs(prior), problem.sigma_y ** 2, s2)

    def start(self, prior: CountingPrior, ctx: StepContext, rows: int,
              generator: torch.Generator | None) -> Tensor:
        return randn((rows, *prior.shape), generator, like=ctx.y.new_empty(()))

    def advance(self, prior: CountingPrior, ctx: StepContext, x: Tensor, k: int,
                generator: torch.Generator | None) -> Tensor:
        """Step k of :meth:`step_pairs` (module docstring): x_t (rows, *shape) → x_s."""
        cfg, (t, s) = self.config, ctx.pairs[k]
        op, y = ctx.op, ctx.y

        coeffs = bridge_coefficients(prior.schedule.alpha_bar_at(t), prior.schedule.alpha_bar_at(s), cfg.eta)
        tiny = torch.finfo(x.dtype).tiny
        if cfg.likelihood_cap > 0:
            abar = prior.schedule.alpha_bar_at(t)
            var = (ctx.sigma2 + (1 - abar) * ctx.s2).clamp_min(1e-30)  # Σ_t's eigenvalues
            bound = (cfg.likelihood_cap * tweedie_scale(coeffs.c_0, abar) / (2 * var)).to(x.dtype)

            def bounded(x_t: Tensor, x0: Tensor) -> tuple[Tensor, Tensor]:
                r = (y - op.A(x0)).reshape(x0.shape[0], -1)
                rb = op.Ut(r.reshape(-1, *op.out_shape)) if ctx.s2.numel() > 1 else r
                norm2 = (r ** 2).sum(-1)
                zeta = torch.minimum((cfg.zeta / norm2.detach().sqrt().clamp_min(tiny))[:, None], bound)
                return (zeta * rb ** 2).sum(-1), norm2.detach()  # Σ_i ζ_{t,i} (Uᵀ r)_i², ‖r‖²

            guided = guided_denoise(prior, x, t, bounded, cfg.clip_x0)
            ctx.residual_norms.append(guided.extra.sqrt().mean())
            return (ddim_sample(x.detach(), guided.x0, coeffs, generator) - guided.grad).detach()

        def objective(x_t: Tensor, x0: Tensor) -> Tensor:
            return ((y - op.A(x0)) ** 2).reshape(x0.shape[0], -1).sum(-1)  # ‖r_i‖² per sample

        guided = guided_denoise(prior, x, t, objective, cfg.clip_x0)  # grad row i = ∇_{x_i} ‖r_i‖²
        norm = guided.value.sqrt()
        zeta = cfg.zeta / norm.clamp_min(tiny)
        step = per_sample(zeta, len(prior.shape))
        ctx.residual_norms.append(norm.mean())  # stays on the device until the end
        return (ddim_sample(x.detach(), guided.x0, coeffs, generator) - step * guided.grad).detach()


@dataclass
class StepContext:
    """What the steps of one run share: A on the device, y rows (rows or 1, *out_shape), the grid's pairs
    (computed once: the grid is a host computation), σ_y² and the s_i² of the step bound."""

    op: Any
    y: Tensor
    pairs: list[tuple[int, int]]
    sigma2: float = 0.0  # σ_y²
    s2: Tensor | None = None  # s_i² per direction of y (out_dim,), or (1,) s_max²; only with likelihood_cap
    residual_norms: list = field(default_factory=list)


def largest_singular(op: Any, iterations: int = 50) -> float:
    """s_max of A: from its SVD where it has one, else power iteration on AᵀA from a fixed start."""
    if getattr(op, "has_svd", False):
        return float(op.singulars().max())
    v = torch.ones(1, *op.in_shape, dtype=torch.float64, device=op.device)
    norm = 0.0
    for _ in range(iterations):
        w = op.At(op.A(v)).double()
        norm = float(w.norm())
        if norm == 0.0:
            return 0.0
        v = w / norm
    return math.sqrt(norm)
