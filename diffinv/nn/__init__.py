"""Neural networks for embedded diffusion priors."""

from diffinv.nn.unet import UNet, UNetConfig

__all__ = ["UNet", "UNetConfig"]
