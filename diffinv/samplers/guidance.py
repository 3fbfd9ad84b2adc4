"""Small pieces shared by the gradient-guided samplers (DPS, ΠGDM, DCPS)."""

from __future__ import annotations

from torch import Tensor

from diffinv.priors.base import CountingPrior


def guided_x0(prior: CountingPrior, x_t: Tensor, t: int, clip: bool) -> Tensor:
    """x̂0(x_t, t), optionally clamped to the prior's value range (gradient 0 on clamped entries)."""
    x0 = prior.denoise(x_t, t).x0
    if clip and prior.value_range is not None:
        x0 = x0.clamp(*prior.value_range)
    return x0


def per_sample(values: Tensor, ndim: int) -> Tensor:
    """Reshape a (B,) tensor to broadcast against (B, *shape) with len(shape) = ndim."""
    return values.reshape(-1, *[1] * ndim)
