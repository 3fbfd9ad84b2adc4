r"""A Feynman–Kac engine: one generic particle-filter loop, batched over F filters × N particles.

A model (:class:`FeynmanKacModel`) states the law of the particles; the engine does the rest
(in the manner of Chopin & Papaspiliopoulos 2020, *An Introduction to Sequential Monte Carlo*, and
its ``particles`` package, and of blackjax's SMC kernels). The model is in the auxiliary form

    M_0, G_0(x_0);   for k = 0 … K−1:   η_k(x)  (look-ahead),   x' ~ M_k(x, ·),   G_k(x, x')

with tensors (F, N, …) for the particles' fields and (F, N) float64 for log-potentials. One step k:

    1. look-ahead (optional):  log W ← log W + log η_k(x),   log Ẑ += log Σ_j W_j η_k(x_j)
    2. resample (if any weight changed since the last resampling, and the policy says so):
       ancestors a ~ scheme(W), every field of the state ← field[a], log W ← −log N
    3. move:  x' ~ M_k(x, ·),   log W ← log W + log G_k(x, x'),   log Ẑ += log Σ_j W_j G_k

where W are normalised weights and each "log Ẑ +=" is the normaliser of the reweighting, so
Ẑ = Π (those normalisers) is the standard unbiased estimate of the Feynman–Kac normalising constant
(e.g. the evidence p(y) when the potentials telescope to the likelihood). The initial potential G_0
enters the same way. Policy (:class:`Resampling`): ``scheme`` ∈ multinomial / systematic / stratified
/ residual (:mod:`diffinv.smc.resampling`), resample when ESS < ``ess_threshold`` · N (a threshold ≥ 1
resamples at every weighted step). A guided (e.g. fully adapted auxiliary) filter puts its
predictive weight in η and returns no G; a bootstrap or twisted filter returns G and no η.

Everything stays on the particles' device: ESS, the resampling decision (``torch.where``, not an
``if``), log Ẑ, the ancestry and a "non-finite weights" flag are device tensors, stacked at the end;
nothing in the loop converts a tensor to a Python value. A filter whose weights all vanished is
reported by :meth:`SMCResult.check` after the run (the step at which it first happened), not in the
loop. :meth:`FeynmanKac.steps` is an iterator over the states after each step (for progress, step
timing or inspection); :meth:`FeynmanKac.run` drains it.

Shapes: F filters, N particles, K steps; ``log_w`` (F, N) float64; ``ess`` (F, K); ``resampled``
(F, K) bool; ``ancestors`` (F, K, N) long (identity where a filter did not resample); ``log_z`` (F,).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from diffinv.smc.resampling import RESAMPLING, resample
from diffinv.smc.weights import clean, ess

State = dict[str, Tensor]
"""The particles' fields, each (F, N, …); resampling gathers every field along dimension 1."""


class FeynmanKacModel(Protocol):
    """What the engine asks of a model (see the module docstring for the loop)."""

    name: str
    num_steps: int

    def initial(self, num_filters: int, num_particles: int,
                generator: torch.Generator | None) -> tuple[State, Tensor | None]:
        """Particles x_0 ~ M_0 and log G_0(x_0) (F, N) float64, or None for a unit potential."""
        ...

    def lookahead(self, k: int, state: State) -> tuple[State, Tensor | None]:
        """The state to resample and log η_k (F, N), or None (no look-ahead weight at step k)."""
        ...

    def move(self, k: int, state: State, generator: torch.Generator | None) -> tuple[State, Tensor | None]:
        """x' ~ M_k(x, ·) and log G_k(x, x') (F, N), or None (unit potential)."""
        ...


@dataclass(frozen=True)
class Resampling:
    """When and how to resample: ``scheme`` and the relative ESS threshold (≥ 1: every weighted step)."""

    scheme: Literal["multinomial", "systematic", "stratified", "residual"] = "systematic"
    ess_threshold: float = 1.0

    def __post_init__(self) -> None:
        if self.scheme not in RESAMPLING:
            raise ValueError(f"resampling: expected one of {', '.join(RESAMPLING)}, got {self.scheme!r}")
        if not self.ess_threshold > 0:
            raise ValueError(f"ess_threshold: expected a value > 0, got {self.ess_threshold}")

    @property
    def always(self) -> bool:
        return self.ess_threshold >= 1.0


@dataclass
class SMCState:
    """The filters after ``step`` steps (step = 0: after the initialisation)."""

    step: int
    state: State
    log_w: Tensor  # (F, N) float64, normalised
    log_z: Tensor  # (F,) float64
    ess: Tensor  # (F,) at the last resampling decision (N after the initialisation)
    resampled: Tensor  # (F,) bool


