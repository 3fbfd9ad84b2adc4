r"""Batched conjugate gradients for (A Aᵀ + λ I) u = b in measurement space.

Used by ΠGDM on operators without an SVD: Aᵀ (A Aᵀ + λ I)⁻¹ r. The matrix is symmetric positive
(semi-)definite; with λ > 0 it is definite and CG converges in at most m iterations.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffinv.operators.base import LinearOperator


def solve_normal(op: LinearOperator, b: Tensor, lam: float, max_iter: int = 100,
                 tol: float = 1e-8) -> Tensor:
    """u with (A Aᵀ + λ I) u = b, by CG from u = 0; b, u : (B, *out_shape). Stops at ‖res‖ ≤ tol‖b‖."""
    flat = b.reshape(b.shape[0], -1)
    tiny = torch.finfo(b.dtype).tiny

    def apply(u: Tensor) -> Tensor:
        shaped = u.reshape(b.shape)
        return (op.A(op.At(shaped)) + lam * shaped).reshape(flat.shape)

    u = torch.zeros_like(flat)
    r = flat.clone()
    p = r.clone()
    rs = (r * r).sum(-1, keepdim=True)
    tol = max(tol, 100 * torch.finfo(b.dtype).eps)  # unreachable below the dtype's resolution
    stop = (tol**2) * rs
    for _ in range(max_iter):
        if bool((rs <= stop).all()):
            break
        ap = apply(p)
        alpha = rs / (p * ap).sum(-1, keepdim=True).clamp_min(tiny)
        u = u + alpha * p
        r = r - alpha * ap
        rs_new = (r * r).sum(-1, keepdim=True)
        p = r + (rs_new / rs.clamp_min(tiny)) * p
        rs = rs_new
    return u.reshape(b.shape)
