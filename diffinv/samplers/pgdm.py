r"""ΠGDM — Pseudoinverse-Guided Diffusion Models (Song, Vahdat, Mardani, Kautz, ICLR 2023).

Approximating p(x_0 | x_t) ≈ N(x̂0(x_t), r_t² I) gives p(y | x_t) ≈ N(A x̂0, r_t² A Aᵀ + σ_y² I) and the
guidance (samplers.md §3.1, ★, times r_t²)

    g_t = J_tᵀ Aᵀ (A Aᵀ + (σ_y²/r_t²) I)⁻¹ (y − A x̂0),   r_t² = 1 − ᾱ_t  (VP form of σ_t²/(1+σ_t²)),

computed as one vector–Jacobian product: v = Aᵀ(…)⁻¹(y − A x̂0) is detached and ⟨v, x̂0⟩ is
back-propagated to x_t. The sample moves by a DDIM(η) step plus the guidance (ΠG-VP, §3.3):

    x_s = c_x x_t + c_0 x̂0 + σ_{t→s} z + w √ᾱ_s √ᾱ_t g_t.

The bracket uses the operator's SVD when it has one (§3.5: V[s_i(ȳ_i − s_i x̄̂0_i)/(s_i² + σ_y²/r_t²)],
zero where s_i = 0, pitfall S9) and conjugate gradients on A Aᵀ + λ I otherwise. The weight √ᾱ_s√ᾱ_t
is the one of the NVIDIA RED-diff code (``awd``), azula and DCPS / MGPS; σ_y is used (unlike RED-diff,
S10). Cost: 1 forward + 1 backward per step. The last step (0 → clean) returns x̂0 + w √ᾱ_0 g_0.

Notation: ``lam`` σ_y²/r_t², ``weight`` w, ``v`` Aᵀ(A Aᵀ + λ I)⁻¹(y − A x̂0), ``g`` g_t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from diffinv.operators.base import LinearOperator, SVDOperator
from diffinv.operators.solve import solve_normal
from diffinv.priors.base import CountingPrior
from diffinv.rng import randn
from diffinv.samplers.base import InverseProblem, Sampler
from diffinv.samplers.guidance import guided_x0
from diffinv.schedules import bridge_coefficients, ddim_sample, grid_pairs, timestep_grid


@dataclass(frozen=True)
class PGDMConfig:
    """ΠGDM settings: 100 DDIM steps with η = 1 (RED-diff scripts / DCPS), weight w = 1, start from noise."""

    num_steps: int = 100
    eta: float = 1.0
    weight: float = 1.0
    init: Literal["noise", "pinv"] = "noise"
    cg_iterations: int = 50
    clip_x0: bool = False


def pgdm_vector(op: LinearOperator, y: Tensor, x0: Tensor, lam: float, cg_iterations: int) -> Tensor:
    """v = Aᵀ (A Aᵀ + λ I)⁻¹ (y − A x̂0); y (1, *out_shape), x0 (B, *in_shape) → (B, *in_shape)."""
    if isinstance(op, SVDOperator):
        s = op.singulars().to(x0)
        k = s.numel()
        y_bar = op.Ut(y)[:, :k]  # (1, k)
        x_bar = op.Vt(x0)[:, :k]  # (B, k)
        denom = s**2 + lam
        keep = (op.inverse_singulars().to(x0) > 0) & (denom > 0)
        coef = torch.where(keep, s / torch.where(keep, denom, torch.ones_like(denom)), torch.zeros_like(s))
        v_bar = coef * (y_bar - s * x_bar)
        return op.V(op.pad(v_bar, op.in_dim))
    resid = y - op.A(x0)
    return op.At(solve_normal(op, resid, lam, max_iter=cg_iterations))


class PGDMSampler(Sampler):
    """ΠGDM: DDIM steps guided by J_tᵀ Aᵀ (A Aᵀ + σ_y²/r_t² I)⁻¹ (y − A x̂0) (SVD, or CG without one)."""

    name = "pgdm"
    Config = PGDMConfig
    needs_grad = True

    def _run(self, prior: CountingPrior, problem: InverseProblem, num_samples: int,
             generator: torch.Generator | None, device: torch.device,
             dtype: torch.dtype) -> tuple[Tensor, dict[str, Any]]:
        cfg = self.config
        if cfg.init not in ("noise", "pinv"):
            raise ValueError(f"init: expected 'noise' or 'pinv', got {cfg.init!r}")
        op, y, sched = problem.operator, problem.to(device, dtype), prior.schedule
        grid = timestep_grid(sched.num_timesteps, cfg.num_steps)
        x = randn((num_samples, *prior.shape), generator, like=y.new_empty(()))
        if cfg.init == "pinv":
            ab = sched.alpha_bar_at(grid[0])
            x = math.sqrt(ab) * op.pinv(y) + math.sqrt(1 - ab) * x
        for t, s in grid_pairs(grid):
            ab_t, ab_s = sched.alpha_bar_at(t), sched.alpha_bar_at(s)
            lam = problem.sigma_y**2 / (1 - ab_t)
            with torch.enable_grad():
                x_t = x.detach().requires_grad_(True)
                x0 = guided_x0(prior, x_t, t, cfg.clip_x0)
                v = pgdm_vector(op, y, x0.detach(), lam, cfg.cg_iterations)
                (g,) = torch.autograd.grad((v * x0).sum(), x_t)
            coeffs = bridge_coefficients(ab_t, ab_s, cfg.eta)
            x = ddim_sample(x.detach(), x0.detach(), coeffs, generator)
            x = x + cfg.weight * math.sqrt(ab_s * ab_t) * g
        return x.detach(), {}
