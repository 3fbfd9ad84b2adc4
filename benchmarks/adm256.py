"""Seconds per step and per image and peak memory at 256×256 for every sampler on the ADM FFHQ-256 network.

Random weights (timing only, not quality): the DPS FFHQ-256 architecture (93.6 M parameters) built by
diffinv, ``diffinv solve --simulate`` on one random 256×256 image. Each sampler runs twice in a fresh
process, with ``--steps A`` and ``--steps B``; the difference gives the seconds per step (start-up and
the final bridge cancel), and seconds per image are extrapolated to the preset's default step count.
Peak memory is the child process's maximum resident set (CPU) or ``torch.cuda.max_memory_allocated``
(GPU). MCGDiff's particles are bounded by ``--max-batch``.

    python benchmarks/adm256.py --device cpu --out benchmarks/results/adm256_cpu
    python benchmarks/adm256.py --device cuda --steps 4,12 --out benchmarks/results/adm256_cuda

Writes OUT/adm256.json and OUT/adm256.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLERS = ("dps", "pgdm", "mcgdiff", "dcps", "ddrm")
PROBLEM = "sr4"
CHILD = r"""
import json, resource, sys, time, torch
from diffinv.solve import SolveConfig, solve
cfg = SolveConfig(**json.loads(sys.argv[1]))
if cfg.device.startswith("cuda"):
    torch.cuda.reset_peak_memory_stats()
start = time.perf_counter()
report = solve(cfg, write=False)
seconds = time.perf_counter() - start
peak = (torch.cuda.max_memory_allocated() if cfg.device.startswith("cuda")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
m = report.metrics
print(json.dumps({"seconds": seconds, "sampler_seconds": m["seconds"], "peak_bytes": peak,
                  "nfe_forward": m["nfe_forward"], "nfe_backward": m["nfe_backward"],
                  "options": m["config"]["sampler_options"]}))
"""


def make_checkpoint(folder: Path) -> Path:
    import torch

    from diffinv.imaging.io import save_png
    from diffinv.nn.adm import ADMUNet
    from diffinv.nn.adm_config import adm_config
    from diffinv.rng import make_generator

    net = ADMUNet(adm_config("adm-ffhq256"))
    gen = make_generator(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.5 / max(p[0].numel(), 1) ** 0.5 if p.ndim > 1
                                                           else 0.01))
    torch.save(net.state_dict(), folder / "ffhq_rand.pt")
    save_png(torch.rand(3, 256, 256, generator=gen), folder / "face.png")
    return folder / "ffhq_rand.pt"


def run_child(config: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(config)], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{config['sampler']}: {out.stderr.strip().splitlines()[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", default="2,4", help="two step counts A,B")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--particles", type=int, default=8, help="MCGDiff particles (the preset has 64)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/adm256_cpu")
    args = parser.parse_args()
    a, b = (int(s) for s in args.steps.split(","))
    from diffinv.problems import load_problem

    preset = load_problem(PROBLEM)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_checkpoint(Path(tmp))
        for sampler in args.samplers.split(","):
            overrides = {"mcgdiff.num_particles": args.particles} if sampler == "mcgdiff" else {}
            runs = {}
            for steps in (a, b):
                config = {"image": str(Path(tmp) / "face.png"), "problem": PROBLEM, "sampler": sampler,
                          "num_samples": 1, "simulate": True, "device": args.device, "checkpoint": str(ckpt),
                          "arch": "adm-ffhq256", "steps": steps, "max_batch": args.max_batch,
                          "threads": args.threads, "overrides": overrides}
                runs[steps] = run_child(config)
            per_step = (runs[b]["sampler_seconds"] - runs[a]["sampler_seconds"]) / (b - a)
            default_steps = preset.sampler_options(sampler).get("num_steps", 0)
            records.append({"sampler": sampler, "seconds_per_step": per_step, "default_steps": default_steps,
                            "seconds_per_image_default": per_step * default_steps,
                            "peak_gib": max(r["peak_bytes"] for r in runs.values()) / 2**30,
                            "nfe_per_step": (runs[b]["nfe_forward"] - runs[a]["nfe_forward"]) / (b - a),
                            "nfe_backward_per_step":
                                (runs[b]["nfe_backward"] - runs[a]["nfe_backward"]) / (b - a),
                            "options": runs[b]["options"]})
    meta = {"device": args.device, "steps": [a, b], "max_batch": args.max_batch,
            "mcgdiff_particles": args.particles,
            "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "threads": args.threads, "date": time.strftime("%Y-%m-%d"), "problem": PROBLEM,
            "architecture": "adm-ffhq256 (random weights)"}
    (out / "adm256.json").write_text(json.dumps({"meta": meta, "records": records}, indent=2) + "\n")
    title = f"# ADM FFHQ-256 at 256×256 on {args.device} ({meta['cpus']} CPUs, {PROBLEM}, 1 image, 1 sample)"
    lines = [title,
             "",
             f"Regenerate: `python benchmarks/adm256.py --device {args.device} --steps {a},{b} "
             f"--out {args.out}`. "
             f"Seconds per step from the difference of a {a}- and a {b}-step run; MCGDiff with "
             f"{args.particles} particles, --max-batch {args.max_batch}.", "",
             "| sampler | s / step | NFE fwd / bwd per step | default steps | s / image (default steps) | "
             "peak memory (GiB) |", "|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['sampler']} | {r['seconds_per_step']:.2f} | {r['nfe_per_step']:.0f} / "
                     f"{r['nfe_backward_per_step']:.0f} | {r['default_steps']} | "
                     f"{r['seconds_per_image_default']:.0f} | {r['peak_gib']:.2f} |")
    (out / "adm256.md").write_text("\n".join(lines) + "\n")
    _ = resource  # the child measures its own peak


if __name__ == "__main__":
    main()
