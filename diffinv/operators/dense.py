r"""Operators on flat vectors for toy problems: a dense matrix with its SVD, and coordinate selection.

Shapes: x (B, d) → y (B, m).
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffinv.operators.base import SVDOperator


class DenseOperator(SVDOperator):
    r"""y = A x for an explicit matrix A (m, d); full SVD A = U diag(s) Vᵀ by LAPACK (float64).

    Memory O(m² + d²): for toy problems and tests only.
    """

    def __init__(self, matrix: Tensor) -> None:
        a = torch.as_tensor(matrix, dtype=torch.float64)
        if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
            raise ValueError(f"matrix: expected a 2-D (m, d) array, got shape {tuple(a.shape)}")
        if not bool(torch.isfinite(a).all()):
            raise ValueError("matrix: contains NaN or infinite entries")
        self._matrix = a
        self.in_shape = (a.shape[1],)
        self.out_shape = (a.shape[0],)
        u, s, vh = torch.linalg.svd(a, full_matrices=True)
        self._u, self._s, self._vh = u, s, vh

    @classmethod
    def example(cls, generator: torch.Generator) -> DenseOperator:
        """A random 3×7 Gaussian matrix (test battery)."""
        return cls(torch.randn(3, 7, generator=generator, dtype=torch.float64))

    def matrix(self, dtype: torch.dtype = torch.float64) -> Tensor:
        return self._matrix.to(dtype)

    def A(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return x @ self._matrix.T.to(x)

    def At(self, y: Tensor) -> Tensor:
        self.check_output(y)
        return y @ self._matrix.to(y)

    def V(self, z: Tensor) -> Tensor:
        return z @ self._vh.to(z)

    def Vt(self, x: Tensor) -> Tensor:
        return x @ self._vh.T.to(x)

    def U(self, z: Tensor) -> Tensor:
        return z @ self._u.T.to(z)

    def Ut(self, y: Tensor) -> Tensor:
        return y @ self._u.to(y)

    def describe(self) -> dict:
        return {"name": "dense", "shape": list(self._matrix.shape)}


class SelectOperator(SVDOperator):
    r"""y = x[idx]: keep the coordinates ``idx`` (distinct) of a d-vector ("inpainting" of vectors).

    SVD: V is the permutation that lists kept coordinates first, U = I, s = 1.
    """

    def __init__(self, dim: int, idx: Tensor | list[int]) -> None:
        idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
        if idx.numel() < 1 or idx.unique().numel() != idx.numel():
            raise ValueError("idx: expected a non-empty list of distinct coordinates")
        if bool((idx < 0).any()) or bool((idx >= dim).any()):
            raise ValueError(f"idx: coordinates must lie in [0, {dim - 1}]")
        keep = torch.zeros(dim, dtype=torch.bool)
        keep[idx] = True
        self._idx = idx
        self._perm = torch.cat([idx, torch.nonzero(~keep).reshape(-1)])  # V: kept first
        self._inv = torch.argsort(self._perm)
        self.in_shape = (dim,)
        self.out_shape = (idx.numel(),)
        self._s = torch.ones(self.out_dim, dtype=torch.float64)

    @classmethod
    def example(cls, generator: torch.Generator) -> SelectOperator:
        """Keep 3 random coordinates of 6 (test battery)."""
        return cls(6, torch.randperm(6, generator=generator)[:3])

    def A(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return x[:, self._idx]

    def At(self, y: Tensor) -> Tensor:
        self.check_output(y)
        x = y.new_zeros(y.shape[0], self.in_dim)
        x[:, self._idx] = y
        return x

    def V(self, z: Tensor) -> Tensor:
        return z[:, self._inv]

    def Vt(self, x: Tensor) -> Tensor:
        return x[:, self._perm]

    def U(self, z: Tensor) -> Tensor:
        return z

    def Ut(self, y: Tensor) -> Tensor:
        return y

    def describe(self) -> dict:
        return {"name": "select", "dim": self.in_dim, "idx": self._idx.tolist()}
