"""Diffusion priors: the protocol, analytic (exact) priors and evaluation counting."""

from diffinv.priors.analytic import GaussianMixturePrior, gaussian_prior
from diffinv.priors.base import CountingPrior, Denoised, DiffusionPrior, EvaluationStats
from diffinv.priors.mixture import GaussianMixture

__all__ = ["GaussianMixturePrior", "gaussian_prior", "CountingPrior", "Denoised",
           "DiffusionPrior", "EvaluationStats", "GaussianMixture"]
