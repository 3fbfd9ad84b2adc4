"""The options that ``diffinv solve`` and ``diffinv batch`` share, declared once (Typer annotations), and
the one function that maps them onto :class:`diffinv.job.SolveConfig`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from diffinv.typed import parse_value

ProblemOpt = Annotated[str, typer.Option(help="A preset (see `diffinv problems`) or a YAML file.")]
SamplerOpt = Annotated[str, typer.Option(help="dps, pgdm, mcgdiff, dcps, ddrm, tds.")]
NumSamplesOpt = Annotated[int, typer.Option(help="Posterior samples to draw (per image).")]
StepsOpt = Annotated[int | None, typer.Option(help="Diffusion steps (the sampler's num_steps).")]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda or auto.")]
CheckpointOpt = Annotated[str | None, typer.Option(help="Prior: a shipped NAME, a diffinv or diffusers "
                                                   "folder, or an ADM .pt/.safetensors file (default: the "
                                                   "shipped prior for the image's channels).")]
ArchOpt = Annotated[str | None, typer.Option(help="ADM architecture of a .pt checkpoint: adm-ffhq256, "
                                             "adm-imagenet256-uncond or a YAML file of guided-diffusion "
                                             "flags (default: the preset that fits the file).")]
Fp16Opt = Annotated[bool, typer.Option("--fp16", help="Half-precision network (ADM / diffusers; GPU).")]
CheckpointingOpt = Annotated[bool, typer.Option("--checkpointing", help="Recompute activations in backward "
                                                "passes (less memory for dps/pgdm/dcps at 256²).")]
MaskOpt = Annotated[Path | None, typer.Option(help="Mask PNG (white = observed) for inpaint_mask.")]
KernelOpt = Annotated[Path | None, typer.Option(help="Blur kernel (.npy or PNG) for blur_kernel.")]
ResizeOpt = Annotated[bool, typer.Option(help="Resample an image that does not fit the prior.")]
MaxBatchOpt = Annotated[int | None, typer.Option(help="Most rows (items × samples × particles) per network "
                                                 "call (memory bound).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override one field: operator.KEY=V, "
                                                  "noise.sigma_y=V, SAMPLER.OPTION=V.")]
ThreadsOpt = Annotated[int, typer.Option(help="torch threads (0 = torch's default; 1 on a busy machine).")]
ValueRangeOpt = Annotated[str | None, typer.Option(help="LO,HI: the scale of a .npy image (default 0,1), "
                                                   "e.g. 0,255.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
FitOpt = Annotated[list[str] | None, typer.Option(
    "--fit", help="Estimate a parameter by maximum evidence while sampling: noise.sigma_y, operator.FIELD "
                  "(e.g. operator.sigma of blur_gauss); NAME=START sets its start (bounds: the preset's fit "
                  "section). Repeatable.")]
FitMethodOpt = Annotated[str, typer.Option(help="single (one loop: the sampler's trajectories advance while "
                                           "θ moves; dps, pgdm) or nested (a full run per θ update; any "
                                           "sampler).")]
FitStepsOpt = Annotated[int, typer.Option(help="θ updates of --fit (θ̂ averages the last half).")]
FitSamplesOpt = Annotated[int, typer.Option(help="Posterior samples per θ update of --fit.")]
FitRestartOpt = Annotated[float, typer.Option(help="Single loop: share of the sampler's steps a finished "
                                              "trajectory re-runs after re-noising (the default 0.25 with "
                                              "--fit-slots 1: one chain, an update at a quarter of a run's "
                                              "cost; 1 = every trajectory from noise).")]
FitSlotsOpt = Annotated[int, typer.Option(help="Single loop: trajectories in its queue (with --fit-restart "
                                          "1, e.g. 10: the queue of Implicit Diffusion's Algorithm 3).")]
FitStartsOpt = Annotated[int, typer.Option(help="Local fits from this many starts (yours and others spread "
                                           "over the bounds); the one with the largest MCGDiff evidence "
                                           "estimate is kept. For a multimodal evidence; K times the cost.")]


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """['operator.factor=8', 'dcps.lr=0.5'] → {'operator.factor': 8, 'dcps.lr': 0.5} (YAML 1.2 values)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"set: expected KEY=VALUE (e.g. noise.sigma_y=0.05), got {item!r}")
        out[key.strip()] = parse_value(value)
    return out


def parse_range(text: str | None) -> tuple[float, float] | None:
    """'0,255' → (0.0, 255.0)."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"value-range: expected LO,HI (e.g. 0,255), got {text!r}") from None
    if not hi > lo:
        raise ValueError(f"value-range: expected HI > LO, got {text!r}")
    return lo, hi


def job_config(image: str, out: str, *, mask: Path | None, kernel: Path | None, value_range: str | None,
               set_: list[str] | None, fit: list[str] | None = None, **options: Any):
    """The :class:`~diffinv.job.SolveConfig` of the shared options (paths as strings, parsed values)."""
    from diffinv.job import SolveConfig

    return SolveConfig(image=image, out=out, mask=str(mask) if mask else None,
                       kernel=str(kernel) if kernel else None, value_range=parse_range(value_range),
                       overrides=parse_set(set_), fit=tuple(fit or ()), **options)
