r"""Fit of a diagonal-Gaussian kernel by normalised stochastic gradient steps (DCPS, Janati et al., 2024).

Minimises, per sample, the objective

    L(m, s) = E_ξ[ f(m + e^s ⊙ ξ) ] + KL( N(m, diag e^{2s}) ‖ N(μ_p, σ_p² I) ),
    KL = ½ [ −2 Σ(s − log σ_p) + Σ e^{2(s − log σ_p)} + ‖m − μ_p‖²/σ_p² − d ],

whose minimiser is the Gaussian closest (in this KL) to the twisted kernel ∝ e^{−f(x)} N(x; μ_p, σ_p²).
Each of the K steps draws one ξ (reparameterisation) and moves m and s by ``lr`` along their
gradients normalised per sample: m ← m − lr · g_m / (1e-8 + ‖g_m‖) (the DCPS code's "SGD"; lr is an
absolute L2 step length, so its meaning depends on the dimension; tune it per problem). Initialisation:
m = μ_p, s = log σ_p.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from diffinv.rng import randn


def _normalised(g: Tensor) -> Tensor:
    norm = g.reshape(g.shape[0], -1).norm(dim=1).reshape(-1, *[1] * (g.ndim - 1))
    return g / (1e-8 + norm)


def gaussian_kl(m: Tensor, s: Tensor, mu_p: Tensor, log_sigma_p: float) -> Tensor:
    """KL(N(m, diag e^{2s}) ‖ N(μ_p, σ_p² I)) per sample; m, s, mu_p (B, *shape) → (B,)."""
    diff = s - log_sigma_p
    terms = -2 * diff + torch.exp(2 * diff) + (m - mu_p) ** 2 / math.exp(2 * log_sigma_p) - 1
    return 0.5 * terms.reshape(m.shape[0], -1).sum(-1)


def fit_gaussian_kernel(mu_p: Tensor, sigma_p: float, potential_fn: Callable[[Tensor], Tensor],
                        num_steps: int, lr: float, generator: torch.Generator | None,
                        num_mc: int = 1) -> tuple[Tensor, Tensor]:
    """Fitted (m, s) (each (B, *shape), s = log-std) for the twisted kernel ∝ e^{−potential} N(μ_p, σ_p²).

    ``potential_fn(u)`` maps a batch u (B', *shape) to per-sample values (B',), differentiably.
    ``num_mc`` draws of ξ per step average the expectation (DCPS uses 1). With one draw the
    normalised step is biased for s (its fixed point solves E[g/‖g‖] = 0, not E[g] = 0); more
    draws remove that bias.
    """
    if sigma_p <= 0:
        raise ValueError(f"sigma_p: expected a positive prior-kernel std, got {sigma_p}")
    log_sigma_p = math.log(sigma_p)
    m = mu_p.detach().clone()
    s = torch.full_like(m, log_sigma_p)
    for _ in range(num_steps):
        with torch.enable_grad():
            m_, s_ = m.requires_grad_(True), s.requires_grad_(True)
            xi = randn((m.shape[0], num_mc, *m.shape[1:]), generator, like=m)  # rows first (GeneratorBatch)
            u = (m_[:, None] + torch.exp(s_)[:, None] * xi).reshape(m.shape[0] * num_mc, *m.shape[1:])
            expected = potential_fn(u).reshape(m.shape[0], num_mc).mean(1)
            loss = expected + gaussian_kl(m_, s_, mu_p, log_sigma_p)
            g_m, g_s = torch.autograd.grad(loss.sum(), (m_, s_))
        m = (m.detach() - lr * _normalised(g_m)).detach()
        s = (s.detach() - lr * _normalised(g_s)).detach()
    return m, s
