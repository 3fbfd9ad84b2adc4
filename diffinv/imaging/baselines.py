r"""Non-generative reconstructions that every posterior sampler must beat.

* ``pseudo_inverse``: x = A⁺ y (minimum-norm least squares; through the SVD where the operator has
  one), on the [0, 1] scale and clamped to it.
* ``bicubic_upsample``: for super-resolution, y (C, h, w) resized to the image size by bicubic
  interpolation (PyTorch ``interpolate``, align_corners=False), clamped to [0, 1] — the usual
  baseline of SR tables, stronger than A⁺y for average pooling.
``baseline(op, y)`` picks bicubic upsampling for super-resolution operators and A⁺y otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from diffinv.operators.base import LinearOperator
from diffinv.operators.superres import AvgPoolSR, BicubicSR


def pseudo_inverse(op: LinearOperator, y: Tensor) -> Tensor:
    """A⁺ y clamped to [0, 1]; y (*out_shape) → (*in_shape)."""
    with torch.no_grad():
        return op.pinv(torch.as_tensor(y, dtype=torch.float64)[None])[0].clamp(0, 1)


def bicubic_upsample(y: Tensor, size: tuple[int, int]) -> Tensor:
    """(C, h, w) → (C, *size), bicubic, clamped to [0, 1]."""
    return F.interpolate(torch.as_tensor(y, dtype=torch.float64)[None], size=size, mode="bicubic",
                         align_corners=False)[0].clamp(0, 1)


def baseline(op: LinearOperator, y: Tensor) -> tuple[str, Tensor]:
    """(name, reconstruction (*in_shape)) of the standard non-generative baseline for ``op``."""
    if isinstance(op, (AvgPoolSR, BicubicSR)):
        return "bicubic", bicubic_upsample(y, tuple(op.in_shape[1:]))
    return "pinv", pseudo_inverse(op, y)
