r"""Unconditional sampling from any diffusion prior: DDPM (η = 1) and DDIM (η = 0), or any η between.

On a descending timestep grid t_{n−1} = T−1 > … > t_0 = 0 (``schedules.timestep_grid``), starting
from x ~ N(0, I), apply the DDIM(η) bridge kernel (Song et al. 2021, eq. 12)

    x_s = c_x x_t + c_0 x̂0(x_t, t) + σ_{t→s} z

for every consecutive pair, and finish with the bridge 0 → clean, which returns x̂0(x_0, 0).
With the full grid (n = T) and η = 1 this is DDPM ancestral sampling (Ho et al. 2020, Alg. 2) with
the fixed-small variance β̃_t. Cost: n prior evaluations per sample.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffinv.priors.base import DiffusionPrior
from diffinv.rng import randn
from diffinv.schedules import bridge_coefficients, ddim_sample, grid_pairs, timestep_grid


@torch.no_grad()
def sample_prior(prior: DiffusionPrior, num_samples: int, num_steps: int = 1000, eta: float = 1.0,
                 generator: torch.Generator | None = None, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, batch_size: int | None = None) -> Tensor:
    """Draw ``num_samples`` samples of shape (num_samples, *prior.shape) on ``device``.

    ``batch_size`` bounds the number of samples pushed through the prior at once; the noise is drawn
    for all samples up front in a fixed order, so the result does not depend on it.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples: expected a positive integer, got {num_samples}")
    grid = timestep_grid(prior.schedule.num_timesteps, num_steps)
    like = torch.empty((), device=device, dtype=dtype)
    x = randn((num_samples, *prior.shape), generator, like=like)
    for t, s in grid_pairs(grid):
        coeffs = bridge_coefficients(prior.schedule.alpha_bar_at(t), prior.schedule.alpha_bar_at(s),
                                     eta)
        chunks = x.split(batch_size) if batch_size else (x,)
        x0 = torch.cat([prior.denoise(chunk, t).x0 for chunk in chunks])
        x = ddim_sample(x, x0, coeffs, generator)
    return x
