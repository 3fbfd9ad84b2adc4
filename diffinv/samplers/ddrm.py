r"""DDRM — Denoising Diffusion Restoration Models (Kawar, Elad, Ermon, Song, NeurIPS 2022, eq. 7–8).

Works in the SVD basis x̄ = Vᵀ x with the variance-exploding scale of the VP schedule:
x^VE_t = x_t / √ᾱ_t, σ_t = √((1 − ᾱ_t)/ᾱ_t). With ȳ = Uᵀ y and s_i the singular values, the observed
coordinates satisfy ȳ_i / s_i = x̄_{0,i} + (σ_y/s_i) ε_i. Initialisation at t = T−1:
x̄_i = ȳ_i/s_i + √(σ_T² − σ_y²/s_i²) z (observed, σ_T ≥ σ_y/s_i), x̄_i = σ_T z otherwise — also for
observed coordinates with σ_y/s_i > σ_T (the paper assumes σ_T is larger than every σ_y/s_i; with
the VP schedule's σ_T ≈ 157 a blur's tiny singular values break that, and starting from ȳ_i/s_i
would put the amplified noise of A⁺y into the sample; such coordinates stay in the
"σ_s < σ_y/s_i" regime, which only pulls by the bounded factor σ_s s_i/σ_y).
Each step t → s (σ_s < σ_t), with x̄̂0 = Vᵀ x̂0(√ᾱ_t V x̄_t, t) and z ~ N(0, I):

    unobserved (s_i = 0):       x̄_{s,i} = x̄̂0_i + √(1−η²) σ_s (x̄_{t,i} − x̄̂0_i)/σ_t + η σ_s z_i
    observed, σ_s < σ_y/s_i:    x̄_{s,i} = x̄̂0_i + √(1−η²) σ_s (ȳ_i/s_i − x̄̂0_i)/(σ_y/s_i) + η σ_s z_i
    observed, σ_s ≥ σ_y/s_i:    x̄_{s,i} = (1−η_b) x̄̂0_i + η_b ȳ_i/s_i + √(σ_s² − η_b² σ_y²/s_i²) z_i

The last step goes to the clean pseudo-time (σ = 0): x̄ = x̄̂0 except observed coordinates of a
noiseless problem, which take ȳ_i/s_i.

Uninformative coordinates (a deliberate deviation from the paper, as in the official code): a coordinate
whose observation noise σ_y/s_i exceeds ``max_noise_ratio`` times the half-width of the prior's value range
is treated as unobserved. The paper keeps every s_i > 0 in the "σ_s < σ_y/s_i" branch, where the update
follows the *fixed* noise ε_i of ȳ_i/s_i = x̄_{0,i} + (σ_y/s_i) ε_i instead of the model's own noise
estimate; with a blur's hundreds of tiny s_i that fixed direction is re-applied at every step, and the
samples degrade as steps are added (measured with an exact Gaussian image prior on deblur_gauss, η = 0.5:
PSNR of the 4-sample mean 20.5 / 17.9 / 16.1 dB at 20 / 100 / 300 steps without the cut, 21.5 / 21.3 / 21.3
with it, coverage 0.58–0.48 against 0.84–0.86; ``benchmarks/ddrm_cut.py``, results in
``benchmarks/results/ddrm_cut/``). Kawar et al.'s code zeroes the 1-D blur singular values below
0.03; deepinv drops s_i ≤ σ_y; here the cut is on the noise-to-signal ratio in the prior's units, and
priors without a value range (the analytic ones) keep every coordinate, as in the paper.

Shorter chains (``t_start``, ``spacing``; off by default, an option beyond the paper): the grid may start
at t_start < T − 1 instead of T − 1, with the initialisation above at σ_{t_start} (unobserved coordinates
N(0, σ²) in the VE scale, i.e. the value range's midpoint), and be uniform in t (``spacing = "time"``, the
paper's) or uniform in σ (``"sigma"``, :func:`~diffinv.schedules.sigma_spaced_grid`). This is the truncated
start of Chung et al. (2022, "Come-closer-diffuse-faster") with DDRM's own spectral initialisation, and what
deepinv's DDRM does (σ linear from 1 to 0 on [0, 1] images: t_start ≈ 395 for the linear schedule). The
start neglects the data's mean and variance against σ²_{t_start} (for [−1, 1] images and σ = 2, a variance
of at most 1 against 4), and every step is spent below t_start.

Reduced temperature (``noise_scale`` = c, default 1, the paper): every injected noise, the
initialisation's included, is multiplied by c. c < 1 under-disperses the samples: the chain no longer
carries the noise level the denoiser is told, and the per-pixel intervals shrink. deepinv 0.5.0's DDRM does
this with c = 1/√2 (its source divides every ``randn`` by √2, not in the paper); the option exists to
reproduce it and to measure what it does to PSNR and coverage (``benchmarks/results/steps_sweep/``), not as a
preset.

Defaults: η = 0.85, η_b = 1 (the DPS-paper baseline, "η_A = η_C = 0.85, η_B = 1" in the DDRM code's
names), 20 steps from t = T − 1, uniform in t, max_noise_ratio = 1. No gradients: n forward evaluations
per sample.

Notation: ``sig_t`` σ_t (VE), ``y_over_s`` ȳ/s, ``noise_over_s`` σ_y/s_i, ``x_bar`` x̄_t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from diffinv.operators.base import SVDOperator
from diffinv.operators.spectral import SpectralView
from diffinv.priors.base import CountingPrior
from diffinv.rng import randn
from diffinv.samplers.base import InverseProblem, Sampler, check_options
from diffinv.schedules import grid_pairs, spaced_grid
from diffinv.units import PixelUnits


@dataclass(frozen=True)
class DDRMConfig:
    """DDRM settings: 20 steps, η = 0.85, η_b = 1 (DPS-paper baseline, App. D.2)."""

    num_steps: int = 20
    eta: float = 0.85
    eta_b: float = 1.0
    max_noise_ratio: float = 1.0  # σ_y/s_i above this × the value range's half-width: unobserved
    t_start: int | None = None  # the grid's first timestep; None: T − 1 (the paper)
    spacing: str = "time"  # "time": uniform in t; "sigma": uniform in the VE σ_t
    noise_scale: float = 1.0  # c: every injected noise × c (c < 1: reduced temperature, docstring)
    antithetic: bool = False  # pair the samples' noise (diffinv.rng.Antithetic): a lower-variance mean

    def __post_init__(self) -> None:
        check_options(self, positive=("num_steps",), nonnegative=("max_noise_ratio",),
                      unit=("eta", "eta_b", "noise_scale"),
                      choices={"spacing": ("time", "sigma")})
        if self.t_start is not None:
            check_options(self, positive=("t_start",))


def _ve_sigma(alpha_bar: float) -> float:
    return math.sqrt((1 - alpha_bar) / alpha_bar)


class DDRMSampler(Sampler):
    """DDRM: SVD-space restoration steps with per-coordinate noise handling (no gradients)."""

    name = "ddrm"
    Config = DDRMConfig
    needs_svd = True

    def _run(self, prior: CountingPrior, problem: InverseProblem, num_samples: int,
             generator: torch.Generator | None, device: torch.device,
             dtype: torch.dtype) -> tuple[Tensor, dict[str, Any]]:
        cfg = self.config
        op: SVDOperator = problem.operator.to(device, dtype)  # type: ignore[assignment]
        y, sched = problem.to(device, dtype), prior.schedule
        d, sigma_y, rows = op.in_dim, problem.sigma_y, problem.num_items * num_samples
        spec = SpectralView.of(problem.operator, problem.observations()).rows(num_samples).to(device)
        noise_over_s = spec.noise_over_s(sigma_y).to(dtype)  # (d,) σ_y / s_i on observed coordinates
        observed = spec.observed  # (d,)
        if getattr(prior, "value_range", None) is not None:  # uninformative ones are unobserved (docstring)
            half_width = PixelUnits.of(prior).width / 2
            observed = observed & (noise_over_s <= cfg.max_noise_ratio * half_width)
        y_over_s = spec.y_over_s.to(dtype)  # (B·k or 1, d) ȳ_i / s_i; read only where observed
        grid = spaced_grid(sched, cfg.num_steps, cfg.t_start, cfg.spacing)

        def draw() -> Tensor:
            return cfg.noise_scale * randn((rows, d), generator, like=y)

        x_bar = spec.start(_ve_sigma(sched.alpha_bar_at(grid[0])), noise_over_s, observed, draw)  # (B, d), VE
        for t, s in grid_pairs(grid):
            ab_t, ab_s = sched.alpha_bar_at(t), sched.alpha_bar_at(s)
            sig_t, sig_s = _ve_sigma(ab_t), _ve_sigma(ab_s)
            x_t = math.sqrt(ab_t) * op.V(x_bar)
            x0_bar = op.Vt(prior.denoise(x_t, t).x0)  # (B, d)
            z = draw()
            eta_s = cfg.eta * sig_s
            free = x0_bar + math.sqrt(1 - cfg.eta**2) * sig_s * (x_bar - x0_bar) / sig_t + eta_s * z
            safe = torch.where(observed & (noise_over_s > 0), noise_over_s, torch.ones_like(noise_over_s))
            less = x0_bar + math.sqrt(1 - cfg.eta**2) * sig_s * (y_over_s - x0_bar) / safe + eta_s * z
            more = ((1 - cfg.eta_b) * x0_bar + cfg.eta_b * y_over_s
                    + torch.sqrt((sig_s**2 - cfg.eta_b**2 * noise_over_s**2).clamp_min(0)) * z)
            x_bar = torch.where(~observed, free, torch.where(sig_s < noise_over_s, less, more))
        return op.V(x_bar), {}
