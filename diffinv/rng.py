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

Antithetic sampling (:class:`Antithetic`, a sampler's ``antithetic`` option): every normal draw of
B·k rows, item by item, pairs rows 2i and 2i + 1 of each item, the second the negative of the first
(an odd k leaves its last row unpaired). A sampler driven only by Gaussian noise, rows independent of
each other, then returns samples each of which has the law it had before, while the two of a pair move
in opposite directions: their mean estimates the posterior mean with less variance (antithetic variates,
Hammersley & Morton 1956). For an affine map of the noise (an exact Gaussian posterior, x = μ + L z) a
pair's mean is μ exactly. Pairs are adjacent, so any even prefix of the samples consists of whole pairs.
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


class Antithetic:
    """Antithetic normal draws over ``inner`` for rows laid out item by item, ``per_item`` rows each
    (module docstring). Uniform and multinomial draws are refused: samplers that resample are not
    driven by their Gaussian noise alone."""

    def __init__(self, inner: torch.Generator | GeneratorBatch | None, per_item: int) -> None:
        if isinstance(inner, Antithetic):
            raise ValueError("generator: already antithetic")
        if per_item < 1:
            raise ValueError(f"per_item: expected a positive integer, got {per_item}")
        self.inner, self.per_item = inner, int(per_item)

    @property
    def device(self) -> torch.device:
        return generator_device(self.inner)

    def draw(self, fn, shape: tuple[int, ...], like: Tensor) -> Tensor:
        rows, k = shape[0], self.per_item
        if rows % k:
            raise ValueError(f"antithetic: a draw of {rows} rows does not split into items of {k} samples")
        items, half = rows // k, (k + 1) // 2
        base = _draw(fn, (items * half, *shape[1:]), self.inner, like).reshape(items, half, *shape[1:])
        return mirrored(base, k, dim=1).reshape(shape)


def mirrored(base: Tensor, k: int, dim: int = 0) -> Tensor:
    """Antithetic rows along ``dim`` from ``base`` holding ⌈k/2⌉ there: z₀, −z₀, z₁, −z₁, …, k of them."""
    return torch.stack([base, -base], dim=dim + 1).flatten(dim, dim + 1).narrow(dim, 0, k)


Generators = torch.Generator | GeneratorBatch | Antithetic | None


def generator_device(generator: Generators) -> torch.device:
    """The device ``generator`` draws on; the CPU for ``None`` (torch's default CPU generator)."""
    return generator.device if generator is not None else CPU


def _refuse_antithetic(generator: Generators, what: str) -> None:
    if isinstance(generator, Antithetic):
        raise ValueError(f"antithetic: only normal draws can be paired, not {what} draws")


def item_generators(generator: Generators, num_items: int) -> list[torch.Generator | None]:
    """The generator of each of ``num_items`` items: a batch's own ones, or one shared generator (the
    inner one of an :class:`Antithetic`: the caller pairs its own draws, see :func:`antithetic_of`)."""
    if isinstance(generator, Antithetic):
        generator = generator.inner
    if isinstance(generator, GeneratorBatch):
        if len(generator) != num_items:
            raise ValueError(f"generator: {len(generator)} generators for {num_items} items")
        return list(generator.generators)
    return [generator] * num_items


def antithetic_of(generator: Generators) -> bool:
    """Whether ``generator`` pairs its normal draws (:class:`Antithetic`)."""
    return isinstance(generator, Antithetic)


def _draw(fn, shape: tuple[int, ...], generator: Generators, like: Tensor) -> Tensor:
    if isinstance(generator, Antithetic):
        return generator.draw(fn, shape, like)
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
    _refuse_antithetic(generator, "uniform")
    return _draw(torch.rand, tuple(shape), generator, like)


def multinomial(weights: Tensor, num: int, generator: Generators) -> Tensor:
    """``num`` draws with replacement per row of ``weights`` (R, N) → (R, num), on the weights' device."""
    _refuse_antithetic(generator, "multinomial")
    w = weights.to(generator_device(generator))
    if isinstance(generator, GeneratorBatch):
        rows = generator.blocks(w.shape[0])
        out = torch.cat([torch.multinomial(w[i * rows:(i + 1) * rows], num, replacement=True, generator=g)
                         for i, g in enumerate(generator.generators)])
    else:
        out = torch.multinomial(w, num, replacement=True, generator=generator)
    return out.to(weights.device)
