r"""MCGDiff — Monte Carlo guided diffusion (Cardoso, Janati, Le Corff, Moulines, ICLR 2024).

A Feynman–Kac model in the SVD basis x̄ = Vᵀx of A = U diag(s) Vᵀ (samplers.md §5). With ȳ = Uᵀy, the
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

The denominator runs over Act(t') only: a released pin is never divided out ("keep pins", the
MCGDiff-paper filter, §5.7), so the weighted particles target prior × Π_i pin_i = the posterior
(exactly when κ_i is not floored). We chose this over the current official code's "divide the pin
out, then reweight by p(y | x_0)/G_{τ_min}" (pitfall S15): that final importance step goes from a
κ-narrow proposal to a wide target and, as we measured, biases log Ẑ by ≈ ½ log(1/(2πκ)) and the
samples with it. Initial particles x̄ ~ N(0, I) are weighted by G_T; after τ_min the particles move
by plain DDIM(η) transitions to clean data; log Ẑ + Σ_i log(√ᾱ_{τ_i}/s_i) + (terms of unobserved
measurement coordinates) estimates log p(y). Noiseless case: the observed coordinates of the
returned x̄ are set to ȳ_i/s_i exactly. ESS-adaptive resampling is available (the official code
resamples at every step, the default here too).

Cost: N·n forward evaluations per filter for a grid of n times, no backward passes. Drawing k
samples from a filter is explicit (:meth:`ParticleSystem.draw`); ``samples_per_filter`` = 1 gives
independent samples, one per filter.

Notation: ``x_bar`` x̄, ``m`` predictive mean, ``mu`` μ_{t,·}, ``var`` v_{t,·}, ``tau`` τ,
``log_w`` log W (normalised), ``log_z`` log Ẑ, ``kappa`` κ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from diffinv.operators.base import SVDOperator
from diffinv.priors.base import CountingPrior, DiffusionPrior
from diffinv.rng import randn
from diffinv.samplers.base import InverseProblem, Sampler, SamplingError
from diffinv.schedules import bridge_coefficients, grid_pairs, timestep_grid
from diffinv.smc.resampling import RESAMPLING, resample
from diffinv.smc.weights import ess, normalise

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


@dataclass
class ParticleSystem:
    """F weighted particle systems: particles (F, N, *shape), log_weights (F, N) float64 normalised.

    ess (F, steps), resampled (F, steps) bool and log_z (F,) float64 record the filter's history.
    """

    particles: Tensor
    log_weights: Tensor
    ess: Tensor
    resampled: Tensor
    log_z: Tensor
    extra: dict[str, Any] = field(default_factory=dict)

    def draw(self, k: int, generator: torch.Generator | None = None) -> Tensor:
        """k draws (with replacement) ∝ the final weights from every filter → (F·k, *shape)."""
        idx = resample("multinomial", self.log_weights.exp(), k, generator)  # (F, k)
        picked = torch.gather(self.particles.flatten(2), 1,
                              idx.to(self.particles.device)[..., None].expand(-1, -1,
                                                                              self.particles[0, 0].numel()))
        return picked.reshape(-1, *self.particles.shape[2:])


def _log_normal(x: Tensor, mean: Tensor, var: Tensor, mask: Tensor, idx: Tensor) -> Tensor:
    """Σ_{i ∈ mask} log N(x_i; mean_i, var_i), float64; x (F, N, d) → (F, N).

    Only the observed coordinates ``idx`` (m,) are read (the mask is False elsewhere), so the cost is
    O(F·N·m), not O(F·N·d).
    """
    x = x.index_select(-1, idx).to(torch.float64)
    mean, var, mask = mean[idx], var[idx], mask[idx]
    terms = -0.5 * ((x - mean) ** 2 / var + torch.log(var) + LOG_2PI)
    return torch.where(mask, terms, torch.zeros_like(terms)).sum(-1)


class _Spectral:
    """The problem in SVD coordinates: observed mask, ȳ/s, τ and the potentials' μ_t, v_t (float64)."""

    def __init__(self, op: SVDOperator, y: Tensor, sigma_y: float, kappa: float, grid: list[int],
                 prior: DiffusionPrior) -> None:
        d = op.in_dim
        s = op.singulars().to(torch.float64)
        s_inv = op.pad(op.inverse_singulars().to(torch.float64)[None], d)[0]
        self.observed = s_inv > 0  # (d,)
        y_bar = op.Ut(y.to(torch.float64))[:, : s.numel()] * s_inv[: s.numel()]
        self.y_over_s = op.pad(y_bar, d)[0]  # (d,) ȳ_i / s_i on observed coordinates
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
        self.tau = torch.where(self.observed, grid_t[tau_idx], torch.full_like(grid_t[tau_idx], -2))
        self.alpha_bar_tau = ab_tau
        self.kappa = kappa_i  # (d,)
        self.tau_min = int(self.tau[self.observed].min()) if bool(self.observed.any()) else grid[-1]
        self.schedule = prior.schedule
        # log p(y) = log E[Π pins] + Σ_obs log(√ᾱ_{τ_i}/s_i) + Σ_{unobserved y-coords} log N(ȳ_j; 0, σ_y²)
        y_all = op.Ut(y.to(torch.float64))[0]  # (m,)
        free_y = torch.ones_like(y_all, dtype=torch.bool)
        free_y[: s.numel()] = s_inv[: s.numel()] == 0
        offset = 0.5 * torch.log(ab_tau) + torch.log(s_inv.clamp_min(1e-300))
        self.log_z_offset = float(offset[self.observed].sum())
        if sigma_y > 0:
            free_terms = -0.5 * (y_all**2 / sigma_y**2 + math.log(2 * math.pi * sigma_y**2))
            self.log_z_offset += float(free_terms[free_y].sum())

    def active(self, t: int) -> Tensor:
        return self.observed & (self.tau <= t)

    def potential(self, t: int) -> tuple[Tensor, Tensor, Tensor]:
        """μ_t (d,), v_t (d,) and the active mask (d,) at grid time t."""
        ab = self.schedule.alpha_bar_at(t)
        mu = math.sqrt(ab) * self.y_over_s
        var = torch.maximum(1 - (1 - self.kappa) * ab / self.alpha_bar_tau, self.kappa)
        return mu, var, self.active(t)


