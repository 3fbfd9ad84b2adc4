r"""Image data sets as uint8 tensors, and the map to the network's value range.

Every source gives an :class:`ImageData` with ``train`` and ``test`` uint8 tensors of shape
(N, C, H, W) with H = W ≥ S (the image size). A batch is drawn by index, randomly cropped to S×S
when H > S (per-item offsets, one vectorised gather), and mapped to the network range

    x = 2 · u / 255 − 1 ∈ [−1, 1]      (u the uint8 pixel; ``value_range`` of the prior).

Sources: ``fashion-mnist`` (Debian package dataset-fashion-mnist), ``emoji`` (fonts-noto-color-emoji),
or the path of a folder of images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

BUILTIN = ("fashion-mnist", "emoji")


@dataclass
class ImageData:
    """uint8 images (N, C, H, W) for training and held-out evaluation, optional int64 labels (N,)."""

    name: str
    train: Tensor
    test: Tensor
    train_labels: Tensor | None = None
    test_labels: Tensor | None = None
    split: str = ""
    info: dict = field(default_factory=dict)

    def describe(self) -> dict:
        """JSON-able description for the model card."""
        return {"source": self.name, "split": self.split, "num_train": int(self.train.shape[0]),
                "num_test": int(self.test.shape[0]), **self.info}


def match_channels(images: Tensor, channels: int) -> Tensor:
    """(N, c, H, W) uint8 → (N, channels, H, W): gray ↔ RGB (ITU-R 601 luma for RGB → gray)."""
    if channels not in (1, 3):
        raise ValueError(f"channels: expected 1 or 3, got {channels}")
    c = images.shape[1]
    if c == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    w = torch.tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)
    return (images.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)


def load_dataset(source: str, image_size: int, channels: int) -> ImageData:
    """A built-in data set by name, or a folder of images (resized so the shorter side is S)."""
    if image_size < 8 or image_size % 4:
        raise ValueError(f"image_size: expected a multiple of 4 ≥ 8, got {image_size}")
    if source == "fashion-mnist":
        from diffinv.data.fashion_mnist import load_fashion_mnist
        data = load_fashion_mnist(image_size)
    elif source == "emoji":
        from diffinv.data.emoji import load_emoji
        data = load_emoji(image_size)
    elif Path(source).is_dir():
        from diffinv.data.folder import load_folder
        data = load_folder(Path(source), image_size)
    else:
        raise ValueError(f"data: expected {' or '.join(BUILTIN)} or an existing folder, got {source!r}")
    data.train = match_channels(data.train, channels)
    data.test = match_channels(data.test, channels)
    return data


def batch_to_network(images: Tensor, index: Tensor, image_size: int,
                     generator: torch.Generator | None, flip: bool = False) -> Tensor:
    """images[index] randomly cropped to S×S (and flipped left-right with prob. ½ if ``flip``),
    as float32 in [−1, 1]; (B,) index → (B, C, S, S). Random draws come from ``generator``."""
    x = images[index]
    b, _, h, w = x.shape
    if h > image_size or w > image_size:
        oy = torch.randint(0, h - image_size + 1, (b,), generator=generator)
        ox = torch.randint(0, w - image_size + 1, (b,), generator=generator)
        ar = torch.arange(image_size)
        rows = (oy[:, None] + ar)[:, None, :, None]  # (B, 1, S, 1)
        cols = (ox[:, None] + ar)[:, None, None, :]  # (B, 1, 1, S)
        x = x[torch.arange(b)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None], rows, cols]
    if flip:
        mirror = torch.rand(b, generator=generator) < 0.5
        x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
    return x.float() * (2.0 / 255.0) - 1.0


def center_to_network(images: Tensor, image_size: int) -> Tensor:
    """uint8 (N, C, H, W) → centre S×S crop as float32 in [−1, 1] (deterministic; for evaluation)."""
    top, left = (images.shape[2] - image_size) // 2, (images.shape[3] - image_size) // 2
    crop = images[:, :, top:top + image_size, left:left + image_size]
    return crop.float() * (2.0 / 255.0) - 1.0


def to_uint8(x: Tensor) -> Tensor:
    """Network range [−1, 1] → uint8 [0, 255] (clamped, rounded)."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
