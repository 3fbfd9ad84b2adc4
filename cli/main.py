"""The ``diffinv`` Typer app: version, operators, samplers, problems, compare, solve, batch, train, sample,
refine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import one_line_errors, parse_overrides, progress_bar, split_names, stderr, stdout
from diffinv import __version__

app = typer.Typer(name="diffinv", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False,
                  help="Posterior sampling for inverse problems with diffusion priors.")


@app.command()
def version() -> None:
    """Print the diffinv version."""
    stdout.print(f"diffinv {__version__}", highlight=False)


@app.command()
@one_line_errors
def operators() -> None:
    """List the registered operators, one line each."""
    from diffinv.operators.registry import OPERATORS, summary

    for name, cls in OPERATORS.items():
        stdout.print(f"{name:<16} {summary(cls)}", highlight=False, markup=False, soft_wrap=True)


@app.command()
@one_line_errors
def samplers() -> None:
    """List the registered samplers, one line each."""
    from diffinv.operators.registry import summary
    from diffinv.samplers.registry import SAMPLERS

    for name, cls in SAMPLERS.items():
        stdout.print(f"{name:<10} {summary(cls)}", highlight=False, markup=False, soft_wrap=True)


@app.command()
@one_line_errors
def problems() -> None:
    """List the shipped problem presets (problems/*.yaml), one line each."""
    from diffinv.problems import load_problem, preset_names

    for name in preset_names():
        p = load_problem(name)
        stdout.print(f"{name:<16} {p.description} (sigma_y {p.sigma_y:g})", highlight=False, markup=False,
                     soft_wrap=True)


@app.command(epilog="Example: diffinv compare --dx 10 --seeds 20 --samplers exact,mcgdiff,dps --csv out.csv")
@one_line_errors
def compare(
    dx: Annotated[int, typer.Option(help="Dimension of x (even).")] = 10,
    dy: Annotated[int, typer.Option(help="Dimension of y.")] = 1,
    seeds: Annotated[str, typer.Option(help="A count (20 → 0..19), a range (5-9) or a list (3,7).")] = "1",
    samplers: Annotated[str, typer.Option(help="Comma-separated sampler names (default: all).")] = "",
    num_samples: Annotated[int, typer.Option(help="Samples per sampler and seed.")] = 2000,
    steps: Annotated[int | None, typer.Option(help="Diffusion steps for samplers that have them.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Sampler option, e.g. dcps.lr=0.5.")]
    = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32 or float64.")] = "float64",
    problem: Annotated[Path | None, typer.Option(help="Your own problem (.npz: means, weights, cov, A, y, "
                                                 "sigma_y) instead of the benchmark.", exists=True,
                                                 dir_okay=False)] = None,
    max_batch: Annotated[int | None, typer.Option(help="Most items per prior evaluation.")] = None,
    num_directions: Annotated[int, typer.Option(help="Sliced-Wasserstein directions.")] = 100,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write records + summary as JSON.")] = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Write one CSV row per sampler and seed.")]
    = None,
    figure: Annotated[Path | None, typer.Option(help="Write a PNG of 2-D projections.")] = None,
    save_samples: Annotated[Path | None, typer.Option(help="Write <sampler>.npz files into this folder.")]
    = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Compare samplers on Gaussian-mixture problems with exact posteriors (25-component benchmark)."""
    from diffinv.compare import (
        CompareConfig,
        check_outputs,
        parse_seeds,
        run_compare,
        summarise,
        write_outputs,
    )

    config = CompareConfig(
        dx=dx, dy=dy, seeds=parse_seeds(seeds), samplers=split_names(samplers), num_samples=num_samples,
        steps=steps, overrides=parse_overrides(set_), device=device, dtype=dtype,
        problem=str(problem) if problem else None, num_directions=num_directions, max_batch=max_batch,
        save_samples=str(save_samples) if save_samples else None)
    config.validate()
    check_outputs(json_path=str(json_path) if json_path else None,
                  csv_path=str(csv_path) if csv_path else None,
                  figure_path=str(figure) if figure else None,
                  save_samples=str(save_samples) if save_samples else None)
    with progress_bar(len(config.seeds) * len(config.sampler_names()), quiet) as advance:
        report = run_compare(config, progress=advance)
    write_outputs(report, json_path=str(json_path) if json_path else None,
                  csv_path=str(csv_path) if csv_path else None,
                  figure_path=str(figure) if figure else None, config=config)
    table = Table(title=f"GMM benchmark: dx={report.reference.shape[1]}, dy={report.records[0]['dy']}, "
                        f"{len(config.seeds)} seed(s), {num_samples} samples")
    for col in ("sampler", "SW median", "SW mean ± sd", "Δw (L1)", "beats prior", "NFE fwd/bwd per sample",
                "s / 1000 samples", "overhead"):
        table.add_column(col, justify="right" if col != "sampler" else "left")
    for row in summarise(report.records):
        table.add_row(row["sampler"], f"{row['sw_median']:.3f}", f"{row['sw_mean']:.3f} ± {row['sw_sd']:.3f}",
                      f"{row['weight_error_mean']:.3f}", f"{row['beats_prior']}/{row['prior_runs']}",
                      f"{row['nfe_forward_per_sample']:.0f} / {row['nfe_backward_per_sample']:.0f}",
                      f"{row['seconds_per_1000']:.2f}",
                      "-" if row["overhead"] != row["overhead"] else f"{row['overhead']:.2f}")
    stdout.print(table, soft_wrap=False)  # a table is laid out to the width (title centred)
    warned: dict[str, list[str]] = {}
    for record in report.records:
        if record.get("warnings"):
            warned.setdefault(record["sampler"], []).append(record["warnings"][0])
    for name, messages in warned.items():
        runs = sum(r["sampler"] == name for r in report.records)
        stderr.print(f"warning: on {len(messages)} of {runs} seed(s): {messages[0]}", highlight=False,
                     markup=False, soft_wrap=True)


from cli.batch import batch  # noqa: E402
from cli.refine import refine  # noqa: E402
from cli.solve import solve  # noqa: E402
from cli.train import sample, train  # noqa: E402

app.command(epilog="Example: diffinv solve photo.png --problem sr4 --sampler dcps --out results/")(solve)
app.command(epilog="Example: diffinv batch observations/ --problem sr4 --sampler mcgdiff --out runs/")(batch)
app.command(epilog="Example: diffinv train --data fashion-mnist --out checkpoints/fashion32")(train)
app.command(epilog="Example: diffinv sample --checkpoint fashion32 -n 64 --out grid.png")(sample)
app.command(epilog="Example: diffinv refine --checkpoint fashion32 --data fashion-mnist --loss mse "
                   "--t-range 250,999 --out checkpoints/fashion32-dg")(refine)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
