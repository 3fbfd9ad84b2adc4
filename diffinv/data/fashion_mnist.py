"""Fashion-MNIST (Xiao et al. 2017) from the idx files of the Debian package dataset-fashion-mnist.

60 000 training and 10 000 test images, 28×28 grayscale, padded with 2 background pixels to 32×32
(then resized to S if S ≠ 32); labels 0–9 are kept for the evaluation classifier.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from diffinv.data.base import ImageData

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {"train_images": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
         "test_images": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz"}
LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
          "Ankle boot")


def read_idx(path: Path) -> np.ndarray:
    """An idx file (gzip or plain): magic 0x0000_08_nd (uint8 data), nd big-endian int32 dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an idx file of uint8 data")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}i", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: truncated idx file ({data.size} of {int(np.prod(dims))} values)")
    return data.reshape(dims)


def load_fashion_mnist(image_size: int = 32, root: Path | None = None) -> ImageData:
    """Train/test split as shipped (60 000 / 10 000); images (N, 1, S, S) uint8."""
    root = Path(root) if root is not None else FASHION_MNIST_DIR
    paths = {k: root / v for k, v in FILES.items()}
    if not all(p.is_file() for p in paths.values()):
        raise FileNotFoundError(f"fashion-mnist: data files not found in {root}; install them with "
                                "`apt-get install dataset-fashion-mnist`")
    arrays = {k: torch.from_numpy(read_idx(p).copy()) for k, p in paths.items()}

    def prepare(images: torch.Tensor) -> torch.Tensor:
        x = F.pad(images[:, None], (2, 2, 2, 2))  # 28 → 32, background 0
        if image_size != 32:
            x = F.interpolate(x.float(), size=(image_size, image_size), mode="bilinear", antialias=True,
                              align_corners=False).round().clamp(0, 255).to(torch.uint8)
        return x.contiguous()

    return ImageData(name="fashion-mnist", train=prepare(arrays["train_images"]),
                     test=prepare(arrays["test_images"]), train_labels=arrays["train_labels"].long(),
                     test_labels=arrays["test_labels"].long(), split="official train (60000) / test (10000)",
                     info={"files": str(root), "padding": "28x28 padded by 2 to 32x32"})
