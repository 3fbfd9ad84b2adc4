"""Explicit randomness: every draw goes through a ``torch.Generator`` (never the global RNG).

A generator lives on a device (:func:`make_generator`); draws happen on the generator's own device
and are moved to the device of the tensors they are for only when the two differ, so a generator on
the device a sampler runs on draws its noise there with no host copy. Reproducibility: the same seed
gives the same samples on a given device; CPU and CUDA generators draw different streams (a CPU
generator gives the same numbers whatever device the sampler runs on, at the cost of a copy per draw).

Several observations in one run (``diffinv batch --items-per-call B``) each keep their own stream: a
:class:`GeneratorBatch` holds one generator per item, and every draw through :func:`randn`,
:func:`rand` and :func:`multinomial` splits its leading dimension into B equal, consecutive blocks,
block i drawn from generator i with the shape it would have in a run of item i alone. The samplers
lay out their rows item by item (items × samples, or items × filters for SMC), so an item's samples
do not depend on which items share its network calls (up to the floating-point effect of the batch
size on the network).
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


class GeneratorBatch:
    """One generator per item of a batched run (module docstring); all on one device."""

    def __init__(self, generators: list[torch.Generator]) -> None:
        if not generators:
            raise ValueError("generators: expected at least one generator")
        devices = {g.device for g in generators}
        if len(devices) != 1:
            raise ValueError(f"generators: expected one device, got {sorted(map(str, devices))}")
        self.generators, self.device = list(generators), generators[0].device

    @classmethod
    def of_seeds(cls, seeds: list[int], device: str | torch.device = "cpu") -> GeneratorBatch:
        return cls([make_generator(s, device) for s in seeds])

    def __len__(self) -> int:
        return len(self.generators)

    def blocks(self, rows: int) -> int:
        """Rows per item of a draw with ``rows`` leading rows (an error unless B divides it)."""
        if rows % len(self.generators):
            raise ValueError(f"generator: a draw of {rows} rows does not split over "
                             f"{len(self.generators)} items")
        return rows // len(self.generators)


Generators = torch.Generator | GeneratorBatch | None


def generator_device(generator: Generators) -> torch.device:
    """The device ``generator`` draws on; the CPU for ``None`` (torch's default CPU generator)."""
    return generator.device if generator is not None else CPU


def item_generators(generator: Generators, num_items: int) -> list[torch.Generator | None]:
    """The generator of each of ``num_items`` items: a batch's own ones, or one shared generator."""
    if isinstance(generator, GeneratorBatch):
        if len(generator) != num_items:
            raise ValueError(f"generator: {len(generator)} generators for {num_items} items")
        return list(generator.generators)
    return [generator] * num_items


def _draw(fn, shape: tuple[int, ...], generator: Generators, like: Tensor) -> Tensor:
    if isinstance(generator, GeneratorBatch):
        block = (generator.blocks(shape[0]), *shape[1:])
        out = torch.cat([fn(block, generator=g, dtype=like.dtype, device=generator.device)
                         for g in generator.generators])
    else:
        out = fn(shape, generator=generator, dtype=like.dtype, device=generator_device(generator))
    return out.to(like.device)


def randn(shape: tuple[int, ...] | torch.Size, generator: Generators, like: Tensor) -> Tensor:
    """Standard normal draws of ``shape`` with the dtype and device of ``like``."""
    return _draw(torch.randn, tuple(shape), generator, like)


def rand(shape: tuple[int, ...] | torch.Size, generator: Generators, like: Tensor) -> Tensor:
    """Uniform [0, 1) draws of ``shape`` with the dtype and device of ``like``."""
    return _draw(torch.rand, tuple(shape), generator, like)


def multinomial(weights: Tensor, num: int, generator: Generators) -> Tensor:
    """``num`` draws with replacement per row of ``weights`` (R, N) → (R, num), on the weights' device."""
    w = weights.to(generator_device(generator))
    if isinstance(generator, GeneratorBatch):
        rows = generator.blocks(w.shape[0])
        out = torch.cat([torch.multinomial(w[i * rows:(i + 1) * rows], num, replacement=True, generator=g)
                         for i, g in enumerate(generator.generators)])
    else:
        out = torch.multinomial(w, num, replacement=True, generator=generator)
    return out.to(weights.device)
