r"""Composition of linear operators: (outer ∘ inner) x = outer.A(inner.A(x)).

Aᵀ = innerᵀ outerᵀ. The SVD of a product is not the product of SVDs, so a composition has no
fast SVD; A⁺ comes from conjugate gradients (:meth:`LinearOperator.pinv`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffinv.operators.base import LinearOperator


class ComposedOperator(LinearOperator):
    """outer ∘ inner; x (B, *inner.in_shape) → y (B, *outer.out_shape)."""

    def __init__(self, outer: LinearOperator, inner: LinearOperator) -> None:
        if tuple(outer.in_shape) != tuple(inner.out_shape):
            raise ValueError(f"compose: inner output shape {tuple(inner.out_shape)} does not match "
                             f"outer input shape {tuple(outer.in_shape)}")
        self.outer, self.inner = outer, inner
        self.in_shape = tuple(inner.in_shape)
        self.out_shape = tuple(outer.out_shape)

    @classmethod
    def example(cls, generator: torch.Generator) -> ComposedOperator:
        """Select 3 of 5 coordinates after a random dense 5×8 map (test battery)."""
        from diffinv.operators.dense import DenseOperator, SelectOperator

        inner = DenseOperator(torch.randn(5, 8, generator=generator, dtype=torch.float64))
        return cls(SelectOperator(5, [0, 2, 4]), inner)

    def A(self, x: Tensor) -> Tensor:
        return self.outer.A(self.inner.A(x))

    def At(self, y: Tensor) -> Tensor:
        return self.inner.At(self.outer.At(y))

    def describe(self) -> dict:
        return {"name": "compose", "outer": self.outer.describe(), "inner": self.inner.describe()}


def compose(*operators: LinearOperator) -> LinearOperator:
    """compose(A1, A2, …, An) = A1 ∘ A2 ∘ … ∘ An (An is applied first)."""
    if not operators:
        raise ValueError("compose: expected at least one operator")
    result = operators[-1]
    for op in reversed(operators[:-1]):
        result = ComposedOperator(op, result)
    return result
