r"""A trained network as a :class:`~diffinv.priors.base.DiffusionPrior`, whatever it predicts.

The network is called with the integer timestep t (the index of ᾱ_t in the schedule; no offset). Its
output o (B, C_out, H, W) is turned into ε̂ by its **parametrisation**:

* ``eps`` (Ho et al. 2020):                  ε̂ = o
* ``x0`` (diffusers ``sample``):             ε̂ = (x_t − √ᾱ_t o)/√(1−ᾱ_t)
* ``v`` (Salimans & Ho 2022, v = √ᾱ ε − √(1−ᾱ) x0):   ε̂ = √ᾱ_t o + √(1−ᾱ_t) x_t

A learned-variance network (ADM with ``learn_sigma``, Nichol & Dhariwal 2021) outputs C_out = 2C
channels: the first C are the prediction, the rest (the variance interpolation) are not used.
Then x̂0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t (``schedules.eps_to_x0``; Tweedie for an ε-parametrised network).
Clean data live in ``value_range`` ([−1, 1] for every shipped, ADM and diffusers prior); the one map
between image pixels and these units is :mod:`diffinv.units`.
The network runs in its own parameter dtype/device; inputs are cast there and outputs cast back,
so autograd flows through the casts (``differentiable = True``). For ``x0`` and ``v`` networks ᾱ_t
enters as a 0-d tensor indexed from the schedule's ᾱ cast once per (device, dtype) of x_t, so a call
on a GPU copies nothing from the host. x̂0 is *not* clipped to [−1, 1]
(samplers that want clipping use ``value_range``), so that (x̂0, ε̂) stay exactly consistent.

Notation: ``network`` → ε_θ, ``alpha_bar`` → ᾱ_t.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from diffinv.priors.base import Denoised, check_batch
from diffinv.schedules import PARAMETRISATIONS, NoiseSchedule, eps_to_x0, output_to_eps


class NetworkPrior:
    """Wrap ε_θ (an nn.Module called as ``network(x (B, *shape), t (B,) int64)``) and its schedule.

    Parameters
    ----------
    network : the ε-network (put in eval mode here).
    schedule : the VP schedule it was trained on.
    shape : per-sample shape (C, S, S).
    card : the model card (dict) it was loaded with, if any (for external checkpoints: what was read).
    parametrisation : what the network predicts: ``eps``, ``x0`` or ``v`` (diffusers' names accepted).
    value_range : (lo, hi) of clean data in the network's units.
    """

    differentiable = True

    def __init__(self, network: nn.Module, schedule: NoiseSchedule, shape: tuple[int, ...],
                 card: dict | None = None, parametrisation: str = "eps",
                 value_range: tuple[float, float] | None = (-1.0, 1.0)) -> None:
        if parametrisation not in PARAMETRISATIONS:
            raise ValueError(f"parametrisation: expected one of {', '.join(PARAMETRISATIONS)}, "
                             f"got {parametrisation!r}")
        self.network = network.eval()
        self.schedule = schedule
        self.shape = tuple(int(s) for s in shape)
        self.card = card or {}
        self.parametrisation = PARAMETRISATIONS[parametrisation]
        self.value_range = None if value_range is None else (float(value_range[0]), float(value_range[1]))
        self._alpha_bars: dict[tuple[torch.device, torch.dtype], tuple[NoiseSchedule, Tensor]] = {}

    def _alpha_bar_like(self, x: Tensor, t: int) -> Tensor:
        """ᾱ_t as a 0-d tensor on x's device in x's dtype (the schedule's (T,) ᾱ cast once per key)."""
        key = (x.device, x.dtype)
        source, table = self._alpha_bars.get(key, (None, None))
        if source is not self.schedule:
            table = self.schedule.alpha_bar.to(x.device, x.dtype)
            self._alpha_bars[key] = (self.schedule, table)
        return table[t]

    def denoise(self, x_t: Tensor, t: int) -> Denoised:
        """x̂0 and ε̂ at integer t; x_t (B, *shape) in any float dtype/device."""
        check_batch(self, x_t, t)
        param = next(self.network.parameters())
        steps = torch.full((x_t.shape[0],), int(t), dtype=torch.long, device=param.device)
        raw = self.network(x_t.to(param.device, param.dtype), steps).to(x_t.device, x_t.dtype)
        channels = self.shape[0]
        if raw.shape[1] == 2 * channels and len(self.shape) == 3:  # learned variance: ε first, then v
            raw = raw[:, :channels]
        alpha_bar = self.schedule.alpha_bar_at(t)
        a_t = alpha_bar if self.parametrisation == "eps" else self._alpha_bar_like(x_t, t)
        eps = output_to_eps(raw, x_t, a_t, self.parametrisation)
        return Denoised(x0=eps_to_x0(x_t, eps, alpha_bar), eps=eps)
