"""The shipped priors load, validate against their cards, and denoise held-out images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from diffinv.checkpoints import load_prior
from diffinv.rng import make_generator
from diffinv.solve import DEFAULT_PRIORS

EXAMPLES = {"fashion32": "examples/fashion_test_0000.png", "emoji32": "examples/emoji_test_0000.png"}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_shipped_prior_denoises_a_heldout_image(name):
    prior = load_prior(name)
    channels = 1 if name == "fashion32" else 3
    assert prior.shape == (channels, 32, 32) and DEFAULT_PRIORS[channels] == name
    figures = prior.card["figures"]
    assert all(r < 1 for r in figures["denoising_mse"]["ratio"][:3])  # beats the Gaussian up to t = 500
    pixels = np.asarray(Image.open(EXAMPLES[name]).convert("L" if channels == 1 else "RGB"), dtype=np.float32)
    x0 = torch.from_numpy(pixels / 127.5 - 1).reshape(1, 32, 32, channels).permute(0, 3, 1, 2)
    t, ab = 100, prior.schedule.alpha_bar_at(100)
    x_t = ab**0.5 * x0 + (1 - ab) ** 0.5 * torch.randn(x0.shape, generator=make_generator(0))
    with torch.no_grad():
        err = (prior.denoise(x_t, t).x0 - x0).square().mean()
    naive = (x_t / ab**0.5 - x0).square().mean()
    assert err < 0.3 * naive


def test_shipped_refined_prior_loads_by_name_on_its_base():
    """checkpoints/fashion32-dg (``diffinv refine``): its base, window and side-by-side figures."""
    from diffinv.refine import RefinedPrior

    prior = load_prior("fashion32-dg")
    assert isinstance(prior, RefinedPrior) and prior.shape == (1, 32, 32)
    assert prior.base.card["name"] == "fashion32" and prior.card["base"]["checkpoint"] == "fashion32"
    lo, hi = prior.t_range
    figures = prior.card["figures"]
    assert len(figures["denoising_mse"]["base"]) == len(figures["denoising_mse"]["refined"])
    assert figures["frechet"]["draws"] >= 2
    x = torch.randn(2, 1, 32, 32, generator=make_generator(1))
    with torch.no_grad():
        assert torch.equal(prior.denoise(x, lo - 1).eps, prior.base.denoise(x, lo - 1).eps)
        assert not torch.equal(prior.denoise(x, hi).eps, prior.base.denoise(x, hi).eps)
