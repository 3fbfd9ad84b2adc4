r"""Deblurring operators: circular convolution with a fixed kernel, diagonalised by the 2-D DFT.

References: the Gaussian / motion blur tasks of DPS (Chung et al., 2023) and the DDRM deblurring
classes (Kawar et al., 2022). Deviation: DPS convolves with reflect padding and DDRM with zero
padding (truncated SVD); here the boundary is **circular** so that the operator has an exact, cheap
SVD in closed form (the 2-D DFT diagonalises a circular convolution). Simulate y with this same
operator.

Sketch: y = k ⊛ x per channel (circular, same size), ŷ_f = K̂_f x̂_f with x̂ = fft2(x, "ortho") and
K̂ = fft2(kernel embedded centred at the origin). For a real kernel K̂_{−f} = conj(K̂_f), so a real
SVD follows from the real orthonormal DFT basis:
  self-conjugate f (f = −f):  one coordinate  Re x̂_f            (V);   sign(K̂_f) Re ŷ_f   (U)
  pairs {f, −f}:              two coordinates √2 Re x̂_f, √2 Im x̂_f;  same for ω̄_f ŷ_f     (U)
with the phase ω_f = K̂_f / |K̂_f|, so Uᵀ A x = |K̂| ⊙ Vᵀ x: singular values s = |K̂_f|, sorted
descending (the permutation is stored), channel fastest within each singular value.

Notation: code → paper
  kernel    k (sums to 1)          khat    K̂ (2-D DFT of the embedded kernel)
  omega     ω = K̂/|K̂| (phase)      freq    frequency of each sorted real coordinate
"""

from __future__ import annotations

import math
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


def gaussian_kernel(size: int = 61, sigma: float = 3.0, truncate: float = 4.0) -> Tensor:
    r"""size×size separable Gaussian g_i g_j, g_i ∝ exp(−i²/2σ²) for |i| ≤ ⌊truncate·σ + ½⌋ (0 beyond),
    i measured from the centre size//2; sums to 1. Defaults = the DPS kernel (61 taps, σ = 3 ⇒ 25×25
    support; the official DPS code, DPS2022/diffusion-posterior-sampling)."""
    if size < 1 or sigma <= 0:
        raise ValueError(f"sigma: expected size ≥ 1 and sigma > 0, got size={size}, sigma={sigma}")
    i = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-0.5 * (i / sigma) ** 2) * (i.abs() <= int(truncate * sigma + 0.5))
    g = g / g.sum()
    return torch.outer(g, g)


def motion_kernel(size: int = 61, intensity: float = 0.5, generator: torch.Generator | None = None,
                  steps: int = 256, length: float | None = None) -> Tensor:
    r"""A random camera-shake kernel (our own simple model, not the DPS ``motionblur`` package).

    A unit-speed path of ``steps`` points whose heading does a random walk (increments
    N(0, (intensity·π/8)²), initial heading U(0, 2π)) is scaled to a length U(0.3, 1)·size (or ``length``
    pixels when given: the same path shape, its length a continuous parameter that ``--fit`` can move),
    centred, shrunk to fit the size×size window if needed, splatted bilinearly and normalised to sum 1.
    All draws use ``generator`` (the same draws with or without ``length``).
    """
    if size < 2 or not 0.0 <= intensity <= 1.0:
        raise ValueError(f"intensity: expected size ≥ 2 and intensity in [0, 1], got {size}, {intensity}")
    if length is not None and not 0 < length < float("inf"):
        raise ValueError(f"length: expected a path length > 0 in pixels, got {length}")
    u = torch.rand(2, generator=generator, dtype=torch.float64)
    turns = torch.randn(steps, generator=generator, dtype=torch.float64) * (intensity * math.pi / 8)
    heading = 2 * math.pi * u[0] + torch.cumsum(turns, 0)
    path = torch.cumsum(torch.stack([torch.cos(heading), torch.sin(heading)], dim=1), 0)
    path = path * ((float(length) if length is not None else (0.3 + 0.7 * float(u[1])) * size) / steps)
    path = path - (path.max(0).values + path.min(0).values) / 2
    radius = (size - 1) / 2
    path = path * min(1.0, radius / max(float(path.abs().max()), 1e-12)) + radius
    base = path.floor().clamp(0, size - 2)
    frac = path - base
    kernel = torch.zeros(size, size, dtype=torch.float64)
    for dy in (0, 1):  # bilinear splatting: 4 corners
        for dx in (0, 1):
            wgt = (frac[:, 1] if dy else 1 - frac[:, 1]) * (frac[:, 0] if dx else 1 - frac[:, 0])
            kernel.index_put_((base[:, 1].long() + dy, base[:, 0].long() + dx), wgt, accumulate=True)
    return kernel / kernel.sum()


