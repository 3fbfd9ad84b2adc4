r"""Reading observations / ground truths and writing PNG panels.

Images are (C, H, W) float64 on the [0, 1] pixel scale (u/255 for 8-bit PNGs, u/65535 for 16-bit
greyscale). Grayscale PNGs give C = 1, RGB (and palette) PNGs C = 3; an alpha channel is refused
(not silently dropped). ``.npy`` files hold a float array (C, H, W) or (H, W) already on [0, 1]
(an exact observation, e.g. the ``observation.npy`` a previous run wrote).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.nn import functional as F

from diffinv.data.base import to_uint8 as network_to_uint8


def load_image(path: str | Path, name: str = "image") -> Tensor:
    """(C, H, W) float64 on [0, 1] from a PNG/JPEG/... or a .npy file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{name}: file {str(path)!r} not found")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ValueError(f"{name}: cannot read {str(path)!r} as .npy ({err})") from None
        if array.dtype.kind not in "fiu" or array.ndim not in (2, 3):
            raise ValueError(f"{name}: expected a numeric (C, H, W) or (H, W) array, got dtype {array.dtype} "
                             f"and shape {array.shape}")
        x = torch.from_numpy(np.asarray(array, dtype=np.float64))
        x = x[None] if x.ndim == 2 else x
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name}: {str(path)!r} contains NaN or infinite values")
        return x
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                raise ValueError(f"{name}: {str(path)!r} has an alpha channel ({mode}); "
                                 "expected grayscale or RGB")
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(img, dtype=np.float64) / 65535.0
            elif mode in ("L", "1"):
                array = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
            else:
                array = np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
    except (OSError, Image.DecompressionBombError) as err:
        raise ValueError(f"{name}: cannot read {str(path)!r} as an image ({err})") from None
    x = torch.from_numpy(array)
    return x[None] if x.ndim == 2 else x.permute(2, 0, 1).contiguous()


def resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bicubic (antialiased) resize of (C, H, W) to (C, *size), clamped to [0, 1] (only on --resize)."""
    return F.interpolate(x[None].float(), size=size, mode="bicubic", antialias=True,
                         align_corners=False)[0].clamp(0, 1).to(x.dtype)


def to_uint8(x: Tensor) -> np.ndarray:
    """(C, H, W) on [0, 1] → (H, W) or (H, W, 3) uint8 (clamped for display only)."""
    u = network_to_uint8(2 * torch.as_tensor(x) - 1)
    return u[0].numpy() if u.shape[0] == 1 else u.permute(1, 2, 0).numpy()


def save_png(x: Tensor, path: str | Path) -> Path:
    """Write (C, H, W) on [0, 1] as an 8-bit PNG."""
    Image.fromarray(to_uint8(x)).save(path)
    return Path(path)


def as_panel(x: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """Fit (C', H', W') into a (C, H, W) panel for a grid: nearest-neighbour upscaling, channel repeat."""
    c, h, w = shape
    x = torch.as_tensor(x, dtype=torch.float64)
    if tuple(x.shape[1:]) != (h, w):
        x = F.interpolate(x[None], size=(h, w), mode="nearest")[0]
    if x.shape[0] != c:
        x = x.mean(0, keepdim=True).expand(c, h, w)
    return x


def save_row(panels: list[Tensor], path: str | Path, scale: int = 4, padding: int = 2) -> Path:
    """Panels (C, H, W) on [0, 1] of one shape side by side on white, pixels enlarged ``scale``×."""
    c, h, w = panels[0].shape
    canvas = np.full((h + 2 * padding, len(panels) * (w + padding) + padding, 3), 255, np.uint8)
    for i, p in enumerate(panels):
        u = to_uint8(p)
        u = np.repeat(u[..., None], 3, -1) if u.ndim == 2 else u
        left = padding + i * (w + padding)
        canvas[padding:padding + h, left:left + w] = u
    img = Image.fromarray(canvas)
    img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    img.save(path)
    return Path(path)
