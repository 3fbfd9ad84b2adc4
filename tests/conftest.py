"""Shared fixtures: seeded generators only (no global RNG)."""

from __future__ import annotations

import pytest

from diffinv.rng import make_generator


@pytest.fixture
def gen():
    return make_generator(1234)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One intra-op thread: the tests are small, and several threads on a busy machine oversubscribe it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
