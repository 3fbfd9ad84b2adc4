r"""``diffinv solve``: posterior samples of one image under a problem preset.

Pipeline (units: images on the [0, 1] pixel scale u; the prior works on x = 2u − 1):
    1. the observation y₀₁: with ``simulate`` the image is the truth u and y₀₁ = A u + σ_y ε (seeded);
       otherwise the image is y₀₁ itself (for inpainting: a full-size image whose observed pixels
       are read through the mask);
    2. in the prior's units, y = 2 y₀₁ − A 𝟙 = A x + 2σ_y ε (A is linear), σ = 2σ_y;
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
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffinv import __version__
from diffinv.imaging.io import as_panel, check_range, read_image, resize, save_png, save_row
from diffinv.imaging.metrics import psnr, residual_ratio, ssim
from diffinv.operators.base import LinearOperator
from diffinv.operators.noise import GaussianNoise
from diffinv.outputs import OutputFolder
from diffinv.priors.base import Denoised, DiffusionPrior
from diffinv.problems import Problem, apply_overrides, build_operator, load_problem
from diffinv.rng import make_generator
from diffinv.samplers.base import InverseProblem, SampleResult
from diffinv.samplers.registry import sampler_class
from diffinv.units import PixelUnits

DEFAULT_PRIORS = {1: "fashion32", 3: "emoji32"}  # shipped priors by channel count
STEP_OPTION = "num_steps"

Progress = Callable[[float], None]  # fraction of the diffusion run done, in [0, 1]


@dataclass
class SolveConfig:
    """Everything ``solve`` needs (the CLI maps its options onto this)."""

    image: str
    problem: str = "sr4"
    sampler: str = "dcps"
    num_samples: int = 4
    seed: int = 0
    steps: int | None = None
    device: str = "auto"
    checkpoint: str | None = None
    out: str = "results"
    simulate: bool = False
    mask: str | None = None
    kernel: str | None = None
    resize: bool = False
    overwrite: bool = False
    max_batch: int | None = None
    threads: int = 0  # torch intra-op threads (0: torch's default)
    value_range: tuple[float, float] | None = None  # scale of a .npy image (default [0, 1])
    arch: str | None = None  # ADM architecture: preset name or YAML file (external .pt checkpoints)
    fp16: bool = False  # half-precision network (ADM / diffusers)
    checkpointing: bool = False  # activation checkpointing in backward passes (ADM / diffusers)
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class SolveReport:
    """What a solve produced: samples (k, C, H, W) on [0, 1], metrics dict, output folder."""

    samples: Tensor
    metrics: dict[str, Any]
    out: Path | None


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device: expected cpu, cuda or auto, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device: cuda requested but no CUDA device is available")
    return torch.device(device)


class ProgressPrior:
    """Pass-through prior that reports progress as the fraction of diffusion time covered, 1 − t_min/T."""

    def __init__(self, prior: DiffusionPrior, callback: Progress) -> None:
        self.prior, self.callback = prior, callback
        self.schedule, self.shape = prior.schedule, prior.shape
        self.value_range, self.differentiable = prior.value_range, prior.differentiable
        self.t_min = prior.schedule.num_timesteps

    def __getattr__(self, name: str) -> Any:  # e.g. ``posterior`` of analytic priors (the exact sampler)
        return getattr(self.prior, name)

    def denoise(self, x_t: Tensor, t: int) -> Denoised:
        out = self.prior.denoise(x_t, t)
        if t < self.t_min:
            self.t_min = t
            self.callback(1.0 - t / self.schedule.num_timesteps)
        return out


def load_default_prior(checkpoint: str | None, channels: int, device: torch.device,
                       config: SolveConfig | None = None) -> DiffusionPrior:
    """The prior of ``checkpoint`` (any format of :mod:`diffinv.priors.loading`), or the shipped one for
    the image's channel count."""
    from diffinv.priors.loading import load_prior

    name = checkpoint or DEFAULT_PRIORS.get(channels)
    if name is None:
        raise ValueError(f"checkpoint: no shipped prior for {channels}-channel images; pass --checkpoint")
    arch, fp16, checkpointing = (config.arch, config.fp16, config.checkpointing) if config else (None, False,
                                                                                              False)
    if checkpoint is None and (arch or fp16 or checkpointing):
        raise ValueError("arch: --arch, --fp16 and --checkpointing need --checkpoint (an ADM or diffusers "
                         "prior)")
    return load_prior(name, arch=arch, device=device, fp16=fp16, checkpointing=checkpointing)


def _shape_text(shape) -> str:
    return "×".join(str(s) for s in shape)


