"""One sampler against its step count, for a few values of one of its options.

    python benchmarks/steps_sweep.py --prior gaussian --images 6 --sampler pgdm --vary weight=1,0.333 \
        --steps 50,150
    python benchmarks/steps_sweep.py --prior fashion32 --split train --sampler ddrm \
        --vary max_noise_ratio=inf,1 --problems deblur_gauss,sr4

``--prior gaussian`` is the exact Gaussian fitted to the training images (``mcgdiff_gaussian.fitted_prior``,
given the [−1, 1] value range of the images), ``fashion32`` the shipped network. Each image of the split is
degraded by the problem preset with its own seed and solved through the same :class:`diffinv.job.Session`
as ``diffinv solve``, with the preset's options except ``num_steps`` and the varied one. Per (value, steps):
the PSNR of the 4-sample mean (± SE over images) and the coverage of the 90 % interval from 16 samples,
averaged over images 0 .. N−1. ``inf`` as a value means no bound (1e30). Writes {--stem}.{md,json}
into --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mcgdiff_gaussian import fitted_prior  # noqa: E402

from diffinv.checkpoints import load_prior  # noqa: E402
from diffinv.data import load_dataset  # noqa: E402
from diffinv.imaging.metrics import coverage, psnr  # noqa: E402
from diffinv.job import Session, SolveConfig  # noqa: E402


def parse_value(text: str) -> float | int | bool | str:
    """'inf' → 1e30, 'true' / 'false' as booleans, numbers as numbers, anything else as text."""
    if text == "inf":
        return 1e30
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def sweep(prior, images: torch.Tensor, seed0: int, problems: list[str], sampler: str, key: str,
          values: list, steps: list[int], extra: dict) -> list[dict]:
    """Rows {problem, value, steps, psnr4, psnr4_se, coverage, images} for every combination."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for problem in problems:
            for value in values:
                for n in steps:
                    ps, cs = [], []
                    over = {**extra, f"{sampler}.num_steps": n, f"{sampler}.{key}": value}
                    session = Session.build(SolveConfig(image="", problem=problem, sampler=sampler,
                                                        simulate=True, device="cpu", num_samples=16,
                                                        overrides=over), prior)
                    for i, image in enumerate(images):
                        path = Path(tmp) / f"{i}.npy"
                        np.save(path, image.numpy())
                        job = session.job(str(path), seed=seed0 + i)
                        (res,) = session.run([job])
                        ps.append(psnr(res.samples[:4].mean(0), job.truth))
                        cs.append(coverage(res.samples, job.truth, 0.9))
                    rows.append({"problem": problem, "value": value, "steps": n,
                                 "psnr4": float(np.mean(ps)),
                                 "psnr4_se": float(np.std(ps, ddof=1) / np.sqrt(len(ps))),
                                 "coverage": float(np.mean(cs)), "images": len(ps)})
                    print(rows[-1], file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None, command: str | None = None) -> None:
    """Parse ``argv`` (default sys.argv), sweep, write; ``command``: the line recorded (default: this)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", default="gaussian", choices=["gaussian", "fashion32"])
    parser.add_argument("--split", default="test", choices=["test", "train"])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--problems", default="deblur_gauss")
    parser.add_argument("--sampler", default="pgdm")
    parser.add_argument("--vary", default="weight=1,0.333", help="OPTION=V1,V2,…")
    parser.add_argument("--set", default="", help="further overrides, OPTION=V;OPTION=V (sampler's options)")
    parser.add_argument("--steps", default="20,100,300")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--stem", default="{sampler}_{option}_{prior}_{split}",
                        help="file name stem; {sampler}, {option}, {prior} and {split} are filled in")
    parser.add_argument("--out", default="benchmarks/results/steps_sweep")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    key, _, text = args.vary.partition("=")
    values = [parse_value(v) for v in text.split(",")]
    extra = {f"{args.sampler}.{k}": parse_value(v)
             for k, _, v in (item.partition("=") for item in args.set.split(";") if item)}
    data = load_dataset("fashion-mnist", 32, 1)
    if args.prior == "gaussian":
        prior = fitted_prior(data.train.double() / 255.0, bounded=True)
    else:
        prior = load_prior("fashion32")
    images = getattr(data, args.split)[: args.images].double() / 255.0
    seed0 = 0 if args.split == "test" else 10_000
    rows = sweep(prior, images, seed0, args.problems.split(","), args.sampler, key, values,
                 [int(s) for s in args.steps.split(",")], extra)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.stem.format(sampler=args.sampler, option=key, prior=args.prior, split=args.split)
    given = sys.argv[1:] if argv is None else argv
    command = command or "python benchmarks/steps_sweep.py " + " ".join(given)
    fixed = f" and {args.set}" if args.set else ""
    (out / f"{stem}.json").write_text(json.dumps({"command": command, "rows": rows}, indent=1) + "\n")
    lines = [f"# {args.sampler}: {key} against steps, {args.prior} prior, {args.split} images", "",
             f"`{command}`. PSNR of the 4-sample mean ± SE over images, coverage of the 90 % interval "
             f"from 16 samples; other options from the problem's preset{fixed}.",
             "", f"| problem | {key} | steps | PSNR4 | coverage |", "|---|---|---|---|---|"]
    def show(v):
        return format(v, "g") if isinstance(v, float) else str(v)

    lines += [f"| {r['problem']} | {show(r['value'])} | {r['steps']} | "
              f"{r['psnr4']:.2f} ± {r['psnr4_se']:.2f} | {r['coverage']:.3f} |" for r in rows]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
