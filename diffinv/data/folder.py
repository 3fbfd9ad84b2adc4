"""A folder of images (any size, any Pillow format) as a data set.

Each image is converted to RGB, resized so its shorter side is S + S/8 (bicubic, antialiased) and
centre-cropped to a square, so batches can be randomly cropped to S×S. Held-out split (fixed):
files sorted by relative path, every 10th (indices 9, 19, …) goes to the test set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffinv.data.base import ImageData

MIN_FILES = 10  # the smallest folder with one held-out image
EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def load_image(path: Path, side: int) -> np.ndarray:
    """(side, side, 3) uint8: shorter side resized to ``side``, centre crop."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        scale = side / min(w, h)
        nw, nh = max(side, round(w * scale)), max(side, round(h * scale))
        im = im.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - side) // 2, (nh - side) // 2
        return np.asarray(im.crop((left, top, left + side, top + side)), dtype=np.uint8)


def load_folder(root: Path, image_size: int) -> ImageData:
    """All images under ``root`` (recursive), as (N, 3, S + S/8, S + S/8) uint8."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
    if len(files) < MIN_FILES:
        raise ValueError(f"data: a folder needs at least {MIN_FILES} images (every 10th is held out for the "
                         f"model card's figures); {root} has {len(files)}")
    side = image_size + image_size // 8
    images = torch.from_numpy(np.stack([load_image(p, side) for p in files])).permute(0, 3, 1, 2)
    test = torch.zeros(len(files), dtype=torch.bool)
    test[9::10] = True
    return ImageData(name=str(root), train=images[~test].contiguous(), test=images[test].contiguous(),
                     split="sorted file list, every 10th image held out",
                     info={"num_files": len(files), "stored_size": side})
