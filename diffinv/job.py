r"""The typed job that ``diffinv solve`` and ``diffinv batch`` share: built once, run batched.

A run has two layers:

* :class:`Session` — what every image of a run shares, built once from a :class:`SolveConfig`: the
  problem preset (with ``--set`` overrides), the sampler (its options validated before any prior is
  loaded), the prior, its pixel units and the device; operators are built once per mask / kernel
  file and shared by every image that uses them.
* :class:`Job` — one image, built once by :meth:`Session.job`: its name, file, operator A, the
  observation y₀₁ (*A.out_shape) on the [0, 1] pixel scale, the truth (C, H, W) or None, its seed.

:meth:`Session.run` samples several jobs that share one operator in the same network calls: their
observations form one batched :class:`~diffinv.samplers.base.InverseProblem` (B items), each item
draws from its own generator (:class:`~diffinv.rng.GeneratorBatch`), so a job gives the same samples
whether it runs alone or with others. Units (``diffinv.units``): y = w y₀₁ + lo A𝟙, σ = w σ_y in the
prior's units; samples come back as u = clamp((x − lo)/w, 0, 1). With ``simulate`` the image is the
truth u and y₀₁ = A u + σ_y ε, the noise drawn from a CPU generator seeded ``seed + 1 000 003``
(the same y₀₁ on any device); otherwise the image is y₀₁ itself (for masks: a full-size image whose
observed pixels are read through the mask).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffinv import __version__
from diffinv.imaging.io import check_range, read_image, resize
from diffinv.imaging.metrics import coverage, psnr, residual_ratio, ssim
from diffinv.operators.base import LinearOperator
from diffinv.operators.noise import GaussianNoise
from diffinv.priors.base import Denoised, DiffusionPrior
from diffinv.problems import Problem, apply_overrides, build_operator, load_problem
from diffinv.rng import GeneratorBatch, make_generator
from diffinv.samplers.base import InverseProblem, Sampler, SampleResult
from diffinv.samplers.registry import sampler_class
from diffinv.units import PixelUnits

DEFAULT_PRIORS = {1: "fashion32", 3: "emoji32"}  # shipped priors by channel count
STEP_OPTION = "num_steps"
NOISE_SEED_OFFSET = 1_000_003  # the simulated observation noise: seed + offset, independent of the sampler's

Progress = Callable[[float], None]  # fraction of the diffusion run done, in [0, 1]


@dataclass
class SolveConfig:
    """Everything a solve needs (the CLI maps its options onto this); ``batch`` uses it per run."""

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
    fit: tuple[str, ...] = ()  # parameters to estimate by maximum evidence (NAME or NAME=START)
    fit_method: str = "single"  # single (one loop: chains or a queue of trajectories) or nested
    fit_steps: int = 40  # θ updates
    fit_samples: int = 8  # samples per θ update
    fit_slots: int = 1  # single loop: trajectories in the queue (1 with fit_restart < 1: one chain)
    fit_restart: float = 0.25  # single loop: share of the steps a finished trajectory re-runs (1: from noise)
    fit_starts: int = 1  # local fits from this many starts, the best by an evidence estimate


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device: expected cpu, cuda or auto, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device: cuda requested but no CUDA device is available")
    return torch.device(device)


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
    if isinstance(config.seed, bool) or not isinstance(config.seed, int) or config.seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {config.seed!r}")
    sampler_class(config.sampler)
    if config.fit:
        from diffinv.fitting.images import parse_fit
        from diffinv.fitting.steppers import is_stepwise
        from diffinv.samplers.registry import SAMPLERS

        parse_fit(config.fit)
        fit_config(config)
        if config.fit_method == "single" and not is_stepwise(sampler_class(config.sampler)):
            stepwise = ", ".join(n for n, c in SAMPLERS.items() if is_stepwise(c))
            raise ValueError(f"fit-method: the single loop needs a stepwise sampler ({stepwise}); use "
                             f"--fit-method nested with {config.sampler}")


def fit_config(config: SolveConfig):
    """The :class:`~diffinv.fitting.FitConfig` of a solve's ``fit_*`` options."""
    from diffinv.fitting import FitConfig

    return FitConfig(method=config.fit_method, steps=config.fit_steps,  # type: ignore[arg-type]
                     samples_per_step=config.fit_samples, slots=config.fit_slots,
                     restart=config.fit_restart, starts=config.fit_starts)


