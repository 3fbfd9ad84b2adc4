"""Images per second of ``diffinv batch`` against ``--items-per-call`` B, on the shipped fashion32 prior.

The first ``--images`` Fashion-MNIST test images (32×32, grayscale) are written as PNGs to a temporary
folder; for each sampler and each B, :func:`diffinv.batch.run_batch` runs over that folder into a fresh
temporary OUT with ``simulate`` (the observation is A·image + noise of the problem preset), the
sampler's options from the preset (``--steps N`` overrides the number of steps of every sampler for a
quick run, ``--steps dps=100,mcgdiff=20`` only those of the samplers named) and
``items_per_call=B``. The prior is loaded once and handed to every run, and each sampler first does an
untimed warm-up run over 2 images, so neither the prior load nor first-call costs are timed. The whole
``run_batch`` call is timed (``time.perf_counter``; sampling, metrics and the output files), giving
images/s = images / wall seconds, and the ratio images/s(B) / images/s(B = 1) (the figure of merit).
Also recorded: the mean per-item sampler seconds and NFE per image of the manifest, the mean PSNR of
the posterior mean, and the largest |Δ| between an item's ``samples.npz`` at B > 1 and at B = 1 (each
item draws from its own generator, so they should agree up to float noise).

    python benchmarks/batch_throughput.py --device cpu --images 32 --per-call 1,4,16 \\
        --samplers dps,pgdm,mcgdiff,ddrm,dcps --problem sr4 --num-samples 4 \\
        --out benchmarks/results/batch_cpu
    python benchmarks/batch_throughput.py --device cuda --out benchmarks/results/batch_cuda

Writes OUT/batch_throughput.json and OUT/batch_throughput.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from diffinv import __version__
from diffinv.batch import BatchConfig, run_batch
from diffinv.data import load_dataset
from diffinv.imaging.io import save_png
from diffinv.job import SolveConfig, load_default_prior, resolve_device

WARMUP_IMAGES = 2


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_images(folder: Path, count: int) -> list[str]:
    """The first ``count`` Fashion-MNIST test images as ``folder/NNNNN.png``; returns the item names."""
    test = load_dataset("fashion-mnist", 32, 1).test
    if count > test.shape[0]:
        raise SystemExit(f"--images: the test set has {test.shape[0]} images, asked for {count}")
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        name = f"{i:05d}"
        save_png(test[i].float() / 255.0, folder / f"{name}.png")
        names.append(name)
    return names


def solve_config(args: argparse.Namespace, sampler: str) -> SolveConfig:
    return SolveConfig(image="", problem=args.problem, sampler=sampler, num_samples=args.num_samples,
                       simulate=True, device=args.device, checkpoint=args.checkpoint,
                       steps=args.steps.get(sampler), threads=args.threads, seed=args.seed,
                       max_batch=args.max_batch)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_batch(args: argparse.Namespace, sampler: str, inputs: Path, out: Path, per_call: int, prior,
                device: torch.device):
    """One run_batch call over ``inputs`` into a fresh ``out``: (report, wall seconds)."""
    if out.exists():
        shutil.rmtree(out)
    config = BatchConfig(inputs=str(inputs), out=str(out), items_per_call=per_call,
                         job=solve_config(args, sampler))
    sync(device)
    start = time.perf_counter()
    report = run_batch(config, prior=prior)
    sync(device)
    seconds = time.perf_counter() - start
    if report.failed:
        first = next(iter(report.failed.items()))
        raise SystemExit(f"{sampler} B={per_call}: {len(report.failed)} item(s) failed, e.g. {first}")
    return report, seconds


def manifest(out: Path) -> dict[str, dict]:
    records = {}
    for line in (out / "manifest.jsonl").read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            records.setdefault(record["name"], record)
    return records


def item_samples(out: Path, name: str) -> np.ndarray:
    with np.load(out / name / "samples.npz") as data:
        return np.asarray(data["samples"], dtype=np.float64)


def max_difference(out: Path, reference: Path, names: list[str]) -> float:
    """The largest |Δ| between the items' samples in ``out`` and in ``reference``."""
    worst = 0.0
    for name in names:
        a, b = item_samples(out, name), item_samples(reference, name)
        if a.shape != b.shape:
            raise SystemExit(f"{name}: samples of shape {a.shape} against {b.shape} at B = 1")
        worst = max(worst, float(np.abs(a - b).max()))
    return worst


