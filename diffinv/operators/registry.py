"""The operator registry: name → class. Adding an operator = one file + one line here.

Every class gives a one-line summary (its docstring's first line) and ``example(generator)``,
a small instance that the shared test battery runs on.
"""

from __future__ import annotations

from diffinv.operators.base import LinearOperator
from diffinv.operators.blur import CircularBlur, GaussianBlur, MotionBlur, UniformBlur
from diffinv.operators.colorization import Colorization
from diffinv.operators.compose import ComposedOperator
from diffinv.operators.dense import DenseOperator, SelectOperator
from diffinv.operators.inpainting import (
    BoxInpainting,
    HalfInpainting,
    Inpainting,
    Outpainting,
    RandomInpainting,
)
from diffinv.operators.superres import AvgPoolSR, BicubicSR

OPERATORS: dict[str, type[LinearOperator]] = {
    "dense": DenseOperator,
    "select": SelectOperator,
    "compose": ComposedOperator,
    "sr_avgpool": AvgPoolSR,
    "sr_bicubic": BicubicSR,
    "inpaint_mask": Inpainting,
    "inpaint_box": BoxInpainting,
    "inpaint_random": RandomInpainting,
    "inpaint_half": HalfInpainting,
    "outpaint": Outpainting,
    "blur_kernel": CircularBlur,
    "blur_gauss": GaussianBlur,
    "blur_uniform": UniformBlur,
    "blur_motion": MotionBlur,
    "colorize": Colorization,
}


def operator_class(name: str) -> type[LinearOperator]:
    """Look up an operator class; unknown names raise a one-line ValueError."""
    try:
        return OPERATORS[name]
    except KeyError:
        raise ValueError(f"operator: unknown name {name!r}; expected one of "
                         f"{', '.join(sorted(OPERATORS))}") from None


def summary(cls: type) -> str:
    """First line of a class docstring."""
    return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
