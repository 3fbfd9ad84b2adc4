"""Explicit randomness: every draw goes through a ``torch.Generator`` (never the global RNG).

A generator lives on a device (:func:`make_generator`); draws happen on the generator's own device
and are moved to the device of the tensors they are for only when the two differ, so a generator on
the device a sampler runs on draws its noise there with no host copy. Reproducibility: the same seed
gives the same samples on a given device; CPU and CUDA generators draw different streams (a CPU
generator gives the same numbers whatever device the sampler runs on, at the cost of a copy per draw).
"""

from __future__ import annotations

import torch
from torch import Tensor

CPU = torch.device("cpu")


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator on ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a torch.device), seeded."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device: expected cpu, cuda, cuda:N or a torch.device, got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but no CUDA device is available")
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    return gen


def generator_device(generator: torch.Generator | None) -> torch.device:
    """The device ``generator`` draws on; the CPU for ``None`` (torch's default CPU generator)."""
    return generator.device if generator is not None else CPU


def randn(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None,
          like: Tensor) -> Tensor:
    """Standard normal draws of ``shape`` with the dtype and device of ``like``."""
    z = torch.randn(tuple(shape), generator=generator, dtype=like.dtype, device=generator_device(generator))
    return z.to(like.device)


def rand(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None,
         like: Tensor) -> Tensor:
    """Uniform [0, 1) draws of ``shape`` with the dtype and device of ``like``."""
    u = torch.rand(tuple(shape), generator=generator, dtype=like.dtype, device=generator_device(generator))
    return u.to(like.device)