def record_of(sampler: str, per_call: int, names: list[str], seconds: float, report, out: Path) -> dict:
    lines = manifest(out)
    items = [lines[n] for n in names]
    summary = report.summary or {}
    psnr = summary.get("metrics", {}).get("psnr", {}).get("mean")
    nfe_f = statistics.fmean(float(r["nfe_forward"]) for r in items)
    nfe_b = statistics.fmean(float(r["nfe_backward"]) for r in items)
    return {"sampler": sampler, "items_per_call": per_call, "images": len(names),
            "finished": len(report.finished), "wall_seconds": seconds,
            "images_per_second": len(names) / seconds, "seconds_per_image": seconds / len(names),
            "sampler_seconds_per_image": statistics.fmean(float(r["seconds"]) for r in items),
            "nfe_forward_per_image": nfe_f, "nfe_backward_per_image": nfe_b, "psnr_mean": psnr,
            "loadavg": list(os.getloadavg())}


def parse_steps(text: str | None) -> dict[str, int] | int:
    """``N`` (every sampler) or ``SAMPLER=N,...`` (those named); checked and resolved in main."""
    if text is None or "=" not in text:
        return int(text) if text is not None else {}
    steps = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        steps[name.strip()] = int(value)
    return steps


def parse_ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or any(v < 1 for v in values):
        raise SystemExit(f"expected positive integers separated by commas, got {text!r}")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--per-call", default="1,4,16", help="values of --items-per-call B (B = 1 first)")
    parser.add_argument("--samplers", default="dps,pgdm,mcgdiff,ddrm,dcps")
    parser.add_argument("--problem", default="sr4")
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--steps", default=None, type=parse_steps,
                        help="override the preset's num_steps: N for every sampler, or SAMPLER=N,...")
    parser.add_argument("--checkpoint", default="fashion32")
    parser.add_argument("--max-batch", type=int, default=None, help="most rows per network call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="if a sampler's B = 1 run over --images would take longer than this (estimated "
                             "from its warm-up), use --fallback-images for every sampler")
    parser.add_argument("--fallback-images", type=int, default=16)
    parser.add_argument("--out", default="benchmarks/results/batch_cpu")
    args = parser.parse_args()
    per_call = parse_ints(args.per_call)
    if 1 not in per_call:
        per_call = [1, *per_call]
    per_call = sorted(set(per_call))
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    if isinstance(args.steps, int):
        args.steps = dict.fromkeys(samplers, args.steps)
    unknown = sorted(set(args.steps) - set(samplers))
    if unknown:
        raise SystemExit(f"--steps: {', '.join(unknown)} not among --samplers")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    command = "python benchmarks/batch_throughput.py " + " ".join(sys.argv[1:])
    load_start = os.getloadavg()
    start = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="diffinv-batch-throughput-") as tmp:
        root = Path(tmp)
        names = write_images(root / "images", args.images)
        warm_folder = root / "warmup"
        warm_folder.mkdir()
        for name in names[:WARMUP_IMAGES]:
            shutil.copy(root / "images" / f"{name}.png", warm_folder / f"{name}.png")
        prior = load_default_prior(args.checkpoint, 1, device)
        log(f"prior {args.checkpoint} on {device}; {len(names)} images; B = {per_call}; "
            f"{torch.get_num_threads()} threads; load average {load_start}")

        warmups = {}
        for sampler in samplers:
            _, seconds = timed_batch(args, sampler, warm_folder, root / "out-warmup", 1, prior, device)
            per_image = seconds / min(WARMUP_IMAGES, len(names))
            warmups[sampler] = {"seconds": seconds, "images": min(WARMUP_IMAGES, len(names)),
                                "estimated_b1_minutes": per_image * len(names) / 60}
            log(f"warm-up {sampler}: {seconds:.2f} s for {warmups[sampler]['images']} images "
                f"(B = 1 over {len(names)} images ≈ {warmups[sampler]['estimated_b1_minutes']:.1f} min)")

        reduced = None
        if args.max_minutes is not None and args.fallback_images < len(names):
            slow = {s: w["estimated_b1_minutes"] for s, w in warmups.items()
                    if w["estimated_b1_minutes"] > args.max_minutes}
            if slow:
                reduced = {"from": len(names), "to": args.fallback_images, "because": slow}
                log(f"reducing --images {len(names)} -> {args.fallback_images}: "
                    f"estimated B = 1 minutes {slow}")
                for name in names[args.fallback_images:]:
                    (root / "images" / f"{name}.png").unlink()
                names = names[:args.fallback_images]

        records = []
        for sampler in samplers:
            reference = None
            for b in per_call:
                out = root / f"out-{sampler}-b{b}"
                report, seconds = timed_batch(args, sampler, root / "images", out, b, prior, device)
                rec = record_of(sampler, b, names, seconds, report, out)
                if b == 1:
                    reference = out
                    rec["max_abs_diff_vs_b1"] = 0.0
                else:
                    rec["max_abs_diff_vs_b1"] = max_difference(out, reference, names)
                if b == 1:
                    base_rate = rec["images_per_second"]
                rec["ratio_to_b1"] = rec["images_per_second"] / base_rate
                records.append(rec)
                log(json.dumps(rec))
                if b != 1:
                    shutil.rmtree(out)
            if reference is not None:
                shutil.rmtree(reference)

    total = time.perf_counter() - start
    info = {"version": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "cpu": cpu_name(), "machine": platform.machine(), "threads": torch.get_num_threads(),
            "cores": os.cpu_count(), "loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg()),
            "total_seconds": total, "command": command}
    settings = {"problem": args.problem, "checkpoint": args.checkpoint, "num_samples": args.num_samples,
                "steps": args.steps, "max_batch": args.max_batch, "seed": args.seed, "images": len(names),
                "per_call": per_call,
                "samplers": samplers, "warmup_images": WARMUP_IMAGES, "reduced_images": reduced}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "batch_throughput.json").write_text(
        json.dumps({"machine": info, "settings": settings, "warmups": warmups, "records": records}, indent=2)
        + "\n")
    (out_dir / "batch_throughput.md").write_text(markdown(info, settings, records))
    log(f"wrote {out_dir / 'batch_throughput.json'} and {out_dir / 'batch_throughput.md'} ({total:.0f} s)")