def resolve_problem(config: SolveConfig) -> Problem:
    """The problem preset with the user's ``--set`` overrides applied."""
    problem: Problem = load_problem(config.problem)
    return apply_overrides(problem, config.overrides) if config.overrides else problem


def build_sampler(config: SolveConfig, problem: Problem) -> Sampler:
    """The sampler with the preset's options for it, ``--steps`` applied."""
    options = problem.sampler_options(config.sampler)
    cls = sampler_class(config.sampler)
    if config.steps is not None:
        if STEP_OPTION not in {f for f in cls.Config.__dataclass_fields__}:
            raise ValueError(f"steps: the sampler {config.sampler} has no {STEP_OPTION} option")
        options[STEP_OPTION] = int(config.steps)
    return cls(**options)


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


@dataclass
class Job:
    """One image's job (module docstring): built once by :meth:`Session.job`."""

    name: str
    image: str
    op: LinearOperator
    y01: Tensor
    truth: Tensor | None
    seed: int
    image_info: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobResult:
    """What a job produced: samples (k, C, H, W) on [0, 1] and the metrics of ``metrics.json``."""

    job: Job
    samples: Tensor
    metrics: dict[str, Any]


@dataclass
class Session:
    """What the jobs of a run share, built once (module docstring); build with :meth:`build`."""

    config: SolveConfig
    problem: Problem
    sampler: Sampler
    prior: DiffusionPrior
    device: torch.device
    units: PixelUnits
    operators: dict[tuple[str | None, str | None], LinearOperator] = field(default_factory=dict)

    @classmethod
    def build(cls, config: SolveConfig, prior: DiffusionPrior | None = None,
              channels: int | None = None) -> Session:
        """Check the options, resolve the problem, build the sampler, then load the prior (``prior``
        overrides the checkpoint; without a checkpoint the shipped prior for ``channels``)."""
        check_config(config)
        if config.threads:
            torch.set_num_threads(config.threads)
        problem = resolve_problem(config)
        sampler = build_sampler(config, problem)  # its config validates itself before the prior loads
        device = resolve_device(config.device)
        if prior is None:
            if config.checkpoint is None and channels is None:
                raise ValueError("checkpoint: no image to choose the shipped prior by; pass --checkpoint")
            colour_from_gray = problem.operator["name"] == "colorize" and not config.simulate
            prior = load_default_prior(config.checkpoint, 3 if colour_from_gray else int(channels or 0),
                                       device, config)
        return cls(config, problem, sampler, prior, device, PixelUnits.of(prior))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.prior.shape)

    def operator(self, mask: str | None = None, kernel: str | None = None) -> LinearOperator:
        """The problem's operator for the prior's images (one per mask / kernel file, built once)."""
        key = (mask if mask is not None else self.config.mask,
               kernel if kernel is not None else self.config.kernel)
        if key not in self.operators:
            self.operators[key] = build_operator(self.problem, self.shape, mask=key[0], kernel=key[1])
        return self.operators[key]

    def job(self, image: str, name: str = "", seed: int | None = None, mask: str | None = None,
            kernel: str | None = None, loaded: tuple[Tensor, dict[str, Any]] | None = None) -> Job:
        """The job of one image file (``loaded``: the file already read by :func:`read_image`)."""
        cfg = self.config
        seed = cfg.seed if seed is None else seed
        pixels, info = loaded if loaded is not None else read_image(image, value_range=cfg.value_range)
        op = self.operator(mask, kernel)
        shape, truth = self.shape, None
        if cfg.simulate:
            if tuple(pixels.shape) != shape:
                if cfg.resize and pixels.shape[0] == shape[0]:
                    pixels = resize(pixels, shape[1:])
                else:
                    raise ValueError(f"image: is {_shape_text(pixels.shape)} (C×H×W) but the prior takes "
                                     f"{_shape_text(shape)}" + (" (--resize to resample it)"
                                                                if pixels.shape[0] == shape[0] else ""))
            check_range(pixels, "image", image)
            truth = pixels
            gen = make_generator(seed + NOISE_SEED_OFFSET)
            y01 = self.problem.noise.sample(op.A(pixels[None].double()), gen)[0]
        else:
            check_range(pixels, "image", image, margin=6 * self.problem.sigma_y)
            y01 = observation_from_image(pixels, op, shape, cfg.resize)
        return Job(name or Path(image).stem, str(image), op, y01.double(), truth, seed, info)

    def inverse(self, jobs: list[Job]) -> InverseProblem:
        """The jobs' observations in the prior's units: one problem, batched when there are several."""
        op = jobs[0].op
        if any(j.op is not op for j in jobs):
            raise ValueError("jobs: a batched run needs one operator for all its jobs")
        ys = torch.stack([self.units.observation_to_prior(j.y01, op).float() for j in jobs])
        noise = GaussianNoise(self.units.sigma_to_prior(self.problem.sigma_y))
        return InverseProblem.batch(op, ys, noise) if len(jobs) > 1 else InverseProblem(op, ys[0], noise)

    def run(self, jobs: list[Job], progress: Progress | None = None) -> list[JobResult]:
        """Sample every job (all sharing one operator) in the same network calls; one result per job."""
        if not jobs:
            return []
        if self.config.fit:
            return [self.fit(job, progress) for job in jobs]
        inverse, batched = self.inverse(jobs), len(jobs) > 1
        self.sampler.check(self.prior, inverse)
        generator = (GeneratorBatch.of_seeds([j.seed for j in jobs], self.device) if batched
                     else make_generator(jobs[0].seed, self.device))
        prior = ProgressPrior(self.prior, progress) if progress is not None else self.prior
        result = self.sampler.sample(prior, inverse, self.config.num_samples, generator=generator,
                                     device=self.device, max_batch=self.config.max_batch)
        samples = self.units.to_pixels(result.samples.double()).clamp(0, 1)
        if not batched:
            samples = samples[None]
        out = []
        for job, item_samples, share in zip(jobs, samples, result.per_item(len(jobs)), strict=True):
            metrics = summarise(item_samples, job.y01, job.op, self.problem.sigma_y, job.truth, share)
            metrics.update(self.record(job), items_per_call=len(jobs), call_seconds=result.seconds)
            out.append(JobResult(job, item_samples, metrics))
        if progress is not None:
            progress(1.0)
        return out

    def fit(self, job: Job, progress: Progress | None = None) -> JobResult:
        """Estimate the ``fit`` parameters of one job by maximum evidence, then sample at θ̂
        (:mod:`diffinv.fitting`); metrics.json gets θ̂, its standard errors and the trace."""
        from diffinv.fitting import fit_parameters
        from diffinv.fitting.images import free_parameters, image_problem, parse_fit

        cfg = self.config
        params = free_parameters(self.problem, parse_fit(cfg.fit))
        parametric = image_problem(self.problem, self.shape, job.y01, self.units, params, cfg.mask,
                                   cfg.kernel)
        self.sampler.check(self.prior, parametric.at(parametric.start()))
        fitted = fit_parameters(self.prior, parametric, self.sampler, fit_config(cfg), cfg.num_samples,
                                seed=job.seed, device=self.device, progress=progress)
        samples = self.units.to_pixels(fitted.samples.double()).clamp(0, 1)
        sigma_y = fitted.values.get("noise.sigma_y", self.problem.sigma_y)
        op = fitted.problem.operator
        final = SampleResult(samples=fitted.samples, nfe_forward=fitted.nfe_forward,
                             nfe_backward=fitted.nfe_backward, seconds=fitted.seconds,
                             prior_seconds=fitted.prior_seconds, diagnostics={})
        metrics = summarise(samples, job.y01, op, sigma_y, job.truth, final)
        total = fitted.nfe_forward + fitted.nfe_backward
        draw = max(1, total - fitted.fit_nfe_forward - fitted.fit_nfe_backward)  # the final run at θ̂
        metrics["fit"] = {**fitted.record(), "cost_vs_solve": total / draw, "fixed": parametric.fixed}
        metrics.update(self.record(job), items_per_call=1, call_seconds=fitted.seconds)
        metrics["config"]["operator"] = op.describe()
        return JobResult(dataclasses.replace(job, op=op), samples, metrics)

    def record(self, job: Job) -> dict[str, Any]:
        """The job's identity in metrics.json: seed, versions, names and the full resolved config."""
        solve_config = asdict(dataclasses.replace(self.config, image=job.image, seed=job.seed))
        return {"seed": job.seed, "version": __version__, "sampler": self.config.sampler,
                "problem": self.problem.name, "device": str(self.device), "image": job.image_info,
                "prior": self.prior_name(),
                "config": {"solve": solve_config, "problem": self.problem.to_dict(),
                           "sampler_options": asdict(self.sampler.config), "operator": job.op.describe()}}

    def prior_name(self) -> str:
        card = getattr(self.prior, "card", None) or {}
        return str(card.get("name") or self.config.checkpoint or type(self.prior).__name__)


