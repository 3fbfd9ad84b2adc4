r"""``diffinv refine``: learn a correction for a trained image prior and save it as a refined prior.

Pipeline (each stage resumable, all under ``OUT``):

1. **The model's own samples** (``OUT/cache/``): ``model_samples`` DDPM (DDIM η = 1) samples of the base prior
   with ``sample_steps`` steps, in chunks of 250, chunk i drawn from seed ``seed + 1000 + i``, so an
   interrupted cache resumes where it stopped and is the same as an uninterrupted one. They feed J_CE and
   serve as the base's sample draws in the card's Fréchet figure.
2. **Training** u_φ (:class:`~diffinv.refine.trainer.CorrectionTrainer`), states in ``OUT/state`` every
   ``save_every`` steps; SIGINT/SIGTERM (from the CLI) save and stop.
3. **Export** (``OUT/model.safetensors`` + ``card.json``, :mod:`.checkpoint`) and, with ``evaluate``, the
   card's figures for the base and the refined prior side by side (:mod:`.card`).

``OUT`` must be new, empty, or an earlier refine run with the same options (then it resumes); it may not hold
another prior. The CPU recipe of ``checkpoints/fashion32-dg`` is in its card (``training.recipe``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from diffinv.checkpoints import CARD_FILE, git_commit
from diffinv.data import batch_to_network, load_dataset
from diffinv.nn.unet import init_weights
from diffinv.refine.checkpoint import REFINED_FORMAT, base_fingerprint, save_refined
from diffinv.refine.losses import LOSSES, LossSpec
from diffinv.refine.potential import build_potential, default_architecture
from diffinv.refine.trainer import CorrectionTrainer
from diffinv.rng import make_generator
from diffinv.sampling import sample_prior

CACHE_DIR, CACHE_CHUNK = "cache", 250
Progress = Callable[[str, int, int, dict], None]  # (stage, done, total, info)


@dataclass(frozen=True)
class RefineConfig:
    """Options of ``diffinv refine`` (every CLI option is a field).

    checkpoint : base prior NAME or path.  data : its training data (fashion-mnist, emoji or a folder).
    out : the refined prior's folder.  loss : mse | ce | mse+ce.  gamma : weight of J_CE in mse+ce.
    weighting : λ(t) of J_MSE, ``relative`` (each t's error over the base's) or ``eps`` (:mod:`.losses`).
    t_range : (A, B), the timesteps where the correction applies and is trained (None = all).
    steps, batch_size, lr, groups : Adam steps, rows per step, learning rate, timesteps per step.
    width : channels (images) of u_φ.  model_samples, sample_steps : the cached base samples.
    evaluate, eval_draws, eval_samples : card figures from ``eval_draws`` draws of ``eval_samples`` samples.
    """

    checkpoint: str
    data: str
    out: str
    loss: str = "mse"
    gamma: float = 0.1
    weighting: str = "relative"
    t_range: tuple[int, int] | None = None
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    groups: int = 4
    width: int = 8
    model_samples: int = 1500
    sample_steps: int = 100
    seed: int = 0
    device: str = "cpu"
    threads: int = 1
    save_every: int = 200
    evaluate: bool = True
    eval_draws: int = 3
    eval_samples: int = 500

    def validate(self) -> RefineConfig:
        if self.loss not in LOSSES:
            raise ValueError(f"loss: expected one of {', '.join(LOSSES)}, got {self.loss!r}")
        for name in ("steps", "batch_size", "groups", "width", "sample_steps", "eval_draws", "eval_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')}: expected a positive integer, "
                                 f"got {getattr(self, name)}")
        if self.model_samples < (2 if self.loss != "mse" else 0):
            raise ValueError(f"model-samples: the {self.loss} loss needs at least 2, "
                             f"got {self.model_samples}")
        if self.lr <= 0 or self.gamma < 0:
            raise ValueError("lr, gamma: expected lr > 0 and gamma ≥ 0")
        if self.t_range is not None and not 0 <= self.t_range[0] <= self.t_range[1]:
            raise ValueError(f"t-range: expected A,B with 0 ≤ A ≤ B, got {self.t_range}")
        if min(self.seed, self.threads, self.save_every) < 0:
            raise ValueError("seed, threads, save-every: expected values ≥ 0")
        return self

    def cache_size(self) -> int:
        """Base samples to cache: for J_CE and, with ``evaluate``, the base's Fréchet draws."""
        return max(self.model_samples, self.eval_draws * self.eval_samples if self.evaluate else 0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["t_range"] = list(self.t_range) if self.t_range is not None else None
        return d


@dataclass
class RefineResult:
    step: int
    losses: dict
    seconds: float
    out: Path
    resumed_from: int
    figures: dict | None


def check_out(config: RefineConfig, base_folder: Path | None) -> Path:
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {out} is a file; expected a folder for the refined prior")
    if base_folder is not None and out.resolve() == base_folder.resolve():
        raise ValueError(f"out: {out} is the base prior's own folder; choose another --out")
    ours = {CACHE_DIR, "state", CARD_FILE, "model.safetensors", "samples"}
    if out.is_dir() and any(out.iterdir()) and not {p.name for p in out.iterdir()} <= ours:
        raise ValueError(f"out: {out} is a non-empty folder that is not a refine run; choose another --out")
    card = out / CARD_FILE
    if card.is_file():
        try:
            fmt = json.loads(card.read_text()).get("format")
        except json.JSONDecodeError:
            fmt = None
        if fmt != REFINED_FORMAT:
            raise ValueError(f"out: {out} holds another prior (its card.json is not a refine card); "
                             "choose another --out")
    return out


def draw_chunk(prior, config: RefineConfig, i: int, device) -> torch.Tensor:
    """Chunk i of the cache: ``CACHE_CHUNK`` DDPM samples from seed ``seed + 1000 + i`` (any prior, so a
    refined prior's chunk i shares all its noise with the base's)."""
    return sample_prior(prior, CACHE_CHUNK, num_steps=config.sample_steps, eta=1.0,
                        generator=make_generator(config.seed + 1000 + i, device), device=device)


def model_sample_cache(base, config: RefineConfig, fingerprint: str | None, device: torch.device,
                       progress: Progress | None, stop: Callable[[], bool] | None) -> torch.Tensor | None:
    """The cached base samples (n, *shape) on the CPU; None if interrupted by ``stop``."""
    folder = Path(config.out) / CACHE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"base": config.checkpoint, "base_sha256": fingerprint, "sample_steps": config.sample_steps,
            "eta": 1.0, "seed": config.seed, "chunk": CACHE_CHUNK}
    meta_path = folder / "cache.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()) != meta:
        raise ValueError(f"cache: {folder} holds samples drawn with other settings; delete it or use another "
                         "--out")
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    total = config.cache_size()
    chunks = []
    clock = folder / "seconds.json"  # seconds spent drawing each chunk, kept across resumed runs
    seconds = json.loads(clock.read_text()) if clock.is_file() else {}
    for i in range((total + CACHE_CHUNK - 1) // CACHE_CHUNK):
        path = folder / f"model_{i:04d}.safetensors"
        if not path.is_file():
            if stop is not None and stop():
                return None
            started = time.perf_counter()
            x = draw_chunk(base, config, i, device)
            save_file({"x": x.float().cpu().contiguous()}, str(path.with_suffix(".tmp")))
            path.with_suffix(".tmp").replace(path)
            seconds[str(i)] = round(time.perf_counter() - started, 1)
            clock.write_text(json.dumps(seconds) + "\n")
        chunks.append(load_file(str(path))["x"])
        if progress is not None:
            progress("samples", min((i + 1) * CACHE_CHUNK, total), total, {})
    return torch.cat(chunks)[:total]


def refine(config: RefineConfig, progress: Progress | None = None,
           stop: Callable[[], bool] | None = None) -> RefineResult:
    """Run the pipeline of the module docstring; returns where it ended (``step < steps`` if stopped)."""
    from diffinv.priors.loading import load_prior, resolve_source

    config.validate()
    previous_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        device = torch.device("cuda" if config.device == "auto" and torch.cuda.is_available() else
                              ("cpu" if config.device == "auto" else config.device))
        base_path = resolve_source(config.checkpoint)
        out = check_out(config, base_path if base_path.is_dir() else None)
        base = load_prior(config.checkpoint, device=device)
        if len(base.shape) != 3:
            raise ValueError(f"checkpoint: refine expects an image prior (C, S, S), got shape {base.shape}")
        last = base.schedule.num_timesteps - 1
        t_range = config.t_range or (0, last)
        if t_range[1] > last:
            raise ValueError(f"t-range: B must be at most {last} for this prior, got {t_range[1]}")
        channels, size = base.shape[0], base.shape[1]
        data = load_dataset(config.data, size, channels)
        fingerprint = base_fingerprint(base)
        samples = model_sample_cache(base, config, fingerprint, device, progress, stop)
        if samples is None:
            return RefineResult(0, {}, 0.0, out, 0, None)
        clock = out / CACHE_DIR / "seconds.json"
        sample_seconds = sum(json.loads(clock.read_text()).values()) if clock.is_file() else None
        arch = default_architecture(tuple(base.shape), config.width)
        net = init_weights(build_potential(arch), make_generator(config.seed + 7)).to(device)

        def batches(n: int, gen: torch.Generator) -> torch.Tensor:
            index = torch.randint(0, data.train.shape[0], (n,), generator=gen)
            return batch_to_network(data.train, index, size, gen)

        spec = LossSpec(loss=config.loss, gamma=config.gamma, t_range=tuple(t_range), groups=config.groups,
                        weighting=config.weighting).validate()
        pool = samples[:config.model_samples] if spec.uses_ce else None
        trainer = CorrectionTrainer(net, base, spec, batches, pool,
                                    batch_size=config.batch_size, lr=config.lr, seed=config.seed,
                                    config=config.to_dict())
        stage = (lambda step, total, mean: progress("train", step, total, mean)) if progress else None
        from diffinv.training.state import has_state, load_state
        resumed_from = load_state(out).step if has_state(out) else 0
        done = trainer.train(config.steps, out=out, save_every=config.save_every, progress=stage, stop=stop)
        result = RefineResult(trainer.step, trainer.last, trainer.seconds, out, resumed_from, None)
        if not done:
            return result
        card = {"name": out.name,
                "base": {"checkpoint": str(config.checkpoint), "sha256": fingerprint},
                "correction": {"architecture": arch, "log_ratio": "l(x, t) = 1/2 <x, u(x, t)>; c = grad_x l",
                               "parameters": sum(p.numel() for p in net.parameters())},
                "t_range": list(t_range), "loss": config.loss, "gamma": config.gamma,
                "weighting": config.weighting,
                "image_size": size, "channels": channels,
                "training": {"steps": trainer.step, "seconds": round(trainer.seconds, 1),
                             "sample_seconds": None if sample_seconds is None else round(sample_seconds, 1),
                             "model_samples": int(samples.shape[0]),
                             "log_columns": ["step", *sorted(trainer.last), "seconds"],
                             "log": trainer.log, "recipe": config.to_dict()},
                "git_commit": git_commit(), "figures": None}
        save_refined(out, net, card)
        if config.evaluate:
            from diffinv.refine.card import evaluate_refined
            result.figures = evaluate_refined(out, samples, data, device, config, progress)
        return result
    finally:
        torch.set_num_threads(previous_threads)


def evaluate_folder(out: str | Path, device: str | torch.device = "cpu",
                    progress: Progress | None = None) -> dict:
    """Recompute the card figures of a finished refine folder from its recipe (the cache is reused)."""
    from dataclasses import fields

    from diffinv.priors.loading import load_prior
    from diffinv.refine.card import evaluate_refined
    from diffinv.refine.checkpoint import read_refined_card

    out = Path(out)
    recipe = read_refined_card(out)["training"]["recipe"]
    names = {f.name for f in fields(RefineConfig)}
    values = {k: v for k, v in recipe.items() if k in names}
    if values.get("t_range") is not None:
        values["t_range"] = tuple(values["t_range"])
    config = RefineConfig(**values).validate()
    base = load_prior(config.checkpoint, device=device)
    data = load_dataset(config.data, base.shape[1], base.shape[0])
    samples = model_sample_cache(base, config, base_fingerprint(base), torch.device(device), progress, None)
    return evaluate_refined(out, samples, data, device, config, progress)
