r"""The 25-component Gaussian-mixture benchmark with exact posteriors (MCGDiff and DCPS papers).

Prior: means μ_ij = (8i, 8j, 8i, 8j, …) ∈ R^{d_x} for i, j ∈ {−2, …, 2} (d_x even), unit covariances,
weights w = e²/Σe² with e ~ N(0, I_25) (as in the MCGDiff paper's experiment code, Cardoso et al., 2024).
Operator and noise (the same code): G ~ N(0, 1)^{d_y×d_x} = U diag(·) Vᵀ; A = U diag(s) V_{1:d_y}ᵀ with
s = sort(U(0,1)^{d_y}) descending; x* ~ prior; σ_y = u·max(s), u ~ U(0, 1); y = A x* + σ_y ε.
RNG order from ``seed``: weights, G, s, x*, u, ε. Unlike the MCGDiff harness, the weights are drawn
from the per-seed generator, so each seed is a different mixture.

A user's own problem is an ``.npz`` with keys ``means`` (K, d), ``weights`` (K,), ``cov`` (scalar,
(d, d) or (K, d, d)), ``A`` (m, d), ``y`` (m,) and ``sigma_y`` (scalar): :func:`load_problem`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffinv.operators.dense import DenseOperator
from diffinv.operators.noise import GaussianNoise
from diffinv.priors.analytic import GaussianMixturePrior
from diffinv.priors.mixture import GaussianMixture
from diffinv.rng import make_generator
from diffinv.samplers.base import InverseProblem
from diffinv.schedules import NoiseSchedule


@dataclass(frozen=True, eq=False)
class GMMProblem:
    """A prior, an inverse problem and its exact posterior."""

    prior: GaussianMixturePrior
    problem: InverseProblem
    posterior: GaussianMixture
    name: str

    @property
    def dx(self) -> int:
        return self.prior.mixture.dim

    @property
    def dy(self) -> int:
        return self.problem.operator.out_dim


def grid_means(dx: int, spacing: float = 8.0) -> torch.Tensor:
    """The 25 means (spacing·i, spacing·j) tiled to length d_x; shape (25, d_x)."""
    if dx < 2 or dx % 2:
        raise ValueError(f"dx: expected an even integer ≥ 2, got {dx}")
    ij = torch.tensor([(i, j) for i in range(-2, 3) for j in range(-2, 3)], dtype=torch.float64)
    return (spacing * ij).repeat(1, dx // 2)


def make_problem(dx: int = 10, dy: int = 1, seed: int = 0,
                 schedule: NoiseSchedule | None = None) -> GMMProblem:
    """The benchmark instance for (d_x, d_y, seed) (module docstring)."""
    if not 1 <= dy <= dx:
        raise ValueError(f"dy: expected an integer in [1, {dx}], got {dy}")
    gen = make_generator(seed)
    weights = torch.randn(25, generator=gen, dtype=torch.float64) ** 2
    mixture = GaussianMixture.create(grid_means(dx), weights, 1.0)
    prior = GaussianMixturePrior(mixture, schedule)
    g = torch.randn(dy, dx, generator=gen, dtype=torch.float64)
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    s = torch.sort(torch.rand(dy, generator=gen, dtype=torch.float64), descending=True).values
    matrix = u @ torch.diag(s) @ vh
    x_star = mixture.sample(1, gen)[0]
    sigma_y = float(torch.rand(1, generator=gen, dtype=torch.float64)) * float(s.max())
    noise = GaussianNoise(sigma_y)
    y = noise.sample(matrix @ x_star, gen)
    problem = InverseProblem(DenseOperator(matrix), y, noise)
    return GMMProblem(prior, problem, mixture.posterior(matrix, y, sigma_y),
                      name=f"gmm25-dx{dx}-dy{dy}-seed{seed}")


def load_problem(path: str | Path, schedule: NoiseSchedule | None = None) -> GMMProblem:
    """Read a user's problem file (module docstring); bad content raises a one-line ValueError."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"problem: {str(path)!r} is a folder; expected an .npz file")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise ValueError(f"problem: {str(path)!r} is not an .npz file (expected a NumPy archive with "
                             "keys means, weights, cov, A, y, sigma_y)")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"problem: cannot read {path} as an .npz file ({err})") from None
    missing = [k for k in ("means", "weights", "cov", "A", "y", "sigma_y") if k not in data.files]
    if missing:
        raise ValueError(f"problem: {path} lacks key(s) {', '.join(missing)}")
    arrays = {k: torch.as_tensor(np.asarray(data[k], dtype=np.float64)) for k in data.files}
    for key, arr in arrays.items():
        if not bool(torch.isfinite(arr).all()):
            raise ValueError(f"problem: key {key!r} contains NaN or infinite values")
    means, a, y = arrays["means"], arrays["A"], arrays["y"].reshape(-1)
    if means.ndim != 2:
        raise ValueError(f"problem: means must have shape (K, d), got {tuple(means.shape)}")
    k, d = means.shape
    if a.ndim != 2 or a.shape[1] != d:
        raise ValueError(f"problem: A must have shape (m, {d}), got {tuple(a.shape)}")
    if y.numel() != a.shape[0]:
        raise ValueError(f"problem: y must have shape ({a.shape[0]},), got {tuple(arrays['y'].shape)}")
    if arrays["sigma_y"].numel() != 1 or not float(arrays["sigma_y"]) > 0:
        raise ValueError("problem: sigma_y must be a scalar > 0")
    sigma_y = float(arrays["sigma_y"])
    mixture = GaussianMixture.create(means, arrays["weights"].reshape(-1), arrays["cov"])
    prior = GaussianMixturePrior(mixture, schedule)
    noise = GaussianNoise(sigma_y)
    problem = InverseProblem(DenseOperator(a), y, noise)
    return GMMProblem(prior, problem, mixture.posterior(a, y, sigma_y), name=path.stem)


def save_problem(gmm: GMMProblem, path: str | Path) -> None:
    """Write a problem in the ``--problem`` file format."""
    mix = gmm.prior.mixture
    cov = mix.variances.numpy() if mix.variances is not None else mix.covariances().numpy()
    np.savez(path, means=mix.means.numpy(), weights=mix.weights.numpy(), cov=cov,
             A=gmm.problem.operator.matrix().numpy(), y=gmm.problem.y.numpy(),
             sigma_y=np.float64(gmm.problem.sigma_y))
