"""``diffinv solve``: posterior samples of one image (maps options onto diffinv.solve.SolveConfig)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cli.common import one_line_errors, stderr, stdout
from cli.options import (
    ArchOpt,
    CheckpointingOpt,
    CheckpointOpt,
    DeviceOpt,
    FitMethodOpt,
    FitOpt,
    FitRestartOpt,
    FitSamplesOpt,
    FitSlotsOpt,
    FitStartsOpt,
    FitStepsOpt,
    Fp16Opt,
    KernelOpt,
    MaskOpt,
    MaxBatchOpt,
    NumSamplesOpt,
    ProblemOpt,
    QuietOpt,
    ResizeOpt,
    SamplerOpt,
    SetOpt,
    StepsOpt,
    ThreadsOpt,
    ValueRangeOpt,
    job_config,
)


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
    problem: ProblemOpt = "sr4",
    sampler: SamplerOpt = "dcps",
    num_samples: NumSamplesOpt = 4,
    seed: Annotated[int, typer.Option(help="Seed of the sampler (and of the simulated noise).")] = 0,
    steps: StepsOpt = None,
    device: DeviceOpt = "auto",
    checkpoint: CheckpointOpt = None,
    arch: ArchOpt = None,
    fp16: Fp16Opt = False,
    checkpointing: CheckpointingOpt = False,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results"),
    simulate: Annotated[bool, typer.Option(help="IMAGE is the truth: degrade it with the problem first.")]
    = False,
    mask: MaskOpt = None,
    kernel: KernelOpt = None,
    resize: ResizeOpt = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
    max_batch: MaxBatchOpt = None,
    set_: SetOpt = None,
    fit: FitOpt = None,
    fit_method: FitMethodOpt = "single",
    fit_steps: FitStepsOpt = 40,
    fit_samples: FitSamplesOpt = 8,
    fit_slots: FitSlotsOpt = 1,
    fit_restart: FitRestartOpt = 0.25,
    fit_starts: FitStartsOpt = 1,
    threads: ThreadsOpt = 0,
    value_range: ValueRangeOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Draw posterior samples of a clean image given a degraded one; write samples, mean, std, metrics."""
    from diffinv.solve import solve as run_solve

    config = job_config(str(image), str(out), mask=mask, kernel=kernel, value_range=value_range, set_=set_,
                        fit=fit, fit_method=fit_method, fit_steps=fit_steps, fit_samples=fit_samples,
                        fit_slots=fit_slots, fit_restart=fit_restart, fit_starts=fit_starts,
                        problem=problem, sampler=sampler, num_samples=num_samples, seed=seed, steps=steps,
                        device=device, checkpoint=checkpoint, simulate=simulate, resize=resize,
                        overwrite=overwrite, max_batch=max_batch, threads=threads, arch=arch, fp16=fp16,
                        checkpointing=checkpointing)
    with diffusion_bar(quiet) as progress:
        report = run_solve(config, progress=progress)
    m = report.metrics
    quality = f"PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}, " if m["psnr"] is not None else ""
    stdout.print(f"wrote {report.out}: {m['num_samples']} samples, {quality}residual {m['residual']:.2f}, "
                 f"NFE {m['nfe_forward']}/{m['nfe_backward']}, {m['seconds']:.1f} s", highlight=False,
                 soft_wrap=True)
    if m.get("fit"):
        fit = m["fit"]
        values = ", ".join(f"{k} = {v:.4g} ± {fit['se'][k]:.2g}" for k, v in fit["values"].items())
        cost = fit["cost_vs_solve"]
        stdout.print(f"fitted ({fit['method']} loop, {len(fit['trace'])} updates, ×{cost:.1f} the cost of a "
                     f"plain solve): {values}", highlight=False, soft_wrap=True)
    for warning in m.get("warnings", []):
        stderr.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
