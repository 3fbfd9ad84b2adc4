r"""Image-quality metrics on the [0, 1] pixel scale (as in the official DCPS code, YazidJanati/dcps).

* PSNR = 10 log10(1 / MSE) with peak 1, per image; x, ref (C, H, W) or (B, C, H, W).
* SSIM (Wang et al. 2004): Gaussian window 11×11, σ = 1.5, C1 = (0.01)², C2 = (0.03)², data range 1,
  computed per channel on the valid region (no padding) and averaged over channels and positions —
  the DCPS/MGPS convention. Images smaller than the window use a window of their own size.
LPIPS is not computed: its network weights would need a download, which diffinv never does.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F


def _batch(x: Tensor) -> Tensor:
    x = torch.as_tensor(x, dtype=torch.float64)
    return x[None] if x.ndim == 3 else x


def psnr(x: Tensor, ref: Tensor) -> Tensor | float:
    """PSNR in dB of x against ref, peak 1; a float for one image, (B,) for a batch."""
    single = torch.as_tensor(x).ndim == 3
    xb, rb = _batch(x), _batch(ref)
    if xb.shape != rb.shape:
        raise ValueError(f"psnr: shapes differ, {tuple(xb.shape)} vs {tuple(rb.shape)}")
    mse = ((xb - rb) ** 2).flatten(1).mean(1)
    out = 10 * torch.log10(1.0 / mse.clamp_min(1e-20))
    return float(out[0]) if single else out


def gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    """Normalised 2-D Gaussian window (size, size), float64."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(x: Tensor, ref: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor | float:
    """Mean SSIM of x against ref on [0, 1]; a float for one image, (B,) for a batch."""
    single = torch.as_tensor(x).ndim == 3
    xb, rb = _batch(x), _batch(ref)
    if xb.shape != rb.shape:
        raise ValueError(f"ssim: shapes differ, {tuple(xb.shape)} vs {tuple(rb.shape)}")
    b, c, h, w = xb.shape
    size = min(window, h, w)
    k = gaussian_window(size, sigma * size / window)[None, None].expand(c, 1, size, size)
    c1, c2 = 0.01**2, 0.03**2

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(z, k, groups=c)

    mx, my = blur(xb), blur(rb)
    vx, vy, cxy = blur(xb * xb) - mx**2, blur(rb * rb) - my**2, blur(xb * rb) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    out = s.flatten(1).mean(1)
    return float(out[0]) if single else out


def residual_ratio(y: Tensor, ay: Tensor, sigma_y: float) -> float:
    """Data-consistency residual ‖y − A x‖ / (σ_y √m) (≈ 1 for a posterior sample at the right noise)."""
    r = (torch.as_tensor(y, dtype=torch.float64) - torch.as_tensor(ay, dtype=torch.float64)).flatten()
    return float(r.norm() / (sigma_y * math.sqrt(r.numel())))


def coverage(samples: Tensor, truth: Tensor, level: float = 0.9) -> float | None:
    """Share of truth pixels inside the per-pixel central ``level`` interval of the samples.

    samples (k, C, H, W), truth (C, H, W). The interval is [q_{(1−level)/2}, q_{(1+level)/2}] of the k
    values of each pixel (linear interpolation between order statistics); an honest posterior covers
    about ``level`` of the pixels. With k < 2 there is no interval (None); with few samples the
    empirical interval is narrower than the true one (k = 4 covers at most 3/5 of a pixel's law in
    expectation), so compare samplers at equal k (≥ 16 for a usable 90 % interval).
    """
    s = torch.as_tensor(samples, dtype=torch.float64)
    if s.shape[0] < 2:
        return None
    lo, hi = torch.quantile(s.flatten(1), torch.tensor([(1 - level) / 2, (1 + level) / 2],
                                                       dtype=torch.float64), dim=0)
    t = torch.as_tensor(truth, dtype=torch.float64).flatten()
    return float(((t >= lo) & (t <= hi)).double().mean())
