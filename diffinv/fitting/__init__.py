"""Fitting an inverse problem's noise level and operator parameters while sampling (``--fit``)."""

from diffinv.fitting.loops import FitConfig, FitResult, fit_parameters
from diffinv.fitting.params import FreeParameter, ParametricProblem, dense_problem
from diffinv.fitting.steppers import PosteriorDiffusion

__all__ = ["FitConfig", "FitResult", "FreeParameter", "ParametricProblem", "PosteriorDiffusion",
           "dense_problem", "fit_parameters"]
