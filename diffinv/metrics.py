r"""Distribution metrics for the exact-posterior benchmarks.

* Sliced Wasserstein (MCGDiff and DCPS papers): SW(X, Y) = (1/L) Σ_l W1(⟨θ_l, X⟩, ⟨θ_l, Y⟩), θ_l uniform on
  the unit sphere (normalised Gaussian draws), L = 100 by default. The 1-D W1 between empirical laws
  of sizes n and m is ∫ |F_X(z) − F_Y(z)| dz, evaluated exactly on the merged sorted sample, so
  unequal sizes are allowed (as scipy.stats.wasserstein_distance).
* Mode-weight error Δw (DCPS paper and code): re-estimate the mixture weights of a sample set with
  the components held fixed (10 EM steps from the mixture's own weights,
  w_j ← (1/n) Σ_i softmax_j(log w_j + log N(x_i; μ_j, Σ_j))), then report the **L1 norm**
  Δw = Σ_j |ŵ_j − w̃_j| against the exact posterior weights w̃ (a value in [0, 2]).

Over seeds (the benchmark reports):

* :func:`median_interval`: percentile-bootstrap interval of a median over seeds (Efron & Tibshirani, 1993,
  ch. 13): resample the n per-seed values with replacement B times, take the median of each resample, and
  report the (1 − level)/2 and (1 + level)/2 quantiles of those B medians.
* :func:`binomial_interval`: Clopper–Pearson (exact) interval of a rate k / n, e.g. the share of runs that
  score worse than the prior: the level/2 tails of Beta(k, n − k + 1) and Beta(k + 1, n − k).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats
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


def median_interval(values, level: float = 0.9, draws: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval (lo, hi) of the median of ``values`` (n,), resampled ``draws`` times
    with ``numpy.random.default_rng(seed)``: the same values and seed give the same interval."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("values: expected at least one value")
    if not 0 < level < 1:
        raise ValueError(f"level: expected a number in (0, 1), got {level}")
    idx = np.random.default_rng(seed).integers(0, x.size, size=(draws, x.size))
    medians = np.median(x[idx], axis=1)
    lo, hi = np.quantile(medians, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def binomial_interval(k: int, n: int, level: float = 0.9) -> tuple[float, float]:
    """Clopper–Pearson interval (lo, hi) of a rate from k successes in n trials."""
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"k, n: expected 0 <= k <= n and n >= 1, got k = {k}, n = {n}")
    tail = (1 - level) / 2
    lo = 0.0 if k == 0 else float(stats.beta.ppf(tail, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - tail, k + 1, n - k))
    return lo, hi
