"""Sampler settings for the 25-component GMM benchmark (`diffinv compare`), per sampler name.

Values that depend on d_x are functions of d_x. Each entry documents where its numbers come from.
"""

from __future__ import annotations

from typing import Any


def gmm_preset(sampler: str, dx: int) -> dict[str, Any]:
    """Config overrides for ``sampler`` on the GMM benchmark of dimension ``dx``."""
    presets: dict[str, dict[str, Any]] = {
        "exact": {},
    }
    return dict(presets.get(sampler, {}))
