r"""The one interface every posterior sampler implements, and what it returns.

A sampler is built from a frozen config dataclass and exposes

    sample(prior, problem, num_samples, generator, device, dtype) -> SampleResult

where ``problem`` is an :class:`InverseProblem` (operator A, observation y, noise σ_y). The base
class wraps the prior in :class:`~diffinv.priors.base.CountingPrior` (forward / backward evaluation
counts and the time spent in them), times the run, and rejects non-finite output with
:class:`SamplingError`. Subclasses implement only ``_run``.
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from diffinv import typed
from diffinv.operators.base import LinearOperator
from diffinv.operators.noise import GaussianNoise
from diffinv.priors.base import CountingPrior, DiffusionPrior
from diffinv.rng import Antithetic


class SamplingError(RuntimeError):
    """A sampler failed at run time (e.g. NaN or infinite values appeared)."""


@dataclass(frozen=True, eq=False)
class InverseProblem:
    """y = A x + noise, for one observation or for a batch of B observations that share A and σ_y.

    operator : A with in_shape = the prior's shape; noise : GaussianNoise;
    y : (*operator.out_shape) for one observation, (B, *operator.out_shape) when ``batched``
    (build with :meth:`batch`). A batched problem gives samples (B, k, *shape): the samplers lay out
    their rows item by item (B·k rows, or B·F filters for SMC) and run all items in the same network
    calls, each item with its own generator when given a :class:`~diffinv.rng.GeneratorBatch`.
    """

    operator: LinearOperator
    y: Tensor
    noise: GaussianNoise
    batched: bool = False

    @classmethod
    def batch(cls, operator: LinearOperator, ys: Tensor, noise: GaussianNoise) -> InverseProblem:
        """B observations ys (B, *operator.out_shape) of one operator and noise."""
        return cls(operator, ys, noise, batched=True)

    def __post_init__(self) -> None:
        want = tuple(self.operator.out_shape)
        got = tuple(self.y.shape)
        if (got[1:] if self.batched else got) != want or (self.batched and (len(got) == 0 or got[0] < 1)):
            raise ValueError(f"y: expected shape {('B', *want) if self.batched else want}, got {got}")
        if not bool(torch.isfinite(self.y).all()):
            raise ValueError("y: contains NaN or infinite values")

    @property
    def sigma_y(self) -> float:
        return self.noise.sigma

    @property
    def num_items(self) -> int:
        """B, the number of observations (1 unless batched)."""
        return int(self.y.shape[0]) if self.batched else 1

    def observations(self) -> Tensor:
        """y as a (B, *out_shape) batch, where it lives, in its dtype."""
        return self.y if self.batched else self.y[None]

    def item(self, i: int) -> InverseProblem:
        """The single-observation problem of item ``i``."""
        return InverseProblem(self.operator, self.observations()[i], self.noise)

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Tensor:
        """y as a (B, *out_shape) batch on ``device`` in ``dtype`` (B = 1 unless batched)."""
        return self.observations().to(device=device, dtype=dtype)

    def rows(self, per_item: int, device: torch.device | str, dtype: torch.dtype) -> Tensor:
        """y for a batch of B·``per_item`` rows laid out item by item: (B·per_item, *out_shape), or
        (1, *out_shape) when B = 1 (broadcasts against any number of rows)."""
        return item_rows(self.to(device, dtype), per_item)


def item_rows(values: Tensor, per_item: int) -> Tensor:
    """Per-item values (B, …) repeated for ``per_item`` consecutive rows each → (B·per_item, …); with
    B = 1 the values are returned as they are (they broadcast)."""
    return values if values.shape[0] == 1 else values.repeat_interleave(per_item, dim=0)


@dataclass
class SampleResult:
    """Samples and diagnostics of one sampler run.

    samples : (num_samples, *shape) on the CPU; (B, num_samples, *shape) for a batched problem.
    nfe_forward, nfe_backward : prior evaluations summed over batch items (one per sample or particle).
    seconds : wall time of the run; prior_seconds : the part spent inside prior evaluations.
    diagnostics : sampler-specific data (SMC: ``ess`` (steps,), ``resampled`` (steps,), ``log_z``) and
        ``warnings``: one-line messages where the run shows it failed (samples that do not fit y, a
        collapsed SMC filter, a Langevin phase dominated by its taming), empty otherwise.
    """

    samples: Tensor
    nfe_forward: int
    nfe_backward: int
    seconds: float
    prior_seconds: float
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def per_item(self, num_items: int) -> list[SampleResult]:
        """One result per observation of a run over ``num_items`` observations: its samples (the
        leading index of a batched result) and an equal share of the evaluations and seconds (every
        item has the same number of rows); diagnostics are the run's, with the item's own warnings."""
        if num_items == 1:
            return [self]
        run, items = self.diagnostics.get("run_warnings", []), self.diagnostics.get("item_warnings")
        return [SampleResult(samples=s, nfe_forward=self.nfe_forward // num_items,
                             nfe_backward=self.nfe_backward // num_items, seconds=self.seconds / num_items,
                             prior_seconds=self.prior_seconds / num_items,
                             diagnostics={**self.diagnostics,
                                          "warnings": run + (items[i] if items else [])})
                for i, s in enumerate(self.samples)]

    @property
    def overhead(self) -> float:
        """Total time over the time spent in prior evaluations (1.0 = no overhead)."""
        return self.seconds / self.prior_seconds if self.prior_seconds > 0 else float("inf")


class Sampler(ABC):
    """Base class: ``Config`` is the frozen dataclass of hyper-parameters (with the paper defaults).

    A config with a field ``antithetic`` (samplers whose rows are independent and driven only by
    Gaussian noise: DPS, ΠGDM, DDRM, DCPS, exact) may set it: the run then draws its noise through
    :class:`~diffinv.rng.Antithetic`, samples 2i and 2i + 1 of each observation driven by opposite noise
    (each keeps its law; their mean has less variance). SMC samplers have no such field: their
    particles interact through resampling.
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    needs_svd: ClassVar[bool] = False
    needs_grad: ClassVar[bool] = False

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        config = config if config is not None else self.Config()
        if overrides:
            names = {f.name for f in dataclasses.fields(config)}
            unknown = sorted(set(overrides) - names)
            if unknown:
                raise ValueError(f"{self.name}: unknown option(s) {', '.join(unknown)}; "
                                 f"expected one of {', '.join(sorted(names))}")
            overrides = typed.coerce_options(typed.field_types(type(config)), overrides, f"{self.name}.")
            try:  # the config validates itself (``__post_init__``): before any prior is loaded
                config = dataclasses.replace(config, **overrides)
            except ValueError as err:
                raise ValueError(f"{self.name}.{err}") from None
        self.config = config

    def check(self, prior: DiffusionPrior, problem: InverseProblem) -> None:
        """Validate the pairing of prior, problem and sampler (one-line ValueErrors)."""
        if tuple(problem.operator.in_shape) != tuple(prior.shape):
            raise ValueError(f"operator: input shape {tuple(problem.operator.in_shape)} does not "
                             f"match the prior's data shape {tuple(prior.shape)}")
        if self.needs_svd and not problem.operator.has_svd:
            raise ValueError(f"{self.name}: needs an operator with an SVD; "
                             f"{type(problem.operator).__name__} has none")
        if self.needs_grad and not prior.differentiable:
            raise ValueError(f"{self.name}: needs a differentiable prior")

    def sample(self, prior: DiffusionPrior, problem: InverseProblem, num_samples: int,
               generator: torch.Generator | None = None, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32, max_batch: int | None = None) -> SampleResult:
        """Draw ``num_samples`` approximate posterior samples (per observation of a batched problem)."""
        if num_samples < 1:
            raise ValueError(f"num_samples: expected a positive integer, got {num_samples}")
        self.check(prior, problem)
        if getattr(self.config, "antithetic", False):
            generator = Antithetic(generator, num_samples)
        counting = CountingPrior(prior, max_batch=max_batch)
        start = time.perf_counter()
        samples, diagnostics = self._run(counting, problem, num_samples, generator,
                                         torch.device(device), dtype)
        seconds = time.perf_counter() - start
        samples = samples.detach()
        if not bool(torch.isfinite(samples).all()):
            raise SamplingError(f"{self.name}: non-finite values appeared during sampling")
        diagnostics = dict(diagnostics)
        run_warnings = list(diagnostics.get("warnings", []))  # the sampler's own, for the whole run
        ratios = data_residuals(problem, samples, num_samples)  # one per observation (None: σ_y = 0)
        items = [residual_warnings(self.name, r) for r in ratios]
        diagnostics["data_residual"] = ratios if problem.batched else ratios[0]
        diagnostics["run_warnings"], diagnostics["item_warnings"] = run_warnings, items
        diagnostics["warnings"] = run_warnings + [
            (f"item {i}: {w}" if problem.batched else w) for i, ws in enumerate(items) for w in ws]
        if problem.batched:
            samples = samples.reshape(problem.num_items, num_samples, *samples.shape[1:])
        return SampleResult(samples=samples.cpu(), nfe_forward=counting.stats.forward,
                            nfe_backward=counting.stats.backward, seconds=seconds,
                            prior_seconds=counting.stats.seconds, diagnostics=diagnostics)

    @abstractmethod
    def _run(self, prior: CountingPrior, problem: InverseProblem, num_samples: int,
             generator: torch.Generator | None, device: torch.device,
             dtype: torch.dtype) -> tuple[Tensor, dict[str, Any]]:
        """Return samples (B·num_samples, *shape), item by item, and a diagnostics dict."""