def run_filters(prior: CountingPrior, problem: InverseProblem, num_filters: int, config: MCGDiffConfig,
                generator: torch.Generator | None, device: torch.device,
                dtype: torch.dtype) -> ParticleSystem:
    """Run ``num_filters`` independent MCGDiff filters of ``config.num_particles`` particles side by side."""
    cfg = config
    if cfg.resampling not in RESAMPLING:
        raise ValueError(f"resampling: expected one of {', '.join(RESAMPLING)}, got {cfg.resampling!r}")
    if not 0 < cfg.kappa <= 1:
        raise ValueError(f"kappa: expected a value in (0, 1], got {cfg.kappa}")
    op: SVDOperator = problem.operator  # type: ignore[assignment]
    f, n, d = num_filters, cfg.num_particles, op.in_dim
    grid = timestep_grid(prior.schedule.num_timesteps, cfg.num_steps)
    spec = _Spectral(op, problem.y[None], problem.sigma_y, cfg.kappa, grid, prior)
    like = torch.empty((), device=device, dtype=dtype)
    x_bar = randn((f, n, d), generator, like=like)
    mu, var, act = (v.to(device) for v in spec.potential(grid[0]))
    obs = spec.observed.nonzero().flatten().to(device)  # (m',) coordinates that carry potentials
    log_w0 = _log_normal(x_bar, mu, var, act, obs)
    log_z = torch.logsumexp(log_w0, -1) - math.log(n)
    log_w = normalise(log_w0)
    ess_hist, rs_hist = [], []
    for t, s in grid_pairs(grid):
        ab_t, ab_s = prior.schedule.alpha_bar_at(t), prior.schedule.alpha_bar_at(s)
        coeffs = bridge_coefficients(ab_t, ab_s, cfg.eta)
        x0 = op.Vt(prior.denoise(op.V(x_bar.reshape(f * n, d)), t).x0).reshape(f, n, d)
        m = coeffs.c_x * x_bar + coeffs.c_0 * x0
        noise = randn((f, n, d), generator, like=like)
        if s < spec.tau_min:  # propagation phase (no potentials), ending at the clean pseudo-time
            x_bar = m + coeffs.sigma * noise
            continue
        mu_s, var_s, act_s = (v.to(device) for v in spec.potential(s))
        log_omega = (_log_normal(m, mu_s, coeffs.sigma**2 + var_s, act_s, obs)
                     - _log_normal(x_bar, mu, var, act_s, obs))
        lw = log_w + log_omega
        step_z = torch.logsumexp(torch.nan_to_num(lw, nan=-math.inf), -1)
        if not bool(torch.isfinite(step_z).all()):
            raise SamplingError(f"mcgdiff: all particle weights vanished or became non-finite at t = {t}")
        log_z = log_z + step_z
        cur_ess = ess(lw)
        do = (cur_ess < cfg.ess_threshold * n) | torch.tensor(cfg.ess_threshold >= 1.0, device=cur_ess.device)
        ancestors = resample(cfg.resampling, normalise(lw).exp(), n, generator).to(device)  # (F, N)
        keep = torch.arange(n, device=device).expand(f, n)
        ancestors = torch.where(do[:, None].to(device), ancestors, keep)
        m = torch.gather(m, 1, ancestors[..., None].expand(-1, -1, d))
        log_w = torch.where(do[:, None], torch.full_like(lw, -math.log(n)), normalise(lw))
        ess_hist.append(cur_ess)
        rs_hist.append(do.expand(f))
        x_bar = m + coeffs.sigma * noise
        # on the observed coordinates, the potential pulls the proposal: K = σ²/(σ² + v_s) per coordinate
        gain = (coeffs.sigma**2 / (coeffs.sigma**2 + var_s[obs])).to(dtype)  # (m',)
        m_o, noise_o = m.index_select(-1, obs), noise.index_select(-1, obs)
        v_o = var_s[obs].to(dtype)
        pulled = gain * mu_s[obs].to(dtype) + (1 - gain) * m_o + torch.sqrt(gain * v_o) * noise_o
        x_bar[..., obs] = torch.where(act_s[obs], pulled, x_bar.index_select(-1, obs))
        mu, var, act = mu_s, var_s, act_s
    if problem.sigma_y > 0:
        log_z = log_z + spec.log_z_offset
    else:  # noiseless: the observed coordinates equal ȳ/s exactly
        x_bar = torch.where(spec.observed.to(device), spec.y_over_s.to(device=device, dtype=dtype), x_bar)
    particles = op.V(x_bar.reshape(f * n, d)).reshape(f, n, *prior.shape)
    empty = torch.zeros(f, 0)
    return ParticleSystem(particles=particles, log_weights=log_w,
                          ess=torch.stack(ess_hist, 1) if ess_hist else empty,
                          resampled=torch.stack(rs_hist, 1) if rs_hist else empty.bool(), log_z=log_z,
                          extra={"tau_min": spec.tau_min, "final_ess": ess(log_w)})


class MCGDiffSampler(Sampler):
    """MCGDiff: SMC in the SVD basis with closed-form proposals and τ-pinned noisy observations."""

    name = "mcgdiff"
    Config = MCGDiffConfig
    needs_svd = True

    def _run(self, prior: CountingPrior, problem: InverseProblem, num_samples: int,
             generator: torch.Generator | None, device: torch.device,
             dtype: torch.dtype) -> tuple[Tensor, dict[str, Any]]:
        cfg = self.config
        if cfg.num_particles < 1 or cfg.samples_per_filter < 1:
            raise ValueError("num_particles, samples_per_filter: expected positive integers")
        num_filters = -(-num_samples // cfg.samples_per_filter)
        system = run_filters(prior, problem, num_filters, cfg, generator, device, dtype)
        samples = system.draw(cfg.samples_per_filter, generator)[:num_samples]
        diagnostics = {"ess": system.ess.mean(0).tolist(),
                       "resampled": system.resampled.float().mean(0).tolist(),
                       "log_z": system.log_z.tolist(), "final_ess": system.extra["final_ess"].tolist(),
                       "tau_min": system.extra["tau_min"], "num_filters": num_filters}
        return samples, diagnostics
