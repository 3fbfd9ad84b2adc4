r"""``--fit operator.length`` on motion blur: the length of the ``deblur_motion`` path, unknown per image.

Test images 0 … N−1 of fashion-mnist, the preset's seeded 13×13 motion path scaled to a true length
L_i = 5 + 2i px, σ_y = 0.02 (given), ΠGDM 50 steps, 4 samples; the fit starts at 10 px (16 updates of 2
samples, single loop). Writes fit_motion.json / fit_motion.md under --out.

    python benchmarks/fit_motion.py --images 3 --out benchmarks/results/fit_images
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from diffinv.data import load_dataset
from diffinv.imaging.metrics import psnr
from diffinv.job import Session, SolveConfig
from diffinv.operators.blur import MotionBlur
from diffinv.operators.noise import GaussianNoise
from diffinv.priors.loading import load_prior
from diffinv.rng import make_generator

SIGMA_Y = 0.02


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/fit_images")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prior = load_prior("fashion32")
    test = load_dataset("fashion-mnist", 32, 1).test[: args.images].double() / 255
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, image in enumerate(test):
            length = 5.0 + 2.0 * i
            op = MotionBlur(tuple(image.shape), size=13, intensity=0.5,
                            generator=torch.Generator().manual_seed(0), length=length)
            y = GaussianNoise(SIGMA_Y).sample(op.A(image[None]), make_generator(i))[0]
            path = Path(tmp) / f"{i}.npy"
            np.save(path, y.numpy())
            rec = {"image": i, "length": length}
            runs = {"fitted": {"fit": ("operator.length=10",), "fit_steps": 16, "fit_samples": 2},
                    "true": {"overrides": {"operator.length": length}}}
            for name, extra in runs.items():
                overrides = {**extra.pop("overrides", {}), "noise.sigma_y": SIGMA_Y}
                config = SolveConfig(image="", problem="deblur_motion", sampler="pgdm", steps=50,
                                     num_samples=4, device="cpu", overrides=overrides, **extra)
                session = Session.build(config, prior)
                (result,) = session.run([session.job(str(path), seed=i)])
                rec[f"psnr_{name}"] = psnr(result.samples.mean(0), image)
                if name == "fitted":
                    fit = result.metrics["fit"]
                    rec.update(fit_length=fit["values"]["operator.length"],
                               fit_se=fit["se"]["operator.length"], cost_vs_solve=fit["cost_vs_solve"])
            records.append(rec)
            print(f"image {i}: length {length} → {rec['fit_length']:.3f} ± {rec['fit_se']:.3f}; PSNR fitted "
                  f"{rec['psnr_fitted']:.2f} true {rec['psnr_true']:.2f}", file=sys.stderr, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fit_motion.json").write_text(json.dumps(records, indent=1) + "\n")
    lines = ["# `--fit operator.length` on motion blur", "", f"`python benchmarks/fit_motion.py "
             f"{' '.join(sys.argv[1:])}` (module docstring: seeded 13×13 path, true length 5 + 2i px, "
             "start 10 px, ΠGDM 50 steps).", "",
             "| image | true length | fitted | PSNR fitted | PSNR true | cost × solve |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['image']} | {r['length']:.1f} | {r['fit_length']:.3f} ± {r['fit_se']:.3f} | "
              f"{r['psnr_fitted']:.2f} | {r['psnr_true']:.2f} | {r['cost_vs_solve']:.1f} |" for r in records]
    (out / "fit_motion.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
