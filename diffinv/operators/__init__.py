"""Linear operators, noise models and the operator registry."""

from diffinv.operators.base import LinearOperator, SVDOperator
from diffinv.operators.compose import ComposedOperator, compose
from diffinv.operators.dense import DenseOperator, SelectOperator
from diffinv.operators.noise import GaussianNoise
from diffinv.operators.registry import OPERATORS, operator_class
from diffinv.operators.spectral import SpectralView

__all__ = ["LinearOperator", "SVDOperator", "ComposedOperator", "compose", "DenseOperator",
           "SelectOperator", "GaussianNoise", "OPERATORS", "operator_class", "SpectralView"]
