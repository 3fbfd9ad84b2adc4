"""Shared fixtures: seeded generators only (no global RNG)."""

from __future__ import annotations

import pytest

from diffinv.rng import make_generator


@pytest.fixture
def gen():
    return make_generator(1234)
