r"""Training the correction u_φ: Adam on one of the losses of :mod:`.losses`, resumable.

Per step k: a batch of data x0 (``data(batch, generator)``), for ce a batch of the model's samples drawn
with replacement from the cached set, the loss, a gradient-norm clip, an Adam step. All randomness comes
from one CPU generator seeded with ``seed`` whose state is saved with the weights, so a resumed run
continues exactly (same device and thread count). The state uses the prior trainer's format
(:mod:`diffinv.training.state`: safetensors + JSON, no pickle) under ``OUT/state``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from diffinv.priors.base import DiffusionPrior
from diffinv.refine.losses import LossSpec, base_eps_error, losses
from diffinv.rng import make_generator
from diffinv.training.state import TrainState, has_state, load_state, save_state

# Options that may change between a run and its resumption (they do not change the optimisation).
RESUMABLE = ("steps", "out", "device", "threads", "evaluate", "save_every", "eval_draws", "eval_samples")
REFERENCE_ROWS = 256  # data rows on which the relative weighting's e_θ(t) is measured
DataFn = Callable[[int, torch.Generator], Tensor]  # (batch, generator) → x0 (batch, *shape)


@dataclass
class CorrectionTrainer:
    """u_φ (``net``), the frozen ``base``, the data source and (for ce) the model's samples."""

    net: nn.Module
    base: DiffusionPrior
    spec: LossSpec
    data: DataFn
    model_samples: Tensor | None = None
    batch_size: int = 32
    lr: float = 1e-3
    grad_clip: float = 1.0
    seed: int = 0
    config: dict = field(default_factory=dict)
    step: int = 0
    seconds: float = 0.0
    log: list = field(default_factory=list)
    last: dict = field(default_factory=dict)  # running means of the last ≤ 100 steps' losses

    def __post_init__(self) -> None:
        self.spec.validate()
        if self.spec.uses_ce and (self.model_samples is None or self.model_samples.shape[0] < 2):
            raise ValueError("model-samples: the ce loss needs at least 2 of the base prior's samples")
        self.generator = make_generator(self.seed)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        self.device = next(self.net.parameters()).device
        self.eps_error = None
        if self.spec.uses_mse and self.spec.weighting == "relative":  # e_θ(t), from its own fixed draws
            probe = make_generator(self.seed + 11)
            reference = self.data(REFERENCE_ROWS, probe).to(self.device)
            self.eps_error = base_eps_error(self.base, reference, self.spec.t_range, probe)

    def one_step(self) -> dict[str, float]:
        gen = self.generator
        x0 = self.data(self.batch_size, gen).to(self.device)
        x_model = None
        if self.spec.uses_ce:
            index = torch.randint(0, self.model_samples.shape[0], (self.batch_size,), generator=gen)
            x_model = self.model_samples[index].to(self.device)
        self.net.train()
        out = losses(self.net, self.base, self.spec, x0, x_model, gen, self.eps_error)
        self.optimizer.zero_grad(set_to_none=True)
        out["total"].backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip)
        self.optimizer.step()
        self.step += 1
        self.net.eval()
        return {k: float(v.detach()) for k, v in out.items()}

    def train(self, steps: int, out: str | Path | None = None, save_every: int = 0,
              progress: Callable[[int, int, dict], None] | None = None,
              stop: Callable[[], bool] | None = None) -> bool:
        """Run up to ``steps`` in total (resuming from ``out``'s state if there is one); True when done."""
        if out is not None and has_state(out):
            self.restore(load_state(out))
        recent: list[dict[str, float]] = []
        while self.step < steps:
            started = time.perf_counter()
            values = self.one_step()
            self.seconds += time.perf_counter() - started
            recent = (recent + [values])[-100:]
            mean = {k: sum(r[k] for r in recent) / len(recent) for k in values}
            self.last = mean
            if self.step % 50 == 0 or self.step == steps:
                self.log.append([self.step, *(round(mean[k], 6) for k in sorted(mean)),
                                 round(self.seconds, 1)])
            if out is not None and save_every and self.step % save_every == 0:
                save_state(out, self.state())
            if progress is not None:
                progress(self.step, steps, mean)
            if stop is not None and stop():
                if out is not None:
                    save_state(out, self.state())
                return False
        if out is not None:
            save_state(out, self.state())
        return True

    def state(self) -> TrainState:
        return TrainState(step=self.step, model=self.net.state_dict(), ema={},
                          optimizer=self.optimizer.state_dict(), rng=self.generator.get_state(),
                          config=self.config, log=self.log, seconds=self.seconds)

    def restore(self, state: TrainState) -> None:
        mine = {k: v for k, v in self.config.items() if k not in RESUMABLE}
        for key, value in mine.items():
            if key in state.config and state.config[key] != value:
                raise ValueError(f"resume: the saved run used {key}={state.config[key]!r}, not {value!r}; "
                                 "use the same options or another --out")
        self.net.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        self.generator.set_state(state.rng)
        self.step, self.seconds, self.log = state.step, state.seconds, list(state.log)