def markdown(info: dict, settings: dict, records: list[dict]) -> str:
    overridden = [f"{name} {n}" for name, n in settings["steps"].items()]
    steps = "the preset's steps" + (f" except num_steps = {', '.join(overridden)}" if overridden else "")
    load = ", ".join(f"{v:.2f}" for v in info["loadavg_start"])
    lines = [f"# diffinv batch throughput against --items-per-call B ({settings['checkpoint']}, "
             f"{settings['problem']}, {settings['images']} images)", "",
             f"`{info['command']}` — diffinv {info['version']}, torch {info['torch']}, {info['device']} "
             f"({info['cpu']}), {info['threads']} threads, {info['cores']} cores, load average at start "
             f"{load}, {info['total_seconds']:.0f} s in all.", "",
             f"{settings['images']} Fashion-MNIST test images, `simulate`, {settings['num_samples']} "
             f"samples per image, {steps}. Wall clock of the whole `run_batch` call (prior preloaded, "
             f"after an untimed warm-up of {settings['warmup_images']} images per sampler); "
             "s/image (sampler) is the mean per-item sampler time of the manifest; "
             "max |Δ| is the largest difference of an item's `samples.npz` from its B = 1 run."]
    if settings["reduced_images"]:
        r = settings["reduced_images"]
        est = ", ".join(f"{s} ≈ {m:.1f} min" for s, m in r["because"].items())
        lines += ["", f"Reduced from {r['from']} to {r['to']} images: estimated B = 1 time {est}."]
    merits = []
    for sampler in settings["samplers"]:
        rows = [r for r in records if r["sampler"] == sampler]
        if not rows:
            continue
        lines += ["", f"## {sampler}", "",
                  "| B | images/s | × B = 1 | s/image (wall) | s/image (sampler) | NFE/image fwd / bwd | "
                  "PSNR | max \\|Δ\\| vs B = 1 |", "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            diff = "—" if r["items_per_call"] == 1 else f"{r['max_abs_diff_vs_b1']:.2e}"
            psnr = "—" if r["psnr_mean"] is None else f"{r['psnr_mean']:.2f}"
            lines.append(f"| {r['items_per_call']} | {r['images_per_second']:.4g} | {r['ratio_to_b1']:.2f} | "
                         f"{r['seconds_per_image']:.3f} | {r['sampler_seconds_per_image']:.3f} | "
                         f"{r['nfe_forward_per_image']:.0f} / {r['nfe_backward_per_image']:.0f} | {psnr} | "
                         f"{diff} |")
        top = max(rows, key=lambda r: r["items_per_call"])
        if top["items_per_call"] > 1:
            merits.append(f"{sampler} {top['ratio_to_b1']:.2f}×")
    if merits:
        top_b = max(settings["per_call"])
        lines += ["", "## Figure of merit", "",
                  f"Throughput at B = {top_b} over B = 1 (images/s ratio): " + ", ".join(merits) + ". "
                  "Above 1 means sharing network calls between images pays on this device; on a "
                  "saturated CPU it stays near 1."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
