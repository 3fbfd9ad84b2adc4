r"""``diffinv compare``: run samplers on Gaussian-mixture problems with exact posteriors and score them.

For each seed a problem is generated (:func:`diffinv.benchmarks.gmm.make_problem`, or read from a
user's ``.npz``), every sampler draws ``num_samples`` samples, and each sample set is scored against
``num_samples`` exact posterior samples with the sliced Wasserstein distance (same random directions
for every sampler of a seed) and the mode-weight error (:mod:`diffinv.metrics`).

Random streams per seed ``k`` (all explicit generators): the problem uses ``k``; each sampler uses
``k`` too (samplers are independent runs); the exact reference samples use 2³¹ + k, the SW
directions 2³² + k and the prior baseline's samples 3·2³⁰ + k, so adding a sampler never changes another
sampler's numbers.

Prior baseline: per seed, ``num_samples`` samples of the prior (which ignore y) are scored the same way
(``prior_sw`` in every record). A sampler whose SW is not below it gets a warning in its record, and the
summary counts the seeds on which each sampler beat the prior: the run says when its samples describe the
posterior no better than the prior does (a wrong choice of modes, which the data residual cannot see).

The samplers' generators live on the run device (CUDA runs draw their noise on the GPU: same seed, same
numbers on a given device, but CPU and CUDA streams differ); the problem, reference, SW and prior
generators are CPU ones, so the problem, its reference and the baseline are the same on every device.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffinv import __version__
from diffinv.benchmarks.gmm import GMMProblem, load_problem, make_problem
from diffinv.benchmarks.gmm_presets import gmm_preset
from diffinv.figures import scatter_panels
from diffinv.metrics import sliced_wasserstein, weight_error
from diffinv.outputs import absolute, check_output_file, check_writable_parent
from diffinv.rng import make_generator
from diffinv.samplers.base import SampleResult
from diffinv.samplers.registry import SAMPLERS, sampler_class

DTYPES = {"float32": torch.float32, "float64": torch.float64}
CSV_FIELDS = ["sampler", "seed", "dx", "dy", "sigma_y", "sw", "prior_sw", "weight_error", "nfe_forward",
              "nfe_backward", "seconds"]
RECORD_FIELDS = ["sampler", "seed", "dx", "dy", "sigma_y", "sw", "prior_sw", "weight_error", "nfe_forward",
                 "nfe_backward", "seconds", "prior_seconds", "overhead", "num_samples"]
DIRECTIONS_STREAM = 2**32  # generator offset of the SW directions
PRIOR_STREAM = 3 * 2**30  # generator offset of the prior baseline's samples


@dataclass(frozen=True)
class CompareConfig:
    """Everything ``diffinv compare`` needs; every CLI option maps to one field."""

    dx: int = 10
    dy: int = 1
    seeds: tuple[int, ...] = (0,)
    samplers: tuple[str, ...] = ()  # empty: every registered sampler
    num_samples: int = 2000
    steps: int | None = None  # overrides `num_steps` of every sampler that has it
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str = "cpu"
    dtype: str = "float64"
    problem: str | None = None  # path of a user's .npz problem
    num_directions: int = 100
    max_batch: int | None = None
    save_samples: str | None = None

    def validate(self) -> None:
        if self.num_directions < 1:
            raise ValueError(f"num-directions: expected a positive integer, got {self.num_directions}")
        if self.max_batch is not None and self.max_batch < 1:
            raise ValueError(f"max-batch: expected a positive integer, got {self.max_batch}")
        if self.problem is None:
            if self.dx < 2 or self.dx % 2:
                raise ValueError(f"dx: expected an even integer ≥ 2, got {self.dx}")
            if not 1 <= self.dy <= self.dx:
                raise ValueError(f"dy: expected an integer in [1, {self.dx}], got {self.dy}")
        if self.num_samples < 2:
            raise ValueError(f"num_samples: expected an integer ≥ 2, got {self.num_samples}")
        if not self.seeds or any(s < 0 for s in self.seeds):
            raise ValueError("seeds: expected one or more non-negative integers")
        if self.steps is not None and not 1 <= self.steps <= 1000:
            raise ValueError(f"steps: expected an integer in [1, 1000], got {self.steps}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"device: expected cpu, cuda or auto, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device: cuda requested but no CUDA device is available")
        for name in self.sampler_names():
            sampler_class(name)
        for name in self.overrides:
            if name not in self.sampler_names():
                raise ValueError(f"set: sampler {name!r} is not among the samplers being run")

    def sampler_names(self) -> tuple[str, ...]:
        return self.samplers or tuple(SAMPLERS)


def parse_seeds(text: str) -> tuple[int, ...]:
    """'20' → 0..19; '5-9' → 5..9; '3,7,11' → those seeds."""
    text = text.strip()
    try:
        if "," in text:
            seeds = tuple(int(s) for s in text.split(","))
        elif "-" in text:
            lo, hi = (int(s) for s in text.split("-", 1))
            seeds = tuple(range(lo, hi + 1))
        else:
            seeds = tuple(range(int(text)))
    except ValueError:
        raise ValueError(f"seeds: expected a count (20), a range (5-9) or a list (3,7); "
                         f"got {text!r}") from None
    if not seeds and text.isdigit():
        raise ValueError(f"seeds: a single number is a count of seeds (0..N−1), so {text!r} is none; "
                         f"for seed {text} alone write {text}-{text}")
    if not seeds or min(seeds) < 0:
        raise ValueError(f"seeds: expected a non-empty set of non-negative integers; got {text!r}")
    return seeds


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def build_sampler(name: str, config: CompareConfig, dx: int):
    """The sampler with its GMM preset, then ``steps``, then the user's overrides."""
    cls = sampler_class(name)
    options = gmm_preset(name, dx)
    fields = {f for f in cls.Config.__dataclass_fields__}
    if config.steps is not None and "num_steps" in fields:
        options["num_steps"] = config.steps
    options.update(config.overrides.get(name, {}))
    return cls(**options)


