"""deepinv's samplers around diffinv's prior and operators, for side-by-side benchmarks only.

deepinv (Tachella et al., https://deepinv.github.io) is an optional benchmark extra, never a
dependency of the library: ``pip install deepinv==0.5.0 torchvision`` in an environment of its own
(``python -m venv``; ``pip install -e .`` there too). This module is imported by
``benchmarks/psnr_nfe.py`` only when a ``deepinv-*`` method is asked for.

* :class:`PriorDenoiser` is deepinv's denoiser interface D(x, σ) on [0, 1] pixels (x = x₀ + σ n)
  built on a diffinv :class:`~diffinv.priors.base.DiffusionPrior` (an ε-network on its VP schedule):
  in prior units z = lo + w x has noise w σ, the VP time t is the grid time whose
  √((1 − ᾱ_t)/ᾱ_t) is nearest w σ, and D(x, σ) = (x̂0(√ᾱ_t z, t) − lo)/w. Every call goes through a
  :class:`~diffinv.priors.base.CountingPrior`, so deepinv's forward and backward evaluations are
  counted the way diffinv's are.
* :func:`svd_physics` is a ``deepinv.physics.DecomposablePhysics`` from a diffinv
  :class:`~diffinv.operators.base.SVDOperator`: the same A, on the same observations. Spectral
  tensors are (B, d): V*(x) = Vᵀx, U*(y) = Uᵀy zero-padded to d, mask = s zero-padded to d.

deepinv imports torchvision at import time; a torchvision wheel built for a CUDA torch cannot load
its compiled operators under a CPU torch of the same version, which makes its import fail while
registering meta kernels for them. :func:`import_deepinv` skips those registrations (deepinv's
samplers, physics and optimisers use none of torchvision's compiled operators).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from diffinv.operators.base import SVDOperator
from diffinv.priors.base import CountingPrior
from diffinv.units import PixelUnits


def import_deepinv():
    """``import deepinv`` (see the module docstring for the torchvision work-around)."""
    try:
        import torchvision  # noqa: F401
    except RuntimeError:  # compiled ops of another torch build: import without their meta kernels
        import sys

        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        original = torch.library.register_fake
        torch.library.register_fake = lambda *a, **k: (lambda f: f)  # type: ignore[assignment]
        try:
            import torchvision  # noqa: F401
        finally:
            torch.library.register_fake = original
    except ImportError as err:
        raise SystemExit(f"deepinv: not installed ({err}); pip install deepinv==0.5.0 torchvision") from err
    try:
        import deepinv
    except ImportError as err:
        raise SystemExit(f"deepinv: not installed ({err}); pip install deepinv==0.5.0") from err
    return deepinv


class PriorDenoiser(torch.nn.Module):
    """deepinv's D(x, σ) on [0, 1] pixels from a diffinv prior (module docstring); x (B, C, H, W)."""

    def __init__(self, prior: CountingPrior) -> None:
        super().__init__()
        self.prior = prior
        self.units = PixelUnits.of(prior)
        ab = prior.schedule.alpha_bar.double()
        self.alpha_bar = ab
        self.noise_ratio = torch.sqrt((1 - ab) / ab)  # σ of x_t/√ᾱ_t, increasing in t

    def time_of(self, sigma: float) -> int:
        """The grid time whose noise level in prior units is nearest w σ."""
        return int(torch.argmin((self.noise_ratio - self.units.width * sigma).abs()))

    def forward(self, x: Tensor, sigma) -> Tensor:
        sig = torch.as_tensor(sigma, dtype=torch.float64).flatten()
        if sig.numel() == 1:
            sig = sig.expand(x.shape[0])
        times = [self.time_of(float(s)) for s in sig]
        out = torch.empty_like(x)
        for t in sorted(set(times)):
            rows = [i for i, ti in enumerate(times) if ti == t]
            z = self.units.to_prior(x[rows])
            x_t = math.sqrt(float(self.alpha_bar[t])) * z
            x0 = self.prior.denoise(x_t.float(), t).x0
            out[rows] = self.units.to_pixels(x0).to(x.dtype)
        return out


def svd_physics(dinv, op: SVDOperator, sigma_y: float):
    """deepinv ``DecomposablePhysics`` with the SVD of ``op`` (float32) and Gaussian noise σ_y."""
    op = op.to("cpu", torch.float32)
    d, m = op.in_dim, op.out_dim
    s = op.pad(op.singulars().float()[None], d)  # (1, d)

    def V_adjoint(x: Tensor) -> Tensor:
        return op.Vt(x.float())

    def V(z: Tensor) -> Tensor:
        return op.V(z.float())

    def U(z: Tensor) -> Tensor:
        return op.U(z[:, :m].float())

    def U_adjoint(y: Tensor) -> Tensor:
        return op.pad(op.Ut(y.float()), d)

    return dinv.physics.DecomposablePhysics(U=U, U_adjoint=U_adjoint, V=V, V_adjoint=V_adjoint, mask=s,
                                            noise_model=dinv.physics.GaussianNoise(sigma=sigma_y))
