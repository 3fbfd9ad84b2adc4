"""The sampler registry: name → class. Adding a sampler = one file + one line here."""

from __future__ import annotations

from diffinv.samplers.base import Sampler
from diffinv.samplers.dcps import DCPSSampler
from diffinv.samplers.ddrm import DDRMSampler
from diffinv.samplers.dps import DPSSampler
from diffinv.samplers.exact import ExactSampler
from diffinv.samplers.mcgdiff import MCGDiffSampler
from diffinv.samplers.pgdm import PGDMSampler
from diffinv.samplers.tds import TDSSampler

SAMPLERS: dict[str, type[Sampler]] = {
    "dps": DPSSampler,
    "pgdm": PGDMSampler,
    "mcgdiff": MCGDiffSampler,
    "tds": TDSSampler,
    "dcps": DCPSSampler,
    "ddrm": DDRMSampler,
    "exact": ExactSampler,
}


def sampler_class(name: str) -> type[Sampler]:
    """Look up a sampler class; unknown names raise a one-line ValueError."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"sampler: unknown name {name!r}; expected one of "
                         f"{', '.join(SAMPLERS)}") from None