RESIDUAL_WARNING = 3.0  # a posterior sample fits y to about 1–1.5 noise standard deviations per coordinate
# Below this the samples fit y more closely than its noise allows. For posterior samples, per observed
# coordinate with prior variance v along it, y − A x ~ N((1 − k) y, k σ_y²), k = s² v / (s² v + σ_y²): the
# mean of ‖y − A x‖/(σ_y √m) stays above about 0.55 for every k (0.8 at k = 1, where |N(0, 1)| has mean 0.8).
OVERFIT_WARNING = 0.25


def residual_warnings(name: str, ratio: float | None) -> list[str]:
    """The one-line warnings of a data residual (``data_residuals``): too large or too small."""
    if ratio is None:
        return []
    if ratio > RESIDUAL_WARNING:
        return [f"{name}: the samples do not fit the observation (residual ‖y − A x‖/(σ_y √m) = {ratio:.1f}, "
                "about 1 for posterior samples); more steps or other settings may help"]
    if ratio < OVERFIT_WARNING:
        return [f"{name}: the samples fit the observation more closely than its noise allows (residual "
                f"‖y − A x‖/(σ_y √m) = {ratio:.2f}, 0.55–1 for posterior samples): the guidance over-fits "
                "the noise and the samples are too narrow along the observed directions"]
    return []


