r"""Held-out denoising error of a prior: MSE(t) = E‖x̂0(√ᾱ_t x0 + √(1−ᾱ_t) ε, t) − x0‖² / d.

x0 are held-out images in [−1, 1]; the same ε (one fixed generator) is used for every prior, so
differences between priors are paired. The Gaussian baseline is the exact posterior mean under
N(m, Σ) fitted to the training images (:func:`fit_gaussian`), i.e. the best *linear* denoiser: a
network prior that has learnt anything beyond second moments must beat it, by far at mid t.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffinv.priors.analytic import GaussianMixturePrior, gaussian_prior
from diffinv.priors.base import DiffusionPrior
from diffinv.rng import randn
from diffinv.schedules import NoiseSchedule

FULL_COVARIANCE_MAX_DIM = 4096
MOMENT_IMAGES = 20000


def fit_gaussian(images: Tensor, schedule: NoiseSchedule, shape: tuple[int, ...]) -> GaussianMixturePrior:
    """N(m, Σ) of the first ≤ 20 000 training images (N, *shape) in [−1, 1] (a fixed subset, for speed):
    full Σ (+1e-4 I) if d ≤ 4096, else diagonal (stored as a diagonal matrix: moderate d only)."""
    x = images[:MOMENT_IMAGES].reshape(min(images.shape[0], MOMENT_IMAGES), -1).to(torch.float64)
    mean = x.mean(0)
    centred = (x - mean).float()
    d = x.shape[1]
    if d <= FULL_COVARIANCE_MAX_DIM:
        cov = (centred.T @ centred).double() / max(x.shape[0] - 1, 1)
        cov = cov + 1e-4 * torch.eye(d, dtype=torch.float64)
    else:
        cov = torch.diag(centred.double().pow(2).mean(0) + 1e-4)
    return gaussian_prior(mean, cov, schedule=schedule, shape=shape)


@torch.no_grad()
def denoising_errors(prior: DiffusionPrior, x0: Tensor, timesteps: list[int], generator: torch.Generator,
                     batch_size: int = 100) -> dict[int, Tensor]:
    """{t: (n,) squared error per pixel of each item} of x̂0 on held-out x0 (n, *shape)."""
    results = {}
    for t in timesteps:
        ab = prior.schedule.alpha_bar_at(t)
        eps = randn(x0.shape, generator, like=x0)
        x_t = ab**0.5 * x0 + (1 - ab) ** 0.5 * eps
        errors = [(prior.denoise(xb, t).x0.to(x0) - cb).pow(2).flatten(1).mean(1)
                  for xb, cb in zip(x_t.split(batch_size), x0.split(batch_size), strict=True)]
        results[int(t)] = torch.cat(errors)
    return results


def denoising_mse(prior: DiffusionPrior, x0: Tensor, timesteps: list[int], generator: torch.Generator,
                  batch_size: int = 100) -> dict[int, float]:
    """{t: mean squared error per pixel} of x̂0 on held-out x0 (n, *shape), float32 inputs."""
    errors = denoising_errors(prior, x0, timesteps, generator, batch_size)
    return {t: float(e.mean()) for t, e in errors.items()}
