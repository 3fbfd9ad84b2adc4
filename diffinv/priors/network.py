r"""A trained ε-network as a :class:`~diffinv.priors.base.DiffusionPrior`.

ε̂ = ε_θ(x_t, t) with the integer timestep t (the index of ᾱ_t in the schedule; no offset), and
x̂0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t (``schedules.eps_to_x0``; Tweedie for an ε-parametrised network).
Clean data live in [−1, 1] (``value_range``): images u ∈ [0, 255] are mapped to 2u/255 − 1.
The network runs in its own parameter dtype/device; inputs are cast there and outputs cast back,
so autograd flows through the casts (``differentiable = True``). x̂0 is *not* clipped to [−1, 1]
(samplers that want clipping use ``value_range``), so that (x̂0, ε̂) stay exactly consistent.

Notation: ``network`` → ε_θ, ``alpha_bar`` → ᾱ_t.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from diffinv.priors.base import Denoised, check_batch
from diffinv.schedules import NoiseSchedule, eps_to_x0


class NetworkPrior:
    """Wrap ε_θ (an nn.Module called as ``network(x (B, *shape), t (B,) int64)``) and its schedule.

    Parameters
    ----------
    network : the ε-network (put in eval mode here).
    schedule : the VP schedule it was trained on.
    shape : per-sample shape (C, S, S).
    card : the model card (dict) it was loaded with, if any.
    """

    value_range: tuple[float, float] | None = (-1.0, 1.0)
    differentiable = True

    def __init__(self, network: nn.Module, schedule: NoiseSchedule, shape: tuple[int, ...],
                 card: dict | None = None) -> None:
        self.network = network.eval()
        self.schedule = schedule
        self.shape = tuple(int(s) for s in shape)
        self.card = card or {}

    def denoise(self, x_t: Tensor, t: int) -> Denoised:
        """x̂0 and ε̂ at integer t; x_t (B, *shape) in any float dtype/device."""
        check_batch(self, x_t, t)
        param = next(self.network.parameters())
        steps = torch.full((x_t.shape[0],), int(t), dtype=torch.long, device=param.device)
        eps = self.network(x_t.to(param.device, param.dtype), steps).to(x_t.device, x_t.dtype)
        return Denoised(x0=eps_to_x0(x_t, eps, self.schedule.alpha_bar_at(t)), eps=eps)
