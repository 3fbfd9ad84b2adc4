"""``diffinv solve``: posterior samples of one image (maps options onto diffinv.solve.SolveConfig)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cli.common import one_line_errors, stderr, stdout
from diffinv.typed import parse_value


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


@contextmanager
def diffusion_bar(quiet: bool):
    """A bar over the diffusion time (1 − t/T) with ETA on stderr; yields the progress callback."""
    if quiet:
        yield None
        return
    columns = [TextColumn("sampling"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    progress = Progress(*columns, console=stderr)
    task = progress.add_task("sampling", total=1.0)
    state = {"started": False}

    def update(fraction: float) -> None:
        if not state["started"]:  # shown from the first network call on, not during loading/validation
            progress.start()
            state["started"] = True
        progress.update(task, completed=fraction)

    try:
        yield update
    finally:
        if state["started"]:
            progress.stop()


@one_line_errors
def solve(
    image: Annotated[Path, typer.Argument(help="The observation (PNG or .npy on [0, 1]); with --simulate the "
                                          "ground truth.")],
    problem: Annotated[str, typer.Option(help="A preset (see `diffinv problems`) or a YAML file.")]
    = "sr4",
    sampler: Annotated[str, typer.Option(help="dps, pgdm, mcgdiff, dcps, ddrm.")] = "dcps",
    num_samples: Annotated[int, typer.Option(help="Posterior samples to draw.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the sampler (and of the simulated noise).")] = 0,
    steps: Annotated[int | None, typer.Option(help="Diffusion steps (the sampler's num_steps).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    checkpoint: Annotated[str | None, typer.Option(help="Prior: a shipped NAME, a diffinv or diffusers "
                                                   "folder, or an ADM .pt/.safetensors file (default: the "
                                                   "shipped prior for the image's channels).")] = None,
    arch: Annotated[str | None, typer.Option(help="ADM architecture of a .pt checkpoint: adm-ffhq256, "
                                             "adm-imagenet256-uncond or a YAML file of guided-diffusion "
                                             "flags (default: the preset that fits the file).")] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="Half-precision network (ADM / diffusers; GPU).")]
    = False,
    checkpointing: Annotated[bool, typer.Option("--checkpointing", help="Recompute activations in backward "
                                                "passes (less memory for dps/pgdm/dcps at 256²).")] = False,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results"),
    simulate: Annotated[bool, typer.Option(help="IMAGE is the truth: degrade it with the problem first.")]
    = False,
    mask: Annotated[Path | None, typer.Option(help="Mask PNG (white = observed) for inpaint_mask.")] = None,
    kernel: Annotated[Path | None, typer.Option(help="Blur kernel (.npy or PNG) for blur_kernel.")] = None,
    resize: Annotated[bool, typer.Option(help="Resample an image that does not fit the prior.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
    max_batch: Annotated[int | None, typer.Option(help="Most items per network call (memory bound).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override one field: operator.KEY=V, "
                                                   "noise.sigma_y=V, SAMPLER.OPTION=V.")] = None,
    threads: Annotated[int, typer.Option(help="torch threads (0 = torch's default; 1 on a busy machine).")]
    = 0,
    value_range: Annotated[str | None, typer.Option(help="LO,HI: the scale of a .npy image (default 0,1), "
                                                "e.g. 0,255.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Draw posterior samples of a clean image given a degraded one; write samples, mean, std, metrics."""
    from diffinv.solve import SolveConfig
    from diffinv.solve import solve as run_solve

    config = SolveConfig(image=str(image), problem=problem, sampler=sampler, num_samples=num_samples,
                         seed=seed, steps=steps, device=device, checkpoint=checkpoint, out=str(out),
                         simulate=simulate,
                         mask=str(mask) if mask else None, kernel=str(kernel) if kernel else None,
                         resize=resize, overwrite=overwrite, max_batch=max_batch, threads=threads,
                         value_range=parse_range(value_range), arch=arch, fp16=fp16,
                         checkpointing=checkpointing, overrides=parse_set(set_))
    with diffusion_bar(quiet) as progress:
        report = run_solve(config, progress=progress)
    m = report.metrics
    quality = f"PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}, " if m["psnr"] is not None else ""
    stdout.print(f"wrote {report.out}: {m['num_samples']} samples, {quality}residual {m['residual']:.2f}, "
                 f"NFE {m['nfe_forward']}/{m['nfe_backward']}, {m['seconds']:.1f} s", highlight=False,
                 soft_wrap=True)
