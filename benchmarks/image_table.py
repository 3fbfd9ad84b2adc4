"""Image results table: posterior-mean PSNR / SSIM, seconds and NFE per sampler and problem on held-out
test images of a shipped prior, beside the non-generative baseline (bicubic for SR, A⁺y otherwise).

    python benchmarks/image_table.py --checkpoint fashion32 --data fashion-mnist --images 20

Each (problem, image) pair is simulated with its own seed (the image index), every sampler draws
``--num-samples`` posterior samples whose mean is scored; writes image_table.{md,json} into --out.
A long run can be split into shards (``--start K --images N``, each with its own --out) run side by
side, then combined with ``--merge shard1/image_table.json shard2/image_table.json ...``.
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

from diffinv import __version__
from diffinv.checkpoints import load_prior
from diffinv.data import load_dataset
from diffinv.imaging.baselines import baseline, tikhonov
from diffinv.imaging.metrics import psnr, ssim
from diffinv.job import Session, SolveConfig, resolve_device
from diffinv.problems import load_problem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="fashion32")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--images", type=int, default=20, help="N held-out test images from --start")
    parser.add_argument("--start", type=int, default=0, help="index of the first test image")
    parser.add_argument("--problems", default="sr4,inpaint_box,deblur_gauss")
    parser.add_argument("--samplers", default="dps,pgdm,mcgdiff,dcps,ddrm")
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="combine shard results, run nothing")
    args = parser.parse_args()
    if args.merge:
        return merge(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    prior = load_prior(args.checkpoint, device=device)
    c, s, _ = prior.shape
    data = load_dataset(args.data, s, c)
    test = data.test[args.start: args.start + args.images].double() / 255.0  # (N, C, S, S) on [0, 1]
    records, start = [], time.perf_counter()
    sessions: dict[tuple[str, str], Session] = {}  # one per (problem, sampler), built once

    def session(problem: str, sampler: str) -> Session:
        if (problem, sampler) not in sessions:
            sessions[problem, sampler] = Session.build(
                SolveConfig(image="", problem=problem, sampler=sampler, simulate=True, device=args.device,
                            num_samples=args.num_samples), prior)
        return sessions[problem, sampler]

    samplers = args.samplers.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        for problem in args.problems.split(","):
            for i, image in enumerate(test, start=args.start):
                path = Path(tmp) / f"{i}.npy"
                np.save(path, image.numpy())
                job = session(problem, samplers[0]).job(str(path), seed=i)  # one job, every sampler
                op, y01, truth = job.op, job.y01, job.truth
                sigma_y = load_problem(problem).sigma_y
                for name, rec in (baseline(op, y01), ("tikhonov", tikhonov(op, y01, sigma_y))):
                    records.append({"problem": problem, "image": i, "method": name, "psnr": psnr(rec, truth),
                                    "ssim": ssim(rec, truth), "seconds": 0.0, "nfe_forward": 0,
                                    "nfe_backward": 0})
                for sampler in samplers:
                    (result,) = session(problem, sampler).run([job])
                    m = result.metrics
                    records.append({"problem": problem, "image": i, "method": sampler, "psnr": m["psnr"],
                                    "ssim": m["ssim"], "seconds": m["seconds"],
                                    "nfe_forward": m["nfe_forward"], "nfe_backward": m["nfe_backward"],
                                    "overhead": m["overhead"]})
                    print(f"{problem} image {i} {sampler}: PSNR {m['psnr']:.2f}", file=sys.stderr, flush=True)
                write(Path(args.out), records, run_info(args, device, start))  # partials survive a kill
    write(Path(args.out), records, run_info(args, device, start))


def run_info(args, device: torch.device, start: float) -> dict:
    return {"version": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "total_seconds": time.perf_counter() - start,
            "device": device_name(device), "checkpoint": args.checkpoint, "data": args.data,
            "num_samples": args.num_samples,
            "command": "python benchmarks/image_table.py " + " ".join(sys.argv[1:])}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def write(out: Path, records: list[dict], info: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "image_table.json").write_text(json.dumps({"machine": info, "records": records}, indent=1) + "\n")
    (out / "image_table.md").write_text(render(records, info))


def merge(args) -> None:
    """Combine shard JSONs (same checkpoint and settings) into one table, records sorted by image; a
    (problem, image, method) record of a later file replaces an earlier one (a re-run of one sampler)."""
    shards = [json.loads(Path(f).read_text()) for f in args.merge]
    unique = {(r["problem"], r["image"], r["method"]): r for sh in shards for r in sh["records"]}
    records = sorted(unique.values(), key=lambda r: r["image"])
    info = dict(shards[0]["machine"])
    info["shards"] = [sh["machine"]["command"] for sh in shards]
    info["shard_devices"] = [sh["machine"]["device"] for sh in shards]
    info["total_seconds"] = max(sh["machine"]["total_seconds"] for sh in shards)
    info["command"] = "python benchmarks/image_table.py " + " ".join(sys.argv[1:])
    write(Path(args.out), records, info)


def overhead(records: list[dict]) -> str:
    """Mean total / prior-evaluation time ('—' for baselines and records that predate the column)."""
    values = [r["overhead"] for r in records if r.get("overhead") is not None and r["nfe_forward"] > 0]
    return f"{np.mean(values):.2f}" if values else "—"


def render(records: list[dict], info: dict) -> str:
    n = len({r["image"] for r in records})
    lines = ["# Image results table", "",
             f"Prior `{info['checkpoint']}`, {n} held-out test images of `{info['data']}`, "
             f"{info['num_samples']} posterior samples per image (scored: their mean), "
             "σ_y and sampler settings from the problem presets. "
             "PSNR (peak 1) and SSIM (11×11 Gaussian window, σ 1.5) on [0, 1]. "
             "Baselines: bicubic upsampling for super-resolution, A⁺y otherwise, and `tikhonov` (the "
             "posterior mean under a white Gaussian prior N(0.5, 0.3²), i.e. Wiener filtering; see "
             "diffinv/imaging/baselines.py).",
             f"Regenerate with `{info['command']}` (diffinv {info['version']}, torch {info['torch']}, "
             f"{info['device']}, {info['threads']} threads, {info['total_seconds'] / 60:.1f} min wall).", ""]
    lines += ["Overhead = total time / time inside network evaluations (forward and backward); exact on "
              "the CPU, overstated on CUDA, where kernel launches return before the work is done.", ""]
    if "shards" in info:
        lines += [f"Merged from {len(info['shards'])} shard runs, several at a time on one device (so "
                  "seconds per image include that sharing); a later shard's records replace an earlier "
                  "one's, and a row's seconds are from its shard's device:", ""]
        devices = info.get("shard_devices", [info["device"]] * len(info["shards"]))
        lines += [f"- `{c}` ({d})" for c, d in zip(info["shards"], devices, strict=True)] + [""]
    for problem in dict.fromkeys(r["problem"] for r in records):
        rows = [r for r in records if r["problem"] == problem]
        lines += [f"## {problem}", "",
                  "| method | PSNR mean ± sd | SSIM mean | s / image | NFE fwd / bwd | overhead |",
                  "|---|---|---|---|---|---|"]
        for method in dict.fromkeys(r["method"] for r in rows):
            sel = [r for r in rows if r["method"] == method]
            p = np.array([r["psnr"] for r in sel])
            lines.append(f"| {method} | {p.mean():.2f} ± {p.std(ddof=1) if len(p) > 1 else 0:.2f} | "
                         f"{np.mean([r['ssim'] for r in sel]):.3f} | "
                         f"{np.mean([r['seconds'] for r in sel]):.1f} | "
                         f"{np.mean([r['nfe_forward'] for r in sel]):.0f} / "
                         f"{np.mean([r['nfe_backward'] for r in sel]):.0f} | {overhead(sel)} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