def reference_samples(gmm: GMMProblem, num_samples: int, seed: int) -> torch.Tensor:
    """Exact posterior samples used as the reference for ``seed``."""
    return gmm.posterior.sample(num_samples, make_generator(2**31 + seed))


def score(result: SampleResult, gmm: GMMProblem, reference: torch.Tensor, seed: int,
          num_directions: int) -> dict[str, float]:
    directions = make_generator(DIRECTIONS_STREAM + seed)
    sw = sliced_wasserstein(result.samples, reference, num_directions, directions)
    return {"sw": sw, "weight_error": weight_error(result.samples, gmm.posterior)}


def prior_sw(gmm: GMMProblem, reference: torch.Tensor, seed: int, num_directions: int) -> float:
    """SW of as many prior samples as ``reference`` holds, against it, on the samplers' directions: what a
    sampler that ignores y scores on this seed."""
    samples = gmm.prior.mixture.sample(len(reference), make_generator(PRIOR_STREAM + seed))
    return sliced_wasserstein(samples, reference, num_directions, make_generator(DIRECTIONS_STREAM + seed))


def prior_warning(name: str, seed: int, sw: float, baseline: float) -> str | None:
    """The warning of a run whose SW is not below the prior baseline's (None otherwise)."""
    if sw < baseline:
        return None
    return (f"{name}: SW {sw:.3g} on seed {seed} is no better than the prior's {baseline:.3g}: its samples "
            "describe the posterior no better than samples that ignore y (wrong modes or weights)")


@dataclass
class CompareReport:
    """Records (one per sampler and seed), and for the first seed the samples and the reference."""

    records: list[dict[str, Any]]
    samples: dict[str, np.ndarray]
    reference: np.ndarray


def run_compare(config: CompareConfig,
                progress: Callable[[str], None] | None = None) -> CompareReport:
    """Run every (seed, sampler) pair; one record (dict with RECORD_FIELDS) per pair."""
    config.validate()
    device, dtype = resolve_device(config.device), DTYPES[config.dtype]
    records: list[dict[str, Any]] = []
    saved: dict[str, dict[str, np.ndarray]] = {}
    first: dict[str, np.ndarray] = {}
    first_reference = np.empty(0)
    for seed in config.seeds:
        gmm = load_problem(config.problem) if config.problem else make_problem(config.dx, config.dy, seed)
        reference = reference_samples(gmm, config.num_samples, seed)
        baseline = prior_sw(gmm, reference, seed, config.num_directions)
        if seed == config.seeds[0]:
            first_reference = reference.reshape(config.num_samples, -1).numpy()
        for name in config.sampler_names():
            if progress is not None:
                progress(f"{name} seed {seed}")
            sampler = build_sampler(name, config, gmm.dx)
            result = sampler.sample(gmm.prior, gmm.problem, config.num_samples, make_generator(seed, device),
                                    device=device, dtype=dtype, max_batch=config.max_batch)
            metrics = score(result, gmm, reference, seed, config.num_directions)
            warnings = list(result.diagnostics.get("warnings", []))
            versus_prior = prior_warning(name, seed, metrics["sw"], baseline)
            if versus_prior is not None:
                warnings.append(versus_prior)
            record = {"sampler": name, "seed": seed, "dx": gmm.dx, "dy": gmm.dy,
                      "sigma_y": gmm.problem.sigma_y, **metrics, "prior_sw": baseline,
                      "nfe_forward": result.nfe_forward, "nfe_backward": result.nfe_backward,
                      "seconds": result.seconds, "prior_seconds": result.prior_seconds,
                      "overhead": result.overhead, "num_samples": config.num_samples,
                      "warnings": warnings}
            records.append(record)
            if seed == config.seeds[0]:
                first[name] = result.samples.reshape(config.num_samples, -1).numpy()
            if config.save_samples:
                arr = result.samples.reshape(config.num_samples, -1).numpy()
                entry = saved.setdefault(name, {"samples": arr})
                if len(config.seeds) > 1:
                    entry[f"samples_seed{seed}"] = arr
    if config.save_samples:
        save_samples(saved, Path(config.save_samples))
    return CompareReport(records, first, first_reference)


