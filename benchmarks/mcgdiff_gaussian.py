"""MCGDiff on images with an exact prior: a Gaussian fitted to the training images, where the posterior
is closed form, so the sampler's implementation can be told apart from the learned network's errors.

    python benchmarks/mcgdiff_gaussian.py --images 8 --out benchmarks/results/mcgdiff_inpainting/gaussian

The prior is N(μ, Σ) with μ, Σ the mean and covariance of the training split in the prior units
x = 2u − 1 (Σ + 1e-4 I), on the linear 1000-step schedule; its x̂0 is exact at every t
(:func:`diffinv.priors.gaussian_prior`). Each held-out test image is degraded by the problem preset
(σ_y, operator) with its own seed; every sampler runs with its preset through the same
:class:`diffinv.job.Session` as ``diffinv solve``. Scored: PSNR of the 4-sample mean (the image table's
protocol), coverage of the 90 % interval from 16 samples where drawn, and the PSNR of the exact
posterior mean (the MMSE estimate under this prior; no sampler's mean can beat it in expectation).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from diffinv.data import load_dataset
from diffinv.imaging.metrics import coverage, psnr
from diffinv.job import Session, SolveConfig
from diffinv.priors import gaussian_prior
from diffinv.units import PixelUnits


def fitted_prior(train: torch.Tensor, bounded: bool = False):
    """N(μ, Σ + 1e-4 I) of the training images (N, C, H, W) on [0, 1], in [−1, 1] units; ``bounded``
    gives it the images' value range [−1, 1] (so that DDRM's cut and x̂0 clipping apply, as for a network)."""
    x = (2 * train.double() - 1).reshape(train.shape[0], -1)
    mean = x.mean(0)
    cov = torch.cov(x.T) + 1e-4 * torch.eye(x.shape[1], dtype=torch.float64)
    prior = gaussian_prior(mean, cov, shape=tuple(train.shape[1:]))
    if bounded:
        prior.value_range = (-1.0, 1.0)
    return prior


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--problems", default="inpaint_box,sr4,deblur_gauss",
                        help="preset names; PRESET@S sets operator.size = S (e.g. inpaint_box@0.75)")
    parser.add_argument("--samplers", default="exact,mcgdiff,mcgdiff:1024,pgdm,ddrm",
                        help="NAME, or mcgdiff:N / tds:N (N particles per filter instead of the preset's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/mcgdiff_inpainting/gaussian")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset(args.data, 32, 1)
    prior = fitted_prior(data.train.double() / 255.0)
    units = PixelUnits.of(prior)
    test = data.test[: args.images].double() / 255.0
    records, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for problem_spec in args.problems.split(","):
            problem, _, size = problem_spec.partition("@")  # inpaint_box@0.75: a hole of 3/4 the side
            sized = {"operator.size": float(size)} if size else {}
            for i, image in enumerate(test):
                path = Path(tmp) / f"{i}.npy"
                np.save(path, image.numpy())
                for spec in args.samplers.split(","):
                    sampler, _, n = spec.partition(":")
                    over = {**sized, **({f"{sampler}.num_particles": int(n)} if n else {})}
                    for k in (4, 16) if sampler not in ("mcgdiff", "tds") else (4,):
                        session = Session.build(SolveConfig(image="", problem=problem, sampler=sampler,
                                                            simulate=True, device="cpu", num_samples=k,
                                                            overrides=over), prior)
                        job = session.job(str(path), seed=i)
                        (res,) = session.run([job])
                        rec = {"problem": problem_spec, "image": i, "sampler": spec, "num_samples": k,
                               "warnings": res.metrics["warnings"],
                               "psnr4": psnr(res.samples[:4].mean(0), job.truth),
                               "coverage": coverage(res.samples, job.truth, 0.9) if k >= 16 else None,
                               "nfe": (res.metrics["nfe_forward"] + res.metrics["nfe_backward"]) / k}
                        if sampler == "exact" and k == 16:
                            inv = session.inverse([job])
                            post = prior.posterior(inv.operator.matrix(), inv.y.double().reshape(-1),
                                                   inv.sigma_y)
                            mean = units.to_pixels(post.mean().reshape(job.truth.shape)).clamp(0, 1)
                            rec["psnr_exact_mean"] = psnr(mean, job.truth)
                        records.append(rec)
                        print(f"{problem_spec} {i} {spec} k={k}: PSNR4 {rec['psnr4']:.2f}",
                              file=sys.stderr, flush=True)
            write(Path(args.out), records, args, time.perf_counter() - start)


def write(out: Path, records: list[dict], args, seconds: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/mcgdiff_gaussian.py " + " ".join(sys.argv[1:])
    (out / "mcgdiff_gaussian.json").write_text(json.dumps({"command": command, "seconds": seconds,
                                                           "records": records}, indent=1) + "\n")
    lines = ["# MCGDiff with an exact Gaussian prior fitted to the training images", "",
             f"`{command}` ({seconds / 60:.1f} min, torch {torch.__version__}). Mean over test images; "
             "PSNR4: PSNR of the 4-sample mean; coverage of the 90 % interval from 16 samples; `exact mean`: "
             "PSNR of the closed-form posterior mean (the MMSE estimate under this prior).", "",
             "| problem | images | exact mean | exact (4) | mcgdiff (4) | mcgdiff N = 1024 (4) | pgdm (4) "
             "| ddrm (4) "
             "| coverage exact / pgdm / ddrm (16) | filters with collapsed weights (N = 64 / 1024) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for problem in dict.fromkeys(r["problem"] for r in records):
        sel = [r for r in records if r["problem"] == problem]

        def mean(sampler, key="psnr4", k=4, sel=sel):
            v = [r[key] for r in sel
                 if r["sampler"] == sampler and r["num_samples"] == k and r.get(key) is not None]
            return f"{np.mean(v):.2f}" if v else "—"

        images = len({r["image"] for r in sel})
        covs = " / ".join(mean(s, "coverage", 16) for s in ("exact", "pgdm", "ddrm"))
        collapsed = " / ".join(
            f"{sum(any('collapsed' in w for w in r['warnings']) for r in sel if r['sampler'] == s)}"
            f"/{sum(r['sampler'] == s for r in sel)}" for s in ("mcgdiff", "mcgdiff:1024"))
        lines.append(f"| {problem} | {images} | {mean('exact', 'psnr_exact_mean', 16)} | {mean('exact')} | "
                     f"{mean('mcgdiff')} | {mean('mcgdiff:1024')} | {mean('pgdm')} | {mean('ddrm')} | "
                     f"{covs} | "
                     f"{collapsed} |")
    (out / "mcgdiff_gaussian.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
