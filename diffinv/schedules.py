r"""Variance-preserving noise schedules, timestep grids and the DDIM(η) bridge kernel.

Conventions (one place for the whole package)
---------------------------------------------
* Forward process (DDPM, Ho et al. 2020):  x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε,  t = 0, …, T − 1,
  ᾱ_t = Π_{s ≤ t} (1 − β_s)  (0-indexed, so ᾱ_0 = 1 − β_0 ≈ 0.9999).
* The network (or analytic prior) is queried at integer time t with noise level ᾱ_t — the same index.
  The official DCPS code (YazidJanati/dcps) prepends a 1.0 to ᾱ and so queries the network one step
  off (an off-by-one noted in a comment of that code); we do not.
* The pseudo-time ``CLEAN = -1`` denotes the clean data, ᾱ_{-1} := 1. A bridge step into ``CLEAN``
  returns x̂0 exactly, so every sampler ends at t = 0 "cleanly" with one last denoising.

Notation table
--------------
=================  ==========================================
code               paper
=================  ==========================================
``alpha_bar[t]``   ᾱ_t
``betas[t]``       β_t
``eta``            η (DDIM; η = 1 is DDPM ancestral sampling)
``sigma``          σ_{t→s} (std of the bridge kernel)
``c_x, c_0``       coefficients of x_t and x̂0 in the bridge mean
=================  ==========================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from diffinv.rng import randn

CLEAN = -1
"""Pseudo-timestep of clean data (ᾱ = 1)."""

ScheduleKind = Literal["linear", "cosine"]


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    r"""An immutable VP schedule: β_t and ᾱ_t for t = 0 … T−1, stored in float64.

    Build it with :func:`linear_schedule` or :func:`cosine_schedule` (or :func:`make_schedule`).
    """

    betas: Tensor  # (T,) float64
    kind: str = "custom"
    alpha_bar: Tensor = field(init=False)  # (T,) float64

    def __post_init__(self) -> None:
        betas = torch.as_tensor(self.betas, dtype=torch.float64)
        if betas.ndim != 1 or betas.numel() < 2:
            raise ValueError(f"betas: expected a 1-D tensor with ≥ 2 entries, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas: every β_t must lie in (0, 1)")
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alpha_bar", torch.cumprod(1.0 - betas, dim=0))
        # Python floats for look-ups inside sampler loops (no tensor → Python conversion per step)
        object.__setattr__(self, "_alpha_bar_list", self.alpha_bar.tolist())

    @property
    def num_timesteps(self) -> int:
        """T, the number of training timesteps."""
        return int(self.betas.numel())

    def alpha_bar_at(self, t: int) -> float:
        """ᾱ_t as a Python float; ``t = CLEAN`` (−1) gives 1.0."""
        if t == CLEAN:
            return 1.0
        if not 0 <= t < self.num_timesteps:
            raise ValueError(f"t: expected an integer in [-1, {self.num_timesteps - 1}], got {t}")
        return self._alpha_bar_list[t]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "num_timesteps": self.num_timesteps}


def linear_schedule(num_timesteps: int = 1000, beta_start: float = 1e-4,
                    beta_end: float = 0.02) -> NoiseSchedule:
    """DDPM linear schedule β_t = linspace(beta_start, beta_end, T) (Ho et al. 2020, §4)."""
    betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
    return NoiseSchedule(betas=betas, kind="linear")


def cosine_schedule(num_timesteps: int = 1000, s: float = 0.008,
                    max_beta: float = 0.999) -> NoiseSchedule:
    r"""Cosine schedule of Nichol & Dhariwal (2021, eq. 17).

    ᾱ(u) = f(u)/f(0), f(u) = cos²(((u/T) + s)/(1 + s) · π/2), and β_t = min(1 − ᾱ(t+1)/ᾱ(t), max_beta),
    so the stored ᾱ_t = Π_{s≤t}(1 − β_s) equals ᾱ(t + 1) up to the clipping of β.
    """
    u = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(min=1e-8, max=max_beta)
    return NoiseSchedule(betas=betas, kind="cosine")


def make_schedule(kind: ScheduleKind = "linear", num_timesteps: int = 1000) -> NoiseSchedule:
    """Schedule by name: ``"linear"`` or ``"cosine"``."""
    if kind == "linear":
        return linear_schedule(num_timesteps)
    if kind == "cosine":
        return cosine_schedule(num_timesteps)
    raise ValueError(f"schedule: expected 'linear' or 'cosine', got {kind!r}")


def timestep_grid(num_timesteps: int, num_steps: int, start: int | None = None) -> list[int]:
    r"""A uniform sub-sequence of {0, …, start} with ``num_steps`` distinct entries, in *descending* order.

    The grid is round(linspace(start, 0, n)) with ``start`` = T − 1 by default: it starts at ``start`` and
    ends at t = 0 (a grid of one step is [0]). Samplers iterate over consecutive pairs and finish with the
    bridge 0 → ``CLEAN``; with n = T the grid is every timestep (full DDPM).
    """
    top = num_timesteps - 1 if start is None else start
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top < num_timesteps:
        raise ValueError(f"t_start: expected an integer in [1, {num_timesteps - 1}], got {start!r}")
    if not 1 <= num_steps <= top + 1:
        raise ValueError(f"num_steps: expected an integer in [1, {top + 1}], got {num_steps}")
    if num_steps == 1:
        return [0]
    grid = torch.linspace(top, 0, num_steps, dtype=torch.float64).round().long()
    return [int(t) for t in grid.tolist()]


def sigma_spaced_grid(schedule: NoiseSchedule, num_steps: int, start: int | None = None) -> list[int]:
    r"""A descending grid uniform in the variance-exploding noise level σ_t = √((1 − ᾱ_t)/ᾱ_t).

    σ_k = σ_start − k (σ_start − σ_0)/(n − 1), k = 0 … n − 1, each mapped to the timestep of nearest σ,
    repeats dropped (so a grid may have slightly fewer than ``num_steps`` entries near t = 0); a grid of one
    step is [0], as in :func:`timestep_grid`. In t the steps crowd near ``start``, where σ_t grows fastest,
    and thin out towards t = 0. deepinv's DDRM uses σ linear from 1 to 0 on [0, 1] images (σ_start = 2 in
    [−1, 1] units, ᾱ = 0.2).
    """
    top = timestep_grid(schedule.num_timesteps, 2, start)[0]  # validates start
    if not 1 <= num_steps <= top + 1:
        raise ValueError(f"num_steps: expected an integer in [1, {top + 1}], got {num_steps}")
    if num_steps == 1:
        return [0]
    sigma = ((1 - schedule.alpha_bar[: top + 1]) / schedule.alpha_bar[: top + 1]).sqrt()  # (top+1,) ascending
    levels = torch.linspace(float(sigma[top]), float(sigma[0]), num_steps, dtype=torch.float64)
    nearest = (levels[:, None] - sigma[None, :]).abs().argmin(dim=1)
    return list(dict.fromkeys(int(t) for t in nearest.tolist()))



def spaced_grid(schedule: NoiseSchedule, num_steps: int, start: int | None = None,
                spacing: str = "time") -> list[int]:
    """The descending grid of a sampler's ``spacing`` option: :func:`timestep_grid` ("time", uniform in t)
    or :func:`sigma_spaced_grid` ("sigma", uniform in the VE σ_t), from ``start`` (T − 1 by default)."""
    if spacing == "sigma":
        return sigma_spaced_grid(schedule, num_steps, start)
    if spacing == "time":
        return timestep_grid(schedule.num_timesteps, num_steps, start)
    raise ValueError(f"spacing: expected time or sigma, got {spacing!r}")

def grid_pairs(grid: list[int]) -> list[tuple[int, int]]:
    """Consecutive (t, s) pairs of a descending grid, closed by (grid[-1], CLEAN)."""
    return list(zip(grid, list(grid[1:]) + [CLEAN], strict=True))


@dataclass(frozen=True)
class BridgeCoefficients:
    r"""x_s | x_t ~ N(c_x x_t + c_0 x̂0(x_t, t), σ² I) — the DDIM(η) kernel (Song et al. 2021, eq. 12).

    σ   = η √((1 − ᾱ_t/ᾱ_s)(1 − ᾱ_s)/(1 − ᾱ_t)),
    c_x = √((1 − ᾱ_s − σ²)/(1 − ᾱ_t)),
    c_0 = √ᾱ_s − c_x √ᾱ_t.
    With η = 1 this is the DDPM posterior q(x_s | x_t, x_0 = x̂0) ("skipped-step DDPM").
    """

    c_x: float
    c_0: float
    sigma: float

    def mean(self, x_t: Tensor, x0_hat: Tensor) -> Tensor:
        """The bridge mean c_x x_t + c_0 x̂0 (the one place it is written)."""
        return self.c_x * x_t + self.c_0 * x0_hat


def bridge_coefficients(alpha_bar_t: float, alpha_bar_s: float,
                        eta: float = 1.0) -> BridgeCoefficients:
    """Coefficients of the DDIM(η) bridge from noise level ᾱ_t down to ᾱ_s ≥ ᾱ_t (see the class)."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta: expected a value in [0, 1], got {eta}")
    if alpha_bar_s < alpha_bar_t:
        raise ValueError("bridge: ᾱ_s must be ≥ ᾱ_t (s earlier than t)")
    if alpha_bar_t >= 1.0:  # t is clean: identity
        return BridgeCoefficients(c_x=1.0, c_0=0.0, sigma=0.0)
    var = (1 - alpha_bar_t / alpha_bar_s) * (1 - alpha_bar_s) / (1 - alpha_bar_t)
    sigma = eta * math.sqrt(max(var, 0.0))
    c_x = math.sqrt(max(1 - alpha_bar_s - sigma**2, 0.0) / (1 - alpha_bar_t))
    c_0 = math.sqrt(alpha_bar_s) - c_x * math.sqrt(alpha_bar_t)
    return BridgeCoefficients(c_x=c_x, c_0=c_0, sigma=sigma)


