r"""The refined card's figures: the base prior's and the refined prior's side by side.

1. ``denoising_mse``: held-out MSE(t) per pixel of x̂0 at t ∈ {50, 200, 500, 800} on the same 500 test images
   and the same noise for the base, the refined prior and the Gaussian fit (as in the base's card,
   :mod:`diffinv.evaluation.card`), with the paired difference refined − base and its standard error over
   the images.
2. ``frechet``: Fréchet distance to the test set in the features of one small classifier
   (:mod:`diffinv.evaluation.features`), for ``eval_draws`` independent draws of ``eval_samples`` DDPM
   samples each from the base (the cached samples) and from the refined prior, *paired*: the refined
   prior's draw k uses the same noise as the base's (the cache's chunk seeds), so the per-draw difference
   is far less noisy than either value (the draws of one prior differ by ± 0.8 at n = 500). Every draw's
   value, their mean and standard deviation, the paired differences, and the floor (as many training
   images vs the test set).
The base card's own stored figures are copied beside them (``base_card``); they came from another classifier
and another draw, so compare base and refined within this card.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from diffinv.checkpoints import CARD_FILE, write_card
from diffinv.data.base import center_to_network
from diffinv.evaluation.card import TIMESTEPS, fd, subset
from diffinv.evaluation.denoising import denoising_errors, fit_gaussian
from diffinv.evaluation.features import embed, pooled_pixels, train_classifier
from diffinv.evaluation.grid import save_grid
from diffinv.rng import make_generator


def mean_sd(values: list[float]) -> tuple[float, float]:
    return round(statistics.fmean(values), 4), round(statistics.stdev(values), 4) if len(values) > 1 else 0.0


def draw_like_cache(prior, config, total: int, device, progress=None) -> torch.Tensor:
    """``total`` DDPM samples drawn exactly as the base's cache
    (:func:`diffinv.refine.run.model_sample_cache`): chunk i of 250 from seed ``seed + 1000 + i``, so
    sample j of two priors shares all its noise."""
    from diffinv.refine.run import CACHE_CHUNK, draw_chunk

    chunks = []
    for i in range((total + CACHE_CHUNK - 1) // CACHE_CHUNK):
        chunks.append(draw_chunk(prior, config, i, device).cpu())
        if progress is not None:
            progress("evaluate", min((i + 1) * CACHE_CHUNK, total), total, {})
    return torch.cat(chunks)[:total]


def evaluate_refined(out: Path, base_samples: torch.Tensor, data, device, config, progress=None,
                     heldout: int = 500, classifier_steps: int = 600) -> dict:
    """Compute the figures (module docstring), store them in OUT's card, and return them."""
    import json

    from diffinv.refine.checkpoint import load_refined_prior

    started = time.perf_counter()
    refined = load_refined_prior(out, device=device)  # the saved folder must reload
    base = refined.base
    size = refined.shape[1]
    gen = make_generator(config.seed)
    test = center_to_network(subset(data.test, heldout, gen), size).to(device)
    train = center_to_network(data.train, size)
    gaussian = fit_gaussian(train, base.schedule, base.shape)
    err_base = denoising_errors(base, test, list(TIMESTEPS), make_generator(config.seed + 1))
    err_ref = denoising_errors(refined, test, list(TIMESTEPS), make_generator(config.seed + 1))
    err_gauss = denoising_errors(gaussian, test.double().cpu(), list(TIMESTEPS),
                                 make_generator(config.seed + 1))
    diff = {t: (err_ref[t] - err_base[t]).double().cpu() for t in TIMESTEPS}
    denoising = {"timesteps": list(TIMESTEPS), "heldout_images": int(test.shape[0]),
                 "base": [round(float(err_base[t].mean()), 6) for t in TIMESTEPS],
                 "refined": [round(float(err_ref[t].mean()), 6) for t in TIMESTEPS],
                 "gaussian": [round(float(err_gauss[t].mean()), 6) for t in TIMESTEPS],
                 "refined_minus_base": [round(float(diff[t].mean()), 6) for t in TIMESTEPS],
                 "refined_minus_base_se": [round(float(diff[t].std() / diff[t].numel() ** 0.5), 6)
                                           for t in TIMESTEPS]}
    labelled = data.train_labels is not None
    classifier = train_classifier(data.train, data.train_labels, size, gen, steps=classifier_steps) \
        if labelled else None

    def features(x: torch.Tensor) -> torch.Tensor:
        x = x.clamp(-1, 1).cpu()
        return embed(classifier, x) if labelled else pooled_pixels(x)

    n = config.eval_samples
    f_test = features(center_to_network(data.test, size))
    refined_all = draw_like_cache(refined, config, config.eval_draws * n, device, progress)
    save_grid(refined_all[:64], out / "samples" / "eval.png", scale=2)
    base_fd = [fd(features(base_samples[k * n:(k + 1) * n]), f_test) for k in range(config.eval_draws)]
    refined_fd = [fd(features(refined_all[k * n:(k + 1) * n]), f_test) for k in range(config.eval_draws)]
    diffs = [r - b for r, b in zip(refined_fd, base_fd, strict=True)]
    floor = fd(features(subset(train, n, gen)), f_test)
    (b_mean, b_sd), (r_mean, r_sd), (d_mean, d_sd) = mean_sd(base_fd), mean_sd(refined_fd), mean_sd(diffs)
    frechet = {"features": "classifier" if labelled else "pixels-4x4", "n": n, "draws": config.eval_draws,
               "base": base_fd, "refined": refined_fd, "base_mean": b_mean, "base_sd": b_sd,
               "refined_mean": r_mean, "refined_sd": r_sd, "refined_minus_base": [round(d, 4) for d in diffs],
               "refined_minus_base_mean": d_mean, "refined_minus_base_sd": d_sd, "train_vs_test": floor,
               "paired": "draw k of both priors uses the same noise (the cache's chunk seeds)"}
    card = json.loads((out / CARD_FILE).read_text())
    base_figures = (getattr(base, "card", None) or {}).get("figures") or {}
    figures = {"denoising_mse": denoising, "frechet": frechet,
               "sampler": {"kind": "DDIM eta=1 (DDPM)", "steps": config.sample_steps,
                           "draws": "base: the cached model samples; refined: the same chunk seeds"},
               "base_card": {k: base_figures[k] for k in ("denoising_mse", "frechet") if k in base_figures},
               "seconds": round(time.perf_counter() - started, 1)}
    card["figures"] = figures
    write_card(out, card)
    return figures