def observation_from_image(image: Tensor, op: LinearOperator, prior_shape: tuple[int, ...],
                           resize_ok: bool) -> Tensor:
    """y₀₁ (*out_shape) from a given observation image (C, H, W) on [0, 1]."""
    if tuple(image.shape) == tuple(op.out_shape):
        return image
    if len(op.out_shape) == 1 and tuple(image.shape) == tuple(op.in_shape):  # masks: read observed pixels
        return op.A(image[None])[0]
    if resize_ok and len(op.out_shape) == 3 and image.shape[0] == op.out_shape[0]:
        return resize(image, tuple(op.out_shape[1:]))
    want = op.out_shape if len(op.out_shape) == 3 else op.in_shape
    raise ValueError(f"image: the observation is {_shape_text(image.shape)} (C×H×W) but the problem expects "
                     f"{_shape_text(want)} for the prior's {_shape_text(prior_shape)} images"
                     + ("" if len(op.out_shape) != 3 else " (--resize to resample it)"))


def _observation_panel(y01: Tensor, op: LinearOperator) -> Tensor:
    """An image of the observation: y itself when it is an image, else Aᵀy with unobserved pixels grey."""
    if len(op.out_shape) == 3:
        return y01
    with torch.no_grad():
        seen = op.At(torch.ones(1, *op.out_shape, dtype=torch.float64))[0]
        return op.At(y01[None].double())[0] + 0.5 * (1 - seen)


@dataclass
class SolveJob:
    """One image's job, built once: the resolved problem, the prior, the operator A on the prior's shape,
    the observation y₀₁ (*A.out_shape) on the [0, 1] pixel scale, the truth (C, H, W) or None, the
    device, and how the image file was read (``image_info``, recorded in metrics.json)."""

    problem: Problem
    prior: DiffusionPrior
    op: LinearOperator
    y01: Tensor
    truth: Tensor | None
    device: torch.device
    image_info: dict[str, Any] = field(default_factory=dict)


def check_config(config: SolveConfig) -> None:
    """Validate the options that need no file (one-line ValueErrors naming the option)."""
    if config.num_samples < 1:
        raise ValueError(f"num-samples: expected a positive integer, got {config.num_samples}")
    if config.threads < 0:
        raise ValueError(f"threads: expected an integer ≥ 0, got {config.threads}")
    if config.steps is not None and config.steps < 1:
        raise ValueError(f"steps: expected a positive integer, got {config.steps}")
    if config.max_batch is not None and config.max_batch < 1:
        raise ValueError(f"max-batch: expected a positive integer, got {config.max_batch}")
    sampler_class(config.sampler)


def resolve_problem(config: SolveConfig) -> Problem:
    """The problem preset with the user's ``--set`` overrides applied."""
    problem: Problem = load_problem(config.problem)
    return apply_overrides(problem, config.overrides) if config.overrides else problem


def prepare(config: SolveConfig, prior: DiffusionPrior | None = None,
            problem: Problem | None = None) -> SolveJob:
    """Load image, problem (unless given), prior and operator into a :class:`SolveJob`."""
    problem = problem if problem is not None else resolve_problem(config)
    image, image_info = read_image(config.image, value_range=config.value_range)
    device = resolve_device(config.device)
    colour_from_gray = problem.operator["name"] == "colorize" and not config.simulate
    if prior is None:
        prior = load_default_prior(config.checkpoint, 3 if colour_from_gray else image.shape[0], device,
                                   config)
    shape = tuple(prior.shape)
    op = build_operator(problem, shape, mask=config.mask, kernel=config.kernel)
    truth = None
    if config.simulate:
        if tuple(image.shape) != shape:
            if config.resize and image.shape[0] == shape[0]:
                image = resize(image, shape[1:])
            else:
                raise ValueError(f"image: is {_shape_text(image.shape)} (C×H×W) but the prior takes "
                                 f"{_shape_text(shape)}" + (" (--resize to resample it)"
                                                            if image.shape[0] == shape[0] else ""))
        check_range(image, "image", config.image)
        truth = image
        gen = make_generator(config.seed + 1_000_003)  # the noise draw, independent of the sampler's
        y01 = problem.noise.sample(op.A(image[None].double()), gen)[0]
    else:
        check_range(image, "image", config.image, margin=6 * problem.sigma_y)
        y01 = observation_from_image(image, op, shape, config.resize)
    return SolveJob(problem, prior, op, y01.double(), truth, device, image_info)


def build_sampler(config: SolveConfig, problem: Problem):
    """The sampler with the preset's options for it, ``--steps`` applied."""
    options = problem.sampler_options(config.sampler)
    cls = sampler_class(config.sampler)
    if config.steps is not None:
        if STEP_OPTION not in {f for f in cls.Config.__dataclass_fields__}:
            raise ValueError(f"steps: the sampler {config.sampler} has no {STEP_OPTION} option")
        options[STEP_OPTION] = int(config.steps)
    return cls(**options)