def ddim_sample(x_t: Tensor, x0_hat: Tensor, coeffs: BridgeCoefficients,
                generator: torch.Generator | None) -> Tensor:
    """Draw x_s = c_x x_t + c_0 x̂0 + σ z, z ~ N(0, I) from ``generator``. Shapes: any, equal."""
    mean = coeffs.mean(x_t, x0_hat)
    if coeffs.sigma == 0.0:
        return mean
    return mean + coeffs.sigma * randn(x_t.shape, generator, like=x_t)


# --- conversions between ε, x̂0 and the score (written once) -----------------------------------

def eps_to_x0(x_t: Tensor, eps: Tensor, alpha_bar_t: float) -> Tensor:
    """Tweedie: x̂0 = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t."""
    return (x_t - math.sqrt(1 - alpha_bar_t) * eps) / math.sqrt(alpha_bar_t)


def x0_to_eps(x_t: Tensor, x0: Tensor, alpha_bar_t: float) -> Tensor:
    """ε = (x_t − √ᾱ_t x̂0) / √(1−ᾱ_t)."""
    return (x_t - math.sqrt(alpha_bar_t) * x0) / math.sqrt(1 - alpha_bar_t)


def eps_to_score(eps: Tensor, alpha_bar_t: float) -> Tensor:
    """∇ log q_t(x_t) = −ε / √(1−ᾱ_t)."""
    return -eps / math.sqrt(1 - alpha_bar_t)


