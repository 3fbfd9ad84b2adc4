"""PSNR and calibration against cost: every sampler at several budgets of network evaluations per sample,
beside deepinv's samplers on the same network and the same noisy observations.

    python benchmarks/psnr_nfe.py --images 8 --budgets 20,100,300 --out benchmarks/results/psnr_nfe

A budget B is network evaluations per returned sample, forward and backward passes each counting one
(so a gradient sampler gets B/2 steps); :func:`options_for_budget` gives each sampler's options at B
on top of its problem preset (problems/*.yaml), and the measured evaluations are what the table and
figure show. ``deepinv-ddrm``, ``deepinv-dps`` and ``deepinv-diffpir`` are deepinv 0.5.0's samplers
wrapped around the same prior (``benchmarks/deepinv_adapter.py``; deepinv is installed separately).
Every (problem, image) pair is simulated once with its own seed (the image index) and shared by all
methods. Scored per image: the PSNR of the mean of the first 4 samples (the image table's protocol)
and of all ``--num-samples``, the mean per-sample PSNR, and the coverage (share of truth pixels inside
the per-pixel central 90 % interval of the samples; ≥ 16 samples). Shards: ``--start K --images N``
with their own --out, then ``--merge a.json b.json --out DIR``.

``--checkpoint gaussian`` replaces the network with the exact Gaussian prior fitted to the training images
(``mcgdiff_gaussian.fitted_prior``, [−1, 1] value range); method ``exact`` then draws exact posterior samples
(no evaluations), the calibrated reference every sampler's PSNR and coverage can be read against, and
``exact-antithetic`` the same samples in antithetic pairs (each pair's mean is the posterior mean).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nfe_figure import draw_curves  # noqa: E402

from diffinv import __version__  # noqa: E402
from diffinv.checkpoints import load_prior  # noqa: E402
from diffinv.data import load_dataset  # noqa: E402
from diffinv.imaging.metrics import coverage, psnr  # noqa: E402
from diffinv.job import Session, SolveConfig  # noqa: E402
from diffinv.priors.base import CountingPrior  # noqa: E402

DIFFINV = ("dps", "pgdm", "ddrm", "dcps", "mcgdiff")
EXACT = "exact"  # exact posterior samples of an analytic prior (--checkpoint gaussian): a reference
EXACT_PAIRS = "exact-antithetic"  # the same in antithetic pairs (the samplers' ``antithetic`` option)
DEEPINV = ("deepinv-ddrm", "deepinv-dps", "deepinv-diffpir")


def options_for_budget(method: str, budget: int) -> dict:
    """Options that spend about ``budget`` evaluations per sample (forward + backward).

    dps, ΠGDM: B/2 steps of 1 forward + 1 backward. DDRM: B steps. DCPS: 3 blocks; below B = 500, M = 2
    Langevin steps (2 evaluations each) and K = 1 gradient step per kernel (3 evaluations per grid step),
    so 13 + 3·steps; from B = 500 the preset's M = 5 and K = 2, so 31 + 5·steps (the preset's 300 steps
    are B ≈ 1 500). MCGDiff: 64 particles per filter and 16 samples drawn from each, 4·steps per sample.
    """
    if method in (EXACT, EXACT_PAIRS):
        return {}
    if method in ("dps", "pgdm"):
        return {"num_steps": max(2, budget // 2)}
    if method == "ddrm":
        return {"num_steps": max(2, budget)}
    if method == "dcps":
        if budget >= 500:
            return {"num_blocks": 3, "langevin_steps": 5, "gradient_steps": 2,
                    "num_steps": (budget - 31) // 5}
        return {"num_blocks": 3, "langevin_steps": 2, "gradient_steps": 1,
                "num_steps": max(3, (budget - 13) // 3)}
    if method == "mcgdiff":
        return {"num_particles": 64, "samples_per_filter": 16, "num_steps": max(2, budget // 4)}
    raise ValueError(f"methods: unknown method {method!r}")


class Runner:
    """Runs one method on one job; diffinv sessions are built once per (problem, method, options)."""

    def __init__(self, prior, num_samples: int, overrides: dict[str, dict] | None = None) -> None:
        self.prior, self.k = prior, num_samples
        self.sessions: dict[tuple, Session] = {}
        self.overrides = overrides or {}
        self._dinv = None

    def session(self, problem: str, sampler: str, options: dict) -> Session:
        key = (problem, sampler, tuple(sorted(options.items())))
        if key not in self.sessions:
            opts = {**self.overrides.get(sampler, {}), **options}
            self.sessions[key] = Session.build(
                SolveConfig(image="", problem=problem, sampler=sampler, simulate=True, device="cpu",
                            num_samples=self.k, overrides={f"{sampler}.{k}": v for k, v in opts.items()}),
                self.prior)
        return self.sessions[key]

    def run(self, problem: str, method: str, job, options: dict, sigma_y: float, seed: int):
        """(samples (k, C, H, W) on [0, 1], forward, backward evaluations per sample, seconds)."""
        start = time.perf_counter()
        if method == EXACT_PAIRS:
            method, options = EXACT, {**options, "antithetic": True}
        if method in DIFFINV or method == EXACT:
            (res,) = self.session(problem, method, options).run([job])
            m = res.metrics
            seconds = time.perf_counter() - start
            return res.samples, m["nfe_forward"] / self.k, m["nfe_backward"] / self.k, seconds
        samples, counted = self.run_deepinv(method, job, options["budget"], sigma_y, seed)
        return samples, counted.forward / self.k, counted.backward / self.k, time.perf_counter() - start

    def run_deepinv(self, method: str, job, budget: int, sigma_y: float, seed: int):
        from deepinv_adapter import PriorDenoiser, import_deepinv, svd_physics

        dinv = self._dinv = self._dinv or import_deepinv()
        counted = CountingPrior(self.prior)
        den = PriorDenoiser(counted)
        physics = svd_physics(dinv, job.op, sigma_y)
        y = job.y01.float()[None].repeat(self.k, *[1] * job.y01.dim())
        torch.manual_seed(seed)  # deepinv's DDRM and DiffPIR draw from the global generator
        if method == "deepinv-ddrm":
            model = dinv.sampling.DDRM(denoiser=den, sigmas=np.linspace(1, 0, budget))
            x = model(y, physics)
        elif method == "deepinv-diffpir":
            model = dinv.sampling.DiffPIR(den, dinv.optim.data_fidelity.L2(), sigma=sigma_y, max_iter=budget)
            x = model(y, physics)
        else:
            gen = torch.Generator().manual_seed(seed)
            model = dinv.sampling.DPS(den, num_steps=max(2, budget // 2), rng=gen)
            x = model(y, physics, seed=seed)
        return x.detach().double().clamp(0, 1), counted.stats


def score(samples, truth) -> dict:
    return {"psnr4": psnr(samples[:4].mean(0), truth), "psnr_all": psnr(samples.mean(0), truth),
            "psnr_sample_mean": float(np.mean([psnr(s, truth) for s in samples])),
            "coverage": coverage(samples, truth, 0.9), "std_mean": float(samples.std(0).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="fashion32", help="a shipped prior, or gaussian")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--split", default="test", choices=["test", "train"])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--problems", default="sr4,inpaint_box,deblur_gauss")
    parser.add_argument("--methods", default=",".join(DIFFINV + DEEPINV))
    parser.add_argument("--budgets", default="20,100,300")
    parser.add_argument("--num-samples", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/psnr_nfe")
    parser.add_argument("--merge", nargs="+", metavar="JSON")
    args = parser.parse_args()
    if args.merge:
        return merge(args)
    torch.set_num_threads(args.threads)
    if args.checkpoint == "gaussian":
        from mcgdiff_gaussian import fitted_prior

        data = load_dataset(args.data, 32, 1)
        prior = fitted_prior(data.train.double() / 255.0, bounded=True)
    else:
        prior = load_prior(args.checkpoint)
        c, s, _ = prior.shape
        data = load_dataset(args.data, s, c)
    images = getattr(data, args.split)[args.start: args.start + args.images].double() / 255.0
    runner = Runner(prior, args.num_samples)
    methods, budgets = args.methods.split(","), [int(b) for b in args.budgets.split(",")]
    records, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for problem in args.problems.split(","):
            for i, image in enumerate(images, start=args.start):
                path = Path(tmp) / f"{i}.npy"
                np.save(path, image.numpy())
                base = runner.session(problem, "pgdm", {})
                job, sigma_y = base.job(str(path), seed=i), base.problem.sigma_y
                for method in methods:
                    for budget in budgets:
                        opts = {"budget": budget} if method in DEEPINV else options_for_budget(method, budget)
                        x, fwd, bwd, sec = runner.run(problem, method, job, opts, sigma_y, seed=i)
                        rec = {"problem": problem, "image": i, "method": method, "budget": budget,
                               "options": opts, "nfe_forward": fwd, "nfe_backward": bwd,
                               "seconds": sec, **score(x, job.truth)}
                        records.append(rec)
                        print(f"{problem} {i} {method} B={budget}: PSNR4 {rec['psnr4']:.2f} "
                              f"cov {rec['coverage']:.2f} ({fwd:.0f}+{bwd:.0f} evals, {sec:.1f} s)",
                              file=sys.stderr, flush=True)
                write(Path(args.out), records, info(args, start))
    write(Path(args.out), records, info(args, start))


def info(args, start: float) -> dict:
    return {"version": __version__, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "machine": platform.machine(), "checkpoint": args.checkpoint, "data": args.data,
            "split": args.split, "num_samples": args.num_samples,
            "total_seconds": time.perf_counter() - start,
            "command": "python benchmarks/psnr_nfe.py " + " ".join(sys.argv[1:])}


def merge(args) -> None:
    shards = [json.loads(Path(f).read_text()) for f in args.merge]
    unique = {(r["problem"], r["image"], r["method"], r["budget"]): r for sh in shards for r in sh["records"]}
    meta = dict(shards[0]["info"])
    meta["shards"] = [sh["info"]["command"] for sh in shards]
    meta["total_seconds"] = sum(sh["info"]["total_seconds"] for sh in shards)
    meta["command"] = "python benchmarks/psnr_nfe.py " + " ".join(sys.argv[1:])
    write(Path(args.out), sorted(unique.values(), key=lambda r: (r["problem"], r["image"])), meta)


def summary(records: list[dict]) -> list[dict]:
    """One row per (problem, method, budget): means over images, with the SE of the PSNR."""
    rows = []
    keys = dict.fromkeys((r["problem"], r["method"], r["budget"]) for r in records)
    for problem, method, budget in keys:
        sel = [r for r in records if (r["problem"], r["method"], r["budget"]) == (problem, method, budget)]
        p4 = np.array([r["psnr4"] for r in sel])
        rows.append({"problem": problem, "method": method, "budget": budget, "images": len(sel),
                     "psnr4": float(p4.mean()), "psnr4_se": float(p4.std(ddof=1) / np.sqrt(len(p4)))
                     if len(p4) > 1 else 0.0,
                     **{k: float(np.mean([r[k] for r in sel]))
                        for k in ("psnr_all", "psnr_sample_mean", "coverage", "std_mean", "nfe_forward",
                                  "nfe_backward", "seconds")}})
    return rows


def versus(records: list[dict], reference: tuple[str, int] = ("deepinv-ddrm", 100),
           cap: float = 100, candidates: tuple[str, ...] = DIFFINV,
           label: str = "Best diffinv sampler") -> list[str]:
    """Per problem: the best of ``candidates`` at ≤ ``cap`` evaluations per sample (by mean PSNR4) against
    ``reference``, paired over the images both ran on (difference ± SE), with both coverages."""
    lines = []
    for problem in dict.fromkeys(r["problem"] for r in records):
        ref = {r["image"]: r for r in records if r["problem"] == problem
               and (r["method"], r["budget"]) == reference}
        if not ref:
            continue
        best = None
        for key in dict.fromkeys((r["method"], r["budget"]) for r in records if r["problem"] == problem
                                 and r["method"] in candidates
                                 and r["nfe_forward"] + r["nfe_backward"] <= cap):
            sel = {r["image"]: r for r in records
                   if r["problem"] == problem and (r["method"], r["budget"]) == key}
            common = sorted(set(sel) & set(ref))
            if common and (best is None or np.mean([sel[i]["psnr4"] for i in common]) > best[0]):
                best = (np.mean([sel[i]["psnr4"] for i in common]), key, sel, common)
        if best is None:
            continue
        _, (method, budget), sel, common = best
        d = np.array([sel[i]["psnr4"] - ref[i]["psnr4"] for i in common])
        se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
        cov = np.mean([sel[i]["coverage"] for i in common])
        cov_ref = np.mean([ref[i]["coverage"] for i in common])
        mine = np.mean([sel[i]["psnr4"] for i in common])
        lines.append(f"| {problem} | {method} (B = {budget}) | {mine:.2f} | "
                     f"{np.mean([ref[i]['psnr4'] for i in common]):.2f} | {d.mean():+.2f} ± {se:.2f} | "
                     f"{cov:.3f} / {cov_ref:.3f} | {len(common)} |")
    if not lines:
        return []
    within = f" at ≤ {cap:.0f} evaluations per sample" if np.isfinite(cap) else ""
    who, side = ("diffinv's best", "diffinv") if candidates == DIFFINV else ("method", "method")
    return [f"## {label}{within} against {reference[0]} (B = {reference[1]})", "",
            f"| problem | {who} | its PSNR4 | reference PSNR4 | paired difference ± SE | coverage "
            f"({side} / reference) | images |", "|---|---|---|---|---|---|---|", *lines, ""]


def write(out: Path, records: list[dict], meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = summary(records)
    (out / "psnr_nfe.json").write_text(json.dumps({"info": meta, "summary": rows, "records": records},
                                                  indent=1) + "\n")
    tables = versus(records)
    if any(r["method"] == EXACT for r in records):  # what calibrated (exact) samples score against it
        tables += versus(records, cap=float("inf"), candidates=(EXACT,), label="Exact posterior samples")
    if any(r["method"] == EXACT_PAIRS for r in records):
        tables += versus(records, cap=float("inf"), candidates=(EXACT_PAIRS,),
                         label="Exact posterior samples in antithetic pairs")
    (out / "psnr_nfe.md").write_text(render(rows, meta) + "\n".join(tables))
    if rows:
        draw_curves(rows, out / "psnr_nfe.png", y="psnr4", label="PSNR of the 4-sample mean (dB)")
        draw_curves(rows, out / "coverage_nfe.png", y="coverage", label="coverage of the 90% interval",
                    reference=0.9)


def render(rows: list[dict], meta: dict) -> str:
    n = max((r["images"] for r in rows), default=0)
    lines = ["# PSNR and calibration against network evaluations", "",
             f"Prior `{meta['checkpoint']}`, {n} {meta['split']} images of `{meta['data']}`, "
             f"{meta['num_samples']} samples per image and method. Evaluations per sample count forward and "
             "backward passes one each. PSNR4: PSNR of the mean of the first 4 samples (± SE over images); "
             f"PSNR{meta['num_samples']}: of the mean of all; per-sample: mean PSNR of single samples; "
             "coverage: "
             "share of truth pixels inside the per-pixel central 90 % interval of the samples (0.90 is "
             "calibrated); sd: mean per-pixel sample standard deviation. `deepinv-*`: deepinv 0.5.0 around "
             "the same prior and observations.",
             f"Regenerate with `{meta['command']}` (diffinv {meta['version']}, torch {meta['torch']}, "
             f"{meta['threads']} thread(s), {meta['total_seconds'] / 60:.1f} min of runs).", ""]
    if "shards" in meta:
        lines += ["Merged from:", ""] + [f"- `{c}`" for c in meta["shards"]] + [""]
    lines += ["Figures: `psnr_nfe.png` (PSNR4 against evaluations), `coverage_nfe.png` (coverage).", ""]
    for problem in dict.fromkeys(r["problem"] for r in rows):
        lines += [f"## {problem}", "",
                  f"| method | budget | images | evals fwd + bwd | PSNR4 | PSNR{meta['num_samples']} "
                  "| per-sample | coverage | sd | s / image |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in [r for r in rows if r["problem"] == problem]:
            lines.append(f"| {r['method']} | {r['budget']} | {r['images']} | "
                         f"{r['nfe_forward']:.0f} + {r['nfe_backward']:.0f} | "
                         f"{r['psnr4']:.2f} ± {r['psnr4_se']:.2f} | {r['psnr_all']:.2f} | "
                         f"{r['psnr_sample_mean']:.2f} | {r['coverage']:.3f} | {r['std_mean']:.4f} | "
                         f"{r['seconds']:.1f} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
