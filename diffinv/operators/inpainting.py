r"""Inpainting / outpainting: observe the image entries inside a fixed mask.

References: DDRM ``Inpainting`` (Kawar et al., 2022); mask geometries of DPS (Chung et al., 2023),
DCPS (Janati et al., 2024) and MGPS (Moufad et al., 2025), as set in their official code.

Sketch: a boolean mask M of the image shape (C, H, W) (True = observed) is fixed at construction.
  y = x[M], flattened in (C, H, W) order: y ∈ R^m, m = #M.
  SVD: V is the permutation listing the kept entries first (in y's order), then the missing ones;
  U = I, s = 1 (m of them). Hence Aᵀ = A⁺ = zero-fill: A⁺y puts y back at the kept entries.
Masks are per pixel: the constructors below mark a pixel observed in all channels (a per-channel
mask can be passed to :class:`Inpainting` directly).

Notation: code → paper
  mask    M (True = observed)     idx   kept flat indices (the rows of A)
  perm    V as a permutation      m     number of observations
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from diffinv.operators.base import SVDOperator


def _image_shape(shape) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape: expected an image shape (C, H, W) of positive sizes, got {shape}")
    return shape


def _box(h: int, w: int, top: int, left: int, height: int, width: int) -> Tensor:
    """(H, W) boolean image, True inside rows [top, top+height) × cols [left, left+width)."""
    if not (0 <= top and 0 <= left and height >= 1 and width >= 1 and top + height <= h
            and left + width <= w):
        raise ValueError(f"box: rows [{top}, {top + height}) × cols [{left}, {left + width}) do not "
                         f"fit in a {h}×{w} image")
    box = torch.zeros(h, w, dtype=torch.bool)
    box[top : top + height, left : left + width] = True
    return box


class Inpainting(SVDOperator):
    r"""Masked observation y = x[M] for a boolean mask M (True = observed).

    Shapes: x (B, C, H, W) → y (B, m), m = #M, entries in (C, H, W) raster order. ``mask`` is
    (C, H, W), or (H, W) shared by all ``channels``. SVD: V = kept-first permutation, U = I, s = 1.
    """

    name = "inpaint_mask"

    def __init__(self, mask: Tensor, channels: int | None = None) -> None:
        mask = torch.as_tensor(mask)
        if mask.dtype != torch.bool:
            raise ValueError(f"mask: expected a boolean tensor, got dtype {mask.dtype}")
        if mask.ndim == 2:
            mask = mask.expand(channels or 1, *mask.shape)
        elif mask.ndim != 3 or (channels is not None and mask.shape[0] != channels):
            raise ValueError(f"mask: expected shape (H, W) or (C, H, W), got {tuple(mask.shape)}")
        if not bool(mask.any()):
            raise ValueError("mask: no observed entry (all False)")
        self.mask = mask.contiguous().clone()
        flat = self.mask.reshape(-1)
        self.idx = torch.nonzero(flat).reshape(-1)
        self.perm = torch.cat([self.idx, torch.nonzero(~flat).reshape(-1)])
        self.inv_perm = torch.argsort(self.perm)
        self.in_shape = tuple(self.mask.shape)
        self.out_shape = (self.idx.numel(),)
        self._s = torch.ones(self.out_dim, dtype=torch.float64)

    @classmethod
    def example(cls, generator: torch.Generator) -> Inpainting:
        """A random per-entry mask (half kept) on 2×6×5 images (test battery)."""
        return cls(torch.rand(2, 6, 5, generator=generator) < 0.5)

    @classmethod
    def from_png(cls, path: str | Path, shape: tuple[int, int, int]) -> Inpainting:
        """Mask from a greyscale/RGB PNG of size W×H: white (grey > 127) = observed."""
        from PIL import Image

        c, h, w = _image_shape(shape)
        try:
            with Image.open(path) as img:
                grey = np.asarray(img.convert("L"))
        except (OSError, ValueError) as err:
            raise ValueError(f"mask_png: cannot read {str(path)!r} as an image ({err})") from None
        if grey.shape != (h, w):
            raise ValueError(f"mask_png: image is {grey.shape[1]}×{grey.shape[0]} (W×H), expected {w}×{h}")
        op = cls(torch.from_numpy(grey > 127), channels=c)
        op.source = str(path)
        return op

    def A(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return x.reshape(x.shape[0], -1)[:, self.idx.to(x.device)]

    def At(self, y: Tensor) -> Tensor:
        self.check_output(y)
        return self.V(torch.cat([y, y.new_zeros(y.shape[0], self.in_dim - self.out_dim)], dim=1))

    def Vt(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return x.reshape(x.shape[0], -1)[:, self.perm.to(x.device)]

    def V(self, z: Tensor) -> Tensor:
        return z[:, self.inv_perm.to(z.device)].reshape(z.shape[0], *self.in_shape)

    def Ut(self, y: Tensor) -> Tensor:
        self.check_output(y)
        return y

    def U(self, z: Tensor) -> Tensor:
        return z

    def masked_image(self, y: Tensor, fill: float = 0.0) -> Tensor:
        """The observed image for display: y at the kept entries, ``fill`` elsewhere. (B, C, H, W)."""
        full = torch.full((y.shape[0], self.in_dim), fill, dtype=y.dtype, device=y.device)
        full[:, self.idx.to(y.device)] = y
        return full.reshape(y.shape[0], *self.in_shape)

    def describe(self) -> dict:
        info = {"name": self.name, "shape": list(self.in_shape), "observed": self.out_dim,
                "mask_sha1": hashlib.sha1(self.mask.cpu().numpy().tobytes()).hexdigest()}
        if getattr(self, "source", None):
            info["mask_png"] = self.source
        return info


class BoxInpainting(Inpainting):
    r"""A missing size×size box (default centred; ``top``/``left`` place it): y = x[outside box].

    Shapes: x (B, C, H, W) → y (B, C·(H·W − size²)). Default at 256²: a 150×150 box; the DCPS /
    MGPS ``inpainting_center`` asset is rows/cols 50–199 (``top=left=50``; centred would be 53).
    """

    name = "inpaint_box"

    def __init__(self, shape: tuple[int, int, int], size: int = 150, top: int | None = None,
                 left: int | None = None) -> None:
        c, h, w = _image_shape(shape)
        top = (h - size) // 2 if top is None else top
        left = (w - size) // 2 if left is None else left
        self.box = (int(top), int(left), int(size))
        super().__init__(~_box(h, w, top, left, size, size), channels=c)

    @classmethod
    def example(cls, generator: torch.Generator) -> BoxInpainting:
        """A 4×4 hole in 2×8×8 images (test battery)."""
        return cls((2, 8, 8), size=4)

    def describe(self) -> dict:
        top, left, size = self.box
        return {**super().describe(), "top": top, "left": left, "size": size}


class RandomInpainting(Inpainting):
    r"""Random pixels kept: exactly round(keep·H·W) pixels (all channels), drawn by ``generator``.

    Shapes: x (B, C, H, W) → y (B, C·round(keep·H·W)). The DPS paper uses 8 % kept (92 % missing);
    DAPS 30 % kept. Default keep = 0.3.
    """

    name = "inpaint_random"

    def __init__(self, shape: tuple[int, int, int], keep: float = 0.3,
                 generator: torch.Generator | None = None) -> None:
        c, h, w = _image_shape(shape)
        n_keep = round(keep * h * w)
        if not 0.0 < keep <= 1.0 or n_keep < 1:
            raise ValueError(f"keep: expected a fraction in (0, 1] keeping at least one pixel, got {keep!r}")
        kept = torch.randperm(h * w, generator=generator)[:n_keep]
        mask = torch.zeros(h * w, dtype=torch.bool)
        mask[kept] = True
        self.keep = float(keep)
        super().__init__(mask.reshape(h, w), channels=c)

    @classmethod
    def example(cls, generator: torch.Generator) -> RandomInpainting:
        """30 % of the pixels of 3×8×8 images (test battery)."""
        return cls((3, 8, 8), keep=0.3, generator=generator)

    def describe(self) -> dict:
        return {**super().describe(), "keep": self.keep}


class HalfInpainting(Inpainting):
    r"""One half of the image missing: ``missing`` ∈ {left, right, top, bottom}; y = x[other half].

    Shapes: x (B, C, H, W) → y (B, C·H·(W − ⌊W/2⌋)) for left/right (likewise for top/bottom).
    Default ``right`` (MGPS ``outpainting_half``: cols 128–255 missing at 256²).
    """

    name = "inpaint_half"
    SIDES = ("left", "right", "top", "bottom")

    def __init__(self, shape: tuple[int, int, int], missing: str = "right") -> None:
        c, h, w = _image_shape(shape)
        if missing not in self.SIDES:
            raise ValueError(f"missing: expected one of {', '.join(self.SIDES)}, got {missing!r}")
        self.missing = missing
        boxes = {"left": (0, 0, h, w // 2), "right": (0, w - w // 2, h, w // 2),
                 "top": (0, 0, h // 2, w), "bottom": (h - h // 2, 0, h // 2, w)}
        super().__init__(~_box(h, w, *boxes[missing]), channels=c)

    @classmethod
    def example(cls, generator: torch.Generator) -> HalfInpainting:
        """Bottom half of 2×6×5 images missing (test battery)."""
        return cls((2, 6, 5), missing="bottom")

    def describe(self) -> dict:
        return {**super().describe(), "missing": self.missing}


class Outpainting(Inpainting):
    r"""Only a centred size×size region observed: y = x[centre box].

    Shapes: x (B, C, H, W) → y (B, C·size²). Default size 78 (MGPS ``outpainting_expand`` at 256²:
    rows/cols 89–166, ≈ 90.7 % missing).
    """

    name = "outpaint"

    def __init__(self, shape: tuple[int, int, int], size: int = 78) -> None:
        c, h, w = _image_shape(shape)
        self.size = int(size)
        super().__init__(_box(h, w, (h - size) // 2, (w - size) // 2, size, size), channels=c)

    @classmethod
    def example(cls, generator: torch.Generator) -> Outpainting:
        """The central 4×4 of 3×8×8 images observed (test battery)."""
        return cls((3, 8, 8), size=4)

    def describe(self) -> dict:
        return {**super().describe(), "size": self.size}
