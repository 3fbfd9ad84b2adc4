"""Refine a trained prior with a small learned correction (discriminator guidance): see :mod:`.prior`."""

from diffinv.refine.prior import RefinedPrior

__all__ = ["RefinedPrior"]
