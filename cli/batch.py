"""``diffinv batch``: a sampler over a folder of observations (options → diffinv.batch.BatchConfig)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import fail, one_line_errors, progress_bar, stdout
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

SUMMARY_ROWS = (("psnr", "PSNR (dB)", "{:.2f}"), ("ssim", "SSIM", "{:.3f}"),
                ("residual", "residual", "{:.2f}"), ("coverage", "coverage", "{:.3f}"),
                ("seconds", "seconds / item", "{:.2f}"),
                ("nfe_forward", "NFE forward", "{:.0f}"), ("nfe_backward", "NFE backward", "{:.0f}"))


@one_line_errors
def batch(
    inputs: Annotated[Path, typer.Argument(help="Folder of observations (PNG / JPEG / .npy); with --simulate "
                                           "of ground truths.")],
    out: Annotated[Path, typer.Option(help="Run folder: OUT/NAME/ per item, manifest.jsonl, failures.jsonl, "
                                      "summary.json/csv, config.json.")],
    problem: ProblemOpt = "sr4",
    sampler: SamplerOpt = "dcps",
    num_samples: NumSamplesOpt = 4,
    seed: Annotated[int, typer.Option(help="Base seed; item NAME runs with a seed derived from it and NAME.")]
    = 0,
    steps: StepsOpt = None,
    device: DeviceOpt = "auto",
    checkpoint: CheckpointOpt = None,
    arch: ArchOpt = None,
    fp16: Fp16Opt = False,
    checkpointing: CheckpointingOpt = False,
    simulate: Annotated[bool, typer.Option(help="The files are truths: degrade each with the problem first "
                                           "(PSNR / SSIM in the summary).")] = False,
    mask: MaskOpt = None,
    kernel: KernelOpt = None,
    resize: ResizeOpt = False,
    recursive: Annotated[bool, typer.Option(help="Include sub-folders (item names keep the path).")] = False,
    glob: Annotated[str | None, typer.Option(help="Only files whose relative path matches, e.g. '*.png'.")]
    = None,
    items_per_call: Annotated[int, typer.Option(help="Items sampled together in each network call.")] = 1,
    max_batch: MaxBatchOpt = None,
    shard: Annotated[str | None, typer.Option(help="K/N: run the K-th of N parts (default: "
                                              "SLURM_ARRAY_TASK_ID of a job array).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a diffinv run of another configuration in OUT.")]
    = False,
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
    """Run a sampler over every image of a folder: exactly once, resumable, batched, on many GPUs."""
    import os

    from diffinv.batch import BatchConfig, list_inputs, run_batch
    from diffinv.distributed import partition
    from diffinv.outputs import absolute

    job = job_config("", str(out), mask=mask, kernel=kernel, value_range=value_range, set_=set_,
                     fit=fit, fit_method=fit_method, fit_steps=fit_steps, fit_samples=fit_samples,
                     fit_slots=fit_slots, fit_restart=fit_restart, fit_starts=fit_starts,
                     problem=problem, sampler=sampler, num_samples=num_samples, seed=seed, steps=steps,
                     device=device, checkpoint=checkpoint, simulate=simulate, resize=resize,
                     max_batch=max_batch, threads=threads, arch=arch, fp16=fp16, checkpointing=checkpointing)
    config = BatchConfig(inputs=str(inputs), out=str(out), job=job, recursive=recursive, glob=glob,
                         items_per_call=items_per_call, shard=shard, overwrite=overwrite)
    part = partition(shard, os.environ)
    names = [i.name for i in list_inputs(inputs, recursive, glob, exclude=absolute(out))]
    with progress_bar(len(part.select(names)), quiet or part.rank != 0) as advance:
        report = run_batch(config, progress=advance)
    stdout.print(f"{report.out}: {len(report.assigned)} of {len(report.names)} items here"
                 + (f" (part {part.index + 1}/{part.count})" if part.count > 1 else "")
                 + f": {len(report.finished)} done, {len(report.skipped) + len(report.recovered)} already "
                 f"finished, {len(report.failed)} failed", highlight=False, soft_wrap=True)
    if report.summary is not None:
        stdout.print(summary_table(report.summary), soft_wrap=False)
    if report.failed:
        first = next(iter(report.failed.items()))
        raise fail(f"{len(report.failed)} item(s) failed (first: {first[0]}: {first[1]}); see "
                   f"{report.out / 'failures.jsonl'}", 1)


def summary_table(summary: dict) -> Table:
    """The aggregate of summary.json as a table: mean ± sd, min, max over the finished items."""
    table = Table(title=f"{summary['finished']} of {summary['items']} items finished, {summary['failed']} "
                        "failed")
    for col in ("metric", "mean ± sd", "min", "max", "n"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for key, label, fmt in SUMMARY_ROWS:
        row = summary["metrics"].get(key)
        if row is not None:
            table.add_row(label, f"{fmt.format(row['mean'])} ± {fmt.format(row['sd'])}",
                          fmt.format(row["min"]), fmt.format(row["max"]), str(row["n"]))
    return table
