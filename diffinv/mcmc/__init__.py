"""MCMC building blocks (Langevin steps)."""

from diffinv.mcmc.langevin import tamed_ula_step

__all__ = ["tamed_ula_step"]
