"""Evaluation of embedded priors: sample grids and model-card figures."""

from diffinv.evaluation.grid import save_grid

__all__ = ["save_grid"]
