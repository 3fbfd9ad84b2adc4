r"""The two training losses of the correction, and their sum (thesis of seed chapter 3, eqs. 3.4, 3.8, 3.10).

For data x0 ~ p_data, model samples x̃0 ~ p̃ (the base prior's own samples), t ~ U{t_lo, …, t_hi},
ε, ε̃ ~ N(0, I), x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε and x̃_t likewise:

* J_CE (Kim et al. 2023, eq. 3.4 of the thesis): the discriminator's cross-entropy on its logit ℓ_φ,
      J_CE = E[softplus(−ℓ_φ(x_t, t))] + E[softplus(ℓ_φ(x̃_t, t))]      (= −log d on data, −log(1−d) on model).
  Its minimiser is the log density ratio itself, but a small J_CE says nothing about the *gradient* c_φ
  that guidance uses (the thesis's Theorems 5–6: an over-fitted discriminator can make sampling worse).
* J_MSE (the thesis's eq. 3.8, denoising score matching on the refined score; its sign typo fixed): with
  λ(t) = 1 − ᾱ_t, i.e. in ε units as the base was trained,
      J_MSE = E‖ε̂_θ(x_t, t) − √(1−ᾱ_t) c_φ(x_t, t) − ε‖² / D,
  minimised by c_φ = ∇ log p_t − s_θ = ∇ log p_t/p̃_t exactly (Vincent 2011); it needs no model samples.
* ``mse+ce``: J_MSE + γ J_CE (eq. 3.10), the cross-entropy as a regulariser that brings in the model's
  samples.

Weighting λ(t) of J_MSE (any λ > 0 keeps its minimiser; it sets the trade-off between timesteps when u_φ is
too small to be exact everywhere): ``eps`` is λ = 1 − ᾱ_t, the base's own training loss, which gives the
large-t steps almost no weight although an ε error there is multiplied by (1 − ᾱ_t)/ᾱ_t (≈ 600 at t = 800)
in x̂0; ``relative`` divides each timestep's term by the base's own ε error e_θ(t) = E‖ε̂_θ − ε‖²/D
(:func:`base_eps_error`, measured once), so J_MSE is the refined-to-base error ratio averaged over t — the
same ratio in ε, v or x̂0 units — and every timestep where the base is poor counts.

One step draws ``groups`` timesteps and gives each a contiguous block of the batch rows, because a
:class:`~diffinv.priors.base.DiffusionPrior` takes one t per call; u_φ sees the per-row t (B,).
Shapes: x0 (B, *shape); all losses are scalars (means over rows and coordinates).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from diffinv.priors.base import DiffusionPrior
from diffinv.refine.potential import correction, log_ratio
from diffinv.rng import randn

LOSSES = ("mse", "ce", "mse+ce")
WEIGHTINGS = ("eps", "relative")


@dataclass(frozen=True)
class LossSpec:
    """loss: mse | ce | mse+ce; gamma: weight of J_CE in mse+ce; t_range: (t_lo, t_hi) inclusive;
    groups: distinct timesteps per step (each a block of rows); weighting: eps | relative (module
    docstring)."""

    loss: str = "mse"
    gamma: float = 0.1
    t_range: tuple[int, int] = (0, 999)
    groups: int = 4
    weighting: str = "eps"

    def validate(self) -> LossSpec:
        if self.loss not in LOSSES:
            raise ValueError(f"loss: expected one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.gamma < 0:
            raise ValueError(f"gamma: expected a value ≥ 0, got {self.gamma}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting: expected one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}")
        if self.groups < 1:
            raise ValueError(f"groups: expected a positive integer, got {self.groups}")
        return self

    @property
    def uses_mse(self) -> bool:
        return self.loss in ("mse", "mse+ce")

    @property
    def uses_ce(self) -> bool:
        return self.loss in ("ce", "mse+ce")


def draw_times(spec: LossSpec, batch: int,
               generator: torch.Generator) -> tuple[list[int], list[int], Tensor]:
    """``groups`` timesteps t_g (ints), their block sizes, and the per-row t (B,) int64."""
    lo, hi = spec.t_range
    groups = min(spec.groups, batch)
    times = torch.randint(lo, hi + 1, (groups,), generator=generator).tolist()
    sizes = [batch // groups + (1 if g < batch % groups else 0) for g in range(groups)]
    rows = torch.cat([torch.full((n,), t, dtype=torch.long) for t, n in zip(times, sizes, strict=True)])
    return times, sizes, rows


def diffuse(x0: Tensor, rows: Tensor, alpha_bar: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """x_t = √ᾱ x0 + √(1−ᾱ) ε per row; returns (x_t, ε)."""
    eps = randn(x0.shape, generator, like=x0)
    ab = alpha_bar[rows].to(x0).view(-1, *([1] * (x0.ndim - 1)))
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps, eps


@torch.no_grad()
def base_eps_error(base: DiffusionPrior, x0: Tensor, t_range: tuple[int, int], generator: torch.Generator,
                   points: int = 32) -> Tensor:
    """e_θ(t) = E‖ε̂_θ(x_t, t) − ε‖²/D for every t (T,), float64: measured on the data x0 (n, *shape) at
    ``points`` timesteps spread over ``t_range`` and interpolated linearly (constant outside)."""
    lo, hi = t_range
    grid = torch.linspace(lo, hi, min(points, hi - lo + 1)).round().long().unique()
    alpha_bar = base.schedule.alpha_bar
    values = []
    for t in grid.tolist():
        rows = torch.full((x0.shape[0],), t, dtype=torch.long)
        x_t, eps = diffuse(x0, rows, alpha_bar, generator)
        values.append(float((base.denoise(x_t, t).eps - eps).pow(2).mean()))
    ts = torch.arange(base.schedule.num_timesteps, dtype=torch.float64)
    known = torch.tensor(values, dtype=torch.float64)
    if grid.numel() == 1:
        return known.expand(ts.shape[0]).clone()
    index = torch.searchsorted(grid.double(), ts).clamp(1, grid.numel() - 1)
    left, right = grid[index - 1].double(), grid[index].double()
    share = ((ts - left) / (right - left)).clamp(0, 1)
    return (known[index - 1] * (1 - share) + known[index] * share).clamp_min(1e-12)


def losses(net, base: DiffusionPrior, spec: LossSpec, x0: Tensor, x0_model: Tensor | None,
           generator: torch.Generator, eps_error: Tensor | None = None) -> dict[str, Tensor]:
    """{"total", and "mse" and/or "ce"} for one batch; ``x0_model`` (B', *shape) needed for ce;
    ``eps_error`` (T,): e_θ(t) for the ``relative`` weighting."""
    alpha_bar = base.schedule.alpha_bar
    times, sizes, rows = draw_times(spec, x0.shape[0], generator)
    x_t, eps = diffuse(x0, rows, alpha_bar, generator)
    out: dict[str, Tensor] = {}
    scale = (1 - alpha_bar[rows].to(x0)).sqrt().view(-1, *([1] * (x0.ndim - 1)))  # √(1−ᾱ) per row
    rows = rows.to(x0.device)
    ell_data = None
    if spec.uses_mse:
        with torch.no_grad():
            blocks = x_t.split(sizes)
            base_eps = torch.cat([base.denoise(b, t).eps for b, t in zip(blocks, times, strict=True)])
        x_in = x_t.detach().requires_grad_(True)
        ell_data, c = correction(net, x_in, rows, create_graph=True)
        per_row = (base_eps - scale * c - eps).pow(2).flatten(1).mean(1)
        if spec.weighting == "relative":
            if eps_error is None:
                raise ValueError("weighting: relative needs the base's ε error e_θ(t)")
            per_row = per_row / eps_error.to(per_row)[rows]
        out["mse"] = per_row.mean()
    if spec.uses_ce:
        if x0_model is None:
            raise ValueError("loss: ce needs the model's samples")
        if ell_data is None:
            ell_data = log_ratio(net, x_t, rows)
        _, _, model_rows = draw_times(spec, x0_model.shape[0], generator)
        x_model, _ = diffuse(x0_model, model_rows, alpha_bar, generator)
        ell_model = log_ratio(net, x_model, model_rows.to(x0.device))
        out["ce"] = F.softplus(-ell_data).mean() + F.softplus(ell_model).mean()
    if spec.loss == "mse":
        out["total"] = out["mse"]
    elif spec.loss == "ce":
        out["total"] = out["ce"]
    else:
        out["total"] = out["mse"] + spec.gamma * out["ce"]
    return out

