r"""``diffinv batch``: one sampler over a folder of observations, exactly once, resumable, batched.

Inputs: every PNG / JPEG / ``.npy`` file under ``inputs`` (sorted; ``recursive`` descends into
sub-folders; ``glob`` filters the relative paths, e.g. ``*.png``; hidden files are skipped). An item's
name is its relative path without the suffix (``sub/a.png`` → ``sub/a``). For the operators built from
a file, a sidecar ``NAME.mask.png`` (``inpaint_mask``) or ``NAME.kernel.npy|png`` (``blur_kernel``) is
that item's own mask or kernel, else the shared ``--mask`` / ``--kernel``; sidecars are not inputs.

Every item is one :class:`~diffinv.job.Job` of one :class:`~diffinv.job.Session` (prior, sampler and
problem built once per run, exactly as ``diffinv solve`` builds them). Seeds: item ``NAME`` runs with
seed :func:`~diffinv.distributed.item_seed` (base seed, NAME), so it gives what
``diffinv solve --seed S`` gives (S is in its manifest line), whatever the order, shard or number of
workers. ``items_per_call`` jobs that share an operator run in the same network calls (a batched
:class:`~diffinv.samplers.base.InverseProblem`; each item keeps its own generator); ``max_batch`` bounds
the rows of one network call (items × samples × particles).

Output (:mod:`diffinv.batch_store`): ``OUT/NAME/`` holds what ``diffinv solve`` writes for one image,
committed whole by :class:`~diffinv.outputs.OutputFolder` before the item's line is appended to
``OUT/manifest.jsonl``; a failed item gets one line in ``OUT/failures.jsonl`` and the run goes on (a
failing group of several items is retried item by item, so a bad item fails alone).
``OUT/config.json`` holds the resolved run; a re-run with the same configuration resumes (finished
items are skipped, a committed folder without its line is recorded from its metrics.json, anything
else is redone; failed items are retried), a different one is refused unless ``overwrite``.
Scale-out: under ``torchrun`` (RANK, WORLD_SIZE, LOCAL_RANK; gloo on the CPU, nccl with one GPU per
rank) and with ``shard`` K/N or a Slurm job array, the sorted items are split deterministically
(:func:`~diffinv.distributed.partition`); each process writes its own items, and whichever finishes
the last item writes ``summary.json`` / ``summary.csv`` from the manifest.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffinv.batch_store import RESERVED, BatchFolder
from diffinv.distributed import Group, Partition, item_seed, partition
from diffinv.imaging.io import read_image
from diffinv.job import Job, JobResult, Session, SolveConfig, check_config
from diffinv.outputs import OutputFolder, absolute, read_stamp
from diffinv.priors.base import DiffusionPrior
from diffinv.problems import FILE_PARAMS
from diffinv.samplers.base import SamplingError
from diffinv.solve import write_files

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".npy")
SIDECARS = {"mask": (".mask.png",), "kernel": (".kernel.npy", ".kernel.png")}
RECORD_METRICS = ("psnr", "ssim", "residual", "coverage", "std_mean", "seconds", "nfe_forward",
                  "nfe_backward", "num_samples")

Advance = Callable[[str], None]  # called once per item of this process (finished, skipped or failed)


@dataclass
class BatchConfig:
    """A batch run: the input folder, OUT, how items are found and split, and the per-image options
    (``job``: a :class:`~diffinv.job.SolveConfig` whose ``image`` and ``out`` are unused)."""

    inputs: str
    out: str
    job: SolveConfig = field(default_factory=lambda: SolveConfig(image=""))
    recursive: bool = False
    glob: str | None = None
    items_per_call: int = 1
    shard: str | None = None
    overwrite: bool = False


@dataclass(frozen=True)
class Input:
    """One input file: its item name, path and sidecar mask / kernel (or None)."""

    name: str
    path: Path
    mask: str | None = None
    kernel: str | None = None


@dataclass
class BatchReport:
    """What this process did: every item's name, its own items, and what became of them."""

    out: Path
    names: list[str]
    assigned: list[str]
    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    partition: Partition | None = None

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def _is_sidecar(name: str) -> bool:
    return any(name.lower().endswith(s) for suffixes in SIDECARS.values() for s in suffixes)


