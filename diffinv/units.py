r"""The one place where image pixels and a prior's units meet.

Images, observations and σ_y are on the **[0, 1] pixel scale** u everywhere a user sees them. A prior
states the range of its clean data, ``value_range = (lo, hi)`` ([−1, 1] for every shipped, ADM and
diffusers image prior). With w = hi − lo, the affine map and what it does to a linear problem are

    x = lo + w u,                     u = (x − lo) / w,
    y = A x + σ ε = w (A u + σ_y ε) + lo A𝟙   ⇒   y_prior = w y₀₁ + lo A𝟙,   σ_prior = w σ_y,

(A is linear, so A(lo 𝟙 + w u) = lo A𝟙 + w A u). Shapes: u, x (B, C, H, W); y (*A.out_shape).
A prior without a value range (an analytic prior used on images) is taken to follow the networks'
convention, [−1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from diffinv.operators.base import LinearOperator


@dataclass(frozen=True)
class PixelUnits:
    """The map between pixels u ∈ [0, 1] and prior units x ∈ [lo, hi] (module docstring)."""

    lo: float = -1.0
    hi: float = 1.0

    @classmethod
    def of(cls, prior) -> PixelUnits:
        """The units of ``prior`` (its ``value_range``; [−1, 1] when it has none)."""
        value_range = getattr(prior, "value_range", None)
        if value_range is None:
            return cls(-1.0, 1.0)
        lo, hi = (float(v) for v in value_range)
        if not hi > lo:
            raise ValueError(f"prior: value_range must be (lo, hi) with hi > lo, got {value_range}")
        return cls(lo, hi)

    @property
    def width(self) -> float:
        return self.hi - self.lo

    def to_prior(self, u: Tensor) -> Tensor:
        """x = lo + w u."""
        return self.lo + self.width * u

    def to_pixels(self, x: Tensor) -> Tensor:
        """u = (x − lo) / w (not clamped)."""
        return (x - self.lo) / self.width

    def sigma_to_prior(self, sigma_y: float) -> float:
        """σ_prior = w σ_y."""
        return self.width * float(sigma_y)

    def observation_to_prior(self, y01: Tensor, op: LinearOperator) -> Tensor:
        """y_prior = w y₀₁ + lo A𝟙 for y₀₁ of shape (*A.out_shape)."""
        ones = torch.ones(1, *op.in_shape, dtype=y01.dtype, device=y01.device)
        return self.width * y01 + self.lo * op.A(ones)[0]
