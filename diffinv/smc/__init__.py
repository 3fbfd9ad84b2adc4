"""Sequential Monte Carlo: the Feynman–Kac engine, log-domain weights and resampling schemes."""

from diffinv.smc.engine import FeynmanKac, FeynmanKacModel, ParticleSystem, Resampling, SMCResult, SMCState
from diffinv.smc.resampling import RESAMPLING, resample
from diffinv.smc.weights import ess, log_mean_exp, normalise

__all__ = ["FeynmanKac", "FeynmanKacModel", "ParticleSystem", "Resampling", "SMCResult", "SMCState",
           "RESAMPLING", "resample", "ess", "log_mean_exp", "normalise"]
