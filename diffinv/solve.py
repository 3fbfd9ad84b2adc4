r"""``diffinv solve``: posterior samples of one image under a problem preset.

Pipeline (the typed job of :mod:`diffinv.job`, shared with ``diffinv batch``; units: images on the
[0, 1] pixel scale u, the prior works on its own range, e.g. x = 2u − 1):
    1. a :class:`~diffinv.job.Session` (problem, sampler, prior, device), then the image's
       :class:`~diffinv.job.Job`: the observation y₀₁ (with ``simulate`` the image is the truth u and
       y₀₁ = A u + σ_y ε, seeded; otherwise the image is y₀₁ itself: for inpainting a full-size image
       whose observed pixels are read through the mask);
    2. in the prior's units y = 2 y₀₁ − A 𝟙 = A x + 2σ_y ε (A is linear), σ = 2σ_y;
    3. k samples x⁽ʲ⁾ from the sampler; u⁽ʲ⁾ = clamp((x⁽ʲ⁾ + 1)/2, 0, 1) (the data range; the usual
       final clamp of image samplers). The sampler's generator (seed ``seed``) lives on the run device,
       so a CUDA run draws its noise on the GPU (same seed, same samples on a given device; CPU and
       CUDA streams differ); the simulated observation noise uses a CPU generator (same y₀₁ anywhere);
    4. mean ū = (1/k) Σ u⁽ʲ⁾, per-pixel std s = sqrt((1/(k−1)) Σ (u⁽ʲ⁾ − ū)²), PSNR/SSIM of ū against
       the truth, data-consistency ‖y₀₁ − A ū‖ / (σ_y √m).
Outputs go through :class:`diffinv.outputs.OutputFolder`: checked before any work, locked against other
runs aimed at the same folder, written into a staging folder beside ``out`` and renamed into place when
complete (whole or not at all); ``overwrite`` replaces only a folder that diffinv wrote.
Shapes: image (C, H, W); samples (k, C, H, W).
"""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffinv.imaging.io import as_panel, read_image, save_png, save_row
from diffinv.job import (  # noqa: F401 - re-exported: the public names of diffinv.solve
    DEFAULT_PRIORS,
    Job,
    JobResult,
    Progress,
    ProgressPrior,
    Session,
    SolveConfig,
    check_config,
    load_default_prior,
    resolve_device,
    resolve_problem,
    summarise,
)
from diffinv.operators.base import LinearOperator
from diffinv.outputs import OutputFolder
from diffinv.priors.base import DiffusionPrior


@dataclass
class SolveReport:
    """What a solve produced: samples (k, C, H, W) on [0, 1], metrics dict, output folder."""

    samples: Tensor
    metrics: dict[str, Any]
    out: Path | None


def start(config: SolveConfig, prior: DiffusionPrior | None = None) -> tuple[Session, Job]:
    """The session and the image's job (the image is read once)."""
    check_config(config)
    loaded = read_image(config.image, value_range=config.value_range)
    session = Session.build(config, prior, channels=loaded[0].shape[0])
    return session, session.job(config.image, seed=config.seed, loaded=loaded)


def prepare(config: SolveConfig, prior: DiffusionPrior | None = None) -> Job:
    """The :class:`~diffinv.job.Job` of ``config.image`` (observation, operator, truth)."""
    return start(config, prior)[1]


def solve(config: SolveConfig, prior: DiffusionPrior | None = None, progress: Progress | None = None,
          write: bool = True) -> SolveReport:
    """Run one posterior-sampling job (module docstring); ``prior`` overrides the checkpoint.

    Every input and the output folder are checked before the prior runs; with ``write`` the folder is
    locked for the run, so that a second run aimed at it fails at once."""
    check_config(config)
    folder = OutputFolder(config.out, config.overwrite, command="solve") if write else None
    if folder is not None:
        folder.check()
    session, job = start(config, prior)
    session.sampler.check(session.prior, session.inverse([job]))  # before the folder is locked
    with folder if folder is not None else nullcontext():
        (result,) = session.run([job], progress)
        path = None
        if folder is not None:
            path = folder.commit(lambda tmp: write_files(tmp, result.samples, job.y01, job.op, job.truth,
                                                         result.metrics))
    return SolveReport(samples=result.samples, metrics=result.metrics, out=path)


def write_outputs(out: str | Path, samples: Tensor, y01: Tensor, op: LinearOperator, truth: Tensor | None,
                  metrics: dict[str, Any], overwrite: bool = False) -> Path:
    """Write a solve's files into ``out`` through :class:`~diffinv.outputs.OutputFolder` (whole or not at
    all; ``overwrite`` replaces only a folder diffinv wrote)."""
    with OutputFolder(out, overwrite, command="solve") as folder:
        return folder.commit(lambda tmp: write_files(tmp, samples, y01, op, truth, metrics))


def _observation_panel(y01: Tensor, op: LinearOperator) -> Tensor:
    """An image of the observation: y itself when it is an image, else Aᵀy with unobserved pixels grey."""
    if len(op.out_shape) == 3:
        return y01
    with torch.no_grad():
        seen = op.At(torch.ones(1, *op.out_shape, dtype=torch.float64))[0]
        return op.At(y01[None].double())[0] + 0.5 * (1 - seen)


def write_files(tmp: Path, samples: Tensor, y01: Tensor, op: LinearOperator, truth: Tensor | None,
                metrics: dict[str, Any]) -> None:
    """Every file of a solve's output folder, written into ``tmp`` (module docstring)."""
    shape = tuple(samples.shape[1:])
    obs = _observation_panel(y01, op)
    save_png(obs, tmp / "observation.png")
    np.save(tmp / "observation.npy", y01.numpy())
    (tmp / "samples").mkdir()
    width = max(3, len(str(samples.shape[0] - 1)))
    for j, s in enumerate(samples):
        save_png(s, tmp / "samples" / f"{j:0{width}d}.png")
    np.savez(tmp / "samples.npz", samples=samples.float().numpy())
    mean = samples.mean(0)
    std = samples.std(0, unbiased=True) if samples.shape[0] > 1 else torch.zeros_like(mean)
    std_max = float(std.max())
    metrics["std_png_scale"] = std_max
    save_png(mean, tmp / "mean.png")
    save_png(std / std_max if std_max > 0 else std, tmp / "std.png")
    panels = [as_panel(obs, shape), *samples[:8], mean, as_panel(std / max(std_max, 1e-12), shape)]
    if truth is not None:
        panels.append(truth)
        save_png(truth, tmp / "truth.png")
    save_row(panels, tmp / "grid.png", scale=max(1, math.ceil(128 / shape[-1])))
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
