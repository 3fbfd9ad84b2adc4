"""Bias of one MCGDiff draw on the GMM benchmark, measured without the sampling noise of SW.

    python benchmarks/mcgdiff_bias.py --dx 100 --seeds 13-13 --configs 64x100,256x100,256x300 --filters 200

A draw from one filter picks particle i with its final weight W_i, so the law of one draw puts mass
E[Σ_i W_i r_k(X_i)] on mode k, where r_k(x) = p(k | x) is the exact posterior responsibility. The
script averages Σ_i W_i r_k(X_i) over F independent filters (no draws) and reports the L1 distance
to the exact posterior mode weights w̃ (the Δw of the report, minus the multinomial noise of a finite
sample), with Σ_k se_k, the sampling noise of that average, beside it. One JSON line per seed and
configuration on stdout. ``NxS`` means N particles and S diffusion steps; ``:e`` appends an ESS
threshold (``256x100:0.5``).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from diffinv.benchmarks.gmm import make_problem
from diffinv.compare import parse_seeds
from diffinv.priors.base import CountingPrior
from diffinv.rng import make_generator
from diffinv.samplers.mcgdiff import MCGDiffConfig, run_filters


def parse_config(text: str) -> MCGDiffConfig:
    """``NxS`` or ``NxS:e`` → MCGDiffConfig(num_particles=N, num_steps=S, ess_threshold=e)."""
    sizes, _, threshold = text.partition(":")
    n, _, s = sizes.partition("x")
    return MCGDiffConfig(num_particles=int(n), num_steps=int(s), ess_threshold=float(threshold or 1.0))


def mode_weight_bias(dx: int, seed: int, config: MCGDiffConfig, filters: int) -> dict[str, float]:
    """L1 error of the averaged one-draw mode weights and its noise scale (module docstring)."""
    gmm = make_problem(dx, 1, seed)
    post = gmm.posterior
    start = time.perf_counter()
    system = run_filters(CountingPrior(gmm.prior), gmm.problem, filters, config,
                         make_generator(1000 + seed), torch.device("cpu"), torch.float32)
    n = config.num_particles
    x = system.particles.reshape(filters * n, -1)
    resp = torch.softmax(post.component_log_prob(x), -1).reshape(filters, n, -1)
    per_filter = (system.log_weights.exp()[..., None] * resp).sum(1)  # (F, K)
    mean = per_filter.mean(0)
    return {"l1": float((mean - post.weights).abs().sum()),
            "l1_noise": float((per_filter.std(0) / filters**0.5).sum()),
            "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dx", type=int, default=100)
    parser.add_argument("--seeds", default="100-109")
    parser.add_argument("--configs", default="64x100,256x100")
    parser.add_argument("--filters", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    for seed in parse_seeds(args.seeds):
        for text in args.configs.split(","):
            cfg = parse_config(text)
            row = mode_weight_bias(args.dx, seed, cfg, args.filters)
            print(json.dumps({"dx": args.dx, "seed": seed, "config": text, "filters": args.filters,
                              **{k: round(v, 4) for k, v in row.items()}}), flush=True)


if __name__ == "__main__":
    main()
