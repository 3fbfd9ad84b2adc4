r"""DCPS — Divide-and-Conquer Posterior Sampling (Janati, Moufad, Durmus, Moulines, Olsson, NeurIPS 2024).

Blocks with boundaries 0 = k_0 < k_1 < … < k_L = T−1 (L = ``num_blocks`` counts *blocks*; the
official code's L = 4 counts boundaries, i.e. 3 blocks). Block ℓ targets π_ℓ ∝ g_ℓ · p_{k_ℓ} with

    g_ℓ(z) = N(√ᾱ_{k_ℓ} y; A z, σ²_{y,ℓ} I)   (σ_{y,ℓ} = σ_y as in the code, or ``block_variance``; the
                                            last block: g_0 = likelihood).

From the top (x ~ N(0, I) at T−1), for each block [k_low, k_high]:

    a. M tamed-ULA steps at k_high on β̂(x) p_{k_high}(x), drift
       G(x) = ∇_x log g_ℓ(μ(x)) + ∇ log p_{k_high}(x), μ(x) = bridge mean k_high → k_low (1 fwd + 1 bwd);
    b. for consecutive grid times t > t' of the block: prior kernel N(μ_p, σ_p²) = DDIM(η = 1) bridge
       t → t' at x_t (1 fwd); fit a diagonal Gaussian N(m, e^{2s}) to ∝ β̂(x') N(x'; μ_p, σ_p²) with K
       normalised-gradient steps (``variational.fit_gaussian_kernel``) on the one-sample loss
       ‖ỹ_ℓ − A z‖²/(2σ_y²), z = bridge(x' → k_low) sample (1 fwd + 1 bwd each when t' > k_low); draw
       x_{t'} ~ N(m, e^{2s}).

Choices: the block grids are deduplicated (the official code's int-truncated grids repeat times when a
block holds fewer integer times than steps, which gives σ_p = 0); in the last block the bridge to k_low is the
bridge to clean data (x̂0, a DPS-like term); the last block runs down to t' = 0 and we return
x̂0(x_0, 0) (1 extra forward evaluation; the official code stops at b_1 ≈ 3 with residual noise);
when t' = k_low the bridge is the identity and no network call is made (the code wastes one).
Defaults are the official image demo's: 3 blocks, 300 steps, M = 5, γ = 1e-3, K = 2, lr = 1.5.

Freedoms of the paper, off by default (the code's choices):

* ``boundaries``: the interior block ends k_1 < … < k_{L−1} (default: uniform). The evidence of g_ℓ for a
  prior mode is tempered by about ᾱ_{k_ℓ} (for unit-covariance components, N(√ᾱ y; √ᾱ A μ_j, A Aᵀ + σ_y²)
  against the posterior's N(y; A μ_j, A Aᵀ + σ_y²)), and mode weights are fixed once the diffused modes
  separate, so a block end above that time lets the last block (k_0 = 0, the true likelihood) choose them.
* ``ula_variance = "predictive"``: the ULA potential N(ỹ_ℓ; A μ(x), σ_y² I + τ² A Aᵀ) with
  τ² = c_0² (1 − ᾱ_{k_high}) + σ_b², the variance of x_{k_low} | x_{k_high} under p(x_0 | x_t) ≈
  N(x̂0, (1 − ᾱ_t) I) (ΠGDM's r_t²) — the DCPS paper's closed-form β̂ (σ_b² A Aᵀ) plus the x̂0 uncertainty.
  The code's σ_y² alone over-weights modes (in the last block, N(y; A μ_j, ᾱ A Aᵀ + σ_y²)).
* ``ula_variance = "evidence"``: the ULA potential N(ỹ_ℓ; A μ(x), ᾱ_l σ_y² I + (ᾱ_l − q)₊ A Aᵀ), with
  ᾱ_l = ᾱ_{k_low}, ᾱ_h = ᾱ_{k_high} and q = (c_x + c_0 √ᾱ_h)², the variance that gives every prior mode
  its posterior weight. Near a mode N(μ_j, I) (ΠGDM's p(x_0 | x_t) ≈ N(x̂0, (1 − ᾱ_t) I)),
  x_{k_high} ~ N(√ᾱ_h μ_j, I), x̂0 = μ_j + √ᾱ_h (x − √ᾱ_h μ_j), so the bridge mean μ(x) ~ N(√ᾱ_l μ_j, q I)
  and the ULA target β̂ p_{k_high} gives mode j the mass w_j N(√ᾱ_l y; √ᾱ_l A μ_j, q A Aᵀ + V) for a
  potential variance V, i.e. w_j N(y; A μ_j, (q A Aᵀ + V)/ᾱ_l) up to a factor common to all modes; the
  posterior's is w_j N(y; A μ_j, A Aᵀ + σ_y² I), hence V above (exact when ᾱ_l² ≥ ᾱ_h, where q = ᾱ_h/ᾱ_l
  ≤ ᾱ_l; clipped at 0 otherwise). The code's V = σ_y² I gives (q A Aᵀ + σ_y²)/ᾱ_l: too sharp along A Aᵀ
  and ᾱ_l⁻¹ too flat along σ_y². In the last block (ᾱ_l = 1) V is ΠGDM's σ_y² I + (1 − ᾱ_h) A Aᵀ. Mode
  weights are set where Langevin can still move between modes, i.e. at a block top near the time the
  diffused modes separate (the kernels cannot move mass between separated modes), so this is where the
  choice acts; tested against the exact mode evidence in ``tests/test_dcps.py``.
* ``block_variance = "evidence"``: σ²_{y,ℓ} = ᾱ_{k_ℓ} σ_y² in the potentials g_ℓ of the kernels (the paper
  leaves σ_{y,ℓ} free; the last block keeps σ_y²). Then g_ℓ(x) ∝ N(y; A x/√ᾱ_{k_ℓ}, σ_y² I), and the block
  target g_ℓ p_{k_ℓ} gives mode j the evidence N(y; A μ_j, A Aᵀ/ᾱ_{k_ℓ} + σ_y² I): the noise part is the
  posterior's, while the A Aᵀ part stays tempered by ᾱ_{k_ℓ} (undoing it would need the negative variance
  ᾱ σ_y² I − (1 − ᾱ) A Aᵀ). The code's σ_y² tempers both: (A Aᵀ + σ_y² I)/ᾱ_{k_ℓ}. With σ_y ≤ s (the
  GMM benchmark) the A Aᵀ/ᾱ term dominates either way, so what changes in practice is the potential's
  sharpness against the KL term of the kernels' K normalised steps, i.e. how hard they pull. On the GMM
  tuning seeds (with ``ula_variance = "evidence"``) it lowered the median SW in all eight d_x ≤ 40 cells
  (e.g. (20, 4) 0.57 → 0.26, (10, 1) 1.35 → 1.20, (40, 1) 1.06 → 1.05) but raised (100, 1) 1.97 → 2.21
  (seeds 100–107), so the GMM preset does not use it (``benchmarks/results/gmm_family/notes.md``).

Notation: ``k_low, k_high`` block ends, ``y_tilde`` √ᾱ_{k_low} y, ``gamma`` γ, ``lr`` normalised step,
``mu_p, sigma_p`` the prior kernel, ``m, s`` variational mean and log-std.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from diffinv.mcmc.langevin import tamed_ula_step
from diffinv.operators.spectral import SpectralView
from diffinv.priors.base import CountingPrior
from diffinv.rng import randn
from diffinv.samplers.base import InverseProblem, Sampler, check_options
from diffinv.samplers.guidance import MeasurementFit, guided_denoise
from diffinv.samplers.variational import fit_gaussian_kernel
from diffinv.schedules import CLEAN, bridge_coefficients, eps_to_score


@dataclass(frozen=True)
class DCPSConfig:
    """DCPS settings (official image demo): 3 blocks, 300 steps in all, M = 5, γ = 1e-3, K = 2, lr = 1.5."""

    num_blocks: int = 3
    num_steps: int = 300
    langevin_steps: int = 5
    gamma: float = 1e-3
    gradient_steps: int = 2
    lr: float = 1.5
    boundaries: tuple[int, ...] | None = None  # interior block ends k_1 < … < k_{L−1}; None: uniform
    ula_variance: Literal["sigma_y", "predictive", "evidence"] = "sigma_y"
    block_variance: Literal["sigma_y", "evidence"] = "sigma_y"  # σ²_{y,ℓ}: σ_y² or ᾱ_{k_ℓ} σ_y²
    antithetic: bool = False  # pair the samples' noise (diffinv.rng.Antithetic): a lower-variance mean

    def __post_init__(self) -> None:
        check_options(self, positive=("num_blocks", "num_steps", "gradient_steps"),
                      nonnegative=("langevin_steps", "gamma", "lr"),
                      choices={"ula_variance": ("sigma_y", "predictive", "evidence"),
                               "block_variance": ("sigma_y", "evidence")})
        if self.boundaries is not None:
            inner = tuple(int(k) for k in self.boundaries)
            ordered = list(inner) == sorted(set(inner)) and (not inner or inner[0] >= 1)
            if len(inner) != self.num_blocks - 1 or not ordered:
                raise ValueError(f"boundaries: expected {self.num_blocks - 1} increasing interior block ends "
                                 f"≥ 1 (num_blocks − 1), got {self.boundaries}")
            object.__setattr__(self, "boundaries", inner)
        if self.num_steps < self.num_blocks:
            raise ValueError(f"num_steps: expected at least num_blocks = {self.num_blocks}, "
                             f"got {self.num_steps}")


def block_boundaries(num_timesteps: int, num_blocks: int, inner: tuple[int, ...] | None = None) -> list[int]:
    """k_0 = 0 < … < k_L = T − 1: ``inner`` between the ends, or a rounded linspace."""
    if inner is not None:
        if inner and inner[-1] >= num_timesteps - 1:
            raise ValueError(f"boundaries: expected block ends below {num_timesteps - 1}, got {inner}")
        return [0, *inner, num_timesteps - 1]
    return [int(k) for k in torch.linspace(0, num_timesteps - 1, num_blocks + 1).round().long()]


def block_grid(k_low: int, k_high: int, num_steps: int) -> list[int]:
    """Descending distinct times from k_high to k_low (``num_steps`` intervals at most)."""
    grid = torch.linspace(k_high, k_low, num_steps + 1).round().long().tolist()
    return list(dict.fromkeys(int(t) for t in grid))


TAMED_WARNING = 0.5  # share of ULA steps with γ‖G‖ > 1 above which the run says so


def predictive_fit(problem: InverseProblem, op: Any, y_tilde: Tensor, scale: float, per_item: int,
                   device: torch.device) -> MeasurementFit:
    """q(μ, τ²) = rᵀ (σ_y² I + τ² A Aᵀ)⁻¹ r with r = ỹ − A μ, ỹ = ``scale``·y (the ULA potential with
    ``ula_variance = "predictive"`` or ``"evidence"``): by the SVD when A has one, else by conjugate
    gradients."""
    spectral = None
    if op.has_svd:
        obs = problem.observations().to(torch.float64) * scale
        spectral = SpectralView.of(problem.operator, obs).rows(per_item).to(device)
    return MeasurementFit(op, y_tilde, problem.sigma_y, 50, spectral)


def neg_log_gaussian(op: Any, y_tilde: Tensor, z: Tensor, var: float) -> Tensor:
    """‖ỹ − A z‖² / (2 var) per row of z (R, *in_shape) → (R,): −log N(ỹ; A z, var I) up to a constant."""
    return ((y_tilde - op.A(z)) ** 2).reshape(z.shape[0], -1).sum(-1) / (2 * var)


def ula_variance_terms(alpha_bar_high: float, alpha_bar_low: float, kind: str) -> tuple[float, float]:
    """(a, τ²) of the ULA potential N(√ᾱ_l y; A μ(x), a (σ_y² I + τ² A Aᵀ)), μ(x) the bridge mean from
    ᾱ_h = ``alpha_bar_high`` to ᾱ_l = ``alpha_bar_low`` (module docstring):

    * ``sigma_y`` (the code's): a = 1, τ² = 0;
    * ``predictive``: a = 1, τ² = c_0² (1 − ᾱ_h) + σ_b²;
    * ``evidence``: a = ᾱ_l, τ² = max(ᾱ_l − q, 0)/ᾱ_l with q = (c_x + c_0 √ᾱ_h)², so that a unit-covariance
      prior component gets its posterior evidence.
    """
    c = bridge_coefficients(alpha_bar_high, alpha_bar_low, 1.0)
    if kind == "predictive":
        return 1.0, c.c_0**2 * (1 - alpha_bar_high) + c.sigma**2
    if kind == "evidence":
        q = (c.c_x + c.c_0 * math.sqrt(alpha_bar_high)) ** 2  # Var of μ(x_h) when x_h ~ N(√ᾱ_h μ_j, I)
        return alpha_bar_low, max(alpha_bar_low - q, 0.0) / alpha_bar_low
    return 1.0, 0.0


def ula_log_potential(problem: InverseProblem, op: Any, y: Tensor, alpha_bar_high: float,
                      alpha_bar_low: float, kind: str, per_item: int,
                      device: torch.device) -> Callable[[Tensor, Tensor], Tensor]:
    """log β̂(x) of the ULA phase as a function of (x_t, x̂0(x_t)) → (R,): the Gaussian potential
    N(√ᾱ_l y; A μ, a (σ_y² I + τ² A Aᵀ)) at the bridge mean μ = c_x x_t + c_0 x̂0, up to a constant; (a, τ²)
    from :func:`ula_variance_terms`. ``y`` as in :class:`MeasurementFit`, on the sampler's dtype."""
    c = bridge_coefficients(alpha_bar_high, alpha_bar_low, 1.0)
    a, tau2 = ula_variance_terms(alpha_bar_high, alpha_bar_low, kind)
    y_tilde = math.sqrt(alpha_bar_low) * y
    if tau2 == 0.0:
        var = a * problem.sigma_y**2

        def log_g(x_t: Tensor, x0: Tensor) -> Tensor:
            return -neg_log_gaussian(op, y_tilde, c.mean(x_t, x0), var)
        return log_g
    fit = predictive_fit(problem, op, y_tilde, math.sqrt(alpha_bar_low), per_item, device)

    def log_g_fit(x_t: Tensor, x0: Tensor) -> Tensor:
        return -0.5 * fit(c.mean(x_t, x0), tau2)[0] / a
    return log_g_fit


class DCPSSampler(Sampler):
    """DCPS: blocks of tamed Langevin + per-step variational Gaussian kernels towards partial posteriors."""

    name = "dcps"
    Config = DCPSConfig
    needs_grad = True

    def _run(self, prior: CountingPrior, problem: InverseProblem, num_samples: int,
             generator: torch.Generator | None, device: torch.device,
             dtype: torch.dtype) -> tuple[Tensor, dict[str, Any]]:
        cfg = self.config
        if problem.sigma_y <= 0:
            raise ValueError("sigma_y: dcps needs sigma_y > 0 (its potentials are Gaussian in y)")
        sched, op = prior.schedule, problem.operator.to(device, dtype)
        y = problem.rows(num_samples, device, dtype)  # (B·k, *out_shape), or (1, …) for one observation
        var_y, rows = problem.sigma_y**2, problem.num_items * num_samples
        bounds = block_boundaries(sched.num_timesteps, cfg.num_blocks, cfg.boundaries)
        x = randn((rows, *prior.shape), generator, like=y.new_empty(()))
        ula_grad_norms, capped = [], []

        def bridge_mean(z: Tensor, t: int, k_low: int, sample: bool) -> Tensor:
            """Mean (or a sample, if ``sample``) of the η = 1 bridge from t to k_low at z."""
            if t == k_low:
                return z
            c = bridge_coefficients(sched.alpha_bar_at(t), sched.alpha_bar_at(k_low), 1.0)
            out = c.mean(z, prior.denoise(z, t).x0)
            return out + c.sigma * randn(z.shape, generator, like=z) if sample else out

        for ell in reversed(range(cfg.num_blocks)):
            k_high = bounds[ell + 1]
            k_low = bounds[ell] if ell > 0 else CLEAN
            y_tilde = math.sqrt(sched.alpha_bar_at(k_low)) * y
            # σ²_{y,ℓ} of g_ℓ (the kernels' potential)
            var_l = var_y * (sched.alpha_bar_at(k_low) if cfg.block_variance == "evidence" else 1.0)

            def neg_log_g(z: Tensor, y_tilde: Tensor = y_tilde, var_l: float = var_l) -> Tensor:
                return neg_log_gaussian(op, y_tilde, z, var_l)

            # a. tamed ULA at k_high on β̂(x) p_{k_high}(x)
            if cfg.langevin_steps:
                log_g_of_mean = ula_log_potential(problem, op, y, sched.alpha_bar_at(k_high),
                                                  sched.alpha_bar_at(k_low), cfg.ula_variance, num_samples,
                                                  device)
            for _ in range(cfg.langevin_steps):
                guided = guided_denoise(prior, x, k_high, log_g_of_mean)
                drift = guided.grad + eps_to_score(guided.eps, sched.alpha_bar_at(k_high))
                g_norm = drift.reshape(rows, -1).norm(dim=1)
                ula_grad_norms.append(g_norm.mean())  # on the device until the end
                capped.append((cfg.gamma * g_norm > 1).to(dtype).mean())  # the taming dominates
                x = tamed_ula_step(x.detach(), drift, cfg.gamma, generator)
            # b. variational kernels along the block grid (the last block goes down to t' = 0)
            grid = block_grid(max(k_low, 0), k_high, cfg.num_steps // cfg.num_blocks)
            for t, t_next in zip(grid[:-1], grid[1:], strict=True):
                c = bridge_coefficients(sched.alpha_bar_at(t), sched.alpha_bar_at(t_next), 1.0)
                with torch.no_grad():
                    mu_p = c.mean(x, prior.denoise(x, t).x0)

                def potential(u: Tensor, t_next: int = t_next, neg_log_g=neg_log_g, k_low=k_low) -> Tensor:
                    return neg_log_g(bridge_mean(u, t_next, k_low, sample=True))

                m, s = fit_gaussian_kernel(mu_p, c.sigma, potential, cfg.gradient_steps, cfg.lr, generator)
                x = m + torch.exp(s) * randn(m.shape, generator, like=m)
        with torch.no_grad():
            x = prior.denoise(x, 0).x0
        norms = torch.stack(ula_grad_norms).tolist() if ula_grad_norms else []
        capped_share = float(torch.stack(capped).mean()) if capped else 0.0
        warnings = []
        if capped_share > TAMED_WARNING:
            warnings.append(f"dcps: the Langevin drift was capped by its taming (γ‖G‖ > 1) in "
                            f"{100 * capped_share:.0f}% of the steps, so the Langevin phase does not sample "
                            "its target; a smaller gamma with more langevin_steps may help")
        return x.detach(), {"ula_grad_norm": norms, "ula_capped_share": capped_share,
                            "warnings": warnings}  # the data residual: Sampler.sample
