"""``diffinv refine``: learn a small correction for a trained prior (discriminator guidance); save it."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cli.common import one_line_errors, stderr, stdout
from cli.train import stop_on_signals


def parse_t_range(text: str | None) -> tuple[int, int] | None:
    """'250,999' → (250, 999); None → None (every timestep)."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        lo, hi = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"t-range: expected A,B (two integers, e.g. 250,999), got {text!r}") from None
    return lo, hi


@contextmanager
def stage_bar(quiet: bool):
    """One rich bar on stderr per stage (samples, train, evaluate); yields the pipeline's callback."""
    if quiet:
        yield None
        return
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"),
               TimeRemainingColumn()]
    progress = Progress(*columns, console=stderr)
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int, info: dict) -> None:
        if not tasks:
            progress.start()
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total, info="")
        text = " ".join(f"{k} {v:.4f}" for k, v in sorted(info.items()))
        progress.update(tasks[stage], completed=done, total=total, info=text)

    try:
        yield update
    finally:
        if tasks:
            progress.stop()


@one_line_errors
def refine(
    checkpoint: Annotated[str, typer.Option(help="Base prior NAME or path, e.g. fashion32.")],
    data: Annotated[str, typer.Option(help="The base's training data: fashion-mnist, emoji or a folder.")],
    out: Annotated[Path, typer.Option(help="Folder of the refined prior, e.g. checkpoints/fashion32-dg "
                                      "(resumes an interrupted run).")],
    loss: Annotated[str, typer.Option(help="mse (denoising score matching on the refined score), ce "
                                      "(discriminator cross-entropy) or mse+ce.")] = "mse",
    gamma: Annotated[float, typer.Option(help="Weight of the cross-entropy in mse+ce.")] = 0.1,
    weighting: Annotated[str, typer.Option(help="Time weighting of the mse loss: relative (each timestep's "
                                           "error over the base's) or eps (the base's own "
                                           "loss).")] = "relative",
    t_range: Annotated[str | None, typer.Option(help="A,B: timesteps where the correction is trained and "
                                                "applied (default: all).")] = None,
    steps: Annotated[int, typer.Option(help="Adam steps.")] = 2000,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 32,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    width: Annotated[int, typer.Option(help="Channels of the correction network.")] = 8,
    model_samples: Annotated[int, typer.Option(help="Base samples to cache (for ce and the card).")] = 1500,
    sample_steps: Annotated[int, typer.Option(help="DDPM steps of the cached and card samples.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of all randomness.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    threads: Annotated[int, typer.Option(help="torch threads (0 = default).")] = 1,
    save_every: Annotated[int, typer.Option(help="Steps between resumable states.")] = 200,
    evaluate: Annotated[bool, typer.Option(help="Compute the card figures (base and refined) at the "
                                           "end.")] = True,
    eval_draws: Annotated[int, typer.Option(help="Independent sample draws for the Fréchet figure.")] = 3,
    eval_samples: Annotated[int, typer.Option(help="Samples per draw.")] = 500,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Refine a prior with a learned correction c = ∇ log p_t/p̃_t; save it beside the base, usable by name."""
    from diffinv.refine.run import RefineConfig
    from diffinv.refine.run import refine as run_refine

    config = RefineConfig(checkpoint=checkpoint, data=data, out=str(out), loss=loss, gamma=gamma,
                          weighting=weighting,
                          t_range=parse_t_range(t_range), steps=steps, batch_size=batch_size, lr=lr,
                          width=width,
                          model_samples=model_samples, sample_steps=sample_steps, seed=seed, device=device,
                          threads=threads, save_every=save_every, evaluate=evaluate, eval_draws=eval_draws,
                          eval_samples=eval_samples).validate()
    with stop_on_signals() as stop, stage_bar(quiet) as progress:
        result = run_refine(config, progress=progress, stop=stop)
    if result.step < steps:
        stdout.print(f"stopped at step {result.step}/{steps}; state in {out} — run the same command to "
                     "resume",
                     highlight=False)
        return
    message = f"refined prior in {out} ({result.step} steps"
    if result.losses:
        message += f", loss {result.losses.get('total', float('nan')):.4f}"
    stdout.print(message + ")", highlight=False)
    if result.figures:
        fd = result.figures["frechet"]
        mse = result.figures["denoising_mse"]
        stdout.print(f"Fréchet to test: base {fd['base_mean']} ± {fd['base_sd']}, "
                     f"refined {fd['refined_mean']} ± "
                     f"{fd['refined_sd']} ({fd['draws']} draws of {fd['n']})", highlight=False)
        for t, b, r in zip(mse["timesteps"], mse["base"], mse["refined"], strict=True):
            stdout.print(f"denoising MSE t={t}: base {b:.5f}, refined {r:.5f}", highlight=False)
