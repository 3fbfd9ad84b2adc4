"""diffinv: posterior sampling for inverse problems with denoising-diffusion priors."""

__version__ = "0.1.0"
