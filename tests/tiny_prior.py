"""A tiny random-weight UNet prior saved as a checkpoint (for end-to-end tests of images)."""

from __future__ import annotations

from pathlib import Path

import torch

from diffinv.checkpoints import save_prior
from diffinv.nn.unet import UNet, UNetConfig, init_weights
from diffinv.rng import make_generator


def save_tiny_prior(folder: Path, channels: int = 1, size: int = 16, seed: int = 3) -> Path:
    """Save a random UNet (widths 8/16, no attention) for (channels, size, size) images into ``folder``."""
    config = UNetConfig(in_channels=channels, base_channels=8, channel_mults=(1, 2), attention=False)
    gen = make_generator(seed)
    net = init_weights(UNet(config), gen)
    with torch.no_grad():
        net.conv_out.weight.normal_(0, 0.1, generator=gen)
    card = {"name": Path(folder).name, "architecture": {"name": "UNet", "config": config.to_dict()},
            "schedule": {"kind": "linear", "num_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02},
            "parametrisation": "eps", "image_size": size, "channels": channels, "value_range": [-1.0, 1.0]}
    return save_prior(folder, net.state_dict(), card)
