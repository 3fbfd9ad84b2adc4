r"""Distribution metrics for the exact-posterior benchmarks.

* Sliced Wasserstein (gmm_benchmark.md §6): SW(X, Y) = (1/L) Σ_l W1(⟨θ_l, X⟩, ⟨θ_l, Y⟩), θ_l uniform on
  the unit sphere (normalised Gaussian draws), L = 100 by default. The 1-D W1 between empirical laws
  of sizes n and m is ∫ |F_X(z) − F_Y(z)| dz, evaluated exactly on the merged sorted sample, so
  unequal sizes are allowed (as scipy.stats.wasserstein_distance).
* Mode-weight error Δw (gmm_benchmark.md §6): re-estimate the mixture weights of a sample set with
  the components held fixed (10 EM steps from the mixture's own weights,
  w_j ← (1/n) Σ_i softmax_j(log w_j + log N(x_i; μ_j, Σ_j))), then report the **L1 norm**
  Δw = Σ_j |ŵ_j − w̃_j| against the exact posterior weights w̃ (a value in [0, 2]).
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffinv.priors.mixture import GaussianMixture


def wasserstein_1d(a: Tensor, b: Tensor) -> Tensor:
    """W1 between empirical laws, batched: a (L, n), b (L, m) → (L,), float64."""
    a = torch.sort(a.to(torch.float64), dim=-1).values
    b = torch.sort(b.to(torch.float64), dim=-1).values
    merged = torch.sort(torch.cat([a, b], dim=-1), dim=-1).values  # (L, n + m)
    deltas = merged[:, 1:] - merged[:, :-1]
    points = merged[:, :-1].contiguous()
    cdf_a = torch.searchsorted(a.contiguous(), points, right=True).double() / a.shape[-1]
    cdf_b = torch.searchsorted(b.contiguous(), points, right=True).double() / b.shape[-1]
    return ((cdf_a - cdf_b).abs() * deltas).sum(-1)


def sliced_wasserstein(x: Tensor, y: Tensor, num_directions: int = 100,
                       generator: torch.Generator | None = None) -> float:
    """Mean over ``num_directions`` random unit directions of the 1-D W1; x (n, *s), y (m, *s)."""
    x = x.reshape(x.shape[0], -1).to(torch.float64).cpu()
    y = y.reshape(y.shape[0], -1).to(torch.float64).cpu()
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"samples: dimensions differ ({x.shape[1]} vs {y.shape[1]})")
    if x.shape[0] < 1 or y.shape[0] < 1:
        raise ValueError("samples: both sample sets must be non-empty")
    theta = torch.randn(num_directions, x.shape[1], generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=1, keepdim=True)
    return float(wasserstein_1d(theta @ x.T, theta @ y.T).mean())


def estimate_mixture_weights(samples: Tensor, mixture: GaussianMixture,
                             num_iterations: int = 10) -> Tensor:
    """Weights (K,) of ``mixture``'s components that best explain ``samples`` (fixed components)."""
    comp = mixture.component_log_density(samples)  # (n, K): log N(x_i; μ_j, Σ_j)
    log_w = mixture.log_weights.clone()
    for _ in range(num_iterations):
        resp = torch.softmax(comp + log_w, dim=-1)
        log_w = torch.log(resp.mean(0))
    return log_w.exp()


def weight_error(samples: Tensor, posterior: GaussianMixture, num_iterations: int = 10) -> float:
    """Δw = Σ_j |ŵ_j − w̃_j| (L1), ŵ from :func:`estimate_mixture_weights`."""
    est = estimate_mixture_weights(samples, posterior, num_iterations)
    return float((est - posterior.weights).abs().sum())
