r"""Non-generative reconstructions that every posterior sampler must beat.

* ``pseudo_inverse``: x = A⁺ y (minimum-norm least squares; through the SVD where the operator has
  one), on the [0, 1] scale and clamped to it.
* ``bicubic_upsample``: for super-resolution, y (C, h, w) resized to the image size by bicubic
  interpolation (PyTorch ``interpolate``, align_corners=False), clamped to [0, 1] — the usual
  baseline of SR tables, stronger than A⁺y for average pooling.
* ``tikhonov``: the posterior mean under the white Gaussian prior x ~ N(m𝟙, σ_x² I) (m = 0.5,
  σ_x = 0.3, about the pixel spread of natural images on [0, 1]), i.e. Tikhonov / Wiener filtering
  x = m𝟙 + V diag(s_i / (s_i² + σ_y²/σ_x²)) Uᵀ (y − A m𝟙), clamped to [0, 1]. Unlike A⁺y it does not
  amplify noise along tiny singular values (a Gaussian blur's), so it is the harder baseline there.
``baseline(op, y)`` picks bicubic upsampling for super-resolution operators and A⁺y otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from diffinv.operators.base import LinearOperator, SVDOperator
from diffinv.operators.spectral import SpectralView
from diffinv.operators.superres import AvgPoolSR, BicubicSR
from diffinv.samplers.guidance import MeasurementFit


def pseudo_inverse(op: LinearOperator, y: Tensor) -> Tensor:
    """A⁺ y clamped to [0, 1]; y (*out_shape) → (*in_shape)."""
    with torch.no_grad():
        return op.pinv(torch.as_tensor(y, dtype=torch.float64)[None])[0].clamp(0, 1)


def tikhonov(op: SVDOperator, y: Tensor, sigma_y: float, mean: float = 0.5, sigma_x: float = 0.3) -> Tensor:
    """Wiener / Tikhonov reconstruction (module docstring), clamped to [0, 1]; y (*out_shape)."""
    if sigma_y <= 0 or sigma_x <= 0:
        raise ValueError(f"sigma_y, sigma_x: expected positive values, got {sigma_y}, {sigma_x}")
    with torch.no_grad():
        y = torch.as_tensor(y, dtype=torch.float64)[None]
        offset = torch.full((1, *op.in_shape), mean, dtype=torch.float64, device=y.device)
        # V diag(s/(s² + λ)) Uᵀ(y − A m𝟙) = Aᵀ(A Aᵀ + λ I)⁻¹ r, λ = σ_y²/σ_x²: the shared measurement fit
        fit = MeasurementFit(op, y, sigma_y / sigma_x, spectral=SpectralView.of(op, y))
        return (offset + fit(offset, 1.0)[1])[0].clamp(0, 1)


def bicubic_upsample(y: Tensor, size: tuple[int, int]) -> Tensor:
    """(C, h, w) → (C, *size), bicubic, clamped to [0, 1]."""
    return F.interpolate(torch.as_tensor(y, dtype=torch.float64)[None], size=size, mode="bicubic",
                         align_corners=False)[0].clamp(0, 1)


def baseline(op: LinearOperator, y: Tensor) -> tuple[str, Tensor]:
    """(name, reconstruction (*in_shape)) of the standard non-generative baseline for ``op``."""
    if isinstance(op, (AvgPoolSR, BicubicSR)):
        return "bicubic", bicubic_upsample(y, tuple(op.in_shape[1:]))
    return "pinv", pseudo_inverse(op, y)
