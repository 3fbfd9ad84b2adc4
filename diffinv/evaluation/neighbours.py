r"""Nearest-neighbour distances to the training set (memorisation check).

For each query image q (samples, or held-out test images as the reference) the RMS pixel distance
min_i ‖q − x_i‖ / √d to the N training images, by chunked ``torch.cdist``. Samples much closer to
the training set than held-out images are (or at ~0 distance) would be copies.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffinv.data.base import center_to_network


@torch.no_grad()
def nearest_neighbour_rms(queries: Tensor, train_uint8: Tensor, image_size: int,
                          chunk: int = 5000) -> Tensor:
    """(n,) RMS distance of each query (n, C, S, S) in [−1, 1] to its nearest training image."""
    q = queries.reshape(queries.shape[0], -1).float()
    best = torch.full((q.shape[0],), float("inf"))
    for start in range(0, train_uint8.shape[0], chunk):  # chunks of the training set, not of samples
        part = train_uint8[start:start + chunk]
        x = center_to_network(part, image_size).reshape(part.shape[0], -1)
        best = torch.minimum(best, torch.cdist(q, x).min(1).values)
    return best / q.shape[1] ** 0.5
