"""DDRM with and without its cut of uninformative coordinates (``max_noise_ratio``), against steps.

    python benchmarks/ddrm_cut.py --prior gaussian --split test --problems deblur_gauss --ratios inf,1
    python benchmarks/ddrm_cut.py --prior fashion32 --split train --problems deblur_gauss,sr4 \
        --ratios inf,1,.5

``--prior gaussian`` is the exact Gaussian fitted to the training images (``mcgdiff_gaussian.fitted_prior``),
``fashion32`` the shipped network. ``inf`` disables the cut (the paper's algorithm). Per (ratio, steps):
the PSNR of the 4-sample mean and the coverage of the 90 % interval from 16 samples, averaged over images
0 .. N−1 of the split. Writes ddrm_cut.{md,json} into --out.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", default="gaussian", choices=["gaussian", "fashion32"])
    parser.add_argument("--split", default="test", choices=["test", "train"])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--problems", default="deblur_gauss")
    parser.add_argument("--ratios", default="inf,1")
    parser.add_argument("--steps", default="20,100,300")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/ddrm_cut")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist", 32, 1)
    if args.prior == "gaussian":
        prior = fitted_prior(data.train.double() / 255.0)
        prior.value_range = (-1.0, 1.0)  # a prior of [−1, 1] images: DDRM's cut applies
    else:
        prior = load_prior("fashion32")
    images = getattr(data, args.split)[: args.images].double() / 255.0
    seed0 = 0 if args.split == "test" else 10_000
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for problem in args.problems.split(","):
            for ratio in [float(r) for r in args.ratios.split(",")]:
                for steps in [int(s) for s in args.steps.split(",")]:
                    ps, cs = [], []
                    for i, image in enumerate(images):
                        path = Path(tmp) / f"{i}.npy"
                        np.save(path, image.numpy())
                        over = {"ddrm.num_steps": steps, "ddrm.max_noise_ratio": min(ratio, 1e30)}
                        session = Session.build(SolveConfig(image="", problem=problem, sampler="ddrm",
                                                            simulate=True, device="cpu", num_samples=16,
                                                            overrides=over), prior)
                        job = session.job(str(path), seed=seed0 + i)
                        (res,) = session.run([job])
                        ps.append(psnr(res.samples[:4].mean(0), job.truth))
                        cs.append(coverage(res.samples, job.truth, 0.9))
                    rows.append({"problem": problem, "ratio": ratio, "steps": steps,
                                 "psnr4": float(np.mean(ps)),
                                 "psnr4_se": float(np.std(ps, ddof=1) / np.sqrt(len(ps))),
                                 "coverage": float(np.mean(cs)), "images": len(ps)})
                    print(rows[-1], file=sys.stderr, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"ddrm_cut_{args.prior}_{args.split}"
    command = "python benchmarks/ddrm_cut.py " + " ".join(sys.argv[1:])
    (out / f"{stem}.json").write_text(json.dumps({"command": command, "rows": rows}, indent=1) + "\n")
    lines = [f"# DDRM's cut of uninformative coordinates: {args.prior} prior, {args.split} images", "",
             f"`{command}`. PSNR of the 4-sample mean ± SE over images, coverage of the 90 % interval "
             "from 16 samples; ratio inf = no cut (the paper's algorithm).", "",
             "| problem | max_noise_ratio | steps | PSNR4 | coverage |", "|---|---|---|---|---|"]
    lines += [f"| {r['problem']} | {r['ratio']:g} | {r['steps']} | {r['psnr4']:.2f} ± {r['psnr4_se']:.2f} | "
              f"{r['coverage']:.3f} |" for r in rows]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
