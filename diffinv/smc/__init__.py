"""Sequential Monte Carlo building blocks: log-domain weights and resampling schemes."""

from diffinv.smc.resampling import RESAMPLING, resample
from diffinv.smc.weights import ess, log_mean_exp, normalise

__all__ = ["RESAMPLING", "resample", "ess", "log_mean_exp", "normalise"]
