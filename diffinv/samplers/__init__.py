"""Posterior samplers behind one interface, and their registry."""

from diffinv.samplers.base import InverseProblem, Sampler, SampleResult, SamplingError
from diffinv.samplers.registry import SAMPLERS, sampler_class

__all__ = ["InverseProblem", "SampleResult", "Sampler", "SamplingError", "SAMPLERS",
           "sampler_class"]