@dataclass
class SMCResult:
    """The final weighted particles and the filters' history (all device tensors)."""

    state: State
    log_w: Tensor
    log_z: Tensor
    ess: Tensor
    resampled: Tensor
    ancestors: Tensor
    failed_at: Tensor  # (F,) long: first step whose weights all vanished (−1: none)
    extra: dict = field(default_factory=dict)

    def check(self, name: str) -> None:
        """Raise SamplingError (one line) if some filter's weights all vanished or became non-finite."""
        bad = self.failed_at[self.failed_at >= 0]
        if bad.numel():
            from diffinv.samplers.base import SamplingError

            raise SamplingError(f"{name}: all particle weights vanished or became non-finite at step "
                                f"{int(bad.min())} (in {bad.numel()} of {self.failed_at.numel()} filters)")

    def final_ess(self) -> Tensor:
        return ess(self.log_w)


class FeynmanKac:
    """Runs ``model`` with F independent filters of N particles each under a resampling policy."""

    def __init__(self, model: FeynmanKacModel, num_filters: int, num_particles: int,
                 policy: Resampling | None = None) -> None:
        if num_filters < 1 or num_particles < 1:
            raise ValueError("num_filters, num_particles: expected positive integers")
        self.model, self.f, self.n = model, num_filters, num_particles
        self.policy = policy or Resampling()

    def _reweight(self, log_w: Tensor, log_g: Tensor | None) -> tuple[Tensor, Tensor]:
        """log W + log g, normalised, and the normaliser log Σ_j W_j g_j (F,)."""
        if log_g is None:
            return log_w, torch.zeros_like(log_w[:, 0])
        lw = clean(log_w + log_g.to(torch.float64))
        step_z = torch.logsumexp(lw, -1)
        return lw - step_z[:, None], step_z

    def _resample(self, state: State, log_w: Tensor,
                  generator: torch.Generator | None) -> tuple[State, Tensor, Tensor, Tensor, Tensor]:
        f, n = self.f, self.n
        cur_ess = ess(log_w)
        anc = resample(self.policy.scheme, log_w.exp(), n, generator)
        keep = torch.arange(n, device=log_w.device).expand(f, n)
        if self.policy.always:
            do = torch.ones(f, dtype=torch.bool, device=log_w.device)
        else:
            do = cur_ess < self.policy.ess_threshold * n
            anc = torch.where(do[:, None], anc, keep)
        rows = torch.arange(f, device=log_w.device)[:, None]
        state = {name: value[rows, anc] for name, value in state.items()}
        log_w = torch.where(do[:, None], torch.full_like(log_w, -math.log(n)), log_w)
        return state, log_w, cur_ess, do, anc

    def steps(self, generator: torch.Generator | None = None) -> Iterator[SMCState]:
        """Yield the filters after the initialisation and after every step; the last one is final."""
        model, f, n = self.model, self.f, self.n
        state, log_g0 = model.initial(f, n, generator)
        some = next(iter(state.values()))
        device = some.device
        log_w = torch.full((f, n), -math.log(n), dtype=torch.float64, device=device)
        log_w, log_z = self._reweight(log_w, log_g0)
        weighted = log_g0 is not None
        failed = torch.full((f,), -1, dtype=torch.long, device=device)
        failed = self._mark(failed, log_z, 0)
        cur_ess = torch.full((f,), float(n), dtype=torch.float64, device=device)
        no = torch.zeros(f, dtype=torch.bool, device=device)
        self._history: dict[str, list[Tensor]] = {"ess": [], "resampled": [], "ancestors": []}
        self._failed = failed
        yield SMCState(0, state, log_w, log_z, cur_ess, no)
        identity = torch.arange(n, device=device).expand(f, n)
        for k in range(model.num_steps):
            state, log_eta = model.lookahead(k, state)
            log_w, step_z = self._reweight(log_w, log_eta)
            log_z = log_z + step_z
            weighted = weighted or log_eta is not None
            if log_eta is not None:
                self._failed = self._mark(self._failed, step_z, k + 1)
            if weighted:
                state, log_w, cur_ess, did, anc = self._resample(state, log_w, generator)
                weighted = not self.policy.always
            else:
                cur_ess, did, anc = ess(log_w), no, identity
            self._history["ess"].append(cur_ess)
            self._history["resampled"].append(did)
            self._history["ancestors"].append(anc)
            state, log_g = model.move(k, state, generator)
            log_w, step_z = self._reweight(log_w, log_g)
            log_z = log_z + step_z
            if log_g is not None:
                weighted = True
                self._failed = self._mark(self._failed, step_z, k + 1)
            yield SMCState(k + 1, state, log_w, log_z, cur_ess, did)

    @staticmethod
    def _mark(failed: Tensor, step_z: Tensor, k: int) -> Tensor:
        return torch.where((failed < 0) & ~torch.isfinite(step_z), torch.full_like(failed, k), failed)

    def run(self, generator: torch.Generator | None = None) -> SMCResult:
        """Run every step; the history is stacked on the device."""
        (last,) = deque(self.steps(generator), maxlen=1)  # keeps only the final state
        hist, f = self._history, self.f
        empty = torch.zeros(f, 0, device=last.log_w.device)

        def stack(key: str, like: Tensor) -> Tensor:
            return torch.stack(hist[key], 1) if hist[key] else like

        return SMCResult(state=last.state, log_w=last.log_w, log_z=last.log_z,
                         ess=stack("ess", empty.double()), resampled=stack("resampled", empty.bool()),
                         ancestors=stack("ancestors", empty.long()), failed_at=self._failed)


