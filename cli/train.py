"""``diffinv train`` and ``diffinv sample``: train an embedded prior, draw unconditional samples."""

from __future__ import annotations

import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cli.common import one_line_errors, stderr, stdout


@contextmanager
def stop_on_signals():
    """SIGINT/SIGTERM set a flag (the loop saves its state and returns) instead of killing the run."""
    flag = {"stop": False}
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: flag.__setitem__("stop", True))
    try:
        yield lambda: flag["stop"]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def loss_bar(quiet: bool):
    """A rich bar on stderr showing step/total, loss, elapsed time and ETA; yields the loop callback."""
    if quiet:
        yield None
        return
    columns = [TextColumn("train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TextColumn("eta"),
               TimeRemainingColumn()]
    progress = Progress(*columns, console=stderr)
    task = progress.add_task("train", total=None, loss="-")
    state = {"started": False}

    def update(step: int, total: int, loss: float) -> None:
        if not state["started"]:  # from the first step on: an error while loading leaves only its own line
            progress.start()
            state["started"] = True
        progress.update(task, completed=step, total=total, loss=f"{loss:.4f}")

    try:
        yield update
    finally:
        if state["started"]:
            progress.stop()


@one_line_errors
def train(
    data: Annotated[str, typer.Option(help="fashion-mnist, emoji, or a folder of images.")],
    out: Annotated[Path, typer.Option(help="Checkpoint folder, e.g. checkpoints/fashion32 (resumes if it "
                                      "holds a state).")],
    image_size: Annotated[int, typer.Option(help="Image size S (S×S).")] = 32,
    channels: Annotated[int, typer.Option(help="1 (grayscale) or 3 (RGB).")] = 1,
    steps: Annotated[int, typer.Option(help="Total optimiser steps.")] = 10000,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 64,
    lr: Annotated[float, typer.Option(help="AdamW peak learning rate.")] = 1e-3,
    warmup: Annotated[int, typer.Option(help="Linear warm-up steps.")] = 200,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.0,
    ema_decay: Annotated[float, typer.Option(help="EMA decay of the weights.")] = 0.999,
    grad_clip: Annotated[float, typer.Option(help="Gradient-norm clip (0 = off).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of all training randomness.")] = 0,
    num_timesteps: Annotated[int, typer.Option(help="T of the linear schedule.")] = 1000,
    base_channels: Annotated[int, typer.Option(help="UNet width.")] = 32,
    channel_mults: Annotated[str, typer.Option(help="Width multipliers per level.")] = "1,2,2",
    num_res_blocks: Annotated[int, typer.Option(help="Residual blocks per level.")] = 1,
    attention: Annotated[bool, typer.Option(help="Self-attention at the lowest resolution.")] = True,
    dropout: Annotated[float, typer.Option(help="Dropout in residual blocks.")] = 0.0,
    flip: Annotated[bool, typer.Option(help="Random left-right flips.")] = False,
    amp: Annotated[str, typer.Option(help="auto, bf16, fp16 or off (CUDA only).")] = "auto",
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    threads: Annotated[int, typer.Option(help="torch threads (0 = default).")] = 1,
    save_every: Annotated[int, typer.Option(help="Steps between resumable states.")] = 200,
    sample_every: Annotated[int, typer.Option(help="Steps between sample grids (0 = never).")] = 1000,
    grid_size: Annotated[int, typer.Option(help="Samples per grid.")] = 64,
    grid_steps: Annotated[int, typer.Option(help="DDIM steps for grids.")] = 50,
    evaluate: Annotated[bool, typer.Option(help="Compute the model-card figures at the end.")] = True,
    eval_samples: Annotated[int, typer.Option(help="Samples for the card figures.")] = 500,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train a diffusion prior (ε-prediction UNet, VP linear schedule), resumably; save safetensors + card."""
    from diffinv.training import TrainConfig
    from diffinv.training import train as run_training

    mults = tuple(int(m) for m in channel_mults.split(",") if m.strip())
    config = TrainConfig(data=data, image_size=image_size, channels=channels, steps=steps, out=str(out),
                         batch_size=batch_size, lr=lr, warmup=warmup, weight_decay=weight_decay,
                         ema_decay=ema_decay, grad_clip=grad_clip, seed=seed, num_timesteps=num_timesteps,
                         base_channels=base_channels, channel_mults=mults, num_res_blocks=num_res_blocks,
                         attention=attention, dropout=dropout, flip=flip, amp=amp, device=device,
                         threads=threads, save_every=save_every, sample_every=sample_every,
                         grid_size=grid_size, grid_steps=grid_steps, evaluate=evaluate,
                         eval_samples=eval_samples).validate()
    with stop_on_signals() as stop, loss_bar(quiet) as progress:
        result = run_training(config, progress=progress, stop=stop)
    if result.step < steps:
        stdout.print(f"stopped at step {result.step}/{steps}; state saved in {out}/state — run the same "
                     "command to resume", highlight=False)
    else:
        trained = result.step > result.resumed_from
        loss = f" (loss {result.loss:.4f})" if trained else ", nothing left to train"
        stdout.print(f"trained {result.step} steps{loss}; prior in {out}", highlight=False)


@one_line_errors
def sample(
    checkpoint: Annotated[str, typer.Option(help="Checkpoint NAME (checkpoints/NAME) or folder.")],
    out: Annotated[Path, typer.Option(help="PNG grid to write.")] = Path("grid.png"),
    n: Annotated[int, typer.Option("-n", "--num-samples", help="Number of samples.")] = 64,
    steps: Annotated[int, typer.Option(help="Sampling steps (uniform grid).")] = 100,
    eta: Annotated[float, typer.Option(help="DDIM η: 1 = DDPM (default), 0 = deterministic DDIM.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the sampler.")] = 0,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    batch_size: Annotated[int, typer.Option(help="Most samples per network call.")] = 256,
    scale: Annotated[int, typer.Option(help="Pixel zoom of the PNG.")] = 2,
    npy: Annotated[Path | None, typer.Option(help="Also save the samples (n, C, S, S) in [-1, 1].")] = None,
) -> None:
    """Unconditional DDPM/DDIM samples from a saved prior, as a PNG grid."""
    from diffinv.evaluation.sample import SampleConfig, sample_checkpoint

    config = SampleConfig(checkpoint=checkpoint, num_samples=n, out=str(out), steps=steps, eta=eta, seed=seed,
                          device=device, batch_size=batch_size, scale=scale, npy=str(npy) if npy else None)
    path = sample_checkpoint(config)
    stdout.print(f"wrote {path}", highlight=False)
