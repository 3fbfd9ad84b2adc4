r"""DPS — Diffusion Posterior Sampling (Chung, Kim, McCann, Klasky, Ye, ICLR 2023, Algorithm 1).

Sketch: on a descending grid t_{n−1} > … > t_0 = 0 → clean, from x ~ N(0, I):

    x̂0 = x̂0(x_t, t)                                   (1 forward pass, with autograd)
    r   = y − A x̂0,   ζ_t = ζ / ‖r‖                    (norm per sample)
    x_s = c_x x_t + c_0 x̂0 + σ_{t→s} z  −  ζ_t ∇_{x_t} ‖r‖²   (DDIM(η) step + guidance; 1 backward)

The last step (0 → clean) returns x̂0 minus one more guidance step (the DCPS / MGPS variant of the
paper's "return x̂0"). Cost: n forward + n backward evaluations per sample.

Choices (samplers.md §2.3, §2.5, pitfalls S3–S6):
* ζ is the paper's ζ' on ∇‖r‖² / ‖r‖; the official code's ``scale`` multiplies ∇‖r‖, so scale = 2ζ.
* ‖r‖ is per sample; the official code takes one norm over the whole batch, coupling samples.
* Fixed variance of the DDIM(η) bridge (η = 1: DDPM β̃_t), not the ADM learned variance.
* x̂0 is clamped to the prior's value range only when ``clip_x0`` is set (official code: clamped).

Notation: ``zeta`` ζ', ``resid`` r = y − A x̂0, ``coeffs`` (c_x, c_0, σ) of the bridge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from diffinv.priors.base import CountingPrior
from diffinv.rng import randn
from diffinv.samplers.base import InverseProblem, Sampler, check_options
from diffinv.samplers.guidance import guided_denoise, per_sample
from diffinv.schedules import bridge_coefficients, ddim_sample, grid_pairs, timestep_grid


@dataclass(frozen=True)
class DPSConfig:
    """DPS settings; defaults from the paper (1000 steps, ζ' = 1.0, DDPM η = 1)."""

    num_steps: int = 1000
    eta: float = 1.0
    zeta: float = 1.0
    clip_x0: bool = False

    def __post_init__(self) -> None:
        check_options(self, positive=("num_steps",), unit=("eta",), nonnegative=("zeta",))


class DPSSampler(Sampler):
    """DPS: DDPM/DDIM steps plus the gradient of ‖y − A x̂0(x_t)‖² scaled by ζ/‖y − A x̂0‖ (per sample)."""

    name = "dps"
    Config = DPSConfig
    needs_grad = True

    def _run(self, prior: CountingPrior, problem: InverseProblem, num_samples: int,
             generator: torch.Generator | None, device: torch.device,
             dtype: torch.dtype) -> tuple[Tensor, dict[str, Any]]:
        cfg = self.config
        op, y = problem.operator.to(device, dtype), problem.rows(num_samples, device, dtype)
        x = randn((problem.num_items * num_samples, *prior.shape), generator, like=y.new_empty(()))

        def objective(x_t: Tensor, x0: Tensor) -> Tensor:
            return ((y - op.A(x0)) ** 2).reshape(x0.shape[0], -1).sum(-1)  # ‖r_i‖² per sample

        residual_norms = []
        for t, s in grid_pairs(timestep_grid(prior.schedule.num_timesteps, cfg.num_steps)):
            coeffs = bridge_coefficients(prior.schedule.alpha_bar_at(t), prior.schedule.alpha_bar_at(s),
                                         cfg.eta)
            guided = guided_denoise(prior, x, t, objective, cfg.clip_x0)  # grad row i = ∇_{x_i} ‖r_i‖²
            norm = guided.value.sqrt()
            step = per_sample(cfg.zeta / norm.clamp_min(torch.finfo(dtype).tiny), len(prior.shape))
            x = ddim_sample(x.detach(), guided.x0, coeffs, generator) - step * guided.grad
            residual_norms.append(norm.mean())  # stays on the device until the end
        return x.detach(), {"residual_norm": torch.stack(residual_norms).tolist()}
