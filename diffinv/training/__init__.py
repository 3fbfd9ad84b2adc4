"""Training embedded diffusion priors: config, EMA, resumable state and the training loop."""

from diffinv.training.config import TrainConfig
from diffinv.training.loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
