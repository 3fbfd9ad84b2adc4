"""The operator registry: name → class. Adding an operator = one file + one line here.

Every class gives a one-line summary (its docstring's first line) and ``example(generator)``,
a small instance that the shared test battery runs on.
"""

from __future__ import annotations

from diffinv.operators.base import LinearOperator
from diffinv.operators.compose import ComposedOperator
from diffinv.operators.dense import DenseOperator, SelectOperator

OPERATORS: dict[str, type[LinearOperator]] = {
    "dense": DenseOperator,
    "select": SelectOperator,
    "compose": ComposedOperator,
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
