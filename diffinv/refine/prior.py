r"""A prior refined by a learned correction: itself a :class:`~diffinv.priors.base.DiffusionPrior`.

With the base prior's noise prediction ε̂_θ and the correction c_φ = ∇_x ℓ_φ (:mod:`.potential`), the
score s = −ε/√(1−ᾱ_t) gives

    ε̂_refined(x_t, t) = ε̂_θ(x_t, t) − √(1−ᾱ_t) c_φ(x_t, t)        for t in [t_lo, t_hi],
    ε̂_refined = ε̂_θ                                                  elsewhere,
    x̂0_refined = (x_t − √(1−ᾱ_t) ε̂_refined)/√ᾱ_t.

The time window follows the suggestion of the thesis the method comes from (correct only where the score
is poor); outside it the refined prior *is* the base prior, at the base's cost. Inside it, one call costs a
base evaluation plus a forward and a backward pass of the small u_φ; that cost is inside the call, so a
:class:`~diffinv.priors.base.CountingPrior` around it counts one evaluation and times all of it.

Gradients: if x_t requires grad (DPS, ΠGDM, DCPS differentiate through the prior), c_φ is built with
``create_graph`` so the vector–Jacobian product reaches x_t through c_φ too; otherwise c_φ is computed
on a detached leaf and returned without a graph. u_φ runs in its own parameter dtype and device.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from diffinv.priors.base import Denoised, DiffusionPrior
from diffinv.refine.potential import correction
from diffinv.schedules import eps_to_x0


class RefinedPrior:
    """``base`` + the correction u_φ (``net``) inside ``t_range = (t_lo, t_hi)`` (inclusive).

    Attributes mirror the base's (schedule, shape, value_range, differentiable); ``card`` is the refined
    card when loaded from disk.
    """

    def __init__(self, base: DiffusionPrior, net: nn.Module, t_range: tuple[int, int] | None = None,
                 card: dict | None = None) -> None:
        self.base = base
        self.net = net
        self.schedule = base.schedule
        self.shape = tuple(base.shape)
        self.value_range = base.value_range
        self.differentiable = base.differentiable
        last = self.schedule.num_timesteps - 1
        lo, hi = t_range if t_range is not None else (0, last)
        if not 0 <= int(lo) <= int(hi) <= last:
            raise ValueError(f"t_range: expected 0 ≤ A ≤ B ≤ {last}, got {lo},{hi}")
        self.t_range = (int(lo), int(hi))
        self.card = card or {}

    def active(self, t: int) -> bool:
        """Whether the correction applies at timestep t."""
        return self.t_range[0] <= int(t) <= self.t_range[1]

    def correction(self, x_t: Tensor, t: int) -> Tensor:
        """c_φ(x_t, t) (B, *shape) in x_t's dtype/device (zero outside ``t_range``)."""
        if not self.active(t):
            return torch.zeros_like(x_t)
        param = next(self.net.parameters())
        track = x_t.requires_grad and torch.is_grad_enabled()
        x_in = x_t.to(param.device, param.dtype)
        if not track:
            x_in = x_in.detach().requires_grad_(True)
        steps = torch.full((x_t.shape[0],), int(t), dtype=torch.long, device=param.device)
        _, grad = correction(self.net, x_in, steps, create_graph=track)
        grad = grad.to(x_t.device, x_t.dtype)
        return grad if track else grad.detach()

    def denoise(self, x_t: Tensor, t: int) -> Denoised:
        out = self.base.denoise(x_t, t)
        if not self.active(t):
            return out
        alpha_bar = self.schedule.alpha_bar_at(t)
        eps = out.eps - (1.0 - alpha_bar) ** 0.5 * self.correction(x_t, t)
        return Denoised(x0=eps_to_x0(x_t, eps, alpha_bar), eps=eps)