def save_samples(saved: dict[str, dict[str, np.ndarray]], folder: Path) -> None:
    """One ``<sampler>.npz`` per sampler (key ``samples``: the first seed; ``samples_seed<k>`` per seed)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, arrays in saved.items():
        tmp = folder / f".{name}.tmp.npz"
        np.savez(tmp, **arrays)
        tmp.replace(folder / f"{name}.npz")


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per sampler: SW median / mean / sd over seeds, Δw mean / sd, the seeds on which it beat the prior
    baseline, NFE per sample, s per 1000 samples."""
    rows = []
    for name in dict.fromkeys(r["sampler"] for r in records):
        rs = [r for r in records if r["sampler"] == name]
        sw = np.array([r["sw"] for r in rs], dtype=np.float64)
        dw = np.array([r["weight_error"] for r in rs], dtype=np.float64)
        n = sum(r["num_samples"] for r in rs)
        seconds = sum(r["seconds"] for r in rs)
        prior_seconds = sum(r["prior_seconds"] for r in rs)
        rows.append({
            "sampler": name, "runs": len(rs),
            "sw_median": float(np.median(sw)), "sw_mean": float(sw.mean()),
            "sw_sd": float(sw.std(ddof=1)) if len(rs) > 1 else 0.0,
            "weight_error_mean": float(dw.mean()),
            "weight_error_sd": float(dw.std(ddof=1)) if len(rs) > 1 else 0.0,
            "beats_prior": sum(r["sw"] < r["prior_sw"] for r in rs if "prior_sw" in r),
            "prior_runs": sum("prior_sw" in r for r in rs),  # records of older runs lack the baseline
            "nfe_forward_per_sample": sum(r["nfe_forward"] for r in rs) / n,
            "nfe_backward_per_sample": sum(r["nfe_backward"] for r in rs) / n,
            "seconds_per_1000": 1000 * seconds / n,
            "overhead": seconds / prior_seconds if prior_seconds > 0 else math.nan,
        })
    return rows


def write_outputs(report: CompareReport, json_path: str | None = None, csv_path: str | None = None,
                  figure_path: str | None = None, config: CompareConfig | None = None) -> None:
    """Write the records as JSON (with the summary and config) and CSV, and the scatter figure."""
    if json_path:
        doc = {"version": __version__, "config": dataclasses.asdict(config) if config else None,
               "records": report.records, "summary": summarise(report.records)}
        _atomic_write(Path(json_path), json.dumps(doc, indent=2, default=str))
    if csv_path:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(report.records)
        _atomic_write(Path(csv_path), buf.getvalue())
    if figure_path:
        dims = report.reference.shape[1]
        scatter_panels(report.reference, report.samples, figure_path, coords=(0, min(1, dims - 1)),
                       title="exact posterior (grey) vs samples, coordinates 0 and 1")


def check_outputs(json_path: str | None = None, csv_path: str | None = None, figure_path: str | None = None,
                  save_samples: str | None = None) -> None:
    """Before any sampling: every output path has a known extension and can be written."""
    check_output_file(json_path, "json", (".json",))
    check_output_file(csv_path, "csv", (".csv",))
    check_output_file(figure_path, "figure", (".png",))
    if save_samples:
        folder = absolute(save_samples)
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"save-samples: {save_samples!r} exists and is not a folder")
        check_writable_parent(folder / "x", "save-samples")


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