def draw(particles: Tensor, log_w: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    """k draws (with replacement) ∝ the final weights from every filter: (F, N, *shape) → (F·k, *shape)."""
    idx = resample("multinomial", log_w.exp(), k, generator)  # (F, k)
    rows = torch.arange(particles.shape[0], device=particles.device)[:, None]
    return particles[rows, idx.to(particles.device)].reshape(-1, *particles.shape[2:])


@dataclass
class ParticleSystem:
    """F weighted particle systems: particles (F, N, *shape), log_weights (F, N) float64 normalised.

    ess (F, steps), resampled (F, steps) bool and log_z (F,) float64 record the filter's history
    (one entry per step of the grid).
    """

    particles: Tensor
    log_weights: Tensor
    ess: Tensor
    resampled: Tensor
    log_z: Tensor
    extra: dict[str, Any] = field(default_factory=dict)

    def draw(self, k: int, generator: torch.Generator | None = None) -> Tensor:
        """k draws (with replacement) ∝ the final weights from every filter → (F·k, *shape)."""
        return draw(self.particles, self.log_weights, k, generator)


COLLAPSE_ESS = 2.0  # effective particles below which a filter's weights count as collapsed


def lineages(ancestors: Tensor) -> Tensor:
    """Distinct ancestors of the final particles at every step: ancestors (F, K, N) → (F, K) long.

    Entry k counts the different particles of step k (before its resampling) that the N final
    particles descend from; N everywhere means no path degeneracy, 1 at step k means every final
    particle shares one ancestor there (the filter's diversity before k is lost).
    """
    f, k, n = ancestors.shape
    idx = torch.arange(n, device=ancestors.device).expand(f, n)
    counts = torch.empty(f, k, dtype=torch.long, device=ancestors.device)
    for step in range(k - 1, -1, -1):
        idx = ancestors[:, step].gather(1, idx)
        sorted_idx = idx.sort(1).values
        counts[:, step] = 1 + (sorted_idx[:, 1:] != sorted_idx[:, :-1]).sum(1)
    return counts


def per_item_draws(system: ParticleSystem, num_items: int, num_samples: int, per_filter: int,
                   generator: torch.Generator | None) -> Tensor:
    """``num_samples`` draws for each of B items whose filters are laid out item by item
    (F = B·⌈k/per_filter⌉), ``per_filter`` from each filter: → (B·num_samples, *shape)."""
    draws = system.draw(per_filter, generator)  # (F·per_filter, *shape)
    shape = draws.shape[1:]
    return draws.reshape(num_items, -1, *shape)[:, :num_samples].reshape(-1, *shape)


def smc_diagnostics(system: ParticleSystem, num_filters: int) -> dict[str, Any]:
    """JSON-able diagnostics of F filters (converted once, after the run)."""
    n = system.log_weights.shape[-1]
    min_ess = system.ess.min(1).values if system.ess.shape[1] else torch.full_like(system.log_z, n)  # (F,)
    collapsed = float((min_ess < COLLAPSE_ESS).double().mean())
    warnings = []
    if collapsed > 0.5:
        warnings.append(f"smc: the weights collapsed (ESS < {COLLAPSE_ESS:g} of N = {n} at some step) in "
                        f"{100 * collapsed:.0f}% of the filters; more particles or another resampling "
                        "policy may help")
    extra = {k: v for k, v in system.extra.items() if k not in ("final_ess", "lineages")}
    if "lineages" in system.extra:  # distinct ancestors of the final particles per step, mean over filters
        extra["lineages"] = system.extra["lineages"].double().mean(0).tolist()
    return {"ess": system.ess.mean(0).tolist(), "resampled": system.resampled.float().mean(0).tolist(),
            "log_z": system.log_z.tolist(), "final_ess": system.extra["final_ess"].tolist(),
            "num_filters": num_filters, "collapsed_share": collapsed, "warnings": warnings, **extra}
