"""Tune each sampler's image preset per problem at a budget of network evaluations, on training images.

    python benchmarks/tune_presets.py --budget 100 --images 8 --write
    python benchmarks/tune_presets.py --start 4 --images 4 --out DIR   # a shard; then --merge …json --write

Runs every candidate of :data:`CANDIDATES` (on top of ``psnr_nfe.options_for_budget``) on ``--images``
images of the *training* split (never the held-out test images of the image table), 16 samples each.
Rule (:func:`choose`): among the candidates whose mean PSNR of the 16-sample posterior mean is within
``--psnr-tolerance`` dB of the best candidate's, the one whose mean coverage of the 90 % interval is
closest to 0.90. So a setting trades at most that much PSNR for calibration, and a diverging setting,
whose scattered samples cover the truth, cannot win on coverage. (The first rule, the best PSNR among
candidates with coverage ≥ 0.75 and otherwise the best-covering one, picked DPS settings 2.5–5 dB below
the best on sr4 and deblur_gauss, seen in the 20-image table.) Writes
tune_presets.{md,json} into --out and, with ``--write``, the chosen options into each
problems/PROBLEM.yaml (the sampler's line, with a comment giving the rule's numbers) for the samplers of
``--write-samplers``. DCPS is tuned and reported but keeps its preset: at 100 evaluations per sample it
is several dB below its own preset (≈ 1 500 evaluations), so a budget-100 preset would make the default
worse. MCGDiff is left as it is (its preset is fixed by its evaluation budget per image; see
benchmarks/mcgdiff_inpainting.py).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from psnr_nfe import Runner, options_for_budget, score  # noqa: E402

from diffinv.checkpoints import load_prior  # noqa: E402
from diffinv.data import load_dataset  # noqa: E402

CANDIDATES: dict[str, list[dict]] = {
    "dps": [{"zeta": 0.3}, {"zeta": 1.0}, {"zeta": 3.0}],
    "pgdm": [{"eta": 0.0}, {"eta": 0.5}, {"eta": 1.0}],
    "ddrm": [{"eta": 0.5}, {"eta": 0.85}, {"eta": 1.0}],
    "dcps": [{"lr": 0.03}, {"lr": 0.1}, {"lr": 0.3}],
}
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="fashion32")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--images", type=int, default=4, help="N training images from --start")
    parser.add_argument("--start", type=int, default=0, help="index of the first training image (shards)")
    parser.add_argument("--problems", default="sr4,inpaint_box,deblur_gauss")
    parser.add_argument("--samplers", default=",".join(CANDIDATES))
    parser.add_argument("--psnr-tolerance", type=float, default=0.5,
                        help="dB of PSNR16 a candidate may give up for coverage nearer 0.90")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/tune_presets")
    parser.add_argument("--write", action="store_true", help="write the chosen options into problems/*.yaml")
    parser.add_argument("--write-samplers", default="dps,pgdm,ddrm",
                        help="the samplers whose presets --write replaces (DCPS keeps its own budget)")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="combine shard results, run nothing")
    parser.add_argument("--candidates", metavar="JSON",
                        help='replace CANDIDATES, e.g. \'{"ddrm": [{"eta": 0.5}, {"t_start": 400}]}\'')
    args = parser.parse_args()
    candidates = json.loads(args.candidates) if args.candidates else CANDIDATES
    if args.merge:
        records = [r for f in args.merge for r in json.loads(Path(f).read_text())["records"]]
        return finish(args, records, 0.0)
    torch.set_num_threads(args.threads)
    prior = load_prior(args.checkpoint)
    c, s, _ = prior.shape
    train = load_dataset(args.data, s, c).train[args.start: args.start + args.images].double() / 255.0
    runner, records, start = Runner(prior, 16), [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for problem in args.problems.split(","):
            for i, image in enumerate(train, start=args.start):
                path = Path(tmp) / f"{i}.npy"
                np.save(path, image.numpy())
                base = runner.session(problem, "pgdm", {})
                job, sigma_y = base.job(str(path), seed=10_000 + i), base.problem.sigma_y
                for sampler in args.samplers.split(","):
                    for cand in candidates[sampler]:
                        opts = {**options_for_budget(sampler, args.budget), **cand}
                        x, fwd, bwd, sec = runner.run(problem, sampler, job, opts, sigma_y, seed=10_000 + i)
                        records.append({"problem": problem, "image": i, "sampler": sampler, "options": opts,
                                        "nfe": fwd + bwd, "seconds": sec, **score(x, job.truth)})
                        print(f"{problem} train {i} {sampler} {cand}: PSNR16 {records[-1]['psnr_all']:.2f} "
                              f"cov {records[-1]['coverage']:.2f}", file=sys.stderr, flush=True)
    finish(args, records, time.perf_counter() - start)


def choose(rows: list[dict], tolerance: float, target: float = 0.9) -> dict:
    """The row with coverage nearest ``target`` among those within ``tolerance`` dB of the best PSNR16."""
    best = max(r["psnr_all"] for r in rows)
    near = [r for r in rows if r["psnr_all"] >= best - tolerance]
    return min(near, key=lambda r: (abs(r["coverage"] - target), -r["psnr_all"]))


def finish(args, records: list[dict], seconds: float) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, chosen = [], {}
    for problem in dict.fromkeys(r["problem"] for r in records):
        for sampler in dict.fromkeys(r["sampler"] for r in records if r["problem"] == problem):
            cands = []
            for opts in dict.fromkeys(json.dumps(r["options"], sort_keys=True) for r in records
                                      if (r["problem"], r["sampler"]) == (problem, sampler)):
                sel = [r for r in records if (r["problem"], r["sampler"]) == (problem, sampler)
                       and json.dumps(r["options"], sort_keys=True) == opts]
                cands.append({"problem": problem, "sampler": sampler, "options": json.loads(opts),
                              "images": len(sel), **{k: float(np.mean([r[k] for r in sel]))
                                                     for k in ("psnr4", "psnr_all", "coverage", "nfe")}})
            best = choose(cands, args.psnr_tolerance)
            for c in cands:
                c["chosen"] = c is best
            rows += cands
            chosen[problem, sampler] = best
    command = "python benchmarks/tune_presets.py " + " ".join(sys.argv[1:])
    (out / "tune_presets.json").write_text(json.dumps({"command": command, "seconds": seconds,
                                                       "psnr_tolerance": args.psnr_tolerance, "rows": rows,
                                                       "records": records}, indent=1) + "\n")
    lines = ["# Image presets tuned on training images", "",
             f"`{command}`: training images of `{args.data}` (never the image table's test images), "
             f"16 samples each, budget {args.budget} evaluations per sample (forward + backward). Rule: "
             "among "
             f"candidates within {args.psnr_tolerance} dB of the best mean PSNR of the 16-sample mean, the "
             "one with mean coverage nearest 0.90. Chosen rows are bold; they are what problems/*.yaml "
             "holds.", "",
             "| problem | sampler | options | evals | PSNR4 | PSNR16 | coverage |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        b = "**" if r["chosen"] else ""
        lines.append(f"| {r['problem']} | {r['sampler']} | {b}{flow(r['options'])}{b} | {r['nfe']:.0f} | "
                     f"{r['psnr4']:.2f} | {r['psnr_all']:.2f} | {r['coverage']:.3f} |")
    (out / "tune_presets.md").write_text("\n".join(lines) + "\n")
    if args.write:
        for (problem, sampler), best in chosen.items():
            if sampler in args.write_samplers.split(","):
                write_preset(problem, sampler, best, args)


def flow(options: dict) -> str:
    """A YAML flow mapping (booleans as YAML's true / false)."""
    text = (f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in options.items())
    return "{" + ", ".join(text) + "}"


def write_preset(problem: str, sampler: str, best: dict, args) -> None:
    """Replace the ``  SAMPLER: {...}`` line of problems/PROBLEM.yaml by the tuned options."""
    path = ROOT / "problems" / f"{problem}.yaml"
    text = path.read_text()
    note = (f"# tuned: benchmarks/tune_presets.py --budget {args.budget}, {best['images']} training images, "
            f"PSNR16 {best['psnr_all']:.2f}, coverage {best['coverage']:.2f}")
    line = f"  {sampler}: {flow(best['options'])}  {note}"
    new, count = re.subn(rf"^  {re.escape(sampler)}: .*$", line, text, count=1, flags=re.M)
    if count == 0:
        new = text.rstrip("\n") + "\n" + line + "\n"
    path.write_text(new)


if __name__ == "__main__":
    main()
