r"""Free parameters of an inverse problem and the problem as a function of them.

A :class:`FreeParameter` is a positive scalar θ_j (a noise level, a blur width, a gain) with a start
value and bounds; the estimators move u_j = log θ_j, clipped to [log lower, log upper]. A
:class:`ParametricProblem` is the observation y with a builder θ ↦ InverseProblem(A_θ, y_θ, σ_θ) (y
itself may depend on θ through a change of units, e.g. y_prior = w y₀₁ + lo A_θ𝟙, a θ-free Jacobian).

Names follow the preset's sections: ``noise.sigma_y`` and ``operator.<field>``, where the operator
class lists the field in its ``fittable`` mapping (field → default bounds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from diffinv.operators.dense import DenseOperator
from diffinv.operators.noise import GaussianNoise
from diffinv.samplers.base import InverseProblem

NOISE_PARAM = "noise.sigma_y"


@dataclass(frozen=True)
class FreeParameter:
    """A positive scalar to fit: ``name``, ``start`` value and bounds ``lower`` ≤ start ≤ ``upper``."""

    name: str
    start: float
    lower: float
    upper: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lower) and math.isfinite(self.upper) and 0 < self.lower < self.upper):
            raise ValueError(f"fit {self.name}: expected bounds 0 < lower < upper, got "
                             f"[{self.lower}, {self.upper}]")
        if not self.lower <= self.start <= self.upper:
            raise ValueError(f"fit {self.name}: start {self.start} is outside its bounds "
                             f"[{self.lower}, {self.upper}]")

    def clip_log(self, u: float) -> float:
        """u = log θ clipped to [log lower, log upper]."""
        return min(max(u, math.log(self.lower)), math.log(self.upper))


@dataclass(frozen=True)
class ParametricProblem:
    """y and θ ↦ InverseProblem (module docstring); ``params`` in the order of θ vectors."""

    params: tuple[FreeParameter, ...]
    build: Callable[[dict[str, float]], InverseProblem]
    fixed: dict[str, float] | None = None  # values of the parameters that are not fitted (records only)

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        if not names:
            raise ValueError("fit: expected at least one parameter to fit")
        if len(set(names)) != len(names):
            raise ValueError(f"fit: a parameter is named twice in {', '.join(names)}")

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def values(self, u: Sequence[float]) -> dict[str, float]:
        """θ as a name → value dict from u = log θ."""
        return {p.name: math.exp(v) for p, v in zip(self.params, u, strict=True)}

    def at(self, u: Sequence[float]) -> InverseProblem:
        """The inverse problem at u = log θ."""
        return self.build(self.values(u))

    def start(self) -> list[float]:
        return [math.log(p.start) for p in self.params]


def log_likelihood(problem: InverseProblem, x: Tensor) -> Tensor:
    """log N(y; A x, σ² I) per sample, float64; x (n, *shape) → (n,)."""
    op = problem.operator.original
    x = x.to(dtype=torch.float64, device=op.device)
    y = problem.y.to(dtype=torch.float64, device=op.device)
    return problem.noise.log_likelihood(y.expand(x.shape[0], *y.shape), op.A(x))


def dense_problem(matrix: Tensor, y: Tensor, sigma_y: float, params: Sequence[FreeParameter]
                  ) -> ParametricProblem:
    """y = g A₀ x + σ_y ε with free ``noise.sigma_y`` and/or ``operator.gain`` (g; 1 when not fitted)."""
    allowed = (NOISE_PARAM, "operator.gain")
    for p in params:
        if p.name not in allowed:
            raise ValueError(f"fit: {p.name!r} is not a parameter of a dense problem; expected one of "
                             f"{', '.join(allowed)}")
    base = torch.as_tensor(matrix, dtype=torch.float64)
    fixed = {NOISE_PARAM: float(sigma_y), "operator.gain": 1.0}

    def build(theta: dict[str, float]) -> InverseProblem:
        values = {**fixed, **theta}
        return InverseProblem(DenseOperator(values["operator.gain"] * base), y,
                              GaussianNoise(values[NOISE_PARAM]))

    names = {p.name for p in params}
    return ParametricProblem(tuple(params), build, {k: v for k, v in fixed.items() if k not in names})