def solve(config: SolveConfig, prior: DiffusionPrior | None = None, progress: Progress | None = None,
          write: bool = True) -> SolveReport:
    """Run one posterior-sampling job (module docstring); ``prior`` overrides the checkpoint.

    Every input and the output folder are checked before the prior runs; with ``write`` the folder is
    locked for the run, so that a second run aimed at it fails at once."""
    check_config(config)
    folder = OutputFolder(config.out, config.overwrite, command="solve") if write else None
    if folder is not None:
        folder.check()
    if config.threads:
        torch.set_num_threads(config.threads)
    problem = resolve_problem(config)
    sampler = build_sampler(config, problem)  # its config validates itself before the prior is loaded
    job = prepare(config, prior, problem)
    units = PixelUnits.of(job.prior)
    inverse = InverseProblem(job.op, units.observation_to_prior(job.y01, job.op).float(),
                             GaussianNoise(units.sigma_to_prior(job.problem.sigma_y)))
    sampler.check(job.prior, inverse)
    with folder if folder is not None else nullcontext():
        run_prior = ProgressPrior(job.prior, progress) if progress is not None else job.prior
        result: SampleResult = sampler.sample(run_prior, inverse, config.num_samples,
                                              generator=make_generator(config.seed, job.device),
                                              device=job.device,
                                              max_batch=config.max_batch)
        samples = units.to_pixels(result.samples.double()).clamp(0, 1)
        metrics = summarise(samples, job.y01, job.op, job.problem.sigma_y, job.truth, result)
        metrics.update(seed=config.seed, version=__version__, sampler=config.sampler,
                       problem=job.problem.name, device=str(job.device), image=job.image_info,
                       prior=_prior_name(job.prior, config),
                       config={"solve": asdict(config), "problem": job.problem.to_dict(),
                               "sampler_options": asdict(sampler.config), "operator": job.op.describe()})
        if progress is not None:
            progress(1.0)
        path = None
        if folder is not None:
            path = folder.commit(lambda tmp: write_files(tmp, samples, job.y01, job.op, job.truth, metrics))
    return SolveReport(samples=samples, metrics=metrics, out=path)


def _prior_name(prior: DiffusionPrior, config: SolveConfig) -> str:
    card = getattr(prior, "card", None) or {}
    return str(card.get("name") or config.checkpoint or type(prior).__name__)


def summarise(samples: Tensor, y01: Tensor, op: LinearOperator, sigma_y: float, truth: Tensor | None,
              result: SampleResult) -> dict[str, Any]:
    """Metrics of ``metrics.json`` (PSNR/SSIM null without a ground truth)."""
    mean = samples.mean(0)
    with torch.no_grad():
        a_mean = op.A(mean[None])[0]
        a_samples = op.A(samples)
    per_sample = [residual_ratio(y01, a_samples[j], sigma_y) for j in range(samples.shape[0])]
    metrics: dict[str, Any] = {
        "psnr": psnr(mean, truth) if truth is not None else None,
        "ssim": ssim(mean, truth) if truth is not None else None,
        "psnr_samples": [psnr(s, truth) for s in samples] if truth is not None else None,
        "lpips": None,
        "lpips_note": "not computed: LPIPS needs network weights that diffinv would have to download",
        "residual": residual_ratio(y01, a_mean, sigma_y),
        "residual_samples": per_sample,
        "std_mean": float(samples.std(0, unbiased=True).mean()) if samples.shape[0] > 1 else None,
        "nfe_forward": result.nfe_forward, "nfe_backward": result.nfe_backward,
        "seconds": result.seconds, "prior_seconds": result.prior_seconds, "overhead": result.overhead,
        "num_samples": int(samples.shape[0]), "sigma_y": sigma_y,
        "metric_notes": "PSNR peak 1 on [0, 1]; SSIM Gaussian window 11x11, sigma 1.5, C1=0.01^2, C2=0.03^2; "
                        "residual = ||y - A mean|| / (sigma_y sqrt(m)) on the [0, 1] scale",
    }
    return metrics


def write_outputs(out: str | Path, samples: Tensor, y01: Tensor, op: LinearOperator, truth: Tensor | None,
                  metrics: dict[str, Any], overwrite: bool = False) -> Path:
    """Write a solve's files into ``out`` through :class:`~diffinv.outputs.OutputFolder` (whole or not at
    all; ``overwrite`` replaces only a folder diffinv wrote)."""
    with OutputFolder(out, overwrite, command="solve") as folder:
        return folder.commit(lambda tmp: write_files(tmp, samples, y01, op, truth, metrics))


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
