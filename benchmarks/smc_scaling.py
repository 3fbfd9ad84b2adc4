"""Seconds per SMC step against the number of particles N, MCGDiff and TDS on the shipped fashion32 prior.

One 32×32 Fashion-MNIST-like observation (a random draw of the prior, ×4 average-pooling super-resolution
with σ_y = 0.05), one filter of N particles, N = 16, 64, …, 4096. Each run steps the Feynman–Kac
engine (``FeynmanKac.steps``) and times every step after ``--warmup`` steps (synchronising the device
before each clock read); the median over ``--steps`` timed steps is reported, with the time per
particle. Time per step that grows sub-linearly in N means the device is not saturated yet (batching
pays); linear growth means it is (cost per particle constant).

    python benchmarks/smc_scaling.py --device cpu --out benchmarks/results/smc_scaling_cpu
    python benchmarks/smc_scaling.py --device cuda --out benchmarks/results/smc_scaling_cuda

Writes OUT/smc_scaling.json and OUT/smc_scaling.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from diffinv import __version__
from diffinv.checkpoints import load_prior
from diffinv.operators import GaussianNoise
from diffinv.operators.superres import AvgPoolSR
from diffinv.priors import CountingPrior
from diffinv.rng import make_generator
from diffinv.samplers import InverseProblem
from diffinv.samplers.mcgdiff import MCGDiffConfig, MCGDiffModel
from diffinv.samplers.tds import TDSConfig, TDSModel
from diffinv.sampling import sample_prior
from diffinv.smc.engine import FeynmanKac

MODELS = {"mcgdiff": (MCGDiffModel, MCGDiffConfig), "tds": (TDSModel, TDSConfig)}


def problem_for(prior, device: torch.device) -> InverseProblem:
    truth = sample_prior(prior, 1, num_steps=50, generator=make_generator(0), device=device)[0].cpu()
    op = AvgPoolSR(tuple(prior.shape), factor=4)
    noise = GaussianNoise(0.05)
    y = noise.sample(op.A(truth[None].double())[0], make_generator(1))
    return InverseProblem(op, y, noise)


def time_steps(name: str, prior, problem, n: int, args, device: torch.device) -> dict:
    model_class, config_class = MODELS[name]
    config = config_class(num_particles=n, num_steps=args.grid)
    counting = CountingPrior(prior)
    model = model_class(counting, problem, config, device, torch.float32)
    engine = FeynmanKac(model, 1, n)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times, last = [], None
    sync()
    last = time.perf_counter()
    for state in engine.steps(make_generator(2, str(device))):
        sync()
        now = time.perf_counter()
        if state.step > args.warmup:
            times.append(now - last)
        last = now
        if len(times) >= args.steps:
            break
    seconds = statistics.median(times)
    return {"sampler": name, "particles": n, "seconds_per_step": seconds,
            "microseconds_per_particle_step": 1e6 * seconds / n, "timed_steps": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--particles", default="16,64,256,1024,4096")
    parser.add_argument("--samplers", default="mcgdiff,tds")
    parser.add_argument("--grid", type=int, default=100, help="steps of the time grid")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/smc_scaling_cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    prior = load_prior("fashion32", device=device)
    problem = problem_for(prior, device)
    rows = []
    start = time.perf_counter()
    for name in args.samplers.split(","):
        for n in (int(v) for v in args.particles.split(",")):
            rows.append(time_steps(name, prior, problem, n, args, device))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    info = {"version": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.machine(),
            "threads": torch.get_num_threads(), "cores": os.cpu_count(),
            "total_seconds": time.perf_counter() - start,
            "command": "python benchmarks/smc_scaling.py " + " ".join(sys.argv[1:])}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "smc_scaling.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=2))
    lines = ["# Seconds per SMC step against N (fashion32, ×4 average-pooling SR, one filter)", "",
             f"`{info['command']}` — diffinv {info['version']}, torch {info['torch']}, {info['device']}, "
             f"{info['threads']} threads, {info['total_seconds']:.0f} s in all. Median of "
             f"{args.steps} timed steps after {args.warmup} warm-up step(s); TDS steps include the "
             "backward pass.", "",
             "| sampler | N | s / step | µs / particle·step | × time for × 4 particles |",
             "|---|---|---|---|---|"]
    for i, r in enumerate(rows):
        prev = rows[i - 1] if i and rows[i - 1]["sampler"] == r["sampler"] else None
        growth = f"{r['seconds_per_step'] / prev['seconds_per_step']:.2f}" if prev else "—"
        lines.append(f"| {r['sampler']} | {r['particles']} | {r['seconds_per_step']:.4f} | "
                     f"{r['microseconds_per_particle_step']:.1f} | {growth} |")
    (out / "smc_scaling.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