def summarise(samples: Tensor, y01: Tensor, op: LinearOperator, sigma_y: float, truth: Tensor | None,
              result: SampleResult) -> dict[str, Any]:
    """Metrics of ``metrics.json`` (PSNR/SSIM null without a ground truth); samples (k, C, H, W)."""
    mean = samples.mean(0)
    with torch.no_grad():
        a_mean = op.A(mean[None])[0]
        a_samples = op.A(samples)
    per_sample = [residual_ratio(y01, a_samples[j], sigma_y) for j in range(samples.shape[0])]
    return {
        "psnr": psnr(mean, truth) if truth is not None else None,
        "ssim": ssim(mean, truth) if truth is not None else None,
        "psnr_samples": [psnr(s, truth) for s in samples] if truth is not None else None,
        "psnr_sample_mean": (float(sum(psnr(s, truth) for s in samples) / samples.shape[0])
                             if truth is not None else None),
        "coverage": coverage(samples, truth, 0.9) if truth is not None else None,
        "lpips": None,
        "lpips_note": "not computed: LPIPS needs network weights that diffinv would have to download",
        "residual": residual_ratio(y01, a_mean, sigma_y),
        "residual_samples": per_sample,
        "std_mean": float(samples.std(0, unbiased=True).mean()) if samples.shape[0] > 1 else None,
        "nfe_forward": result.nfe_forward, "nfe_backward": result.nfe_backward,
        "seconds": result.seconds, "prior_seconds": result.prior_seconds, "overhead": result.overhead,
        "num_samples": int(samples.shape[0]), "sigma_y": sigma_y,
        "warnings": list(result.diagnostics.get("warnings", [])),
        "metric_notes": "PSNR peak 1 on [0, 1]; SSIM Gaussian window 11x11, sigma 1.5, C1=0.01^2, C2=0.03^2; "
                        "residual = ||y - A mean|| / (sigma_y sqrt(m)) on the [0, 1] scale; coverage = "
                        "share of truth pixels inside the per-pixel central 90% interval of the samples "
                        "(needs >= 16 samples to mean much)",
    }
