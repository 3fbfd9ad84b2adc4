r"""``--fit`` on images: a Gaussian blur of unknown width and an unknown σ_y, per held-out test image.

For each of N held-out test images u_i of the prior's dataset: a true width σ_i ~ U(0.8, 2.5) px and a
true σ_y,i ~ logU(0.01, 0.05) (seeded by i); y_i = k_{σ_i} ⊛ u_i + σ_y,i ε (the ``deblur_gauss`` preset's
13×13 circular blur). Three solves of the same y_i with the same sampler and seed:

* ``fitted`` — ``--fit operator.sigma --fit noise.sigma_y`` from the preset's values (σ 1.5, σ_y 0.025);
* ``true``   — the true σ_i and σ_y,i;
* ``wrong``  — both 2× the truth (a user's guess that is off by a factor 2).

Scored: the fitted values against the truth (relative error, and z with the fit's SE), the PSNR of the
posterior mean of each solve against u_i, and the cost of the fitted solve as a multiple of a plain
one (network evaluations). Writes fit_images.json / fit_images.md under --out.

    python benchmarks/fit_images.py --images 20 --out benchmarks/results/fit_images
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from diffinv import __version__
from diffinv.data import load_dataset
from diffinv.imaging.metrics import psnr
from diffinv.job import Session, SolveConfig
from diffinv.operators.blur import GaussianBlur
from diffinv.operators.noise import GaussianNoise
from diffinv.priors.loading import load_prior
from diffinv.rng import make_generator

PROBLEM = "deblur_gauss"
SIZE = 13  # the preset's kernel size


def truth_of(i: int) -> tuple[float, float]:
    """(σ_i, σ_y,i) of image i (module docstring)."""
    g = make_generator(10_000 + i)
    u = torch.rand(2, generator=g, dtype=torch.float64)
    return 0.8 + 1.7 * float(u[0]), math.exp(math.log(0.01) + float(u[1]) * math.log(5.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="fashion32")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--sampler", default="pgdm")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--fit-method", default="single")
    parser.add_argument("--fit-steps", type=int, default=16)
    parser.add_argument("--fit-samples", type=int, default=2)
    parser.add_argument("--fit-slots", type=int, default=10, help="single loop: trajectories in the queue")
    parser.add_argument("--fit-restart", type=float, default=1.0,
                        help="single loop: share of the steps a finished trajectory re-runs (< 1: chains)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a preset override for all three solves, e.g. pgdm.eta=1 (repeatable)")
    parser.add_argument("--out", default="benchmarks/results/fit_images")
    args = parser.parse_args()
    sets = dict(item.split("=", 1) for item in args.set)
    sets = {k: float(v) if v.replace(".", "", 1).lstrip("-").isdigit() else v for k, v in sets.items()}
    torch.set_num_threads(args.threads)
    prior = load_prior(args.checkpoint)
    c, s, _ = prior.shape
    test = load_dataset(args.data, s, c).test[args.start: args.start + args.images].double() / 255.0
    records, start = [], time.perf_counter()
    base = dict(image="", problem=PROBLEM, sampler=args.sampler, steps=args.steps,
                num_samples=args.num_samples, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        for i, image in enumerate(test, start=args.start):
            sigma, sigma_y = truth_of(i)
            op = GaussianBlur(tuple(image.shape), size=SIZE, sigma=sigma)
            y01 = GaussianNoise(sigma_y).sample(op.A(image[None]), make_generator(20_000 + i))[0]
            path = Path(tmp) / f"{i}.npy"
            np.save(path, y01.numpy())
            rec = {"image": i, "sigma": sigma, "sigma_y": sigma_y}
            runs = {"fitted": SolveConfig(**base, fit=("operator.sigma", "noise.sigma_y"),
                                          fit_method=args.fit_method, fit_steps=args.fit_steps,
                                          fit_samples=args.fit_samples, fit_slots=args.fit_slots,
                                          fit_restart=args.fit_restart, overrides=dict(sets)),
                    "true": SolveConfig(**base, overrides={**sets, "operator.sigma": sigma,
                                                           "noise.sigma_y": sigma_y}),
                    "wrong": SolveConfig(**base, overrides={**sets, "operator.sigma": 2 * sigma,
                                                            "noise.sigma_y": 2 * sigma_y})}
            for name, config in runs.items():
                session = Session.build(config, prior)
                (result,) = session.run([session.job(str(path), seed=i)])
                m = result.metrics
                rec[f"psnr_{name}"] = psnr(result.samples.mean(0), image)
                rec[f"nfe_{name}"] = m["nfe_forward"] + m["nfe_backward"]
                rec[f"seconds_{name}"] = m["seconds"]
                if name == "fitted":
                    fit = m["fit"]
                    rec.update(fit_sigma=fit["values"]["operator.sigma"],
                               fit_sigma_se=fit["se"]["operator.sigma"],
                               fit_sigma_y=fit["values"]["noise.sigma_y"],
                               fit_sigma_y_se=fit["se"]["noise.sigma_y"], cost_vs_solve=fit["cost_vs_solve"],
                               trace=[row["theta"] for row in fit["trace"]])
            records.append(rec)
            print(f"image {i}: σ {sigma:.3f} → {rec['fit_sigma']:.3f} ± {rec['fit_sigma_se']:.3f}, σ_y "
                  f"{sigma_y:.4f} → {rec['fit_sigma_y']:.4f}; PSNR fitted {rec['psnr_fitted']:.2f} true "
                  f"{rec['psnr_true']:.2f} wrong {rec['psnr_wrong']:.2f}; cost ×{rec['cost_vs_solve']:.1f}",
                  file=sys.stderr, flush=True)
            write(Path(args.out), records, args, start)


def loop_name(args: argparse.Namespace) -> str:
    """The loop in words: nested, the single loop's queue, or its chains (``--fit-restart`` < 1)."""
    if args.fit_method != "single":
        return f"{args.fit_method} loop"
    if args.fit_restart < 1:
        return (f"single loop with {args.fit_slots} chain(s) re-noised to the last {args.fit_restart:.0%} of "
                "the steps after each update")
    return f"single loop (a queue of {args.fit_slots} trajectories)"


