"""Explicit randomness: every draw goes through a ``torch.Generator`` (never the global RNG).

Draws happen on the generator's own device and are then moved, so one CPU generator with one
seed gives the same numbers whatever device the sampler runs on.
"""

from __future__ import annotations

import torch
from torch import Tensor


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def randn(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None,
          like: Tensor) -> Tensor:
    """Standard normal draws of ``shape`` with the dtype and device of ``like``."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    z = torch.randn(tuple(shape), generator=generator, dtype=like.dtype, device=gen_device)
    return z.to(like.device)


def rand(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None,
         like: Tensor) -> Tensor:
    """Uniform [0, 1) draws of ``shape`` with the dtype and device of ``like``."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(tuple(shape), generator=generator, dtype=like.dtype, device=gen_device)
    return u.to(like.device)
