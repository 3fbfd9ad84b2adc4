r"""Observation-noise models. Gaussian: y = A x + σ_y ε, ε ~ N(0, I).

σ_y is in the units of the data the operator acts on (for images diffinv uses the [0, 1] pixel
scale; see the units note in :mod:`diffinv.problems`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from diffinv.rng import randn


@dataclass(frozen=True)
class GaussianNoise:
    """Additive white Gaussian noise with standard deviation ``sigma`` ≥ 0."""

    sigma: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            raise ValueError(f"sigma_y: expected a finite number ≥ 0, got {self.sigma}")

    def sample(self, clean: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """y = clean + σ ε, same shape."""
        if self.sigma == 0:
            return clean.clone()
        return clean + self.sigma * randn(clean.shape, generator, like=clean)

    def log_likelihood(self, y: Tensor, mean: Tensor) -> Tensor:
        """log N(y; mean, σ² I) per batch item: (B, *shape) → (B,), in float64."""
        if self.sigma == 0:
            raise ValueError("sigma_y: the log-likelihood needs sigma_y > 0")
        r = (y - mean).reshape(mean.shape[0], -1).to(torch.float64)
        m = r.shape[1]
        return -0.5 * ((r**2).sum(-1) / self.sigma**2 + m * math.log(2 * math.pi * self.sigma**2))
