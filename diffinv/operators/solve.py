r"""Batched conjugate gradients, written once: :func:`conjugate_gradients` for M u = b with M
symmetric positive (semi-)definite, used by :meth:`LinearOperator.pinv` (M = AᵀA) and by
:func:`solve_normal` (M = A Aᵀ + λ I in measurement space).

ΠGDM uses :func:`solve_normal` on operators without an SVD: Aᵀ (A Aᵀ + λ I)⁻¹ r. With λ > 0 the
matrix is definite and CG converges in at most m iterations.

Device hygiene: each row of the batch freezes once it has converged (its u, r and p stop changing,
chosen by torch.where, without a host synchronisation); the host reads the convergence flags only
every ``check_every`` iterations to end the loop early, so one sync per ``check_every`` iterations
and iterations past convergence are harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # base.py imports this module
    from diffinv.operators.base import LinearOperator


def conjugate_gradients(apply: Callable[[Tensor], Tensor], b: Tensor, max_iter: int, tol: float,
                        check_every: int = 10) -> Tensor:
    r"""u with M u = b by CG from u = 0, rows independent; b, u : (B, n), ``apply``(p) = M p (B, n).

    Row i converges at ‖r_i‖ ≤ tol·‖b_i‖ (r = b − M u; tol is floored at 100·eps(dtype), below
    which it is unreachable) or at a breakdown pᵢᵀ M pᵢ ≤ tiny (no further progress possible); from
    then on it is frozen. The loop runs at most ``max_iter`` iterations and ends early at the first
    multiple of ``check_every`` iterations where every row is frozen (module docstring).
    """
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"check_every: expected an integer ≥ 1, got {check_every!r}")
    tiny = torch.finfo(b.dtype).tiny
    tol = max(tol, 100 * torch.finfo(b.dtype).eps)
    u = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = (r * r).sum(-1, keepdim=True)  # (B, 1)
    threshold = tol**2 * rs
    done = rs <= threshold
    one = torch.ones_like(rs)
    for it in range(max_iter):
        ap = apply(p)
        pap = (p * ap).sum(-1, keepdim=True)
        done = done | (pap <= tiny)
        alpha = rs / torch.where(done, one, pap)
        u = torch.where(done, u, u + alpha * p)
        r = torch.where(done, r, r - alpha * ap)
        rs_new = (r * r).sum(-1, keepdim=True)
        p = torch.where(done, p, r + (rs_new / rs.clamp_min(tiny)) * p)
        rs = rs_new
        done = done | (rs <= threshold)
        if (it + 1) % check_every == 0 and bool(done.all()):
            break
    return u


def solve_normal(op: LinearOperator, b: Tensor, lam: float, max_iter: int = 100,
                 tol: float = 1e-8, check_every: int = 10) -> Tensor:
    """u with (A Aᵀ + λ I) u = b, by CG from u = 0; b, u : (B, *out_shape). Stops at ‖res‖ ≤ tol‖b‖
    per row (:func:`conjugate_gradients`)."""
    flat = b.reshape(b.shape[0], -1)

    def apply(u: Tensor) -> Tensor:
        shaped = u.reshape(b.shape)
        return (op.A(op.At(shaped)) + lam * shaped).reshape(flat.shape)

    return conjugate_gradients(apply, flat, max_iter, tol, check_every).reshape(b.shape)
