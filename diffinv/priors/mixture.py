r"""Gaussian mixtures: sampling, densities, moments, and the exact posterior under y = A x + σ_y ε.

p(x) = Σ_k w_k N(x; μ_k, Σ_k), x ∈ R^d (flattened; the data shape is kept for reshaping).

Each Σ_k is stored as an eigen-decomposition Σ_k = Q_k diag(λ_k) Q_kᵀ, or, when all components are
isotropic, as one variance v_k per component (Q_k = I, λ_k = v_k·1) — the fast path of the
25-component benchmark (:mod:`diffinv.benchmarks.gmm`). Everything is float64.

Posterior (linear Gaussian likelihood, any covariances) — Bishop (2006) §2.3.3, per component:
    S_k  = A Σ_k Aᵀ + σ_y² I,      G_k = Σ_k Aᵀ S_k⁻¹,
    μ̃_k = μ_k + G_k (y − A μ_k),   Σ̃_k = Σ_k − G_k A Σ_k,
    w̃_k ∝ w_k N(y; A μ_k, S_k).
With Σ_k = I (the benchmark), Σ̃ = (I + AᵀA/σ_y²)⁻¹ for every k and μ̃_k = Σ̃ (Aᵀy/σ_y² + μ_k): the exact
posterior of the GMM experiments of MCGDiff (Cardoso et al., 2024) and DCPS (Janati et al., 2024).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from diffinv.rng import generator_device, mirrored

LOG_2PI = math.log(2 * math.pi)
PARAMETERS = ("means", "log_weights", "variances", "eigvals", "eigvecs")  # GaussianMixture's tensors


@dataclass(frozen=True, eq=False)
class GaussianMixture:
    """A mixture of K Gaussians in R^d; use :meth:`create` to build one.

    Attributes (float64): ``means`` (K, d); ``log_weights`` (K,) normalised; either ``variances``
    (K,) for isotropic components, or ``eigvals`` (K, d) and ``eigvecs`` (K, d, d).
    """

    means: Tensor
    log_weights: Tensor
    variances: Tensor | None = None
    eigvals: Tensor | None = None
    eigvecs: Tensor | None = None
    shape: tuple[int, ...] = ()

    @staticmethod
    def create(means: Tensor, weights: Tensor, cov: Tensor | float,
               shape: tuple[int, ...] | None = None) -> GaussianMixture:
        r"""Mixture from means (K, d), weights (K,) ≥ 0 and ``cov``: a scalar, (K,) isotropic variances,
        a shared (d, d) matrix or per-component (K, d, d) matrices (symmetric positive definite)."""
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim != 2:
            raise ValueError(f"means: expected shape (K, d), got {tuple(means.shape)}")
        k, d = means.shape
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (k,):
            raise ValueError(f"weights: expected shape ({k},), got {tuple(weights.shape)}")
        if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()) or weights.sum() <= 0:
            raise ValueError("weights: expected non-negative finite values with a positive sum")
        log_weights = torch.log(weights) - torch.log(weights.sum())
        shape = tuple(shape) if shape is not None else (d,)
        if math.prod(shape) != d:
            raise ValueError(f"shape: {shape} does not have {d} elements")
        cov = torch.as_tensor(cov, dtype=torch.float64)
        if cov.ndim == 0 or cov.shape == (k,):
            variances = cov.expand(k).clone()
            if not bool((variances > 0).all()):
                raise ValueError("cov: variances must be > 0")
            return GaussianMixture(means, log_weights, variances=variances, shape=shape)
        if cov.shape == (d, d):
            cov = cov.expand(k, d, d)
        if cov.shape != (k, d, d):
            raise ValueError(f"cov: expected a scalar, ({k},), ({d}, {d}) or ({k}, {d}, {d}); "
                             f"got {tuple(cov.shape)}")
        if not torch.allclose(cov, cov.transpose(-1, -2), atol=1e-10, rtol=1e-8):
            raise ValueError("cov: covariance matrices must be symmetric")
        eigvals, eigvecs = torch.linalg.eigh(cov)
        if not bool((eigvals > 0).all()):
            raise ValueError("cov: covariance matrices must be positive definite")
        return GaussianMixture(means, log_weights, eigvals=eigvals, eigvecs=eigvecs, shape=shape)

    def to(self, device: str | torch.device | None = None,
           dtype: torch.dtype | None = None) -> GaussianMixture:
        """This mixture with its parameter tensors on ``device`` / in ``dtype`` (``self`` if none moves)."""
        params = {n: getattr(self, n) for n in PARAMETERS}
        moved = {n: p if p is None else p.to(device, dtype) for n, p in params.items()}
        if all(moved[n] is params[n] for n in PARAMETERS):
            return self
        return GaussianMixture(**moved, shape=self.shape)

    def requires_grad(self) -> bool:
        """Whether any parameter tensor requires grad."""
        return any(p is not None and p.requires_grad for p in (getattr(self, n) for n in PARAMETERS))

    # ---------------------------------------------------------------- basic properties
    @property
    def num_components(self) -> int:
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @property
    def isotropic(self) -> bool:
        return self.variances is not None

    @property
    def weights(self) -> Tensor:
        return self.log_weights.exp()

    def covariances(self) -> Tensor:
        """Σ_k as a dense (K, d, d) tensor."""
        if self.variances is not None:
            eye = torch.eye(self.dim, dtype=torch.float64)
            return self.variances[:, None, None] * eye
        return (self.eigvecs * self.eigvals[:, None, :]) @ self.eigvecs.transpose(-1, -2)

    def mean(self) -> Tensor:
        """E[X], shape (d,)."""
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        """Cov[X] = Σ_k w_k (Σ_k + μ_k μ_kᵀ) − E[X]E[X]ᵀ, shape (d, d)."""
        w = self.weights
        second = torch.einsum("k,kij->ij", w, self.covariances())
        second = second + torch.einsum("k,ki,kj->ij", w, self.means, self.means)
        m = self.mean()
        return second - torch.outer(m, m)

    # ---------------------------------------------------------------- sampling and densities
    def sample(self, num_samples: int, generator: torch.Generator | None = None,
               return_components: bool = False, antithetic: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Draw ``num_samples`` i.i.d. samples, shape (n, *shape), float64, on the generator's device
        (the parameters are copied there once per call when it is not theirs). ``antithetic``: samples
        2i and 2i + 1 draw their components independently and share z with opposite signs, so each is
        still a draw of the mixture (for one Gaussian the pair's mean is its mean exactly)."""
        device = generator_device(generator)
        mix = self.to(device)
        comp = torch.multinomial(mix.weights, num_samples, replacement=True, generator=generator)
        rows = (num_samples + 1) // 2 if antithetic else num_samples
        z = torch.randn(rows, self.dim, generator=generator, dtype=torch.float64, device=device)
        if antithetic:
            z = mirrored(z, num_samples)
        if mix.variances is not None:
            x = mix.means[comp] + mix.variances[comp].sqrt()[:, None] * z
        else:
            scaled = z * mix.eigvals[comp].sqrt()  # (n, d)
            x = mix.means[comp] + torch.einsum("nij,nj->ni", mix.eigvecs[comp], scaled)
        x = x.reshape(num_samples, *self.shape)
        return (x, comp) if return_components else x

    def component_log_prob(self, x: Tensor) -> Tensor:
        """log w_k + log N(x; μ_k, Σ_k) for x of shape (n, *shape) → (n, K)."""
        return self.log_weights + self.component_log_density(x)

    def component_log_density(self, x: Tensor) -> Tensor:
        """log N(x; μ_k, Σ_k) for x of shape (n, *shape) → (n, K)."""
        x = x.reshape(x.shape[0], -1).to(torch.float64)
        diff = x[:, None, :] - self.means[None]  # (n, K, d)
        if self.variances is not None:
            quad = (diff**2).sum(-1) / self.variances
            logdet = self.dim * torch.log(self.variances)
        else:
            z = torch.einsum("kji,nkj->nki", self.eigvecs, diff)
            quad = (z**2 / self.eigvals).sum(-1)
            logdet = torch.log(self.eigvals).sum(-1)
        return -0.5 * (quad + logdet + self.dim * LOG_2PI)

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x), shape (n,)."""
        return torch.logsumexp(self.component_log_prob(x), dim=-1)

    # ---------------------------------------------------------------- Bayes
    def posterior(self, matrix: Tensor, y: Tensor, sigma_y: float) -> GaussianMixture:
        r"""Exact posterior p(x | y) ∝ p(x) N(y; A x, σ_y² I) (formulas in the module docstring).

        matrix : (m, d) dense A; y : (m,); sigma_y > 0.
        """
        if not sigma_y > 0:
            raise ValueError(f"sigma_y: expected a positive number, got {sigma_y}")
        a = torch.as_tensor(matrix, dtype=torch.float64)
        y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
        if a.ndim != 2 or a.shape[1] != self.dim or a.shape[0] != y.numel():
            raise ValueError(f"matrix: expected shape ({y.numel()}, {self.dim}), got {tuple(a.shape)}")
        m = a.shape[0]
        cov = self.covariances()  # (K, d, d)
        a_cov = a @ cov  # (K, m, d)
        s = a_cov @ a.T + sigma_y**2 * torch.eye(m, dtype=torch.float64)  # (K, m, m)
        s = 0.5 * (s + s.transpose(-1, -2))
        chol = torch.linalg.cholesky(s)
        resid = y - self.means @ a.T  # (K, m)
        sol = torch.cholesky_solve(resid[..., None], chol)[..., 0]  # (K, m): S⁻¹(y − Aμ)
        means = self.means + torch.einsum("kmd,km->kd", a_cov, sol)
        gain_t = torch.cholesky_solve(a_cov, chol)  # (K, m, d) = S⁻¹ A Σ
        post_cov = cov - a_cov.transpose(-1, -2) @ gain_t
        post_cov = 0.5 * (post_cov + post_cov.transpose(-1, -2))
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        log_lik = -0.5 * ((resid * sol).sum(-1) + logdet + m * LOG_2PI)
        log_w = self.log_weights + log_lik
        return GaussianMixture.create(means, torch.softmax(log_w, 0), post_cov, shape=self.shape)

    def log_evidence(self, matrix: Tensor, y: Tensor, sigma_y: float) -> float:
        """log p(y) = log Σ_k w_k N(y; A μ_k, A Σ_k Aᵀ + σ_y² I)."""
        a = torch.as_tensor(matrix, dtype=torch.float64)
        y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
        s = a @ self.covariances() @ a.T + sigma_y**2 * torch.eye(a.shape[0], dtype=torch.float64)
        dist = torch.distributions.MultivariateNormal(self.means @ a.T, covariance_matrix=s)
        return float(torch.logsumexp(self.log_weights + dist.log_prob(y), 0))
