r"""Super-resolution operators: r×r average pooling and bicubic (anti-aliased) downsampling.

References: DDRM (Kawar et al., 2022) ``SuperResolution`` and ``SRConv`` (the DDRM code's
H_functions); the bicubic Resizer of the official DPS code (Chung et al., 2023).

Sketch (both are SVD operators, in the layout of :mod:`diffinv.operators.base`):
  average pooling: each r×r block b ∈ R^{r²} maps to its mean (1/r²) 1ᵀ b = (1/r) uᵀ b with the unit
    vector u = 1/r; one r²×r² orthogonal Q (first column u) gives per-block coordinates Qᵀ b whose
    first entry is the scaled block mean (singular value 1/r), the others span the null space.
  bicubic: per axis a 1-D matrix K (n/r × n) of the stretched Keys kernel (a = −0.5); the image map
    is Y = K_h X K_wᵀ per channel. With K = U₁ diag(s₁) V₁ᵀ per axis, Vᵀx = V_hᵀ X V_w, singular values
    s_h,i s_w,j, the (H/r)(W/r) observed coefficients sorted descending and listed first.

Notation: code → paper
  factor        r (downsampling factor)
  Q             per-block orthogonal matrix (DDRM: the r²×r² V of the block-mean row)
  k_h, k_w      1-D decimation matrices K_h, K_w (DDRM SRConv ``H_small``)
  u_h, s_h, v_h the 1-D SVD of K_h (same for w)
  perm          order of the observed 2-D coefficients (descending s_h,i s_w,j)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from diffinv.operators.base import IdentityUOperator, SVDOperator

KEYS_A = -0.5


def mean_basis(n: int) -> Tensor:
    r"""An n×n real orthogonal (symmetric) matrix whose first column is 1/√n (float64).

    The Householder reflection Q = I − 2 v vᵀ / vᵀv with v = e₁ − 1/√n maps e₁ to 1/√n.
    """
    u = torch.full((n,), 1.0 / math.sqrt(n), dtype=torch.float64)
    v = -u
    v[0] += 1.0
    norm2 = float(v @ v)
    eye = torch.eye(n, dtype=torch.float64)
    return eye if norm2 < 1e-30 else eye - 2.0 * torch.outer(v, v) / norm2


def _check_image_shape(shape, name: str = "shape") -> tuple[int, int, int]:
    shape = tuple(int(v) for v in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{name}: expected an image shape (C, H, W) of positive sizes, got {shape}")
    return shape


class AvgPoolSR(IdentityUOperator):
    r"""r×r average pooling: y[c, i, j] = (1/r²) Σ_{a,b<r} x[c, r i + a, r j + b].

    Shapes: x (B, C, H, W) → y (B, C, H/r, W/r); r must divide H and W. SVD: U = I (y flattened in
    (C, H/r, W/r) order), s = 1/r for all m = C·H·W/r² coordinates; V acts per block by one r²×r²
    orthogonal Q (:func:`mean_basis`). Spectral layout: the m scaled block means r·y first (in y's
    order), then the r² − 1 null-space coordinates of each block ((C, H/r, W/r, r² − 1) order).
    A⁺ = nearest-neighbour upsampling, Aᵀ = upsampling / r².
    """

    def __init__(self, shape: tuple[int, int, int], factor: int = 4) -> None:
        c, h, w = _check_image_shape(shape)
        if int(factor) != factor or factor < 1 or h % factor or w % factor:
            raise ValueError(f"factor: expected a positive integer dividing H = {h} and W = {w}, "
                             f"got {factor!r}")
        self.factor = r = int(factor)
        self.in_shape = (c, h, w)
        self.out_shape = (c, h // r, w // r)
        self._q = mean_basis(r * r)
        self._s = torch.full((self.out_dim,), 1.0 / r, dtype=torch.float64)

    @classmethod
    def example(cls, generator: torch.Generator) -> AvgPoolSR:
        """×2 pooling of 2×8×8 images (test battery)."""
        return cls((2, 8, 8), factor=2)

    def _blocks(self, x: Tensor) -> Tensor:
        """(B, C, H, W) → (B, C, H/r, W/r, r²)."""
        (c, h, w), r = self.in_shape, self.factor
        x = x.reshape(x.shape[0], c, h // r, r, w // r, r).permute(0, 1, 2, 4, 3, 5)
        return x.reshape(x.shape[0], c, h // r, w // r, r * r)

    def Vt(self, x: Tensor) -> Tensor:
        self.check_input(x)
        coords = self._blocks(x) @ self._q.to(x)  # (B, C, h, w, r²): Qᵀ b per block
        return torch.cat([coords[..., 0].reshape(x.shape[0], -1),
                          coords[..., 1:].reshape(x.shape[0], -1)], dim=1)

    def V(self, z: Tensor) -> Tensor:
        (c, h, w), r, m = self.in_shape, self.factor, self.out_dim
        first = z[:, :m].reshape(z.shape[0], c, h // r, w // r, 1)
        rest = z[:, m:].reshape(z.shape[0], c, h // r, w // r, r * r - 1)
        blocks = torch.cat([first, rest], dim=-1) @ self._q.T.to(z)  # Q c per block
        blocks = blocks.reshape(z.shape[0], c, h // r, w // r, r, r).permute(0, 1, 2, 4, 3, 5)
        return blocks.reshape(z.shape[0], c, h, w)

    def describe(self) -> dict:
        return {"name": "sr_avgpool", "shape": list(self.in_shape), "factor": self.factor}


def keys_cubic(t: Tensor, a: float = KEYS_A) -> Tensor:
    r"""Keys' cubic convolution kernel W(t): (a+2)|t|³ − (a+3)|t|² + 1 on |t| ≤ 1,
    a|t|³ − 5a|t|² + 8a|t| − 4a on 1 < |t| < 2, 0 elsewhere."""
    t = t.abs()
    inner = ((a + 2) * t - (a + 3)) * t * t + 1
    outer = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return torch.where(t <= 1, inner, torch.where(t < 2, outer, torch.zeros_like(t)))


def bicubic_matrix(n: int, factor: int, boundary: str = "reflect") -> Tensor:
    r"""The (n/r, n) anti-aliased bicubic decimation matrix (float64).

    Output pixel i has centre c_i = (i + ½) r − ½ in input pixel units; input pixel j gets the
    weight W((j − c_i)/r) (Keys kernel stretched by r: 4r taps), normalised so each row sums to 1.
    Taps outside [0, n) are folded back: ``reflect`` = half-sample symmetric (−1 → 0, n → n − 1;
    the DPS Resizer / DDRM SRConv convention), ``circular`` = modulo n.
    """
    if boundary not in ("reflect", "circular"):
        raise ValueError(f"boundary: expected 'reflect' or 'circular', got {boundary!r}")
    n_out = n // factor
    centres = (torch.arange(n_out, dtype=torch.float64) + 0.5) * factor - 0.5
    offsets = torch.arange(-2 * factor, 2 * factor + 1, dtype=torch.float64)
    taps = torch.floor(centres)[:, None] + offsets[None, :]  # (n_out, 4r + 1) candidate pixels
    weights = keys_cubic((taps - centres[:, None]) / factor)
    weights = weights / weights.sum(dim=1, keepdim=True)
    idx = taps.long()
    if boundary == "circular":
        idx = idx % n
    else:
        idx = idx % (2 * n)
        idx = torch.where(idx >= n, 2 * n - 1 - idx, idx)
    matrix = torch.zeros(n_out, n, dtype=torch.float64)
    return matrix.scatter_add_(1, idx, weights)


class BicubicSR(SVDOperator):
    r"""Bicubic ×r downsampling, separable: Y_c = K_h X_c K_wᵀ for each channel c.

    K_h (H/r × H), K_w (W/r × W) from :func:`bicubic_matrix` (Keys a = −0.5 stretched by r,
    anti-aliasing, ``reflect`` or ``circular`` boundary). Shapes: x (B, C, H, W) → y (B, C, H/r, W/r).
    SVD: per-axis K = U₁ diag(s₁) V₁ᵀ (float64 LAPACK, full V₁); Vᵀx = V_hᵀ X V_w, Uᵀy = U_hᵀ Y U_w.
    Spectral layout: the C·(H/r)(W/r) observed coefficients first, ordered by descending
    s_h,i s_w,j (channel fastest), then the unobserved coefficients ((C, rest) order).
    No singular value is truncated (A is exactly the bicubic map; for r = 4 the 1-D singular values
    are ≳ 0.3); A⁺ uses only the base class's relative cut-off rcond.
    """

    def __init__(self, shape: tuple[int, int, int], factor: int = 4, boundary: str = "reflect") -> None:
        c, h, w = _check_image_shape(shape)
        if int(factor) != factor or factor < 1 or h % factor or w % factor:
            raise ValueError(f"factor: expected a positive integer dividing H = {h} and W = {w}, "
                             f"got {factor!r}")
        self.factor, self.boundary = int(factor), boundary
        self.in_shape = (c, h, w)
        self.out_shape = (c, h // self.factor, w // self.factor)
        self.k_h = bicubic_matrix(h, self.factor, boundary)
        self.k_w = bicubic_matrix(w, self.factor, boundary)
        self.u_h, self.s_h, vh_h = torch.linalg.svd(self.k_h, full_matrices=True)
        self.u_w, self.s_w, vh_w = torch.linalg.svd(self.k_w, full_matrices=True)
        self.v_h, self.v_w = vh_h.T.contiguous(), vh_w.T.contiguous()
        ho, wo = self.out_shape[1:]
        s2 = torch.outer(self.s_h, self.s_w).reshape(-1)  # (ho·wo,)
        self.perm = torch.argsort(s2, descending=True, stable=True)  # order in the small grid
        self._s = s2[self.perm].repeat_interleave(c)
        rows, cols = self.perm // wo, self.perm % wo
        observed = rows * w + cols  # the same coefficients in the (H, W) grid
        rest = torch.ones(h * w, dtype=torch.bool)
        rest[observed] = False
        self.order = torch.cat([observed, torch.nonzero(rest).reshape(-1)])
        self.inv_order = torch.argsort(self.order)
        self.inv_perm = torch.argsort(self.perm)

    @classmethod
    def example(cls, generator: torch.Generator) -> BicubicSR:
        """×4 bicubic of 2×12×16 images, reflect boundary (test battery)."""
        return cls((2, 12, 16), factor=4)

    def _split(self, coeffs: Tensor, p: int) -> Tensor:
        """(B, C, N) with the first p observed → (B, C·N) spectral layout."""
        first = coeffs[:, :, :p].transpose(1, 2).reshape(coeffs.shape[0], -1)
        return torch.cat([first, coeffs[:, :, p:].reshape(coeffs.shape[0], -1)], dim=1)

    def _merge(self, z: Tensor, n: int, p: int) -> Tensor:
        """Inverse of :meth:`_split`: (B, C·N) → (B, C, N)."""
        c = self.in_shape[0]
        first = z[:, : c * p].reshape(z.shape[0], p, c).transpose(1, 2)
        return torch.cat([first, z[:, c * p :].reshape(z.shape[0], c, n - p)], dim=2)

    def Vt(self, x: Tensor) -> Tensor:
        self.check_input(x)
        coeffs = self.v_h.T.to(x) @ x @ self.v_w.to(x)  # (B, C, H, W)
        coeffs = coeffs.reshape(x.shape[0], x.shape[1], -1)[:, :, self.order.to(x.device)]
        return self._split(coeffs, self.perm.numel())

    def V(self, z: Tensor) -> Tensor:
        c, h, w = self.in_shape
        coeffs = self._merge(z, h * w, self.perm.numel())[:, :, self.inv_order.to(z.device)]
        return self.v_h.to(z) @ coeffs.reshape(z.shape[0], c, h, w) @ self.v_w.T.to(z)

    def Ut(self, y: Tensor) -> Tensor:
        self.check_output(y)
        coeffs = self.u_h.T.to(y) @ y @ self.u_w.to(y)  # (B, C, H/r, W/r)
        coeffs = coeffs.reshape(y.shape[0], y.shape[1], -1)[:, :, self.perm.to(y.device)]
        return self._split(coeffs, self.perm.numel())

    def U(self, z: Tensor) -> Tensor:
        c, ho, wo = self.out_shape
        coeffs = self._merge(z, ho * wo, ho * wo)[:, :, self.inv_perm.to(z.device)]
        return self.u_h.to(z) @ coeffs.reshape(z.shape[0], c, ho, wo) @ self.u_w.T.to(z)

    def describe(self) -> dict:
        return {"name": "sr_bicubic", "shape": list(self.in_shape), "factor": self.factor,
                "boundary": self.boundary, "keys_a": KEYS_A}
