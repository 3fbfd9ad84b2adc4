r"""Model-card figures of an exported prior (written into ``card.json["figures"]``).

1. ``denoising_mse``: held-out MSE(t) per pixel of the network's x̂0 and of the Gaussian prior
   N(m, Σ) fitted to the same training images (best linear denoiser), at t ∈ {50, 200, 500, 800}
   (paired noise); ``ratio`` = network / Gaussian (< 1: better; a working network is far below 1).
2. ``frechet``: Fréchet distance in the features of a small classifier trained on the training
   labels (4×4 average-pooled pixels without labels), for n samples vs the test set and, as the
   floor at that n, for n training images vs the test set (see :mod:`diffinv.evaluation.features`).
3. ``nearest_neighbour``: RMS pixel distance of each sample to its nearest training image, against
   the same for n held-out test images (copies would sit far below the test images' distances).
Samples: DDPM (DDIM η = 1; deterministic η = 0 leaves many of these small CPU-trained models' samples as
salt-and-pepper noise) with ``sample_steps`` steps from a fixed seed; the grid is saved as
``samples/eval.png``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from diffinv.checkpoints import load_card, load_prior, resolve_checkpoint, write_card
from diffinv.data import ImageData, load_dataset
from diffinv.data.base import center_to_network
from diffinv.evaluation.denoising import denoising_mse, fit_gaussian
from diffinv.evaluation.features import (
    POOLED_SIDE,
    accuracy,
    embed,
    frechet_distance,
    pooled_pixels,
    train_classifier,
)
from diffinv.evaluation.grid import save_grid
from diffinv.evaluation.neighbours import nearest_neighbour_rms
from diffinv.rng import make_generator
from diffinv.sampling import sample_prior

TIMESTEPS = (50, 200, 500, 800)


def fd(f: torch.Tensor, g: torch.Tensor) -> float | None:
    """Rounded Fréchet distance, or None when either set has fewer than 2 items."""
    return round(frechet_distance(f, g), 4) if min(f.shape[0], g.shape[0]) >= 2 else None


def subset(images: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    return images[torch.randperm(images.shape[0], generator=generator)[:n]]


def evaluate_checkpoint(name: str | Path, num_samples: int = 1000, device: str | torch.device = "cpu",
                        data: ImageData | None = None, sample_steps: int = 100, heldout: int = 500,
                        classifier_steps: int = 600, seed: int = 0, eta: float = 1.0) -> dict:
    """Compute the figures of checkpoint ``name``, store them in its card, and return them."""
    started = time.perf_counter()
    folder = resolve_checkpoint(name)
    card = load_card(folder)
    prior = load_prior(folder, device=device)
    size, channels = int(card["image_size"]), int(card["channels"])
    if data is None:
        data = load_dataset(card["data"]["source"], size, channels)
    gen = make_generator(seed)
    test = center_to_network(subset(data.test, heldout, gen), size)
    train = center_to_network(data.train, size)
    gaussian = fit_gaussian(train, prior.schedule, prior.shape)
    net_mse = denoising_mse(prior, test.to(device), list(TIMESTEPS), make_generator(seed + 1))
    gauss_mse = denoising_mse(gaussian, test.double(), list(TIMESTEPS), make_generator(seed + 1))
    samples = sample_prior(prior, num_samples, num_steps=sample_steps, eta=eta,
                           generator=make_generator(seed + 2, device), device=device, batch_size=250).cpu()
    save_grid(samples[:64], folder / "samples" / "eval.png", scale=2)
    labelled = data.train_labels is not None
    if labelled:
        classifier = train_classifier(data.train, data.train_labels, size, gen, steps=classifier_steps)

    def features(x: torch.Tensor) -> torch.Tensor:
        return embed(classifier, x) if labelled else pooled_pixels(x)

    n = min(num_samples, data.test.shape[0], data.train.shape[0])
    test_all = center_to_network(data.test, size)
    f_test = features(test_all)
    f_samples = features(samples.clamp(-1, 1)[:n])
    f_train = features(subset(train, n, gen))
    nn_samples = nearest_neighbour_rms(samples.clamp(-1, 1)[:n], data.train, size)
    nn_test = nearest_neighbour_rms(subset(test_all, n, gen), data.train, size)
    figures = {
        "denoising_mse": {"timesteps": list(TIMESTEPS), "heldout_images": int(test.shape[0]),
                          "network": [round(net_mse[t], 6) for t in TIMESTEPS],
                          "gaussian": [round(gauss_mse[t], 6) for t in TIMESTEPS],
                          "ratio": [round(net_mse[t] / gauss_mse[t], 4) for t in TIMESTEPS]},
        "frechet": {"features": "classifier" if labelled else f"pixels-{POOLED_SIDE}x{POOLED_SIDE}",
                    "n": n, "samples_vs_test": fd(f_samples, f_test), "train_vs_test": fd(f_train, f_test),
                    "classifier_test_accuracy": round(accuracy(classifier, test_all, data.test_labels), 4)
                    if labelled and data.test_labels is not None else None},
        "nearest_neighbour": {"metric": "RMS pixel distance in [-1, 1] to the nearest training image",
                              "samples_median": round(float(nn_samples.median()), 4),
                              "samples_min": round(float(nn_samples.min()), 4),
                              "test_median": round(float(nn_test.median()), 4),
                              "test_min": round(float(nn_test.min()), 4)},
        "sampler": {"kind": f"DDIM eta={eta:g} (1 = DDPM)", "steps": sample_steps, "num_samples": num_samples,
                    "seed": seed},
        "seconds": round(time.perf_counter() - started, 1),
    }
    card["figures"] = figures
    write_card(folder, card)
    return figures