def data_residuals(problem: InverseProblem, samples: Tensor, per_item: int) -> list[float | None]:
    """Per observation, the mean over its samples (B·k, *shape), item by item, of ‖y − A x‖ / (σ_y √m):
    about 1 for exact posterior samples (None for σ_y = 0). Above ``RESIDUAL_WARNING`` or below
    ``OVERFIT_WARNING`` the run warns (:func:`residual_warnings`)."""
    if problem.sigma_y <= 0:
        return [None] * problem.num_items
    op = problem.operator.original  # float64, where it was built (the samples are copied there anyway)
    with torch.no_grad():
        x = samples.to(dtype=torch.float64, device=op.device)
        y = problem.rows(per_item, x.device, torch.float64)
        resid = (y - op.A(x)).reshape(x.shape[0], -1).norm(dim=1) / (problem.sigma_y * op.out_dim**0.5)
        return resid.reshape(problem.num_items, per_item).mean(1).tolist()


def check_options(config: Any, positive: tuple[str, ...] = (), nonnegative: tuple[str, ...] = (),
                  unit: tuple[str, ...] = (), choices: dict[str, tuple[str, ...]] | None = None) -> None:
    """Validate a sampler config's fields (called from its ``__post_init__``); one-line ValueErrors.

    positive: integers ≥ 1; nonnegative: numbers ≥ 0; unit: numbers in [0, 1]; choices: allowed values.
    """
    for name in positive:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    for name in nonnegative:
        value = getattr(config, name)
        if not (isinstance(value, (int, float)) and value >= 0):
            raise ValueError(f"{name}: expected a number ≥ 0, got {value!r}")
    for name in unit:
        value = getattr(config, name)
        if not (isinstance(value, (int, float)) and 0 <= value <= 1):
            raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")
    for name, allowed in (choices or {}).items():
        value = getattr(config, name)
        if value not in allowed:
            raise ValueError(f"{name}: expected one of {', '.join(allowed)}, got {value!r}")


def config_dict(config: Any) -> dict[str, Any]:
    """A sampler config as a plain dict (for JSON records)."""
    return dataclasses.asdict(config)
