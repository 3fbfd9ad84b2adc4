"""Model-card figures: Fréchet distance, classifier features, Gaussian denoising baseline, neighbours."""

from __future__ import annotations

import torch

from diffinv.evaluation.denoising import denoising_mse, fit_gaussian
from diffinv.evaluation.features import accuracy, embed, frechet_distance, train_classifier
from diffinv.evaluation.neighbours import nearest_neighbour_rms
from diffinv.rng import make_generator
from diffinv.schedules import linear_schedule


def test_frechet_distance_closed_forms():
    gen = make_generator(0)
    f = torch.randn(400, 5, generator=gen, dtype=torch.float64)
    assert abs(frechet_distance(f, f)) < 1e-8
    shift = torch.tensor([1.0, 2.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    assert abs(frechet_distance(f, f + shift) - 5.0) < 1e-8  # same covariance: ‖Δμ‖²
    expected = f.mean(0).square().sum() + torch.trace(torch.cov(f.T))  # ‖2μ − μ‖² + (2 − 1)² Tr Σ
    assert abs(frechet_distance(f, 2 * f) - expected.item()) < 1e-6


def test_classifier_learns_labels_and_embeds():
    gen = make_generator(1)
    labels = torch.arange(40) % 2
    images = torch.zeros(40, 1, 8, 8, dtype=torch.uint8)
    images[labels == 1, :, :4] = 255  # class 1: bright top half
    net = train_classifier(images, labels, 8, gen, steps=40, batch_size=16, lr=5e-3)
    x = images.float() / 127.5 - 1
    assert accuracy(net, x, labels) == 1.0 and embed(net, x).shape == (40, 32)


def test_gaussian_baseline_and_neighbours():
    gen = make_generator(2)
    train = torch.randn(300, 1, 4, 4, generator=gen) * 0.3
    gauss = fit_gaussian(train, linear_schedule(), (1, 4, 4))
    held = torch.randn(50, 1, 4, 4, generator=gen, dtype=torch.float64) * 0.3
    mse = denoising_mse(gauss, held, [10, 900], make_generator(3))
    assert mse[10] < mse[900] < 0.09 * 1.3  # at high noise the error tends to the data variance
    uint8 = ((train.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    copies = uint8[:5].float() / 127.5 - 1
    assert nearest_neighbour_rms(copies, uint8, 4, chunk=64).max() < 1e-3  # float32 cdist round-off
