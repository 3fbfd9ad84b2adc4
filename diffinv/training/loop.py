r"""Training loop of an ε-prediction diffusion prior (DDPM, Ho et al. 2020, Alg. 1).

Algorithm (one optimiser step k):
    1. draw a batch x0 (B, C, S, S) in [−1, 1] (random items, random crop if larger than S),
    2. t ~ U{0, …, T−1}, ε ~ N(0, I), x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε   (VP linear schedule),
    3. L = ‖ε_θ(x_t, t) − ε‖² (mean), AdamW step with lr_k = lr · min(1, (k+1)/warmup), grad-norm clip,
    4. EMA update of the weights; every ``save_every`` steps a resumable state, every
       ``sample_every`` steps a grid of EMA samples (DDPM, η = 1, fixed seed), at the end the
       prior (EMA weights) as safetensors + model card.
All draws come from one CPU ``torch.Generator`` seeded with ``seed``, saved in the state, so a
resumed run is bit-identical to an uninterrupted one (same device and thread count). Mixed
precision (autocast) only on CUDA.

Notation: ``alpha_bar`` → ᾱ_t, ``eps`` → ε, ``ema`` → θ̄.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from diffinv.data import batch_to_network, load_dataset
from diffinv.nn.unet import UNet, init_weights
from diffinv.rng import make_generator
from diffinv.schedules import linear_schedule
from diffinv.training.config import TrainConfig
from diffinv.training.ema import EMA
from diffinv.training.state import TrainState, has_state, load_state, save_state

Progress = Callable[[int, int, float], None]  # (step, total, loss)
Stop = Callable[[], bool]  # polled after every step; True → save the state and return


@dataclass
class TrainResult:
    """Where the run ended: steps done, mean loss of the last 100 steps, seconds, output folder."""

    step: int
    loss: float
    seconds: float
    out: Path
    resumed_from: int


def lr_at(config: TrainConfig, step: int) -> float:
    """Linear warm-up to ``lr`` over ``warmup`` steps, then constant."""
    return config.lr * min(1.0, (step + 1) / config.warmup) if config.warmup else config.lr


def amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: None on CPU or with amp='off'."""
    if device.type != "cuda" or config.amp == "off":
        return None
    if config.amp == "bf16" or (config.amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def training_step(net, batch, t, eps, alpha_bar, autocast_dtype):
    """L = mean ‖ε_θ(√ᾱ_t x0 + √(1−ᾱ_t) ε, t) − ε‖²; batch, eps (B, C, S, S), t (B,)."""
    ab = alpha_bar[t].view(-1, 1, 1, 1)
    x_t = ab.sqrt() * batch + (1 - ab).sqrt() * eps
    ctx = torch.autocast(batch.device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
    with ctx:
        pred = net(x_t, t)
    return F.mse_loss(pred.float(), eps)


class Trainer:
    """Holds the model, EMA, optimiser, scaler, generator and data of one run."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config.validate()
        self.device = torch.device(config.device if config.device != "auto" else
                                   ("cuda" if torch.cuda.is_available() else "cpu"))
        self.data = load_dataset(config.data, config.image_size, config.channels)
        self.schedule = linear_schedule(config.num_timesteps)
        self.alpha_bar = self.schedule.alpha_bar.to(torch.float32).to(self.device)
        self.generator = make_generator(config.seed)
        self.net = init_weights(UNet(config.unet()), self.generator).to(self.device)
        self.ema = EMA(self.net, config.ema_decay)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=config.lr,
                                           weight_decay=config.weight_decay)
        self.autocast = amp_dtype(config, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast == torch.float16 else None
        self.step, self.seconds, self.log = 0, 0.0, []

    def restore(self, state: TrainState) -> None:
        self.net.load_state_dict(state.model)
        self.ema.load_state_dict(state.ema)
        self.optimizer.load_state_dict(state.optimizer)
        self.generator.set_state(state.rng)
        if self.scaler is not None and state.scaler:
            self.scaler.load_state_dict(state.scaler)
        self.step, self.seconds, self.log = state.step, state.seconds, state.log

    def state(self) -> TrainState:
        return TrainState(step=self.step, model=self.net.state_dict(), ema=self.ema.state_dict(),
                          optimizer=self.optimizer.state_dict(), rng=self.generator.get_state(),
                          config=self.config.to_dict(), log=self.log, seconds=self.seconds,
                          scaler=self.scaler.state_dict() if self.scaler is not None else None)

    def one_step(self) -> float:
        cfg, gen = self.config, self.generator
        index = torch.randint(0, self.data.train.shape[0], (cfg.batch_size,), generator=gen)
        batch = batch_to_network(self.data.train, index, cfg.image_size, gen, cfg.flip).to(self.device)
        t = torch.randint(0, cfg.num_timesteps, (cfg.batch_size,), generator=gen).to(self.device)
        eps = torch.randn(batch.shape, generator=gen).to(self.device)
        self.net.train()
        loss = training_step(self.net, batch, t, eps, self.alpha_bar, self.autocast)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(cfg, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.ema.update(self.net, self.step)
        self.step += 1
        return float(loss.detach())

    def ema_network(self) -> UNet:
        net = UNet(self.config.unet()).to(self.device)
        net.load_state_dict(self.ema.state_dict())
        return net.eval()

    def save_grid(self) -> Path:
        from diffinv.evaluation.grid import save_grid
        from diffinv.priors.network import NetworkPrior
        from diffinv.sampling import sample_prior

        cfg = self.config
        shape = (cfg.channels, cfg.image_size, cfg.image_size)
        prior = NetworkPrior(self.ema_network(), self.schedule, shape)
        x = sample_prior(prior, cfg.grid_size, num_steps=cfg.grid_steps, eta=1.0,
                         generator=make_generator(cfg.seed + 1, self.device), device=self.device)
        folder = Path(cfg.out) / "samples"
        save_grid(x, folder / "latest.png", scale=2)
        return save_grid(x, folder / f"step_{self.step:07d}.png", scale=2)


def train(config: TrainConfig, progress: Progress | None = None, stop: Stop | None = None) -> TrainResult:
    """Train (or resume from ``config.out``/state) up to ``config.steps``; export the prior at the end.

    ``stop()`` (e.g. set by a signal handler) ends the run early with a saved state and no export.
    """
    previous_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return run(Trainer(config), progress, stop)
    finally:
        torch.set_num_threads(previous_threads)


def run(trainer: Trainer, progress: Progress | None, stop: Stop | None) -> TrainResult:
    """The loop of :func:`train` (resume, steps, states, grids, export)."""
    config = trainer.config
    if has_state(config.out):
        state = load_state(config.out)
        problem = config.mismatch(state.config)
        if problem:
            raise ValueError(f"resume: {config.out} was trained with a different {problem}; "
                             "use the same options or another --out")
        trainer.restore(state)
    start_step, recent = trainer.step, []
    while trainer.step < config.steps:
        started = time.perf_counter()
        loss = trainer.one_step()
        trainer.seconds += time.perf_counter() - started
        recent = (recent + [loss])[-100:]
        if trainer.step % 50 == 0 or trainer.step == config.steps:
            trainer.log.append([trainer.step, round(sum(recent) / len(recent), 6), round(trainer.seconds, 1)])
        if config.save_every and trainer.step % config.save_every == 0:
            save_state(config.out, trainer.state())
        if config.sample_every and trainer.step % config.sample_every == 0:
            trainer.save_grid()
        if progress is not None:
            progress(trainer.step, config.steps, sum(recent) / len(recent))
        if stop is not None and stop():
            save_state(config.out, trainer.state())
            return TrainResult(step=trainer.step, loss=sum(recent) / len(recent), seconds=trainer.seconds,
                               out=Path(config.out), resumed_from=start_step)
    if trainer.step > start_step or not (Path(config.out) / "model.safetensors").is_file():
        save_state(config.out, trainer.state())
        from diffinv.training.export import export_prior
        export_prior(trainer)
    mean_loss = sum(recent) / len(recent) if recent else math.nan
    return TrainResult(step=trainer.step, loss=mean_loss, seconds=trainer.seconds, out=Path(config.out),
                       resumed_from=start_step)
