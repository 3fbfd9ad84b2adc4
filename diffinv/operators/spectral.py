r"""An observation y in the SVD basis of A = U diag(s) Vᵀ (layout: diffinv.operators.base), once.

For an SVD operator A: R^d → R^m with k = min(m, d) singular values and y (B, *out_shape):

    s         (k,)    singular values s_i
    s_inv     (d,)    s⁺_i = 1/s_i above the cut-off rcond·max(s), 0 below it and for i ≥ k
    observed  (d,)    s⁺_i > 0: spectral coordinates of x that carry an observation
    y_bar     (B, m)  ȳ = Uᵀ y
    y_over_s  (B, d)  ȳ_i s⁺_i = ȳ_i / s_i on observed coordinates, 0 elsewhere (V(y_over_s) = A⁺ y)
    free_y    (m,)    measurement coordinates without an observed partner: i ≥ k or s⁺_i = 0

:meth:`SpectralView.start` draws DDRM's initialisation at a noise level σ (shared by DDRM and by ΠGDM's
truncated start).

All computed once in float64 with the original (float64, CPU) operator's transforms, then moved
with :meth:`SpectralView.to` (dtypes kept): samplers cast what they need once, on their device.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from diffinv.operators.base import SVDOperator


@dataclass(frozen=True, eq=False)
class SpectralView:
    """The spectral quantities of one observation (module docstring); build with :meth:`of`."""

    s: Tensor
    s_inv: Tensor
    observed: Tensor
    y_bar: Tensor
    y_over_s: Tensor
    free_y: Tensor

    @classmethod
    def of(cls, op: SVDOperator, y: Tensor) -> SpectralView:
        """The view of y (B, *op.out_shape), any floating dtype, for the SVD operator ``op``.

        Computed in float64 by ``op.original`` (the operator as constructed: a moved float32 copy
        contributes only its origin, so the values do not depend on where ``op`` lives) on a copy
        of y; the fields are returned on y's device.
        """
        if not isinstance(op, SVDOperator):
            raise ValueError(f"op: expected an SVD operator, got {type(op).__name__}")
        op.check_output(y, "y")
        src: SVDOperator = op.original  # type: ignore[assignment]
        y64 = y.detach().to(device=src.device, dtype=torch.float64, copy=True)
        s = src.singulars().clone()
        k, d = s.numel(), src.in_dim
        s_inv = src.pad(src.inverse_singulars()[None], d)[0].clone()
        observed = s_inv > 0
        y_bar = src.Ut(y64)  # (B, m)
        y_over_s = src.pad(y_bar[:, :k] * s_inv[:k], d)
        free_y = torch.ones(src.out_dim, dtype=torch.bool, device=s.device)
        free_y[:k] = s_inv[:k] == 0
        view = cls(s=s, s_inv=s_inv, observed=observed, y_bar=y_bar, y_over_s=y_over_s,
                   free_y=free_y)
        return view.to(y.device)

    def to(self, device: torch.device | str) -> SpectralView:
        """The same view with every tensor on ``device`` (dtypes kept)."""
        return dataclasses.replace(self, **{f.name: getattr(self, f.name).to(device)
                                            for f in dataclasses.fields(self)
                                            if isinstance(getattr(self, f.name), Tensor)})

    def rows(self, per_item: int) -> SpectralView:
        """The view of B observations spread over B·``per_item`` rows laid out item by item (ȳ and
        ȳ/s repeated; one observation is kept as one row, which broadcasts)."""
        if self.y_bar.shape[0] == 1:
            return self
        return dataclasses.replace(self, y_bar=self.y_bar.repeat_interleave(per_item, 0),
                                   y_over_s=self.y_over_s.repeat_interleave(per_item, 0))

    @property
    def dim(self) -> int:
        """d, the number of spectral coordinates of x."""
        return self.s_inv.shape[0]

    def noise_over_s(self, sigma_y: float) -> Tensor:
        """σ_y s⁺_i (d,), float64: the noise standard deviation of ȳ_i/s_i (0 where unobserved)."""
        if not (math.isfinite(sigma_y) and sigma_y >= 0):
            raise ValueError(f"sigma_y: expected a finite number ≥ 0, got {sigma_y}")
        return sigma_y * self.s_inv

    def start(self, sigma: float, noise_over_s: Tensor, use: Tensor, draw: Callable[[], Tensor]) -> Tensor:
        r"""DDRM's initialisation (Kawar et al., 2022, eq. 7) at the variance-exploding noise level σ:

            x̄_i = ȳ_i/s_i + √(σ² − σ_y²/s_i²) z_i   where ``use`` and σ_y/s_i ≤ σ,
            x̄_i = σ z_i                              elsewhere,

        i.e. every coordinate has variance σ² about the observation or about 0 (the value range's
        midpoint). ``noise_over_s`` (d,) σ_y/s_i, ``use`` (d,) bool (the observed coordinates a sampler
        trusts), ``draw()`` a (rows, d) standard normal draw; returns x̄ (rows, d) in the spectral basis
        (``V`` maps it to pixels; × √ᾱ_t gives the VP state)."""
        y_over_s = self.y_over_s.to(noise_over_s.dtype)
        pinned = y_over_s + torch.sqrt((sigma**2 - noise_over_s**2).clamp_min(0)) * draw()
        return torch.where(use & (noise_over_s <= sigma), pinned, sigma * draw())
