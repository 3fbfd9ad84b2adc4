r"""Reading observations / ground truths and writing PNG panels.

Images are (C, H, W) float64 on the [0, 1] pixel scale: u/255 for 8-bit files, u/65535 for 16-bit PNGs
(grey or RGB, read at full precision through pypng: Pillow would cut 16-bit RGB to 8 bits). Grayscale
PNGs give C = 1, RGB C = 3; a palette PNG is read by its colour content: a palette of greys gives
C = 1, any other C = 3. An alpha channel is refused (not silently dropped). ``.npy`` files hold a float
array (C, H, W) or (H, W) on [0, 1] (an exact observation, e.g. the ``observation.npy`` a previous run
wrote); another scale is opted into with ``value_range=(lo, hi)`` (u = (v − lo)/(hi − lo)).
:func:`read_image` also says how the file was read (``info``: format, mode, bit depth, the
interpretation), which ``solve`` records in ``metrics.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.nn import functional as F

from diffinv.data.base import to_uint8 as network_to_uint8

NPY_RANGE = (0.0, 1.0)


def _read_png16(path: Path, name: str) -> tuple[np.ndarray, dict[str, Any]]:
    """(H, W) or (H, W, 3) float64 on [0, 1] of a 16-bit PNG, at full precision."""
    import png

    try:
        width, height, rows, meta = png.Reader(filename=str(path)).asDirect()
        array = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).astype(np.float64)
    except (png.Error, OSError, ValueError) as err:
        raise ValueError(f"{name}: cannot read {str(path)!r} as a 16-bit PNG ({err})") from None
    if meta.get("alpha"):
        raise ValueError(f"{name}: {str(path)!r} has an alpha channel; expected grayscale or RGB")
    planes = int(meta["planes"])
    array = array.reshape(height, width, planes) if planes > 1 else array.reshape(height, width)
    scale = float(2 ** int(meta["bitdepth"]) - 1)
    return array / scale, {"bit_depth": int(meta["bitdepth"]),
                           "interpretation": f"{int(meta['bitdepth'])}-bit {'RGB' if planes > 1 else 'grey'}"}


def _png_bit_depth(path: Path) -> int | None:
    """The bit depth from a PNG's IHDR (None if the file is not a PNG)."""
    with open(path, "rb") as f:
        head = f.read(26)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or len(head) < 26:
        return None
    return head[24]


def _read_pillow(path: Path, name: str) -> tuple[np.ndarray, dict[str, Any]]:
    try:
        with Image.open(path) as img:
            img.load()
            mode, fmt = img.mode, img.format
            if mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                raise ValueError(f"{name}: {str(path)!r} has an alpha channel ({mode}); "
                                 "expected grayscale or RGB")
            info: dict[str, Any] = {"format": (fmt or "").lower(), "mode": mode, "bit_depth": 8}
            if mode in ("I;16", "I;16B", "I;16L"):
                array = np.asarray(img, np.float64) / 65535.0
                info.update(bit_depth=16, interpretation="16-bit grey")
            elif mode in ("I", "F"):
                raise ValueError(f"{name}: {str(path)!r} is a {mode}-mode (32-bit) image; save it as a "
                                 "16-bit PNG or a .npy on [0, 1]")
            elif mode in ("L", "1"):
                array, info["interpretation"] = np.asarray(img.convert("L"), np.float64) / 255.0, "grey"
            elif mode == "P":
                rgb = np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
                grey = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
                array = rgb[..., 0] if grey else rgb
                info["interpretation"] = "palette of greys -> 1 channel" if grey else "colour palette -> RGB"
            else:
                array = np.asarray(img.convert("RGB"), np.float64) / 255.0
                info["interpretation"] = f"{mode} -> RGB"
    except (OSError, Image.DecompressionBombError) as err:
        raise ValueError(f"{name}: cannot read {str(path)!r} as an image ({err})") from None
    return array, info


def _read_npy(path: Path, name: str, value_range: tuple[float, float] | None) -> tuple[Tensor, dict]:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{name}: cannot read {str(path)!r} as .npy ({str(err).splitlines()[0]})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu" or array.ndim not in (2, 3):
        raise ValueError(f"{name}: expected a numeric (C, H, W) or (H, W) array in {str(path)!r}, got dtype "
                         f"{getattr(array, 'dtype', '?')} and shape {getattr(array, 'shape', '?')}")
    x = torch.from_numpy(np.asarray(array, dtype=np.float64))
    x = x[None] if x.ndim == 2 else x
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: {str(path)!r} contains NaN or infinite values")
    lo, hi = value_range or NPY_RANGE
    if value_range is not None:
        x = (x - lo) / (hi - lo)
    return x, {"format": "npy", "value_range": [lo, hi], "interpretation": f"array on [{lo:g}, {hi:g}]"}


def read_image(path: str | Path, name: str = "image",
               value_range: tuple[float, float] | None = None) -> tuple[Tensor, dict[str, Any]]:
    """(C, H, W) float64 on [0, 1] from a PNG / JPEG / ... or a .npy file, and how it was read."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{name}: {str(path)!r} is a folder; expected an image file (PNG, JPEG) or .npy")
    if not path.is_file():
        raise FileNotFoundError(f"{name}: file {str(path)!r} not found")
    if value_range is not None:
        lo, hi = value_range
        if not hi > lo:
            raise ValueError(f"value-range: expected LO,HI with HI > LO, got {lo:g},{hi:g}")
        if path.suffix.lower() != ".npy":
            raise ValueError(f"value-range: applies to .npy inputs only; {str(path)!r} has its scale in its "
                             "bit depth")
    if path.suffix.lower() == ".npy":
        return _read_npy(path, name, value_range)
    if _png_bit_depth(path) == 16:
        array, info = _read_png16(path, name)
        info = {"format": "png", **info}
    else:
        array, info = _read_pillow(path, name)
    x = torch.from_numpy(np.ascontiguousarray(array))
    return (x[None] if x.ndim == 2 else x.permute(2, 0, 1).contiguous()), info


def load_image(path: str | Path, name: str = "image",
               value_range: tuple[float, float] | None = None) -> Tensor:
    """(C, H, W) float64 on [0, 1] (see :func:`read_image`)."""
    return read_image(path, name, value_range)[0]


def check_range(x: Tensor, name: str, path: str | Path, margin: float = 0.0) -> None:
    """Refuse an image with values outside [−margin, 1 + margin] (a file on another scale)."""
    lo, hi = float(x.min()), float(x.max())
    if lo < -margin - 1e-9 or hi > 1 + margin + 1e-9:
        allowed = "[0, 1]" if margin == 0 else f"[0, 1] (± {margin:.3g} for noise)"
        raise ValueError(f"{name}: {str(path)!r} has values in [{lo:.4g}, {hi:.4g}], outside {allowed}; "
                         "pass --value-range LO,HI (e.g. 0,255) for a .npy on another scale")


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