def list_inputs(folder: str | Path, recursive: bool = False, pattern: str | None = None,
                exclude: Path | None = None) -> list[Input]:
    """The inputs of ``folder`` (module docstring), sorted by name; one-line errors for an empty folder
    or two files that map to one name."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"inputs: {str(folder)!r} is not a folder")
    files = sorted(root.rglob("*") if recursive else root.iterdir())
    items: dict[str, Input] = {}
    for path in files:
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if exclude is not None and (absolute(path) == exclude or exclude in absolute(path).parents):
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES or _is_sidecar(path.name):
            continue
        if pattern is not None and not fnmatch.fnmatch(rel.as_posix(), pattern):
            continue
        name = rel.with_suffix("").as_posix()
        if name in items:
            raise ValueError(f"inputs: {items[name].path.name!r} and {path.name!r} both make the item "
                             f"{name!r}; keep one of them")
        if name.split("/")[0] in RESERVED:
            raise ValueError(f"inputs: the item name {name!r} is reserved for the run's own files")
        stem = path.with_suffix("")
        sidecar = {kind: next((str(Path(f"{stem}{s}")) for s in suffixes if Path(f"{stem}{s}").is_file()),
                              None) for kind, suffixes in SIDECARS.items()}
        items[name] = Input(name, path, sidecar["mask"], sidecar["kernel"])
    if not items:
        raise ValueError(f"inputs: no PNG, JPEG or .npy files in {str(folder)!r}"
                         + ("" if recursive else " (--recursive for sub-folders)")
                         + (f" matching {pattern!r}" if pattern else ""))
    return [items[n] for n in sorted(items)]


def check(config: BatchConfig) -> None:
    """Options that need no file (one-line ValueErrors naming the option)."""
    check_config(config.job)
    if isinstance(config.items_per_call, bool) or not isinstance(config.items_per_call, int) \
            or config.items_per_call < 1:
        raise ValueError(f"items-per-call: expected a positive integer, got {config.items_per_call!r}")


def _device_for(config: SolveConfig, part: Partition) -> SolveConfig:
    """One GPU per torchrun rank: cuda / auto become cuda:LOCAL_RANK."""
    import torch

    if part.world_size > 1 and config.device in ("auto", "cuda") and torch.cuda.is_available():
        return dataclasses.replace(config, device=f"cuda:{part.local_rank}")
    return config


def build_session(config: BatchConfig, inputs: list[Input], prior: DiffusionPrior | None) -> Session:
    """The run's session; without a checkpoint the shipped prior fits the first readable input's channels
    (the same choice in every process)."""
    channels = None
    if prior is None and config.job.checkpoint is None:
        for item in inputs:
            try:
                channels = read_image(item.path, value_range=config.job.value_range)[0].shape[0]
                break
            except (ValueError, OSError):
                continue
        if channels is None:
            raise ValueError(f"inputs: no readable image in {config.inputs!r}")
    return Session.build(config.job, prior, channels=channels)


def run_config(config: BatchConfig, session: Session) -> dict[str, Any]:
    """What config.json holds: every option that changes an item's result (not shard, items per call,
    batch bounds, threads or the GPU index)."""
    job = config.job
    problem = session.problem.to_dict()
    problem.pop("source", None)
    files = {k: str(absolute(v)) if v else None for k, v in (("mask", job.mask), ("kernel", job.kernel))}
    return {"command": "batch", "inputs": str(absolute(config.inputs)), "recursive": config.recursive,
            "glob": config.glob, "simulate": job.simulate, "resize": job.resize,
            "value_range": job.value_range, **files, "num_samples": job.num_samples, "seed": job.seed,
            "sampler": job.sampler, "sampler_options": dataclasses.asdict(session.sampler.config),
            "problem": problem, "prior": session.prior_name(), "checkpoint": job.checkpoint,
            "arch": job.arch, "fp16": job.fp16, "device": session.device.type}


def _record(name: str, image: str, seed: int, m: dict[str, Any], part: Partition) -> dict[str, Any]:
    """An item's manifest line from its metrics."""
    return {"name": name, "status": "ok", "image": image, "seed": seed, "seconds": m.get("seconds"),
            "nfe_forward": m.get("nfe_forward"), "nfe_backward": m.get("nfe_backward"),
            "metrics": {k: m.get(k) for k in RECORD_METRICS if k in m},
            "warnings": m.get("warnings", []),
            "items_per_call": m.get("items_per_call"), "rank": part.rank, "part": part.index,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _recover(folder: BatchFolder, name: str, part: Partition) -> dict[str, Any] | None:
    """The record of a committed item folder whose manifest line is missing (a crash between the two)."""
    path = folder.item_path(name)
    if not path.is_dir() or read_stamp(path) is None:
        return None
    try:
        metrics = json.loads((path / "metrics.json").read_text())
        image = str(metrics["config"]["solve"]["image"])
        seed = int(metrics["seed"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {**_record(name, image, seed, metrics, part), "recovered": True}


class _Runner:
    """Runs this process's pending items in groups and records each one."""

    def __init__(self, session: Session, folder: BatchFolder, part: Partition, report: BatchReport,
                 per_call: int, advance: Advance) -> None:
        self.session, self.folder, self.part, self.report = session, folder, part, report
        self.per_call, self.advance = per_call, advance
        self.groups: dict[int, list[Job]] = {}

    def fail(self, name: str, err: BaseException) -> None:
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        if not isinstance(err, (ValueError, SamplingError, FileNotFoundError)):
            text = f"{type(err).__name__}: {text}"
        self.folder.record_failure(name, text, rank=self.part.rank)
        self.report.failed[name] = text
        self.advance(name)

    def add(self, item: Input) -> None:
        takes = FILE_PARAMS.get(self.session.problem.operator["name"])  # sidecars only where A takes one
        try:
            job = self.session.job(str(item.path), name=item.name,
                                   seed=item_seed(self.session.config.seed, item.name),
                                   mask=item.mask if takes == "mask" else None,
                                   kernel=item.kernel if takes == "kernel" else None)
            self.session.sampler.check(self.session.prior, self.session.inverse([job]))
        except Exception as err:  # noqa: BLE001 - a bad item fails alone
            self.fail(item.name, err)
            return
        group = self.groups.setdefault(id(job.op), [])
        group.append(job)
        if len(group) >= self.per_call:
            self.flush(id(job.op))

    def flush(self, key: int | None = None) -> None:
        for k in [key] if key is not None else list(self.groups):
            jobs = self.groups.pop(k, [])
            if jobs:
                self.run(jobs)

    def run(self, jobs: list[Job]) -> None:
        try:
            results = self.session.run(jobs)
        except Exception as err:  # noqa: BLE001 - retried one by one so that a bad item fails alone
            if len(jobs) == 1:
                self.fail(jobs[0].name, err)
                return
            for job in jobs:
                self.run([job])
            return
        for result in results:
            self.commit(result)

    def commit(self, result: JobResult) -> None:
        job = result.job
        try:
            with OutputFolder(self.folder.item_path(job.name), overwrite=True, command="batch",
                              name="out") as out:
                out.commit(lambda tmp: write_files(tmp, result.samples, job.y01, job.op, job.truth,
                                                   result.metrics))
        except (ValueError, OSError) as err:
            self.fail(job.name, err)
            return
        self.folder.record_success(_record(job.name, job.image, job.seed, result.metrics, self.part))
        self.report.finished.append(job.name)
        self.advance(job.name)


def run_batch(config: BatchConfig, prior: DiffusionPrior | None = None, progress: Advance | None = None,
              env: dict[str, str] | None = None) -> BatchReport:
    """Run (or resume) a batch (module docstring); ``prior`` overrides the checkpoint, ``env`` the
    process environment (torchrun / Slurm variables). Returns this process's :class:`BatchReport`."""
    check(config)
    part = partition(config.shard, env)
    folder = BatchFolder(config.out, config.overwrite)
    inputs = list_inputs(config.inputs, config.recursive, config.glob, exclude=folder.path)
    config = dataclasses.replace(config, job=_device_for(config.job, part))
    session = build_session(config, inputs, prior)
    names = [i.name for i in inputs]
    mine = [i for i in inputs if i.name in set(part.select(names))]
    report = BatchReport(folder.path, names, [i.name for i in mine], partition=part)
    with Group.start(part, session.device.type) as group:
        settings = run_config(config, session)
        refused: ValueError | None = None
        if part.rank == 0:
            try:
                folder.prepare(settings)
            except ValueError as err:
                refused = err
        if group.sum(int(refused is not None)):  # every rank waits for rank 0's verdict on OUT
            raise refused or ValueError(f"out: rank 0 refused {config.out!r} (see its error)")
        if part.rank != 0:
            folder.prepare(settings)
        advance = progress or (lambda _name: None)
        done = folder.finished()
        runner = _Runner(session, folder, part, report, config.items_per_call, advance)
        for item in mine:
            if item.name in done:
                report.skipped.append(item.name)
                advance(item.name)
                continue
            record = _recover(folder, item.name, part)
            if record is not None:
                folder.record_success(record)
                report.recovered.append(item.name)
                advance(item.name)
                continue
            runner.add(item)
        runner.flush()
    report.summary = folder.write_summary(names)
    return report