def score_to_eps(score: Tensor, alpha_bar_t: float) -> Tensor:
    """ε = −√(1−ᾱ_t) ∇ log q_t(x_t)."""
    return -math.sqrt(1 - alpha_bar_t) * score


PARAMETRISATIONS = {"eps": "eps", "epsilon": "eps", "x0": "x0", "sample": "x0", "v": "v", "v_prediction": "v"}
"""What a network predicts, by diffinv's names and diffusers' (``prediction_type``) alike."""


def output_to_eps(raw: Tensor, x_t: Tensor, alpha_bar_t: float | Tensor, parametrisation: str) -> Tensor:
    r"""ε̂ from a network output ``raw`` of the given parametrisation, at noise level ᾱ_t.

    With x_t = √ᾱ x0 + √(1−ᾱ) ε (Ho et al. 2020):

    * ``eps`` / ``epsilon``: ε̂ = raw;
    * ``x0`` / ``sample`` (raw = x̂0): ε̂ = (x_t − √ᾱ x̂0)/√(1−ᾱ);
    * ``v`` / ``v_prediction`` (raw = v̂, v = √ᾱ ε − √(1−ᾱ) x0, Salimans & Ho 2022): ε̂ = √ᾱ v̂ + √(1−ᾱ) x_t.

    ``raw`` and ``x_t`` have equal shapes; ``alpha_bar_t`` is a float or a tensor broadcastable to them
    (e.g. (B, 1, 1, 1)). Pure and differentiable in ``raw`` and ``x_t``.
    """
    kind = PARAMETRISATIONS.get(parametrisation)
    if kind is None:
        raise ValueError(f"parametrisation: expected one of {', '.join(PARAMETRISATIONS)}, "
                         f"got {parametrisation!r}")
    if raw.shape != x_t.shape:
        raise ValueError(f"output_to_eps: raw {tuple(raw.shape)} and x_t {tuple(x_t.shape)} differ in shape")
    if kind == "eps":
        return raw
    a = torch.as_tensor(alpha_bar_t, dtype=x_t.dtype, device=x_t.device)
    if kind == "x0":
        return (x_t - a.sqrt() * raw) / (1 - a).sqrt()
    return a.sqrt() * raw + (1 - a).sqrt() * x_t
