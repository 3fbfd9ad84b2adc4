r"""Exact analytic diffusion priors: a Gaussian mixture (and the Gaussian as its K = 1 case).

Diffusing X_0 ~ Σ_k w_k N(μ_k, Σ_k) through x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε gives, in closed form,

    q_t = Σ_k w_k N(√ᾱ_t μ_k, C_k),   C_k = ᾱ_t Σ_k + (1−ᾱ_t) I = Q_k diag(ᾱ_t λ_k + 1 − ᾱ_t) Q_kᵀ,

and, with responsibilities r_k(x) ∝ w_k N(x; √ᾱ_t μ_k, C_k) (log-sum-exp) and z_k = Q_kᵀ(x − √ᾱ_t μ_k),

    ∇ log q_t(x) = −Σ_k r_k Q_k diag(1/λ'_k) z_k,               λ'_k = ᾱ_t λ_k + 1 − ᾱ_t
    x̂0(x, t)    = Σ_k r_k [μ_k + √ᾱ_t Q_k diag(λ_k/λ'_k) z_k]   (= E[X_0 | X_t = x], exact)
    ε(x, t)     = −√(1−ᾱ_t) ∇ log q_t(x).

All arithmetic runs in the dtype of x_t (parameters are cast), so float64 inputs give float64-exact
denoisers; autograd works through every formula. The cast parameters are cached per (device, dtype)
of x_t, so on a GPU a call copies nothing from the host and never waits for the device.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from diffinv.priors.base import Denoised, check_batch
from diffinv.priors.mixture import LOG_2PI, GaussianMixture
from diffinv.schedules import NoiseSchedule, linear_schedule


class GaussianMixturePrior:
    """The diffused Gaussian mixture as a :class:`~diffinv.priors.base.DiffusionPrior`.

    Parameters
    ----------
    mixture : the clean-data law p(x_0).
    schedule : VP schedule (default: linear β from 1e-4 to 0.02, T = 1000).
    """

    value_range = None
    differentiable = True

    def __init__(self, mixture: GaussianMixture, schedule: NoiseSchedule | None = None) -> None:
        self.mixture = mixture
        self.schedule = schedule if schedule is not None else linear_schedule()
        self.shape = tuple(mixture.shape)
        self._casts: dict[tuple[torch.device, torch.dtype], tuple[GaussianMixture, GaussianMixture]] = {}

    def _mixture_like(self, x: Tensor) -> GaussianMixture:
        """``self.mixture`` with its parameters on x's device and in x's dtype, cached per (device, dtype)
        (not cached for parameters that require grad, so that each call builds its own graph)."""
        mix = self.mixture
        key = (x.device, x.dtype)
        source, cast = self._casts.get(key, (None, None))
        if source is mix:
            return cast
        cast = mix.to(x.device, x.dtype)
        if not mix.requires_grad():
            self._casts[key] = (mix, cast)
        return cast

    def _isotropic(self, x_t: Tensor, t: int) -> tuple[Tensor, Tensor, Tensor]:
        """Fast path for isotropic components, by matrix products only (no (B, K, d) temporaries).

        With a_k = r_k λ_k/λ'_k and b_k = r_k/λ'_k:  x̂0 = r μ + √ᾱ (Σa · x − √ᾱ a μ),
        ∇ log q_t = −(Σb · x − √ᾱ b μ). Returns log r (B, K) unnormalised, x̂0 and the score (B, d).
        """
        mix = self._mixture_like(x_t)
        ab = self.schedule.alpha_bar_at(t)
        x = x_t.reshape(x_t.shape[0], -1)
        means = mix.means
        lam = mix.variances  # (K,)
        lam_t = ab * lam + (1 - ab)
        sq = (x**2).sum(-1, keepdim=True) - 2 * math.sqrt(ab) * x @ means.T + ab * (means**2).sum(-1)
        log_r = mix.log_weights - 0.5 * (sq.clamp_min(0) / lam_t + mix.dim * torch.log(lam_t)
                                               + mix.dim * LOG_2PI)
        r = torch.softmax(log_r, dim=-1)
        a, b = r * (lam / lam_t), r / lam_t
        x0 = r @ means + math.sqrt(ab) * (a.sum(-1, keepdim=True) * x - math.sqrt(ab) * a @ means)
        score = -(b.sum(-1, keepdim=True) * x - math.sqrt(ab) * b @ means)
        return log_r, x0, score

    def _terms(self, x_t: Tensor, t: int) -> tuple[Tensor, Tensor, Tensor]:
        """Responsibilities (B, K), and per-component score (B, K, d) and x̂0 (B, K, d)."""
        mix = self._mixture_like(x_t)
        ab = self.schedule.alpha_bar_at(t)
        x = x_t.reshape(x_t.shape[0], -1)
        means = mix.means
        diff = x[:, None, :] - math.sqrt(ab) * means  # (B, K, d)
        if mix.variances is not None:
            lam = mix.variances[:, None]  # (K, 1)
            lam_t = ab * lam + (1 - ab)
            quad = (diff**2 / lam_t).sum(-1)
            logdet = mix.dim * torch.log(lam_t[:, 0])
            score_k = -diff / lam_t
            x0_k = means + math.sqrt(ab) * diff * (lam / lam_t)
        else:
            q = mix.eigvecs
            lam = mix.eigvals  # (K, d)
            lam_t = ab * lam + (1 - ab)
            z = torch.einsum("kji,bkj->bki", q, diff)  # Q_kᵀ diff, (B, K, d)
            quad = (z**2 / lam_t).sum(-1)
            logdet = torch.log(lam_t).sum(-1)
            score_k = -torch.einsum("kij,bkj->bki", q, z / lam_t)
            x0_k = means + math.sqrt(ab) * torch.einsum("kij,bkj->bki", q, z * (lam / lam_t))
        log_r = mix.log_weights - 0.5 * (quad + logdet + mix.dim * LOG_2PI)
        return log_r, score_k, x0_k

    def denoise(self, x_t: Tensor, t: int) -> Denoised:
        check_batch(self, x_t, t)
        if self.mixture.isotropic:
            _, x0, score = self._isotropic(x_t, t)
            eps = -math.sqrt(1 - self.schedule.alpha_bar_at(t)) * score
            return Denoised(x0=x0.reshape(x_t.shape), eps=eps.reshape(x_t.shape))
        log_r, score_k, x0_k = self._terms(x_t, t)
        r = torch.softmax(log_r, dim=-1)[..., None]  # (B, K, 1)
        ab = self.schedule.alpha_bar_at(t)
        x0 = (r * x0_k).sum(1).reshape(x_t.shape)
        eps = -math.sqrt(1 - ab) * (r * score_k).sum(1).reshape(x_t.shape)
        return Denoised(x0=x0, eps=eps)

    def log_prob(self, x_t: Tensor, t: int) -> Tensor:
        """log q_t(x_t), shape (B,)."""
        check_batch(self, x_t, t)
        log_r, _, _ = self._terms(x_t, t)
        return torch.logsumexp(log_r, dim=-1)

    def score(self, x_t: Tensor, t: int) -> Tensor:
        """∇ log q_t(x_t), shape (B, *shape)."""
        check_batch(self, x_t, t)
        log_r, score_k, _ = self._terms(x_t, t)
        r = torch.softmax(log_r, dim=-1)[..., None]
        return (r * score_k).sum(1).reshape(x_t.shape)

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """Exact samples of X_0, shape (n, *shape), float64."""
        return self.mixture.sample(num_samples, generator)

    def posterior(self, matrix: Tensor, y: Tensor, sigma_y: float) -> GaussianMixture:
        """Exact p(x_0 | y) for y = A x_0 + σ_y ε (see :meth:`GaussianMixture.posterior`)."""
        return self.mixture.posterior(matrix, y, sigma_y)


def gaussian_prior(mean: Tensor, cov: Tensor | float, schedule: NoiseSchedule | None = None,
                   shape: tuple[int, ...] | None = None) -> GaussianMixturePrior:
    r"""Gaussian prior N(mean, cov) — a one-component mixture.

    mean : (d,); cov : a scalar (isotropic), or a (d, d) SPD matrix. Its diffused denoiser is linear:
    x̂0 = m + √ᾱ_t Σ (ᾱ_t Σ + (1−ᾱ_t) I)⁻¹ (x_t − √ᾱ_t m); the posterior is Gaussian.
    """
    mean = torch.as_tensor(mean, dtype=torch.float64).reshape(1, -1)
    mix = GaussianMixture.create(mean, torch.ones(1, dtype=torch.float64), cov, shape=shape)
    return GaussianMixturePrior(mix, schedule)
