r"""Resampling schemes as pure functions, batched over independent filters.

Each takes normalised weights W of shape (F, N) (rows sum to 1), the number of draws M and a
``torch.Generator``, and returns ancestor indices (F, M) (LongTensor). Unbiased: the expected number
of offspring of particle j is M·W_j. Schemes (Douc, Cappé & Moulines 2005; Chopin & Papaspiliopoulos
2020, ch. 9):

* multinomial: M i.i.d. draws from Categorical(W);
* stratified: one uniform per stratum, U_m = (m + u_m)/M, inverse CDF;
* systematic: one uniform for all strata, U_m = (m + u)/M, inverse CDF (offspring ⌊MW_j⌋ or ⌈MW_j⌉);
* residual: ⌊M W_j⌋ copies of each particle, the remaining R draws multinomial on the residuals.

The inverse CDF is ``searchsorted`` on the cumulative sums, with indices clamped to N − 1 to absorb
float rounding (cumsum slightly below 1).

Devices: draws happen on the generator's device (weights are moved there only if they live elsewhere)
and the ancestors come back on the weights' device. With generator and weights on one CUDA device no
scheme copies to the host or waits for the GPU (``residual`` passes its known output size F·M to
``repeat_interleave``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from diffinv.rng import multinomial as _categorical
from diffinv.rng import rand


def inverse_cdf(weights: Tensor, uniforms: Tensor) -> Tensor:
    """Indices j with CDF_{j−1} ≤ U < CDF_j; weights (F, N), sorted uniforms (F, M) → (F, M)."""
    cdf = torch.cumsum(weights, dim=-1)
    idx = torch.searchsorted(cdf.contiguous(), uniforms.to(cdf.dtype).contiguous(), right=True)
    return idx.clamp_(max=weights.shape[-1] - 1)


def multinomial(weights: Tensor, num: int, generator: torch.Generator | None) -> Tensor:
    """M i.i.d. draws from Categorical(W_f) per row; weights (F, N) → (F, M) on the weights' device."""
    return _categorical(weights, num, generator)


def stratified(weights: Tensor, num: int, generator: torch.Generator | None) -> Tensor:
    u = rand((weights.shape[0], num), generator, like=weights)
    strata = torch.arange(num, dtype=weights.dtype, device=weights.device)
    return inverse_cdf(weights, (strata + u) / num)


def systematic(weights: Tensor, num: int, generator: torch.Generator | None) -> Tensor:
    u = rand((weights.shape[0], 1), generator, like=weights)
    strata = torch.arange(num, dtype=weights.dtype, device=weights.device)
    return inverse_cdf(weights, (strata + u) / num)


def residual(weights: Tensor, num: int, generator: torch.Generator | None) -> Tensor:
    rows, n = weights.shape
    scaled = num * weights
    counts = torch.floor(scaled).long()  # (F, N) deterministic offspring
    rest = num - counts.sum(-1)  # (F,) R per filter
    resid = (scaled - counts).clamp_min(0)
    resid = resid / resid.sum(-1, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)
    resid = torch.where(rest[:, None] > 0, resid, torch.full_like(resid, 1.0 / n))
    extra = multinomial(resid, num, generator)  # (F, M); only the first R_f of row f are used
    keep = torch.arange(num, device=weights.device)[None] < rest[:, None]
    counts = counts + torch.zeros_like(counts).scatter_add_(1, extra, keep.long())
    offsets = torch.arange(rows, device=weights.device)[:, None] * n
    flat = torch.repeat_interleave((torch.arange(n, device=weights.device)[None] + offsets).reshape(-1),
                                   counts.reshape(-1), output_size=rows * num)  # rows sum to M: no sync
    return flat.reshape(rows, num) - offsets


RESAMPLING: dict[str, Callable[[Tensor, int, torch.Generator | None], Tensor]] = {
    "multinomial": multinomial,
    "systematic": systematic,
    "stratified": stratified,
    "residual": residual,
}


def resample(scheme: str, weights: Tensor, num: int | None = None,
             generator: torch.Generator | None = None) -> Tensor:
    """Ancestors (F, M) by ``scheme``; weights (F, N) or (N,) (then the result is (M,))."""
    if scheme not in RESAMPLING:
        raise ValueError(f"resampling: unknown scheme {scheme!r}; expected one of {', '.join(RESAMPLING)}")
    squeeze = weights.ndim == 1
    w = weights[None] if squeeze else weights
    out = RESAMPLING[scheme](w, num if num is not None else w.shape[-1], generator)
    return out[0] if squeeze else out
