r"""ΠGDM — Pseudoinverse-Guided Diffusion Models (Song, Vahdat, Mardani, Kautz, ICLR 2023).

Approximating p(x_0 | x_t) ≈ N(x̂0(x_t), r_t² I) gives p(y | x_t) ≈ N(A x̂0, r_t² A Aᵀ + σ_y² I) and the
guidance (r_t² times ∇_{x_t} of the log of that Gaussian, differentiated through its mean A x̂0 only)

    g_t = J_tᵀ Aᵀ (A Aᵀ + (σ_y²/r_t²) I)⁻¹ (y − A x̂0),   r_t² = 1 − ᾱ_t  (VP form of σ_t²/(1+σ_t²)),

computed as one vector–Jacobian product: v = Aᵀ(…)⁻¹(y − A x̂0) is detached and ⟨v, x̂0⟩ is
back-propagated to x_t. The sample moves by a DDIM(η) step plus the guidance (the VP form of
ΠGDM's guided DDIM step):

    x_s = c_x x_t + c_0 x̂0 + σ_{t→s} z + w √ᾱ_s √ᾱ_t g_t.

The bracket uses the operator's SVD when it has one (V[s_i(ȳ_i − s_i x̄̂0_i)/(s_i² + σ_y²/r_t²)],
zero where s_i = 0, so σ_y = 0 gives no 0/0) and conjugate gradients on A Aᵀ + λ I otherwise. The
weight √ᾱ_s√ᾱ_t is the one of the NVIDIA RED-diff code (``awd``), azula and DCPS / MGPS; σ_y is used
(RED-diff's ΠGDM ignores it). Cost: 1 forward + 1 backward per step. The last step (0 → clean)
returns x̂0 + w √ᾱ_0 g_0.

Steps and weight are coupled: the weight √ᾱ_s√ᾱ_t does not shrink with the step (the guided score's
DDIM step would move the sample by w g_t (√ᾱ_s/√ᾱ_t − c_x), which does), so each added step adds
guidance. On deblur_gauss the 4-sample-mean PSNR falls from 50 to 150 steps at w = 1 (exact Gaussian
prior 21.17 → 19.53 dB, fashion32 24.86 → 21.61) and holds at w = 1/3 (20.88, 24.67)
(``benchmarks/steps_sweep.py --sampler pgdm --vary weight=1,0.333``, ``benchmarks/results/steps_sweep/``);
the score-consistent step itself (``step = "tweedie"``, below) diverges here, since with r_t² = 1 − ᾱ_t it is
10⁴× larger at high noise. Presets set w for their step count.

The Tweedie step (``step = "tweedie"``; the paper's weight by default): ΠGDM's likelihood enters the DDIM
step through the conditional Tweedie formula E[x_0 | x_t, y] = x̂0 + (1 − ᾱ_t)/√ᾱ_t ∇ log p(y | x_t), with
∇ log p̂(y | x_t) = g_t / r_t², so

    x_s = c_x x_t + c_0 (x̂0 + w (1 − ᾱ_t)/(√ᾱ_t r_t²) g_t) + σ_{t→s} z.

For a Gaussian prior of variance ``data_variance`` p̂ is exact and this is the reverse DDPM of the exact
posterior (tested; the paper's weight gives samples about 20× too narrow along the observed directions there).
Against the paper's weight it guides more at high noise (by ≈ 1/ᾱ_t) and less at low noise, where the
paper's weight accumulates over steps and over-fits y. With r_t² = 1 − ᾱ_t it is, step for step, DPS with
only its score-consistent step (``DPSConfig.likelihood_cap = 1``, ζ' → ∞; tested equal). It needs an
accurate x̂0 Jacobian at high noise, where J_t carries 1/√ᾱ_t: with the exact denoiser of the analytic priors
it is far better on the GMM benchmark (``diffinv/benchmarks/gmm_presets.py``: on 360 tuning runs over d_x
∈ {10, 20, 40} × d_y ∈ {1, 2, 4} the median SW per cell 3–40× below the paper's weight at 300 steps, e.g.
(20, 2) 2.99 → 0.10, (40, 1) 4.05 → 1.60), but no preset uses it: there it lost to the prior on 2 runs
where the bounded paper's weight (next) lost on none, and it would repeat the DPS row; with the learned image
networks it diverges (above).

The bound (``likelihood_cap`` κ > 0, off by default): the weight is min(w √ᾱ_s √ᾱ_t, κ w (1 − ᾱ_t)/(√ᾱ_t
r_t²) c_0), the paper's weight at high noise, where it is the smaller, and the Tweedie step's at low noise,
where the paper's accumulates and over-fits y — DPS's ``likelihood_cap`` for ΠGDM. κ = 1 is derived: on a
Gaussian prior the bounded sampler matches the exact posterior within the Tweedie step's test tolerance
(at high noise, where it guides less, p(x_t | y) ≈ p(x_t)). The GMM preset uses it on 1000 steps: against
the unbounded weight on the same grid the median SW is within 0.03 or lower (360 tuning runs; (10, 4) 0.43
→ 0.06) and
the runs whose samples over-fit y fall from 302 to 2 (numbers in ``diffinv/benchmarks/gmm_presets.py``).
On images it keeps the PSNR from falling with the step count but costs PSNR at the presets' 50 steps:
deblur_gauss, 4 training images, fashion32, PSNR4 at 50 / 100 steps, η = 0: unbounded 24.57 / 22.96 dB,
bounded 23.88 / 23.95; η = 1: 25.07 / 24.61 against 24.32 / 24.37 (``benchmarks/steps_sweep.py --vary
likelihood_cap=0,1 --steps 50,100``, ``benchmarks/results/steps_sweep/pgdm_likelihood_cap_eta*``), so no
image preset uses it.

Shorter chains (``t_start``, ``spacing``; off by default, an option beyond the paper, as in
:mod:`diffinv.samplers.ddrm`): the grid starts at t_start instead of T − 1, uniform in t (``"time"``) or in
the VE noise σ_t (``"sigma"``), and ``init = "spectral"`` starts it from DDRM's initialisation at σ_{t_start}
(:meth:`~diffinv.operators.spectral.SpectralView.start`: observed coordinates at ȳ_i/s_i with the rest of
the variance σ² as noise, the others N(0, σ²)), mapped to x_t = √ᾱ_t V x̄: the truncated start of Chung et
al. (2022, "Come-closer-diffuse-faster"). ``init = "pinv"`` is x_t = √ᾱ_t A⁺y + √(1 − ᾱ_t) z, which for a
blur amplifies the noise of y through its small singular values. Fewer steps of the budget are then spent
at high noise, where x̂0 barely depends on x_t; the step–weight coupling above applies to the steps of the
shorter grid. Measured on deblur_gauss at 50 steps (training images,
``benchmarks/results/tune_presets_pgdm_start/``): from t = 400 with w = 1 it loses 1.5–6 dB, and with w
scaled down (best η = 1, w = 0.5) it is level with the full grid (PSNR16 25.13 against 25.18), so no preset
uses it.

The data's variance (``data_variance`` v, 1 by default = the paper): the paper's r_t² = σ_t²/(1 + σ_t²) is
Var[x_0 | x_t] for data N(0, I). For data of variance v per coordinate it is v σ_t²/(v + σ_t²), in VP form
r_t² = v (1 − ᾱ_t)/(v ᾱ_t + 1 − ᾱ_t) (:func:`~diffinv.samplers.guidance.posterior_variance`; exact for
N(0, v I), tested). It tends to v, not 1, at high noise, where x̂0 is the mean of far-apart modes; with
r_t² ≈ 1 there the likelihood N(y; A x̂0, σ_y² + r_t² A Aᵀ) is over-confident about an x̂0 that averages
modes. Measured on the 25-mode mixture (v = tr Cov[x]/d_x ≈ 80–130; tuning seeds 100–199, d_x ∈ {10, 20,
40} × d_y ∈ {1, 2, 4}, 756 runs of 1 000 samples in float64): the median SW fell in every cell ((10, 2) 1.50 →
0.89, (20, 2) 3.07 → 1.99, (20, 4) 1.43 → 0.62, (40, 2) 4.25 → 3.28) and 623 of the 756 runs improved, but the
runs worse than the prior went from 1 to 4 ((10, 2) seed 112 3.31 → 10.3 against the prior's 4.2): where σ_y
dominates, g grows with r_t², so a large v strengthens the guidance at high noise, before the modes separate.
Keeping the step's factor 1 − ᾱ_t and using v only in the likelihood's covariance left all 4 worse than the
prior, and with the Tweedie step (above) v made it far worse (median (20, 2) 0.10 → 4.49 on 40 tuning runs:
the likelihood stays too broad to pick a mode). So the GMM preset keeps v = 1 (the paper); the option is for
data whose scale is known. With the bound (above) at 300 steps, v = 1 left the median unchanged (3.93 → 3.93
on 25 tuning runs) and v doubled it (2.33 → 4.38 on 50): it halves the guidance at mid noise.

Notation: ``lam`` σ_y²/r_t², ``weight`` w, ``v`` Aᵀ(A Aᵀ + λ I)⁻¹(y − A x̂0), ``g`` g_t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from diffinv.operators.spectral import SpectralView
from diffinv.priors.base import CountingPrior
from diffinv.rng import randn
from diffinv.samplers.base import InverseProblem, Sampler, check_options
from diffinv.samplers.guidance import MeasurementFit, guided_denoise, posterior_variance, tweedie_scale
from diffinv.schedules import bridge_coefficients, ddim_sample, grid_pairs, spaced_grid


@dataclass(frozen=True)
class PGDMConfig:
    """ΠGDM settings: 100 DDIM steps with η = 1 (RED-diff scripts / DCPS), weight w = 1, start from noise."""

    num_steps: int = 100
    eta: float = 1.0
    weight: float = 1.0
    init: Literal["noise", "pinv", "spectral"] = "noise"
    cg_iterations: int = 50
    clip_x0: bool = False
    t_start: int | None = None  # the grid's first timestep; None: T − 1 (the paper)
    spacing: Literal["time", "sigma"] = "time"  # uniform in t, or in the VE σ_t
    data_variance: float = 1.0  # v in r_t² = v(1 − ᾱ_t)/(v ᾱ_t + 1 − ᾱ_t); 1: the paper
    step: Literal["paper", "tweedie"] = "paper"  # the guidance's weight in x_s (module docstring)
    likelihood_cap: float = 0.0  # κ > 0: the weight at most κ × the Tweedie step's (module docstring)
    antithetic: bool = False  # pair the samples' noise (diffinv.rng.Antithetic): a lower-variance mean

    def __post_init__(self) -> None:
        check_options(self, positive=("num_steps", "cg_iterations"), unit=("eta",),
                      nonnegative=("likelihood_cap",),
                      choices={"init": ("noise", "pinv", "spectral"), "spacing": ("time", "sigma"),
                               "step": ("paper", "tweedie")})
        if self.t_start is not None:
            check_options(self, positive=("t_start",))
        if not (isinstance(self.data_variance, (int, float)) and self.data_variance > 0):
            raise ValueError(f"data_variance: expected a number > 0, got {self.data_variance!r}")


class PGDMSampler(Sampler):
    """ΠGDM: DDIM steps guided by J_tᵀ Aᵀ (A Aᵀ + σ_y²/r_t² I)⁻¹ (y − A x̂0) (SVD, or CG without one)."""

    name = "pgdm"
    Config = PGDMConfig
    needs_grad = True

    def _run(self, prior: CountingPrior, problem: InverseProblem, num_samples: int,
             generator: torch.Generator | None, device: torch.device,
             dtype: torch.dtype) -> tuple[Tensor, dict[str, Any]]:
        ctx = self.prepare(prior, problem, num_samples, device, dtype)
        x = self.start(prior, ctx, problem.num_items * num_samples, generator)
        for k in range(len(ctx.pairs)):
            x = self.advance(prior, ctx, x, k, generator)
        return x.detach(), {}

    # the run as steps (:mod:`diffinv.samplers.stepwise`): ``_run`` and the fitting loops share them
    def step_pairs(self, prior: CountingPrior) -> list[tuple[int, int]]:
        cfg, sched = self.config, prior.schedule
        return grid_pairs(spaced_grid(sched, cfg.num_steps, cfg.t_start, cfg.spacing))

    def prepare(self, prior: CountingPrior, problem: InverseProblem, per_item: int, device: torch.device,
                dtype: torch.dtype) -> StepContext:
        op = problem.operator.to(device, dtype)
        y = problem.rows(per_item, device, dtype)  # (B·k, *out_shape), or (1, …) for one observation
        spectral = (SpectralView.of(problem.operator, problem.observations()).rows(per_item).to(device)
                    if op.has_svd else None)
        if self.config.init == "spectral" and spectral is None:
            raise ValueError(f"init: 'spectral' needs an operator with an SVD; "
                             f"{type(problem.operator).__name__} has none (use noise or pinv)")
        return StepContext(op, y, MeasurementFit(op, y, problem.sigma_y, self.config.cg_iterations, spectral),
                           self.step_pairs(prior), spectral, problem.sigma_y)

    def start(self, prior: CountingPrior, ctx: StepContext, rows: int,
              generator: torch.Generator | None) -> Tensor:
        like = ctx.y.new_empty(())
        ab = prior.schedule.alpha_bar_at(ctx.pairs[0][0])
        if self.config.init == "spectral":  # DDRM's start at σ_t (module docstring), VE → VP
            noise_over_s = ctx.spectral.noise_over_s(ctx.sigma_y).to(like.dtype)
            x_bar = ctx.spectral.start(math.sqrt((1 - ab) / ab), noise_over_s, ctx.spectral.observed,
                                       lambda: randn((rows, ctx.spectral.dim), generator, like=like))
            return math.sqrt(ab) * ctx.op.V(x_bar).reshape(rows, *prior.shape)
        x = randn((rows, *prior.shape), generator, like=like)
        if self.config.init == "pinv":
            x = math.sqrt(ab) * ctx.op.pinv(ctx.y) + math.sqrt(1 - ab) * x
        return x

    def advance(self, prior: CountingPrior, ctx: StepContext, x: Tensor, k: int,
                generator: torch.Generator | None) -> Tensor:
        """Step k of :meth:`step_pairs`: x_t (rows, *shape) → x_s."""
        cfg, (t, s), sched = self.config, ctx.pairs[k], prior.schedule
        ab_t, ab_s = sched.alpha_bar_at(t), sched.alpha_bar_at(s)
        r2 = posterior_variance(ab_t, cfg.data_variance)
        # r_t²: v = r_t² Aᵀ (σ_y² I + r_t² A Aᵀ)⁻¹ r = Aᵀ (A Aᵀ + σ_y²/r_t² I)⁻¹ r

        def objective(x_t: Tensor, x0: Tensor) -> Tensor:
            v = r2 * ctx.fit(x0.detach(), r2)[1]
            return (v * x0).reshape(x0.shape[0], -1).sum(-1)

        guided = guided_denoise(prior, x, t, objective, cfg.clip_x0)
        coeffs = bridge_coefficients(ab_t, ab_s, cfg.eta)
        x = ddim_sample(x.detach(), guided.x0, coeffs, generator)
        # the Tweedie step: x̂0 + (1 − ᾱ_t)/√ᾱ_t ∇ log p̂(y | x_t) in the bridge, with g = r_t² ∇ log p̂
        tweedie = tweedie_scale(coeffs.c_0, ab_t) / r2
        scale = tweedie if cfg.step == "tweedie" else math.sqrt(ab_s * ab_t)
        if cfg.likelihood_cap > 0:
            scale = min(scale, cfg.likelihood_cap * tweedie)
        return (x + cfg.weight * scale * guided.grad).detach()


@dataclass
class StepContext:
    """What the steps of one run share: A on the device, y rows, the measurement fit and the grid's pairs
    (computed once: the grid is a host computation)."""

    op: Any
    y: Tensor
    fit: MeasurementFit
    pairs: list[tuple[int, int]]
    spectral: SpectralView | None = None
    sigma_y: float = 0.0
