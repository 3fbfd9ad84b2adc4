r"""Pieces shared by the guided samplers (DPS, ΠGDM, DCPS, TDS): written once, used by all.

* :func:`guided_denoise` — the network work of one guidance step: x̂0(x_t) with autograd and the
  gradient ∇_{x_t} f(x_t, x̂0(x_t)) of a per-sample objective f (1 forward + 1 backward per item);
* :class:`MeasurementFit` — for the Gaussian surrogate likelihood p̃(y | x_t) = N(y; A x̂0, Σ),
  Σ = σ_y² I + τ² A Aᵀ (ΠGDM with τ² = r_t², TDS with τ² = (1 − ᾱ_t)/ᾱ_t), the quadratic form
  q = rᵀ Σ⁻¹ r and the vector v = Aᵀ Σ⁻¹ r of the residual r = y − A x̂0; by the SVD when the
  operator has one (ȳ = Uᵀy, x̄ = Vᵀx̂0, r̄_i = ȳ_i − s_i x̄_i, Σ diagonal with σ_y² + τ² s_i²), by
  conjugate gradients on (A Aᵀ + λ I), λ = σ_y²/τ², otherwise. ∇_{x̂0} (−½ q) = v, so the guidance
  gradient of log p̃ is the vector–Jacobian product ⟨v, x̂0⟩ back-propagated to x_t with v detached.
  Spectral coordinates without an observed partner (s⁺_i = 0) carry no gradient (masked, so
  σ_y = 0 gives no 0/0); they enter q with σ_y² alone (a constant across particles).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from diffinv.operators.base import LinearOperator, SVDOperator
from diffinv.operators.solve import solve_normal
from diffinv.operators.spectral import SpectralView
from diffinv.priors.base import CountingPrior


@dataclass
class Guided:
    """x̂0 (detached), ε, the objective's value (B,) and its gradient w.r.t. x_t, plus any extra."""

    x0: Tensor
    eps: Tensor
    value: Tensor
    grad: Tensor
    extra: Any = None


def clip_x0(prior: CountingPrior, x0: Tensor, clip: bool) -> Tensor:
    """x̂0 clamped to the prior's value range when ``clip`` (gradient 0 on clamped entries)."""
    return x0.clamp(*prior.value_range) if clip and prior.value_range is not None else x0


def guided_denoise(prior: CountingPrior, x: Tensor, t: int,
                   objective: Callable[[Tensor, Tensor], Tensor | tuple[Tensor, Any]],
                   clip: bool = False) -> Guided:
    """x̂0(x, t) and ∇_x Σ_b f_b(x, x̂0(x)) for a per-sample objective f: (B, *shape)² → (B,).

    ``objective`` may return (values, extra); ``extra`` is passed through. ``clip`` clamps x̂0 to the
    prior's value range (gradient 0 on clamped entries).
    """
    with torch.enable_grad():
        x_t = x.detach().requires_grad_(True)
        out = prior.denoise(x_t, t)
        x0 = clip_x0(prior, out.x0, clip)
        result = objective(x_t, x0)
        value, extra = result if isinstance(result, tuple) else (result, None)
        (grad,) = torch.autograd.grad(value.sum(), x_t)
    return Guided(x0=x0.detach(), eps=out.eps.detach(), value=value.detach(), grad=grad, extra=extra)


def posterior_variance(ab_t: float, data_variance: float = 1.0) -> float:
    """Var[x_0 | x_t] under a N(0, v I) prior: v (1 − ᾱ_t) / (v ᾱ_t + 1 − ᾱ_t) (v = 1: 1 − ᾱ_t).

    The r_t² of ΠGDM's guidance (Song et al. 2023, σ_t²/(1 + σ_t²) in VE form for v = 1;
    ``PGDMConfig.data_variance``). v > 1 (data wider than unit variance) keeps the likelihood of x_t broad at
    high noise, where x̂0 is a poor summary of p(x_0 | x_t).
    """
    v = data_variance
    if v == 1:
        return 1 - ab_t  # the same number, without the rounding of v ᾱ + 1 − ᾱ
    return v * (1 - ab_t) / (v * ab_t + 1 - ab_t)


