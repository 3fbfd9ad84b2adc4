r"""The exact check of refinement (the thesis's toy setting): two 2-D Gaussian mixtures, closed-form scores.

Target p_data: four equal modes at (±1.5, ±1.5) with variance 0.05. Model p̃ (the "trained prior"): only
three of them (the mode at (1.5, 1.5) is *missed*), slightly shifted and widened. Both are
:class:`~diffinv.priors.analytic.GaussianMixturePrior` on the linear VP schedule, so the model's score is
exact for *its* law and the only error is the law itself: what a correction must fix.

:func:`run_toy` trains u_φ with one loss on ``train_size`` target samples (finite data, as in practice) and,
for ce, as many of the model's own DDPM samples; then draws DDPM samples from the model and from the
refined prior and scores both against fresh target samples: sliced Wasserstein distance (100 directions,
:func:`diffinv.metrics.sliced_wasserstein`) and the share of samples nearest the missed mode (target ¼).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from diffinv.metrics import sliced_wasserstein
from diffinv.nn.unet import init_weights
from diffinv.priors.analytic import GaussianMixturePrior
from diffinv.priors.mixture import GaussianMixture
from diffinv.refine.losses import LossSpec
from diffinv.refine.potential import MLPConfig, PotentialMLP
from diffinv.refine.prior import RefinedPrior
from diffinv.refine.trainer import CorrectionTrainer
from diffinv.rng import make_generator
from diffinv.sampling import sample_prior

TARGET_MEANS = ((-1.5, -1.5), (1.5, -1.5), (-1.5, 1.5), (1.5, 1.5))
MISSED = 3  # index of the mode the model lacks
TARGET_VAR = 0.05


def toy_mixtures() -> tuple[GaussianMixture, GaussianMixture]:
    """(target, model): see the module docstring."""
    means = torch.tensor(TARGET_MEANS, dtype=torch.float64)
    target = GaussianMixture.create(means, torch.ones(4), TARGET_VAR)
    shifted = means[:MISSED] + torch.tensor([0.25, -0.2], dtype=torch.float64)
    model = GaussianMixture.create(shifted, torch.tensor([0.5, 0.3, 0.2]), 2.0 * TARGET_VAR)
    return target, model


@dataclass(frozen=True)
class ToyResult:
    """SW to the target and share of samples at the missed mode, for the model and the refined prior."""

    loss: str
    seed: int
    sw_model: float
    sw_refined: float
    missed_share_model: float
    missed_share_refined: float
    final_loss: float
    samples: dict | None = field(default=None, repr=False)  # {"model", "refined", "target"}: (n, 2) if kept


def missed_share(samples: torch.Tensor) -> float:
    """Share of samples (n, 2) whose nearest target mode is the missed one (¼ under the target)."""
    means = torch.tensor(TARGET_MEANS, dtype=samples.dtype)
    nearest = torch.cdist(samples, means).argmin(1)
    return float((nearest == MISSED).double().mean())


def run_toy(loss: str = "mse", seed: int = 0, steps: int = 1500, train_size: int = 4000,
            batch_size: int = 256,
            num_samples: int = 4000, sample_steps: int = 200, gamma: float = 0.1, lr: float = 2e-3,
            hidden: int = 128, keep_samples: bool = False) -> ToyResult:
    """Train one correction and score it (all draws from ``seed``); ``keep_samples`` returns the draws."""
    target, model_mix = toy_mixtures()
    model = GaussianMixturePrior(model_mix)
    gen = make_generator(seed)
    data = target.sample(train_size, gen).float()
    model_samples = sample_prior(model, train_size, num_steps=sample_steps,
                                 generator=make_generator(seed + 1)).float() if loss != "mse" else None
    net = init_weights(PotentialMLP(MLPConfig(dim=2, hidden=hidden)), make_generator(seed + 6), keep=("out",))

    def batches(n: int, g: torch.Generator) -> torch.Tensor:
        return data[torch.randint(0, data.shape[0], (n,), generator=g)]

    spec = LossSpec(loss=loss, gamma=gamma, t_range=(0, model.schedule.num_timesteps - 1), groups=8)
    trainer = CorrectionTrainer(net, model, spec, batches, model_samples, batch_size=batch_size, lr=lr,
                                seed=seed + 2)
    trainer.train(steps)
    refined = RefinedPrior(model, net.requires_grad_(False))
    reference = target.sample(num_samples, make_generator(seed + 3)).float()
    x_model = sample_prior(model, num_samples, num_steps=sample_steps, generator=make_generator(seed + 4))
    x_refined = sample_prior(refined, num_samples, num_steps=sample_steps, generator=make_generator(seed + 4))
    sw_gen = make_generator(seed + 5)
    sw_model = float(sliced_wasserstein(x_model.float(), reference, generator=sw_gen))
    sw_gen = make_generator(seed + 5)
    sw_refined = float(sliced_wasserstein(x_refined.float(), reference, generator=sw_gen))
    return ToyResult(loss=loss, seed=seed, sw_model=sw_model, sw_refined=sw_refined,
                     missed_share_model=missed_share(x_model.float()),
                     missed_share_refined=missed_share(x_refined.float()),
                     final_loss=trainer.last.get("total", float("nan")),
                     samples={"model": x_model.float(), "refined": x_refined.float(), "target": reference}
                     if keep_samples else None)
