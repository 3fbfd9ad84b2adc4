r"""Tamed unadjusted Langevin step (Hutzenthaler, Jentzen & Kloeden 2012; DCPS, Janati et al., 2024).

For a target π with G = ∇ log π(x), per sample (norm over all non-batch dimensions):

    x' = x + γ / (1 + γ ‖G(x)‖) · G(x) + √(2γ) ξ,   ξ ~ N(0, I).

Taming bounds the drift by 1 in norm, so far-out starts cannot explode; for small γ‖G‖ it is ULA.
Unadjusted: no Metropolis correction (its bias is O(γ)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from diffinv.rng import randn


def tamed_ula_step(x: Tensor, grad_log_target: Tensor, gamma: float,
                   generator: torch.Generator | None) -> Tensor:
    """One tamed ULA step; x and grad_log_target (B, *shape) → x' (B, *shape)."""
    if gamma <= 0:
        raise ValueError(f"gamma: expected a positive step size, got {gamma}")
    norm = grad_log_target.reshape(x.shape[0], -1).norm(dim=1).reshape(-1, *[1] * (x.ndim - 1))
    drift = gamma / (1 + gamma * norm) * grad_log_target
    return x + drift + math.sqrt(2 * gamma) * randn(x.shape, generator, like=x)
