r"""The prior protocol every sampler uses, and a wrapper that counts and times its evaluations.

A *diffusion prior* answers one question: given a batch x_t of shape (B, *shape) at an integer
timestep t, what are the Tweedie denoiser x̂0(x_t, t) = E[X_0 | X_t = x_t] and the noise prediction
ε(x_t, t)? The two are tied by x_t = √ᾱ_t x̂0 + √(1−ᾱ_t) ε (``schedules.eps_to_x0``). Samplers cannot
tell a UNet from an analytic prior; that is what makes exact tests possible.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from diffinv.schedules import NoiseSchedule


@dataclass(frozen=True)
class Denoised:
    """Output of a prior evaluation: both of shape (B, *shape)."""

    x0: Tensor
    eps: Tensor


@runtime_checkable
class DiffusionPrior(Protocol):
    """What a sampler may ask of a prior.

    Attributes
    ----------
    schedule : the VP schedule the prior was trained (or defined) on.
    shape : per-sample data shape, e.g. (d,) for vectors or (C, H, W) for images.
    value_range : (lo, hi) of clean data, or None if unbounded (analytic priors).
    differentiable : whether autograd through ``denoise`` is supported.
    """

    schedule: NoiseSchedule
    shape: tuple[int, ...]
    value_range: tuple[float, float] | None
    differentiable: bool

    def denoise(self, x_t: Tensor, t: int) -> Denoised:
        """x̂0 and ε at integer timestep t ∈ [0, T−1]; x_t has shape (B, *shape)."""
        ...


def check_batch(prior: DiffusionPrior, x_t: Tensor, t: int) -> None:
    """Raise a one-line ValueError if x_t or t do not fit the prior."""
    if tuple(x_t.shape[1:]) != tuple(prior.shape):
        raise ValueError(f"x_t: expected shape (B, {', '.join(map(str, prior.shape))}), "
                         f"got {tuple(x_t.shape)}")
    if not 0 <= t < prior.schedule.num_timesteps:
        raise ValueError(f"t: expected an integer in [0, {prior.schedule.num_timesteps - 1}], got {t}")


@dataclass
class EvaluationStats:
    """Counts of single-item prior evaluations and the seconds they took."""

    forward: int = 0
    backward: int = 0
    forward_seconds: float = 0.0
    backward_seconds: float = 0.0

    @property
    def seconds(self) -> float:
        return self.forward_seconds + self.backward_seconds


@dataclass
class _BackwardClock:
    """Shared by the markers of one call: counts the backward pass once and times it."""

    stats: EvaluationStats
    batch: int
    started: float | None = None
    done: bool = field(default=False)


class _OutputMark(torch.autograd.Function):
    """Identity whose backward marks the moment gradients reach the prior's outputs."""

    @staticmethod
    def forward(ctx, x: Tensor, clock: _BackwardClock) -> Tensor:  # type: ignore[override]
        ctx.clock = clock
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        clock: _BackwardClock = ctx.clock
        if clock.started is None:
            clock.started = time.perf_counter()
            clock.stats.backward += clock.batch
        return grad, None


class _InputMark(torch.autograd.Function):
    """Identity whose backward marks the moment gradients leave the prior (through its input)."""

    @staticmethod
    def forward(ctx, x: Tensor, clock: _BackwardClock) -> Tensor:  # type: ignore[override]
        ctx.clock = clock
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        clock: _BackwardClock = ctx.clock
        if clock.started is not None and not clock.done:
            clock.stats.backward_seconds += time.perf_counter() - clock.started
            clock.done = True
        return grad, None


class CountingPrior:
    """Wraps a prior; counts forward and backward evaluations (per batch item) and their time.

    A backward evaluation is one vector–Jacobian product through the prior for one item; it is
    detected with autograd markers, so samplers need no bookkeeping. ``max_batch`` splits large
    batches into chunks of at most that many items (to bound memory); chunking does not change
    results.
    """

    def __init__(self, prior: DiffusionPrior, max_batch: int | None = None) -> None:
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch: expected a positive integer, got {max_batch}")
        self.prior = prior
        self.max_batch = max_batch
        self.stats = EvaluationStats()
        self.schedule = prior.schedule
        self.shape = tuple(prior.shape)
        self.value_range = prior.value_range
        self.differentiable = prior.differentiable

    def denoise(self, x_t: Tensor, t: int) -> Denoised:
        batch = x_t.shape[0]
        track_grad = x_t.requires_grad and torch.is_grad_enabled()
        clock = _BackwardClock(self.stats, batch)
        x_in = _InputMark.apply(x_t, clock) if track_grad else x_t
        start = time.perf_counter()
        # Without a gradient to track, no graph is built: a network whose parameters require grad
        # would otherwise chain every step's activations onto the particles (memory grows with steps).
        with torch.set_grad_enabled(track_grad):
            if self.max_batch is None or batch <= self.max_batch:
                out = self.prior.denoise(x_in, t)
            else:
                parts = [self.prior.denoise(chunk, t) for chunk in x_in.split(self.max_batch)]
                out = Denoised(x0=torch.cat([p.x0 for p in parts]), eps=torch.cat([p.eps for p in parts]))
        self.stats.forward_seconds += time.perf_counter() - start
        self.stats.forward += batch
        if track_grad:
            out = Denoised(x0=_OutputMark.apply(out.x0, clock), eps=_OutputMark.apply(out.eps, clock))
        return out
