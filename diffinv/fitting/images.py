r"""Free parameters of an image problem preset: ``--fit noise.sigma_y --fit operator.sigma``.

The parameters are named as the preset's fields: ``noise.sigma_y`` (σ_y on the [0, 1] pixel scale)
and ``operator.<field>`` for a field the operator class lists in ``fittable`` (e.g. the width
``sigma`` of ``blur_gauss``). Start value and bounds come, in this order, from ``--fit NAME=START``,
the preset's ``fit`` section, and the defaults: the preset's own value as start, the class's bounds
(σ_y: [``SIGMA_Y_BOUNDS``]). A start outside the bounds widens nothing: it is an error.

The problem at θ is the preset with θ written into its fields, its operator rebuilt for the prior's
image shape, and the observation y₀₁ (fixed) mapped into the prior's units, y = w y₀₁ + lo A_θ𝟙,
σ = w σ_y (:mod:`diffinv.units`).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from diffinv.fitting.params import NOISE_PARAM, FreeParameter, ParametricProblem
from diffinv.operators.noise import GaussianNoise
from diffinv.operators.registry import operator_class
from diffinv.problems import Problem, apply_overrides, build_operator, fittable_names
from diffinv.samplers.base import InverseProblem
from diffinv.typed import parse_value
from diffinv.units import PixelUnits

SIGMA_Y_BOUNDS = (1e-3, 0.5)


def parse_fit(items: Sequence[str]) -> dict[str, float | None]:
    """['noise.sigma_y', 'operator.sigma=2'] → {'noise.sigma_y': None, 'operator.sigma': 2.0}."""
    out: dict[str, float | None] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not name:
            raise ValueError(f"fit: expected NAME or NAME=START (e.g. operator.sigma=2), got {item!r}")
        if sep:
            start = parse_value(value)
            if isinstance(start, bool) or not isinstance(start, (int, float)) or not start > 0:
                raise ValueError(f"fit: the start of {name} must be a number > 0, got {value!r}")
            out[name] = float(start)
        else:
            out[name] = None
    return out


def free_parameters(problem: Problem, requested: dict[str, float | None]) -> list[FreeParameter]:
    """The :class:`FreeParameter` of each requested name (module docstring)."""
    allowed = fittable_names(problem.operator["name"])
    params = []
    for name, start in requested.items():
        if name not in allowed:
            raise ValueError(f"fit: {name!r} is not fittable for the operator {problem.operator['name']}; "
                             f"expected one of {', '.join(allowed)}")
        if name == NOISE_PARAM:
            current, (lower, upper) = problem.sigma_y, SIGMA_Y_BOUNDS
        else:
            field = name.split(".", 1)[1]
            cls = operator_class(problem.operator["name"])
            lower, upper = cls.fittable[field]
            current = problem.operator.get(field, _default(cls, field))
        spec = problem.fit.get(name, {})
        start = start if start is not None else spec.get("start", current)
        if start is None:
            raise ValueError(f"fit: {name} has no value in the preset; give its start as --fit {name}=START "
                             "or in the preset's fit section")
        params.append(FreeParameter(name, float(start), float(spec.get("lower", lower)),
                                    float(spec.get("upper", upper))))
    return params


def _default(cls: type, field: str) -> float | None:
    import inspect

    value = inspect.signature(cls.__init__).parameters[field].default
    return None if value is None else float(value)


def image_problem(problem: Problem, shape: tuple[int, ...], y01: Tensor, units: PixelUnits,
                  params: Sequence[FreeParameter], mask: str | None = None,
                  kernel: str | None = None) -> ParametricProblem:
    """The preset's problem as a function of θ (module docstring); y₀₁ (*A.out_shape) on [0, 1]."""
    names = {p.name for p in params}
    fixed = {NOISE_PARAM: problem.sigma_y}
    for name in fittable_names(problem.operator["name"]):
        if name != NOISE_PARAM and name not in names:
            field = name.split(".", 1)[1]
            value = problem.operator.get(field, _default(operator_class(problem.operator["name"]), field))
            if value is not None:
                fixed[name] = float(value)

    def build(theta: dict[str, float]) -> InverseProblem:
        ops = {k: v for k, v in theta.items() if k != NOISE_PARAM}
        at = apply_overrides(problem, ops) if ops else problem
        op = build_operator(at, tuple(shape), mask=mask, kernel=kernel)
        sigma_y = theta.get(NOISE_PARAM, problem.sigma_y)
        y = units.observation_to_prior(y01.double(), op)
        return InverseProblem(op, y, GaussianNoise(units.sigma_to_prior(sigma_y)))

    return ParametricProblem(tuple(params), build, {k: v for k, v in fixed.items() if k not in names})
