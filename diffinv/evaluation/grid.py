"""Sample grids as PNG files (Pillow): a batch in [−1, 1] tiled row by row."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from diffinv.data.base import to_uint8


def save_grid(images: Tensor, path: str | Path, columns: int | None = None, padding: int = 2,
              scale: int = 1) -> Path:
    """Tile (B, C, H, W) images in [−1, 1] (C = 1 or 3) into one PNG; ``scale`` enlarges pixels."""
    x = to_uint8(images).numpy()
    b, c, h, w = x.shape
    cols = columns or math.ceil(math.sqrt(b))
    rows = math.ceil(b / cols)
    canvas = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, c), 255, np.uint8)
    for i in range(b):  # tiling only (I/O), not numerical work
        r, q = divmod(i, cols)
        top, left = padding + r * (h + padding), padding + q * (w + padding)
        canvas[top:top + h, left:left + w] = x[i].transpose(1, 2, 0)
    image = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    tmp.replace(path)  # whole or not at all
    return path