def tweedie_scale(c_0: float, ab_t: float) -> float:
    """c_0 (1 − ᾱ_t)/√ᾱ_t: how far the bridge mean moves per unit of ∇_{x_t} log p(y | x_t) when x̂0 is
    replaced by the conditional Tweedie mean x̂0 + (1 − ᾱ_t)/√ᾱ_t ∇ log p(y | x_t) (the score-consistent
    step of DPS's ``likelihood_cap`` and of ΠGDM's ``step = "tweedie"`` / ``likelihood_cap``)."""
    return c_0 * (1 - ab_t) / math.sqrt(ab_t)


def per_sample(values: Tensor, ndim: int) -> Tensor:
    """Reshape a (B,) tensor to broadcast against (B, *shape) with len(shape) = ndim."""
    return values.reshape(-1, *[1] * ndim)


class MeasurementFit:
    """q = rᵀ Σ⁻¹ r and v = Aᵀ Σ⁻¹ r for r = y − A x̂0, Σ = σ_y² I + τ² A Aᵀ (module docstring).

    Built once per run on the sampler's device and dtype: ``op`` there (``LinearOperator.to``),
    ``y`` (R, *out_shape) with one observation per row of x0 (or (1, *out_shape): one for all), and
    the float64 :class:`SpectralView` of the original operator when it has an SVD, with the same
    rows as y (its values are cast once). Shapes: x0 (R, *in_shape) → q (R,), v (R, *in_shape).
    """

    def __init__(self, op: LinearOperator, y: Tensor, sigma_y: float, cg_iterations: int = 50,
                 spectral: SpectralView | None = None) -> None:
        self.op, self.y, self.var_y, self.cg = op, y, sigma_y**2, cg_iterations
        self.svd = isinstance(op, SVDOperator) and spectral is not None
        if self.svd:
            k, m = spectral.s.numel(), op.out_dim
            dtype = y.dtype
            s_m = torch.zeros(m, dtype=torch.float64, device=spectral.s.device)
            s_m[:k] = spectral.s
            partner = torch.zeros(m, dtype=torch.bool, device=s_m.device)
            partner[:k] = spectral.observed[:k]
            self.k = k
            self.s_k = spectral.s.to(device=y.device, dtype=dtype)
            self.s2_m = (s_m**2).to(device=y.device, dtype=dtype)
            self.partner = partner.to(y.device)
            self.y_bar = spectral.y_bar.to(device=y.device, dtype=dtype)  # (R or 1, m), like y

    def __call__(self, x0: Tensor, tau2: float) -> tuple[Tensor, Tensor]:
        if self.svd:
            return self._spectral(x0, tau2)
        return self._cg(x0, tau2)

    def _spectral(self, x0: Tensor, tau2: float) -> tuple[Tensor, Tensor]:
        op: SVDOperator = self.op  # type: ignore[assignment]
        x_bar = op.Vt(x0)[:, : self.k]  # (B, k)
        r_bar = self.y_bar - op.pad(self.s_k * x_bar, op.out_dim)  # (B, m)
        denom = self.var_y + tau2 * self.s2_m  # (m,)
        finite = denom > 0
        inv = torch.where(finite, 1.0 / torch.where(finite, denom, torch.ones_like(denom)),
                          torch.zeros_like(denom))
        q = (r_bar**2 * inv).sum(-1)
        coef = torch.where(self.partner, inv, torch.zeros_like(inv))[: self.k] * self.s_k
        v = op.V(op.pad(coef * r_bar[:, : self.k], op.in_dim))
        return q, v

    def _cg(self, x0: Tensor, tau2: float) -> tuple[Tensor, Tensor]:
        resid = self.y - self.op.A(x0)
        u = solve_normal(self.op, resid, self.var_y / tau2, max_iter=self.cg) / tau2  # Σ⁻¹ r
        q = (resid * u).reshape(resid.shape[0], -1).sum(-1)
        return q, self.op.At(u)
