"""``diffinv sample``: unconditional samples of a saved prior as a PNG grid (and optionally .npy)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffinv.checkpoints import load_prior
from diffinv.evaluation.grid import save_grid
from diffinv.outputs import check_output_file
from diffinv.rng import make_generator
from diffinv.sampling import sample_prior


@dataclass(frozen=True)
class SampleConfig:
    """checkpoint: NAME or path; num_samples; out: PNG path; steps, eta: DDIM(η) on a uniform grid
    (η = 1 is DDPM, η = 0 DDIM); seed; device; batch_size (memory only); scale: pixel zoom of the PNG;
    npy: optional path for the raw samples (n, C, S, S) float32 in [−1, 1]."""

    checkpoint: str
    num_samples: int = 64
    out: str = "grid.png"
    steps: int = 100
    eta: float = 1.0
    seed: int = 0
    device: str = "cpu"
    batch_size: int = 256
    scale: int = 2
    npy: str | None = None

    def validate(self) -> SampleConfig:
        if self.num_samples < 1 or self.batch_size < 1 or self.scale < 1:
            raise ValueError("n, batch-size, scale: expected positive integers")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta: expected a value in [0, 1], got {self.eta}")
        if self.steps < 1:
            raise ValueError(f"steps: expected a positive integer, got {self.steps}")
        check_output_file(self.out, "out", (".png",))
        check_output_file(self.npy, "npy", (".npy",))
        return self


def sample_checkpoint(config: SampleConfig) -> Path:
    """Draw the samples, write the grid (and .npy); returns the PNG path."""
    config.validate()
    device = "cuda" if config.device == "auto" and torch.cuda.is_available() else config.device
    device = "cpu" if device == "auto" else device
    prior = load_prior(config.checkpoint, device=device)
    x = sample_prior(prior, config.num_samples, num_steps=config.steps, eta=config.eta,
                     generator=make_generator(config.seed, device), device=device,
                     batch_size=config.batch_size)
    if config.npy:
        Path(config.npy).parent.mkdir(parents=True, exist_ok=True)
        np.save(config.npy, x.float().cpu().numpy())
    return save_grid(x, config.out, scale=config.scale)
