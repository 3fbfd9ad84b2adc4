"""The Gaussian-mixture benchmark over a family of problems: d_x × d_y cells, every sampler, scored against
the exact posterior and against the prior.

    python benchmarks/gmm_family.py --jobs 2 --threads 1     # the committed report, from scratch
    python benchmarks/gmm_family.py --dims 40 --dys 1 --samplers dcps --seeds 0-3 --out /tmp/x   # a slice
    python benchmarks/gmm_family.py --merge a/gmm_family.json,b/gmm_family.json --out ...   # shards

The defaults are the committed report: d_x ∈ {10, 20, 40, 100} × d_y ∈ {1, 2, 4} without (100, 1) (that cell
is the published protocol, 2 000 samples, in ``benchmarks/results/gmm_table1.md``), seeds 0–19, 1 000
samples, every sampler. ``--jobs N`` runs the (cell, sampler) units in N worker processes (one thread each
with ``--threads 1``); every unit draws from its own seeded streams, so the records do not depend on N or
on the order the units finish in, and they are written in a fixed order.

Each (d_x, d_y, seed) is ``diffinv.benchmarks.gmm.make_problem`` (25 modes; A, σ_y drawn per seed) and
every sampler runs with its GMM preset (``diffinv/benchmarks/gmm_presets.py``) through ``run_compare``.
Beside the samplers, two reference rows per seed: ``exact`` (an exact posterior sample set: the noise floor
of the sliced Wasserstein distance) and ``prior`` (as many samples of the prior: what a sampler that
ignores y scores). Per cell the report gives the median SW and its ratio to the floor's median, and on how
many seeds a sampler beat the prior. Tune on seeds 100–199; report on seeds 0–19.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import multiprocessing
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from diffinv import __version__
from diffinv.compare import CSV_FIELDS, CompareConfig, parse_seeds, run_compare
from diffinv.metrics import binomial_interval, median_interval
from diffinv.samplers.registry import SAMPLERS

# What the family must show (the issue that widened the benchmark): MCGDiff's median within 2x of the exact
# floor's; DCPS's median at most the published DCPS500 median at d_x = 10 (1.26, DCPS Table 1) up to
# d_x = 40 and no worse than the 2.61 of the d_x = 100 preset it replaced; DPS and PiGDM below the prior's
# SW on every seed.
MCGDIFF_RATIO = 2.0
DCPS_MEDIAN = {10: 1.26, 20: 1.26, 40: 1.26, 100: 2.61}


def prior_records(records: list[dict]) -> list[dict]:
    """One ``prior`` row per seed, from the prior baseline that ``run_compare`` put into its records
    (``diffinv.compare.prior_sw``: what a sampler that ignores y scores)."""
    first = {r["seed"]: r for r in reversed(records)}
    return [{"sampler": "prior", "seed": s, "dx": r["dx"], "dy": r["dy"], "sigma_y": r["sigma_y"],
             "sw": r["prior_sw"], "weight_error": float("nan"), "nfe_forward": 0, "nfe_backward": 0,
             "seconds": 0.0, "prior_seconds": 0.0, "overhead": float("nan"), "num_samples": r["num_samples"]}
            for s, r in sorted(first.items())]


def cell_rows(records: list[dict]) -> list[dict]:
    """Per sampler of one cell: SW median (with its bootstrap 90 % interval over seeds) / mean / sd, ratio
    to the floor, seeds better than the prior."""
    by = {}
    for r in records:
        by.setdefault(r["sampler"], {})[r["seed"]] = r
    floor = float(np.median([r["sw"] for r in by.get("exact", {}).values()])) if "exact" in by else np.nan
    prior = by.get("prior", {})
    rows = []
    for name, runs in by.items():
        sw = np.array([runs[s]["sw"] for s in sorted(runs)])
        beat = [runs[s]["sw"] < prior[s]["sw"] for s in sorted(runs) if s in prior]
        n = sum(r["num_samples"] for r in runs.values())
        lo, hi = median_interval(sw)
        rows.append({"sampler": name, "seeds": len(runs), "sw_median": float(np.median(sw)),
                     "sw_median_lo": lo, "sw_median_hi": hi, "beats_prior_runs": sum(beat),
                     "prior_runs": len(beat) if name != "prior" else 0,
                     "sw_mean": float(sw.mean()), "sw_sd": float(sw.std(ddof=1)) if len(sw) > 1 else 0.0,
                     "ratio_to_floor": float(np.median(sw)) / floor if floor > 0 else float("nan"),
                     "warned": sum(bool(runs[s].get("warnings")) for s in runs),
                     "nfe_forward_per_sample": sum(r["nfe_forward"] for r in runs.values()) / n,
                     "nfe_backward_per_sample": sum(r["nfe_backward"] for r in runs.values()) / n,
                     "seconds_per_1000": 1000 * sum(r["seconds"] for r in runs.values()) / n})
    return rows


def run_unit(unit: tuple[int, int, str, str, int, int]) -> list[dict]:
    """The records of one (d_x, d_y, sampler) over the seeds (runs in a worker process with ``--jobs``)."""
    dx, dy, name, seeds, num_samples, threads = unit
    if threads:
        torch.set_num_threads(threads)
    config = CompareConfig(dx=dx, dy=dy, seeds=parse_seeds(seeds), samplers=(name,), num_samples=num_samples,
                           dtype="float32")

    def say(message: str) -> None:
        print(f"dx={dx} dy={dy} {message}", file=sys.stderr, flush=True)

    return run_compare(config, progress=say).records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="10,20,40,100")
    parser.add_argument("--dys", default="1,2,4")
    parser.add_argument("--seeds", default="0-19")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--samplers", default="", help="comma-separated (default: every registered sampler)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--skip", default="100:1", help="comma-separated dx:dy cells left out (default: the "
                        "published-protocol cell 100:1, reported in gmm_table1.md); '' keeps every cell")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes over (cell, sampler) units")
    parser.add_argument("--out", default="benchmarks/results/gmm_family")
    parser.add_argument("--merge", default="", help="comma-separated gmm_family.json files (later records "
                        "replace earlier ones of the same cell, sampler and seed); runs nothing")
    parser.add_argument("--render", default="", help="a gmm_family.json: re-write its report (summary, CSV, "
                        "markdown) into --out from its records and machine line; runs nothing")
    args = parser.parse_args()
    if args.render:
        report = json.loads(Path(args.render).read_text())
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        return write(out, report["records"], report["machine"])
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.merge:
        parts = [json.loads(Path(p).read_text()) for p in args.merge.split(",")]
        unique = {(r["dx"], r["dy"], r["sampler"], r["seed"]): r for p in parts for r in p["records"]}
        info = dict(parts[0]["machine"])
        info["total_seconds"] = sum(p["machine"]["total_seconds"] for p in parts)
        info["command"] = " && ".join([p["machine"]["command"] for p in parts]
                                      + ["python benchmarks/gmm_family.py " + shlex.join(sys.argv[1:])])
        return write(out, list(unique.values()), info)
    names = tuple(s for s in args.samplers.split(",") if s) or tuple(SAMPLERS)
    skip = {tuple(int(v) for v in c.split(":")) for c in args.skip.split(",") if c}
    cells = [(int(dx), int(dy)) for dx in args.dims.split(",") for dy in args.dys.split(",")
             if (int(dx), int(dy)) not in skip]
    units = [(dx, dy, name, args.seeds, args.num_samples, args.threads) for dx, dy in cells for name in names]
    if args.jobs > 1:  # largest d_x first, so that the slow units do not come last
        order = sorted(units, key=lambda u: -u[0])
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            done = dict(zip(order, pool.map(run_unit, order), strict=True))
    else:
        done = {u: run_unit(u) for u in units}
    records = []
    for dx, dy in cells:
        cell = [r for u in units if u[:2] == (dx, dy) for r in done[u]]
        records += cell + prior_records(cell)
    info = {"version": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "cores": os.cpu_count(), "total_seconds": time.perf_counter() - start,
            "command": "python benchmarks/gmm_family.py " + shlex.join(sys.argv[1:])}
    write(out, records, info)


def write(out: Path, records: list[dict], info: dict) -> None:
    cells = sorted({(r["dx"], r["dy"]) for r in records})
    summary = {f"{dx},{dy}": cell_rows([r for r in records if (r["dx"], r["dy"]) == (dx, dy)])
               for dx, dy in cells}
    (out / "gmm_family.json").write_text(json.dumps({"machine": info, "summary": summary, "records": records},
                                                    indent=1) + "\n")
    with open(out / "gmm_family.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
    (out / "gmm_family.md").write_text(markdown(summary, info))


def markdown(summary: dict[str, list[dict]], info: dict) -> str:
    lines = ["# GMM benchmark over the family d_x × d_y", "",
             "25-component Gaussian mixture (`diffinv/benchmarks/gmm.py`), every sampler with its GMM "
             "preset; SW over 100 random directions against as many exact posterior samples, float32. "
             "`exact` is the noise floor, `prior` what ignoring y scores; ratio = median SW / the floor's "
             "median SW; the median's 90 % interval is a percentile bootstrap over the seeds "
             "(`diffinv.metrics.median_interval`); 'beats prior' counts the seeds on which a sampler's SW "
             "is below the prior's, 'warned' those on which the run's own diagnostics said it failed "
             "(`SampleResult.diagnostics['warnings']`: samples that do not fit y, collapsed SMC weights, "
             "a tamed-away DCPS Langevin phase).",
             f"Regenerate with `{info['command'].strip()}` (diffinv {info['version']}, "
             f"torch {info['torch']}, {info['cores']} cores, {info['total_seconds'] / 60:.1f} min in all).",
             ""]
    lines += targets(summary)
    for cell, rows in summary.items():
        dx, dy = cell.split(",")
        lines += [f"## d_x = {dx}, d_y = {dy}", "",
                  "| sampler | seeds | SW median [90 % interval] | SW mean ± sd | ratio to floor | "
                  "beats prior | warned | NFE fwd / bwd per sample | s / 1000 samples |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['sampler']} | {r['seeds']} | {r['sw_median']:.2f} [{r['sw_median_lo']:.2f}, "
                         f"{r['sw_median_hi']:.2f}] | {r['sw_mean']:.2f} ± "
                         f"{r['sw_sd']:.2f} | {r['ratio_to_floor']:.2f} | {beats_text(r)} | "
                         f"{r['warned']} | "
                         f"{r['nfe_forward_per_sample']:.0f} / {r['nfe_backward_per_sample']:.0f} | "
                         f"{r['seconds_per_1000']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def beats_text(row: dict) -> str:
    """'k/n' seeds on which a summary row beat the prior; '—' for the prior itself."""
    return f"{row['beats_prior_runs']}/{row['prior_runs']}" if row["prior_runs"] else "—"


def targets(summary: dict[str, list[dict]]) -> list[str]:
    """The family's targets (``MCGDIFF_RATIO``, ``DCPS_MEDIAN``, DPS and ΠGDM below the prior on every seed),
    per cell, from the summary rows; a miss in bold; '—' where the sampler was not run."""

    def mark(text: str, ok: bool) -> str:
        return text if ok else f"**{text} (missed)**"

    def beats(row: dict | None) -> str:
        return "—" if row is None or not row["prior_runs"] else mark(beats_text(row), row["beats_prior_runs"]
                                                                      == row["prior_runs"])

    lines = ["## Targets", "",
             f"MCGDiff's median within {MCGDIFF_RATIO:g}× the floor's; DCPS's median at most "
             f"{DCPS_MEDIAN[40]:g} up to d_x = 40 and {DCPS_MEDIAN[100]:g} at d_x = 100; DPS and ΠGDM below "
             "the prior on every seed."
             + ("" if "100,1" in summary else " The published-protocol cell (100, 1) is in "
                "`benchmarks/results/gmm_table1.md`."), "",
             "| cell | MCGDiff ratio to floor | DCPS SW median [90 % interval] | DPS beats prior | "
             "ΠGDM beats prior |",
             "|---|---|---|---|---|"]
    worse = {"dps": [0, 0], "pgdm": [0, 0]}
    for cell, rows in summary.items():
        dx = int(cell.split(",")[0])
        by = {r["sampler"]: r for r in rows}
        mcg, dcps = by.get("mcgdiff"), by.get("dcps")
        mcg_text = ("—" if mcg is None else
                    mark(f"{mcg['ratio_to_floor']:.2f}", mcg["ratio_to_floor"] <= MCGDIFF_RATIO))
        if dcps is None or dx not in DCPS_MEDIAN:
            dcps_text = "—" if dcps is None else f"{dcps['sw_median']:.2f}"
        else:
            interval = f"[{dcps['sw_median_lo']:.2f}, {dcps['sw_median_hi']:.2f}]"
            dcps_text = mark(f"{dcps['sw_median']:.2f} {interval}", dcps["sw_median"] <= DCPS_MEDIAN[dx])
        for name in worse:
            if name in by:
                worse[name][0] += by[name]["prior_runs"] - by[name]["beats_prior_runs"]
                worse[name][1] += by[name]["prior_runs"]
        lines.append(f"| ({cell.replace(',', ', ')}) | {mcg_text} | {dcps_text} | {beats(by.get('dps'))} | "
                     f"{beats(by.get('pgdm'))} |")
    lines.append("")
    for name, (k, n) in worse.items():
        if n:
            lo, hi = binomial_interval(k, n)
            lines.append(f"- {name}: {k} of {n} runs no better than the prior (rate {k / n:.3f}, "
                         f"Clopper–Pearson 90 % interval [{lo:.4f}, {hi:.4f}]).")
    return lines + [""]


if __name__ == "__main__":
    main()