def write(out: Path, records: list[dict], args: argparse.Namespace, start: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    info = {"version": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "threads": args.threads, "seconds": time.perf_counter() - start, "checkpoint": args.checkpoint,
            "data": args.data, "sampler": args.sampler, "steps": args.steps, "num_samples": args.num_samples,
            "fit_method": args.fit_method, "fit_steps": args.fit_steps, "fit_samples": args.fit_samples,
            "fit_slots": args.fit_slots, "fit_restart": args.fit_restart,
            "command": "python benchmarks/fit_images.py " + " ".join(sys.argv[1:])}
    (out / "fit_images.json").write_text(json.dumps({"info": info, "records": records}, indent=1) + "\n")
    rel_s = np.array([abs(r["fit_sigma"] / r["sigma"] - 1) for r in records])
    rel_y = np.array([abs(r["fit_sigma_y"] / r["sigma_y"] - 1) for r in records])
    d_true = np.array([r["psnr_fitted"] - r["psnr_true"] for r in records])
    d_wrong = np.array([r["psnr_fitted"] - r["psnr_wrong"] for r in records])
    n = len(records)
    lines = ["# `--fit` on images: unknown blur width and noise level", "",
             f"`{info['command']}` — {n} held-out test images of `{args.data}`, prior "
             f"`{args.checkpoint}`, sampler {args.sampler} ({args.steps} steps, {args.num_samples} samples, "
             "posterior mean scored), "
             f"fit: {loop_name(args)}, {args.fit_steps} updates of {args.fit_samples} samples, started "
             "at the preset's σ = 1.5 px, σ_y = 0.025. Truth per image: σ ~ U(0.8, 2.5), σ_y ~ logU(0.01, "
             "0.05). 'wrong' = both parameters 2× the truth.", "",
             "| | median | max |", "|---|---|---|",
             f"| relative error of the fitted σ | {np.median(rel_s):.3f} | {rel_s.max():.3f} |",
             f"| relative error of the fitted σ_y | {np.median(rel_y):.3f} | {rel_y.max():.3f} |", "",
             "| PSNR (dB) | mean | sd | min |", "|---|---|---|---|",
             *(f"| {k} | {np.mean(v):.2f} | {np.std(v):.2f} | {np.min(v):.2f} |" for k, v in (
                 ("fitted", [r["psnr_fitted"] for r in records]), ("true", [r["psnr_true"] for r in records]),
                 ("wrong (2×)", [r["psnr_wrong"] for r in records]), ("fitted − true", d_true),
                 ("fitted − wrong", d_wrong))), "",
             f"Cost of a fitted solve: ×{np.mean([r['cost_vs_solve'] for r in records]):.1f} the network "
             f"evaluations of a plain one; {np.mean([r['seconds_fitted'] for r in records]):.0f} s against "
             f"{np.mean([r['seconds_true'] for r in records]):.1f} s on this CPU.", "",
             "| image | σ | fitted σ | σ_y | fitted σ_y | PSNR fitted | true | wrong |",
             "|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['image']} | {r['sigma']:.3f} | {r['fit_sigma']:.3f} ± {r['fit_sigma_se']:.3f} | "
                     f"{r['sigma_y']:.4f} | {r['fit_sigma_y']:.4f} ± {r['fit_sigma_y_se']:.4f} | "
                     f"{r['psnr_fitted']:.2f} | {r['psnr_true']:.2f} | {r['psnr_wrong']:.2f} |")
    (out / "fit_images.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