class CircularBlur(SVDOperator):
    r"""Circular convolution y_c = k ⊛ x_c (every channel, same kernel), SVD by the real DFT basis.

    Shapes: x (B, C, H, W) → y (B, C, H, W); kernel (kh, kw) with kh ≤ H, kw ≤ W, centre at
    (kh//2, kw//2) (a convolution: Conv2d correlates, i.e. uses the flipped kernel). Singular values
    |K̂_f| sorted descending; A⁺ zeroes those below the base cut-off rcond·max (a Gaussian σ = 3 at
    256² has |K̂| down to round-off, ~1e-16: A⁺ keeps 35 955 of the 65 536 frequencies).
    """

    name = "blur_kernel"

    def __init__(self, kernel: Tensor, shape: tuple[int, int, int]) -> None:
        c, h, w = _image_shape(shape)
        kernel = torch.as_tensor(kernel, dtype=torch.float64)
        if kernel.ndim != 2 or kernel.shape[0] > h or kernel.shape[1] > w:
            raise ValueError(f"kernel: expected a 2-D kernel no larger than the image {h}×{w}, "
                             f"got shape {tuple(kernel.shape)}")
        if not bool(torch.isfinite(kernel).all()) or float(kernel.sum()) <= 0:
            raise ValueError("kernel: entries must be finite with a positive sum")
        self.kernel = kernel / kernel.sum()
        self.in_shape = self.out_shape = (c, h, w)
        kh, kw = kernel.shape
        padded = torch.zeros(h, w, dtype=torch.float64)
        padded[:kh, :kw] = self.kernel
        khat = torch.fft.fft2(torch.roll(padded, (-(kh // 2), -(kw // 2)), dims=(0, 1))).reshape(-1)
        rows, cols = torch.div(torch.arange(h * w), w, rounding_mode="floor"), torch.arange(h * w) % w
        conj = ((-rows) % h) * w + (-cols) % w  # flat index of −f
        khat = (khat + khat[conj].conj()) / 2  # exact Hermitian symmetry
        selfc = conj == torch.arange(h * w)
        khat[selfc] = khat[selfc].real.to(khat.dtype)
        mag = khat.abs()
        self.omega = torch.where(mag > 0, khat / torch.where(mag > 0, mag, 1.0), torch.ones_like(khat))
        reps = torch.nonzero(torch.arange(h * w) < conj).reshape(-1)
        freq = torch.cat([torch.nonzero(selfc).reshape(-1), reps, reps])
        is_im = torch.cat([torch.zeros(h * w - reps.numel(), dtype=torch.bool),
                           torch.ones(reps.numel(), dtype=torch.bool)])
        order = torch.argsort(mag[freq], descending=True, stable=True)
        self.freq, self.cfreq, self.is_im = freq[order], conj[freq[order]], is_im[order]
        self.re_pos = torch.nonzero(~self.is_im).reshape(-1)  # positions of Re / Im coordinates
        self.im_pos = torch.nonzero(self.is_im).reshape(-1)
        self.scale = torch.where(selfc[self.freq], 1.0, math.sqrt(2.0)).to(torch.float64)
        self._s = mag[self.freq].repeat_interleave(c)

    @classmethod
    def example(cls, generator: torch.Generator) -> CircularBlur:
        """A random positive 3×4 kernel on 2×6×7 images (test battery)."""
        return cls(torch.rand(3, 4, generator=generator, dtype=torch.float64) + 0.1, (2, 6, 7))

    @classmethod
    def from_file(cls, path: str | Path, shape: tuple[int, int, int]) -> CircularBlur:
        """Kernel from a 2-D ``.npy`` array or a greyscale ``.png`` (normalised to sum 1)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".npy", ".png"):
            raise ValueError(f"kernel_file: expected a .npy or .png file, got {str(path)!r}")
        try:
            if suffix == ".npy":
                array = np.load(path, allow_pickle=False)
            else:
                from PIL import Image

                with Image.open(path) as img:
                    array = np.asarray(img.convert("L"), dtype=np.float64)
        except (OSError, ValueError) as err:
            raise ValueError(f"kernel_file: cannot read {str(path)!r} ({err})") from None
        if array.dtype.kind not in "fiub":
            raise ValueError(f"kernel_file: expected a numeric array, got dtype {array.dtype}")
        op = cls(torch.from_numpy(np.asarray(array, dtype=np.float64)), shape)
        op.source = str(path)
        return op

    def _to_real(self, spec: Tensor) -> Tensor:
        """Complex spectrum (B, C, H, W) → real sorted coordinates (B, C·H·W), channel fastest."""
        vals = spec.reshape(*spec.shape[:2], -1)[:, :, self.freq.to(spec.device)]
        real = torch.where(self.is_im.to(spec.device), vals.imag, vals.real) * self.scale.to(vals.real)
        return real.transpose(1, 2).reshape(spec.shape[0], -1)

    def _to_complex(self, z: Tensor) -> Tensor:
        """Inverse of :meth:`_to_real`: (B, C·H·W) → Hermitian spectrum (B, C, H, W)."""
        c, h, w = self.in_shape
        vals = z.reshape(z.shape[0], h * w, c).transpose(1, 2) / self.scale.to(z)
        re_pos, im_pos = self.re_pos.to(z.device), self.im_pos.to(z.device)
        freq, cfreq = self.freq.to(z.device), self.cfreq.to(z.device)
        real, imag = torch.zeros_like(vals), torch.zeros_like(vals)
        real[:, :, freq[re_pos]] = real[:, :, cfreq[re_pos]] = vals[:, :, re_pos]
        imag[:, :, freq[im_pos]] = vals[:, :, im_pos]
        imag[:, :, cfreq[im_pos]] = -vals[:, :, im_pos]
        return torch.complex(real, imag).reshape(z.shape[0], c, h, w)

    def _omega(self, like: Tensor) -> Tensor:
        return self.omega.to(device=like.device, dtype=like.dtype).reshape(self.in_shape[1:])

    def Vt(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return self._to_real(torch.fft.fft2(x, norm="ortho"))

    def V(self, z: Tensor) -> Tensor:
        return torch.fft.ifft2(self._to_complex(z), norm="ortho").real

    def Ut(self, y: Tensor) -> Tensor:
        self.check_output(y)
        spec = torch.fft.fft2(y, norm="ortho")
        return self._to_real(spec * self._omega(spec).conj())

    def U(self, z: Tensor) -> Tensor:
        spec = self._to_complex(z)
        return torch.fft.ifft2(spec * self._omega(spec), norm="ortho").real

    def describe(self) -> dict:
        info = {"name": self.name, "shape": list(self.in_shape), "kernel_shape": list(self.kernel.shape),
                "boundary": "circular"}
        if getattr(self, "source", None):
            info["kernel_file"] = self.source
        return info


class GaussianBlur(CircularBlur):
    r"""Circular Gaussian blur, kernel :func:`gaussian_kernel` (default 61×61, σ = 3: the DPS task).

    Shapes: x (B, C, H, W) → y (B, C, H, W); needs size ≤ H, W.
    """

    name = "blur_gauss"
    fittable = {"sigma": (0.2, 8.0)}  # the kernel width in pixels (``--fit operator.sigma``)

    def __init__(self, shape: tuple[int, int, int], size: int = 61, sigma: float = 3.0) -> None:
        self.size, self.sigma = int(size), float(sigma)
        super().__init__(gaussian_kernel(self.size, self.sigma), shape)

    @classmethod
    def example(cls, generator: torch.Generator) -> GaussianBlur:
        """5×5, σ = 1 on 2×8×9 images (test battery)."""
        return cls((2, 8, 9), size=5, sigma=1.0)

    def describe(self) -> dict:
        return {**super().describe(), "size": self.size, "sigma": self.sigma}


class UniformBlur(CircularBlur):
    r"""Circular box blur: kernel 1/size² on size×size (default 9, DDRM ``deblur_uni`` without its tap bug).

    Shapes: x (B, C, H, W) → y (B, C, H, W). Note |K̂| can vanish (e.g. size 9 at H = 9·j).
    """

    name = "blur_uniform"

    def __init__(self, shape: tuple[int, int, int], size: int = 9) -> None:
        self.size = int(size)
        super().__init__(torch.ones(self.size, self.size, dtype=torch.float64), shape)

    @classmethod
    def example(cls, generator: torch.Generator) -> UniformBlur:
        """3×3 box on 1×8×8 images (test battery)."""
        return cls((1, 8, 8), size=3)

    def describe(self) -> dict:
        return {**super().describe(), "size": self.size}


class MotionBlur(CircularBlur):
    r"""Circular motion blur with a seeded random kernel :func:`motion_kernel` (default 61×61, intensity 0.5).

    Shapes: x (B, C, H, W) → y (B, C, H, W). Store ``kernel`` with the results: it depends on the
    generator state.
    """

    name = "blur_motion"
    fittable = {"length": (1.0, 61.0)}  # the path length in pixels (``--fit operator.length=START``)

    def __init__(self, shape: tuple[int, int, int], size: int = 61, intensity: float = 0.5,
                 generator: torch.Generator | None = None, length: float | None = None) -> None:
        self.size, self.intensity = int(size), float(intensity)
        self.length = None if length is None else float(length)
        super().__init__(motion_kernel(self.size, self.intensity, generator, length=self.length), shape)

    @classmethod
    def example(cls, generator: torch.Generator) -> MotionBlur:
        """A 5×5 motion kernel on 2×8×8 images (test battery)."""
        return cls((2, 8, 8), size=5, generator=generator)

    def describe(self) -> dict:
        return {**super().describe(), "size": self.size, "intensity": self.intensity, "length": self.length}
