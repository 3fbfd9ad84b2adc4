r"""Colorization: observe the grey level (channel mean) of every pixel.

Reference: the ``Colorization`` class of the DDRM code (Kawar et al., 2022). Deviation: DDRM weighs the
channels (0.3333, 0.3334, 0.3333); we use exactly 1/C each so that s = 1/√C exactly.

Sketch: per pixel, y = hᵀ x_pix with h = (1/C)·1 = (1/√C)·u, u = 1/√C (unit vector).
  One C×C orthogonal Q with first column u (the "needle", :func:`mean_basis`) acts per pixel:
  spectral coordinates Qᵀ x_pix; the first (√C × grey value) is observed with s = 1/√C, the other
  C − 1 span the chroma null space. U = I. A⁺ y replicates y to all channels.

Notation: code → paper
  Q     the per-pixel V ("needle")      s   ‖h‖ = 1/√C (1/√3 ≈ 0.57735 for RGB)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from diffinv.operators.base import IdentityUOperator
from diffinv.operators.superres import mean_basis


class Colorization(IdentityUOperator):
    r"""Grayscale projection y[0, i, j] = (1/C) Σ_c x[c, i, j].

    Shapes: x (B, C, H, W) → y (B, 1, H, W), C ≥ 2 (3 for RGB). SVD: U = I (y flattened), s = 1/√C
    for all H·W coordinates; V per pixel by one C×C orthogonal Q. Spectral layout: the H·W observed
    coordinates √C·y first (raster order), then the null coordinates ((C − 1, H, W) order).
    """

    def __init__(self, shape: tuple[int, int, int] = (3, 256, 256)) -> None:
        shape = tuple(int(v) for v in shape)
        if len(shape) != 3 or shape[0] < 2 or min(shape) < 1:
            raise ValueError(f"shape: expected (C, H, W) with C ≥ 2 channels, got {shape}")
        self.in_shape = shape
        self.out_shape = (1, *shape[1:])
        self._q = mean_basis(shape[0])
        self._s = torch.full((self.out_dim,), 1.0 / math.sqrt(shape[0]), dtype=torch.float64)

    @classmethod
    def example(cls, generator: torch.Generator) -> Colorization:
        """RGB 3×6×5 images (test battery)."""
        return cls((3, 6, 5))

    def Vt(self, x: Tensor) -> Tensor:
        self.check_input(x)
        coords = torch.einsum("bchw,ck->bkhw", x, self._q.to(x))  # Qᵀ x_pix per pixel
        return coords.reshape(x.shape[0], -1)

    def V(self, z: Tensor) -> Tensor:
        coords = z.reshape(z.shape[0], *self.in_shape)
        return torch.einsum("bkhw,ck->bchw", coords, self._q.to(z))

    def describe(self) -> dict:
        return {"name": "colorize", "shape": list(self.in_shape), "weights": "mean"}
