r"""Linear operators y = A x on batches, with an optional SVD given as fast transforms.

Shapes: x is (B, *in_shape) with d = prod(in_shape); y is (B, *out_shape) with m = prod(out_shape).

SVD layout (the DDRM ``H_functions`` convention, operators.md §3): A = U diag(s) Vᵀ with
U: R^m → R^m and V: R^d → R^d orthogonal, given as transforms

    Vt(x) : (B, *in_shape)  → (B, d)     spectral coordinates x̄ = Vᵀ x
    V(z)  : (B, d)          → (B, *in_shape)
    Ut(y) : (B, *out_shape) → (B, m)     ȳ = Uᵀ y
    U(z)  : (B, m)          → (B, *out_shape)
    singulars : (k,), k = min(m, d)      s_i pairs spectral coordinate i of U and of V

so that A x = U(pad_m(s ⊙ x̄_{:k})), Aᵀ y = V(pad_d(s ⊙ ȳ_{:k})), A⁺ y = V(pad_d(s⁺ ⊙ ȳ_{:k})) with
s⁺_i = 1/s_i when s_i > rcond · max(s) and 0 otherwise. :class:`SVDOperator` derives A, Aᵀ and A⁺
from the transforms in this one place. Operators without an SVD get A⁺ from conjugate gradients on
the normal equations (the minimum-norm least-squares solution).

Operators hold only buffers fixed at construction: calling them never mutates them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

MAX_MATRIX_BYTES = 2 * 2**30  # LinearOperator.matrix() refuses larger dense builds


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


class LinearOperator(ABC):
    """A linear map A: R^{in_shape} → R^{out_shape}, batched over a leading dimension."""

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    has_svd: bool = False

    @property
    def in_dim(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_dim(self) -> int:
        return math.prod(self.out_shape)

    @abstractmethod
    def A(self, x: Tensor) -> Tensor:
        """y = A x; (B, *in_shape) → (B, *out_shape)."""

    @abstractmethod
    def At(self, y: Tensor) -> Tensor:
        """x = Aᵀ y; (B, *out_shape) → (B, *in_shape)."""

    def pinv(self, y: Tensor, max_iter: int | None = None, tol: float = 1e-10) -> Tensor:
        r"""A⁺ y by conjugate gradients on AᵀA x = Aᵀ y from x = 0 (stays in range(Aᵀ), so the
        limit is the minimum-norm least-squares solution). (B, *out_shape) → (B, *in_shape)."""
        b = _flat(self.At(y))
        x = torch.zeros_like(b)
        r = b.clone()
        p = r.clone()
        rs = (r * r).sum(-1, keepdim=True)
        # a tolerance below the dtype's resolution is unreachable; iterating past convergence
        # divides by a vanishing pᵀAᵀAp, so the tolerance is floored at 100·eps(dtype)
        tol = max(tol, 100 * torch.finfo(b.dtype).eps)
        threshold = tol**2 * rs.clamp_min(torch.finfo(b.dtype).tiny)
        for _ in range(max_iter or 2 * self.in_dim):
            if bool((rs <= threshold).all()):
                break
            ap = _flat(self.At(self.A(p.reshape(-1, *self.in_shape))))
            alpha = rs / (p * ap).sum(-1, keepdim=True).clamp_min(torch.finfo(b.dtype).tiny)
            x = x + alpha * p
            r = r - alpha * ap
            rs_new = (r * r).sum(-1, keepdim=True)
            p = r + (rs_new / rs.clamp_min(torch.finfo(b.dtype).tiny)) * p
            rs = rs_new
        return x.reshape(-1, *self.in_shape)

    def matrix(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """The dense (m, d) matrix of A, built column by column (small problems only).

        Needs d·(d + m) entries (the identity and the result); above MAX_MATRIX_BYTES (e.g. any image
        operator at 256×256×3, d = 196 608: 309 GB) it raises ValueError instead of exhausting memory."""
        need = self.in_dim * (self.in_dim + self.out_dim) * torch.empty((), dtype=dtype).element_size()
        if need > MAX_MATRIX_BYTES:
            raise ValueError(f"matrix: the dense ({self.out_dim}, {self.in_dim}) matrix of "
                             f"{type(self).__name__} needs {need / 2**30:.3g} GiB (limit "
                             f"{MAX_MATRIX_BYTES / 2**30:.3g} GiB); matrix() is for small problems")
        eye = torch.eye(self.in_dim, dtype=dtype).reshape(self.in_dim, *self.in_shape)
        return _flat(self.A(eye)).T.contiguous()

    def describe(self) -> dict:
        """A JSON-able description (name and parameters)."""
        return {"name": type(self).__name__, "in_shape": list(self.in_shape),
                "out_shape": list(self.out_shape)}

    def check_input(self, x: Tensor, name: str = "x") -> None:
        if tuple(x.shape[1:]) != tuple(self.in_shape):
            raise ValueError(f"{name}: expected shape (B, {', '.join(map(str, self.in_shape))}), "
                             f"got {tuple(x.shape)}")

    def check_output(self, y: Tensor, name: str = "y") -> None:
        if tuple(y.shape[1:]) != tuple(self.out_shape):
            raise ValueError(f"{name}: expected shape (B, {', '.join(map(str, self.out_shape))}), "
                             f"got {tuple(y.shape)}")


class SVDOperator(LinearOperator):
    """A linear operator given by its SVD transforms (module docstring); A, Aᵀ, A⁺ follow."""

    has_svd = True
    rcond: float = 1e-7

    @abstractmethod
    def V(self, z: Tensor) -> Tensor: ...

    @abstractmethod
    def Vt(self, x: Tensor) -> Tensor: ...

    @abstractmethod
    def U(self, z: Tensor) -> Tensor: ...

    @abstractmethod
    def Ut(self, y: Tensor) -> Tensor: ...

    @abstractmethod
    def singulars(self) -> Tensor:
        """s, shape (k,) with k = min(m, d), non-negative."""

    def pad(self, z: Tensor, size: int) -> Tensor:
        """Zero-pad spectral coordinates (B, k) to (B, size)."""
        if z.shape[1] == size:
            return z
        return torch.cat([z, z.new_zeros(z.shape[0], size - z.shape[1])], dim=1)

    def inverse_singulars(self) -> Tensor:
        """s⁺: 1/s_i above the cut-off rcond · max(s), 0 below it. Shape (k,)."""
        s = self.singulars()
        keep = s > self.rcond * s.max().clamp_min(torch.finfo(s.dtype).tiny)
        return torch.where(keep, 1.0 / torch.where(keep, s, torch.ones_like(s)), torch.zeros_like(s))

    def observed(self) -> Tensor:
        """Boolean mask (d,) of spectral coordinates that carry an observation (s⁺ > 0)."""
        mask = torch.zeros(self.in_dim, dtype=torch.bool, device=self.singulars().device)
        mask[: self.singulars().numel()] = self.inverse_singulars() > 0
        return mask

    def A(self, x: Tensor) -> Tensor:
        s = self.singulars().to(x)
        xb = self.Vt(x)[:, : s.numel()]
        return self.U(self.pad(s * xb, self.out_dim))

    def At(self, y: Tensor) -> Tensor:
        s = self.singulars().to(y)
        yb = self.Ut(y)[:, : s.numel()]
        return self.V(self.pad(s * yb, self.in_dim))

    def pinv(self, y: Tensor, max_iter: int | None = None, tol: float = 1e-10) -> Tensor:
        s_inv = self.inverse_singulars().to(y)
        yb = self.Ut(y)[:, : s_inv.numel()]
        return self.V(self.pad(s_inv * yb, self.in_dim))


class IdentityUOperator(SVDOperator):
    """An SVD operator whose left singular vectors are the identity: Uᵀy and U z only reshape."""

    def Ut(self, y: Tensor) -> Tensor:
        self.check_output(y)
        return y.reshape(y.shape[0], -1)

    def U(self, z: Tensor) -> Tensor:
        return z.reshape(z.shape[0], *self.out_shape)
