r"""Log-domain weight arithmetic (float64), batched over leading dimensions; particles on the last.

* normalise: log W_j = log w_j − logsumexp(log w) (NaN log-weights count as −inf, i.e. weight 0);
* ess: 1 / Σ_j W_j² (N for equal weights, 1 for a single non-zero weight);
* log_mean_exp: log((1/N) Σ_j w_j), the SMC normalising-constant increment.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def clean(log_w: Tensor) -> Tensor:
    """float64 copy with NaN mapped to −inf."""
    log_w = log_w.to(torch.float64)
    return torch.where(torch.isnan(log_w), torch.full_like(log_w, -math.inf), log_w)


def normalise(log_w: Tensor) -> Tensor:
    """Normalised log-weights, same shape (…, N)."""
    log_w = clean(log_w)
    return log_w - torch.logsumexp(log_w, dim=-1, keepdim=True)


def ess(log_w: Tensor) -> Tensor:
    """Effective sample size 1/ΣW² per row, shape (…)."""
    return 1.0 / torch.exp(2 * normalise(log_w)).sum(-1)


def log_mean_exp(log_w: Tensor) -> Tensor:
    """log((1/N) Σ exp(log w)) per row, shape (…)."""
    log_w = clean(log_w)
    return torch.logsumexp(log_w, dim=-1) - math.log(log_w.shape[-1])
