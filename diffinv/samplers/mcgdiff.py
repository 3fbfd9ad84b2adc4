r"""MCGDiff — Monte Carlo guided diffusion (Cardoso, Janati, Le Corff, Moulines, ICLR 2024).

A Feynman–Kac model in the SVD basis x̄ = Vᵀx of A = U diag(s) Vᵀ. With ȳ = Uᵀy, the
observed coordinate i satisfies ȳ_i/s_i = x̄_{0,i} + (σ_y/s_i) ε. It is "pinned" at a grid time τ_i:
the latest grid time with ᾱ_τ σ_y²/s_i² ≥ 1 − ᾱ_τ (τ_i = 0 if σ_y = 0 or none), by the potential
N(ỹ_i; x̄_{τ_i,i}, κ_i), ỹ_i = √ᾱ_τ ȳ_i/s_i, with κ_i = ᾱ_τ σ_y²/s_i² − (1 − ᾱ_τ) (floored at κ). Under the
forward process this pin equals the likelihood of ȳ_i exactly (up to the factor s_i/√ᾱ_τ), whatever
grid the τ_i fall on. For grid times t ≥ τ_i the pin is propagated forward as the twisting potential

    g_{t,i}(x̄_i) = N(x̄_i; μ_{t,i}, v_{t,i}),   μ_{t,i} = √ᾱ_t ȳ_i/s_i,   v_{t,i} = 1 − (1 − κ_i) ᾱ_t/ᾱ_{τ_i}.

One step t → t' of the fully adapted auxiliary particle filter, for N particles in each of F
independent filters (tensors (F, N, d)), with Act(t) = {observed i : τ_i ≤ t}:

    1. m = c_x x̄ + c_0 x̄̂0(x̄, t), σ = σ_{t→t'}             (DDIM(η) bridge; 1 evaluation per particle)
    2. log ω = Σ_{i∈Act(t')} [log N(m_i; μ_{t',i}, σ² + v_{t',i}) − log N(x̄_i; μ_{t,i}, v_{t,i})]
    3. log Ẑ += log Σ_j W_j ω_j;  resample ∝ W ω if ESS < threshold·N (else W ← W ω)
    4. mutate from the optimal proposal ∝ G_{t'}(z) N(z; m, σ²): per coordinate, K = σ²/(σ² + v),
       z_i = K μ_{t',i} + (1 − K) m_i + √(K v) ξ_i on active coordinates, z_i = m_i + σ ξ_i elsewhere.

The denominator runs over Act(t') only: a released pin is never divided out ("keep pins", as in the
older filter of the MCGDiff paper's experiment code), so the weighted particles target
prior × Π_i pin_i = the posterior (exactly when κ_i is not floored). We chose this over the current
official code's (gabrielvc/mcg_diff) "divide the pin out, then reweight by p(y | x_0)/G_{τ_min}":
that final importance step goes from a κ-narrow proposal to a wide target and, as we measured,
biases log Ẑ by ≈ ½ log(1/(2πκ)) and the samples with it. Initial particles x̄ ~ N(0, I) are
weighted by G_T; after τ_min the particles move by plain DDIM(η) transitions to clean data;
log Ẑ + Σ_i log(√ᾱ_{τ_i}/s_i) + (terms of unobserved measurement coordinates) estimates log p(y).
Noiseless case: the observed coordinates of the returned x̄ are set to ȳ_i/s_i exactly.
ESS-adaptive resampling is available (the official code resamples at every step, the default here
too).

The filter is a model on the Feynman–Kac engine (:mod:`diffinv.smc.engine`): steps 1–2 are its
look-ahead (the predictive weight, before resampling), step 4 its move; the engine does 3. The
Gaussian noise of each move is drawn after resampling (the engine's order), where diffinv ≤ 0.1
drew it before: the same seed gives other, equally distributed samples than those versions (the
committed GMM figures were re-run after the move and agree within their standard errors).

Cost: N·n forward evaluations per filter for a grid of n times, no backward passes. Drawing k
samples from a filter is explicit (:meth:`ParticleSystem.draw`); ``samples_per_filter`` = 1 gives
independent samples, one per filter.

Notation: ``x_bar`` x̄, ``m`` predictive mean, ``mu`` μ_{t,·}, ``var`` v_{t,·}, ``tau`` τ,
``log_w`` log W (normalised), ``log_z`` log Ẑ, ``kappa`` κ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from diffinv.operators.base import SVDOperator
from diffinv.operators.spectral import SpectralView
from diffinv.priors.base import CountingPrior, DiffusionPrior
from diffinv.rng import randn
from diffinv.samplers.base import InverseProblem, Sampler, check_options
from diffinv.schedules import bridge_coefficients, grid_pairs, timestep_grid
from diffinv.smc.engine import (
    FeynmanKac,
    ParticleSystem,
    Resampling,
    SMCResult,
    State,
    lineages,
    per_item_draws,
    smc_diagnostics,
)
from diffinv.smc.weights import ess

LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class MCGDiffConfig:
    """MCGDiff settings: N = 64, 100 steps, η = 1, κ = 1e-4 (official configs), resampling every step."""

    num_particles: int = 64
    num_steps: int = 100
    eta: float = 1.0
    kappa: float = 1e-4
    resampling: Literal["multinomial", "systematic", "stratified", "residual"] = "systematic"
    ess_threshold: float = 1.0
    samples_per_filter: int = 1

    def __post_init__(self) -> None:
        check_options(self, positive=("num_particles", "num_steps", "samples_per_filter"), unit=("eta",))
        if not 0 < self.kappa <= 1:
            raise ValueError(f"kappa: expected a value in (0, 1], got {self.kappa}")
        Resampling(self.resampling, self.ess_threshold)  # validates the policy


def _log_normal(x: Tensor, mean: Tensor, var: Tensor, mask: Tensor) -> Tensor:
    """Σ_{i ∈ mask} log N(x_i; mean_i, var_i), float64; x (F, N, m'), mean (F or 1, 1, m'),
    var/mask (m',) → (F, N)."""
    terms = -0.5 * ((x.to(torch.float64) - mean) ** 2 / var + torch.log(var) + LOG_2PI)
    return torch.where(mask, terms, torch.zeros_like(terms)).sum(-1)


class _Pins:
    """The τ-pins of the observed spectral coordinates (float64, on the device; module docstring).

    Only the m' observed coordinates ``idx`` are kept: potentials cost O(F·N·m'), not O(F·N·d).
    τ and κ depend on s and σ_y only; the observation enters through ȳ/s, one row per filter
    (``spec`` with F rows, for a batch of observations) or one row for all filters.
    """

    def __init__(self, spec: SpectralView, sigma_y: float, kappa: float, grid: list[int],
                 prior: DiffusionPrior, device: torch.device) -> None:
        d = spec.s_inv.numel()
        s_inv = spec.s_inv
        ab = torch.tensor([prior.schedule.alpha_bar_at(t) for t in grid], dtype=torch.float64)  # (n,)
        grid_t = torch.tensor(grid)
        if sigma_y > 0:
            # τ_i: the latest grid time whose diffusion noise does not exceed the data noise,
            # ᾱ_τ σ_y²/s_i² ≥ 1 − ᾱ_τ (t = 0 if none); the pin variance κ_i makes up the difference.
            noise_var = sigma_y**2 * s_inv**2  # (d,) σ_y²/s_i² (0 where unobserved)
            ok = ab[:, None] * noise_var[None] >= (1 - ab[:, None])  # (n, d); grid descending
            tau_idx = torch.where(ok.any(0), ok.float().argmax(0), torch.full((d,), len(grid) - 1))
            ab_tau = ab[tau_idx]
            kappa_i = (ab_tau * noise_var - (1 - ab_tau)).clamp_min(kappa)
        else:
            tau_idx = torch.full((d,), len(grid) - 1, dtype=torch.long)  # grid[-1] = 0
            ab_tau = ab[tau_idx]
            kappa_i = torch.full((d,), kappa, dtype=torch.float64)
        observed = spec.observed
        idx = observed.nonzero().flatten()
        tau = grid_t[tau_idx][idx]
        self.tau_min = int(tau.min()) if idx.numel() else grid[-1]
        self.schedule = prior.schedule
        # log p(y) = log E[Π pins] + Σ_obs log(√ᾱ_{τ_i}/s_i) + Σ_{unobserved y-coords} log N(ȳ_j; 0, σ_y²)
        offset = 0.5 * torch.log(ab_tau) + torch.log(s_inv.clamp_min(1e-300))
        log_z_offset = offset[observed].sum().expand(spec.y_bar.shape[0])  # (F or 1,)
        if sigma_y > 0:
            free_terms = -0.5 * (spec.y_bar**2 / sigma_y**2 + math.log(2 * math.pi * sigma_y**2))
            log_z_offset = log_z_offset + free_terms[:, spec.free_y].sum(-1)
        self.log_z_offset = log_z_offset.to(device)
        self.idx, self.tau = idx.to(device), tau.to(device)
        self.y_over_s = spec.y_over_s[:, idx][:, None].to(device)  # (F or 1, 1, m')
        self.kappa, self.alpha_bar_tau = kappa_i[idx].to(device), ab_tau[idx].to(device)
        self.observed, self.y_over_s_full = observed.to(device), spec.y_over_s[:, None].to(device)

    def potential(self, t: int) -> tuple[Tensor, Tensor, Tensor]:
        """μ_t (F or 1, 1, m'), v_t (m',) and the active mask (m',) at grid time t."""
        ab = self.schedule.alpha_bar_at(t)
        mu = math.sqrt(ab) * self.y_over_s
        var = torch.maximum(1 - (1 - self.kappa) * ab / self.alpha_bar_tau, self.kappa)
        return mu, var, self.tau <= t


class MCGDiffModel:
    """MCGDiff as a Feynman–Kac model (module docstring): state {"x": x̄ (F, N, d)} in the SVD basis."""

    name = "mcgdiff"

    def __init__(self, prior: CountingPrior, problem: InverseProblem, config: MCGDiffConfig,
                 device: torch.device, dtype: torch.dtype, filters_per_item: int = 1) -> None:
        self.prior, self.cfg, self.dtype = prior, config, dtype
        self.op: SVDOperator = problem.operator.to(device, dtype)  # type: ignore[assignment]
        self.d = self.op.in_dim
        grid = timestep_grid(prior.schedule.num_timesteps, config.num_steps)
        self.pairs = grid_pairs(grid)
        self.num_steps = len(self.pairs)
        spec = SpectralView.of(problem.operator, problem.observations()).rows(filters_per_item)
        self.pins = _Pins(spec, problem.sigma_y, config.kappa, grid, prior, device)
        self.noiseless = problem.sigma_y == 0
        self.like = torch.empty((), device=device, dtype=dtype)
        sched = prior.schedule
        self.coeffs = [bridge_coefficients(sched.alpha_bar_at(t), sched.alpha_bar_at(s), config.eta)
                       for t, s in self.pairs]

    def initial(self, f: int, n: int, generator: torch.Generator | None) -> tuple[State, Tensor]:
        x = randn((f, n, self.d), generator, like=self.like)
        mu, var, act = self.pins.potential(self.pairs[0][0])
        return {"x": x}, _log_normal(x.index_select(-1, self.pins.idx), mu, var, act)

    def lookahead(self, k: int, state: State) -> tuple[State, Tensor | None]:
        """Predictive mean m (1 evaluation per particle) and log ω (module docstring, steps 1–2)."""
        (t, s), coeffs, x = self.pairs[k], self.coeffs[k], state["x"]
        f, n, d = x.shape
        x0 = self.op.Vt(self.prior.denoise(self.op.V(x.reshape(f * n, d)), t).x0).reshape(f, n, d)
        m = coeffs.mean(x, x0)
        if s < self.pins.tau_min:  # propagation phase (no potentials), ending at the clean pseudo-time
            return {"m": m}, None
        idx = self.pins.idx
        mu_t, var_t, _ = self.pins.potential(t)
        mu_s, var_s, act_s = self.pins.potential(s)
        log_omega = (_log_normal(m.index_select(-1, idx), mu_s, coeffs.sigma**2 + var_s, act_s)
                     - _log_normal(x.index_select(-1, idx), mu_t, var_t, act_s))
        return {"m": m}, log_omega

    def move(self, k: int, state: State, generator: torch.Generator | None) -> tuple[State, None]:
        """Optimal proposal ∝ G_s(z) N(z; m, σ²) on the active pins, N(m, σ²) elsewhere (step 4)."""
        (_, s), coeffs, m = self.pairs[k], self.coeffs[k], state["m"]
        noise = randn(m.shape, generator, like=m)
        x = m + coeffs.sigma * noise
        if s < self.pins.tau_min:
            return {"x": x}, None
        idx = self.pins.idx
        mu_s, var_s, act_s = self.pins.potential(s)
        # on the observed coordinates, the potential pulls the proposal: K = σ²/(σ² + v_s) per coordinate
        gain = (coeffs.sigma**2 / (coeffs.sigma**2 + var_s)).to(self.dtype)  # (m',)
        m_o, noise_o = m.index_select(-1, idx), noise.index_select(-1, idx)
        v_o = var_s.to(self.dtype)
        pulled = gain * mu_s.to(self.dtype) + (1 - gain) * m_o + torch.sqrt(gain * v_o) * noise_o
        x[..., idx] = torch.where(act_s, pulled, x.index_select(-1, idx))
        return {"x": x}, None

    def finish(self, result: SMCResult) -> ParticleSystem:
        """Particles in the image basis, log Ẑ completed to log p(y) (module docstring)."""
        x, log_z = result.state["x"], result.log_z
        f, n, _ = x.shape
        if not self.noiseless:
            log_z = log_z + self.pins.log_z_offset
        else:  # noiseless: the observed coordinates equal ȳ/s exactly
            x = torch.where(self.pins.observed, self.pins.y_over_s_full.to(x.dtype), x)
        particles = self.op.V(x.reshape(f * n, self.d)).reshape(f, n, *self.prior.shape)
        return ParticleSystem(particles=particles, log_weights=result.log_w, ess=result.ess,
                              resampled=result.resampled, log_z=log_z,
                              extra={"tau_min": self.pins.tau_min, "final_ess": ess(result.log_w),
                                     "lineages": lineages(result.ancestors)})


def run_filters(prior: CountingPrior, problem: InverseProblem, num_filters: int, config: MCGDiffConfig,
                generator: torch.Generator | None, device: torch.device,
                dtype: torch.dtype) -> ParticleSystem:
    """Run ``num_filters`` independent MCGDiff filters of ``config.num_particles`` particles side by side
    for each observation (B·num_filters filters in all, item by item)."""
    model = MCGDiffModel(prior, problem, config, device, dtype, num_filters)
    engine = FeynmanKac(model, problem.num_items * num_filters, config.num_particles,
                        Resampling(config.resampling, config.ess_threshold))
    result = engine.run(generator)
    result.check("mcgdiff")
    return model.finish(result)


class MCGDiffSampler(Sampler):
    """MCGDiff: SMC in the SVD basis with closed-form proposals and τ-pinned noisy observations."""

    name = "mcgdiff"
    Config = MCGDiffConfig
    needs_svd = True

    def _run(self, prior: CountingPrior, problem: InverseProblem, num_samples: int,
             generator: torch.Generator | None, device: torch.device,
             dtype: torch.dtype) -> tuple[Tensor, dict[str, Any]]:
        cfg = self.config
        num_filters = -(-num_samples // cfg.samples_per_filter)
        system = run_filters(prior, problem, num_filters, cfg, generator, device, dtype)
        samples = per_item_draws(system, problem.num_items, num_samples, cfg.samples_per_filter, generator)
        return samples, smc_diagnostics(system, problem.num_items * num_filters)
