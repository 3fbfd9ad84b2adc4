r"""Issue 17's report: the refined prior's card figures beside the base's, and the posterior-mean PSNR of
every sampler with the base and with the refined prior on the same images, observations and seeds (paired).

Inputs are two ``benchmarks/image_table.py`` results (one per prior, same options otherwise) and the refined
card. Writes report.md and comparison.json under --out.

    python benchmarks/image_table.py --checkpoint fashion32 --samplers pgdm,ddrm,dps,dcps --out /tmp/base
    python benchmarks/image_table.py --checkpoint fashion32-dg --samplers pgdm,ddrm,dps,dcps --out /tmp/dg
    python benchmarks/refine_compare.py --base /tmp/base/image_table.json --refined /tmp/dg/image_table.json \
        --card checkpoints/fashion32-dg/card.json --out benchmarks/results/refine_fashion32
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path


def paired(base: list[dict], refined: list[dict]) -> dict[tuple[str, str], dict]:
    """Per (problem, method): mean PSNR of each prior, the paired difference and its SE over images."""
    index = {(r["problem"], r["method"], r["image"]): r for r in base if r["nfe_forward"] > 0}
    mine = {(r["problem"], r["method"], r["image"]): r for r in refined}  # shards may repeat a record
    groups: dict[tuple[str, str], list[tuple[dict, dict]]] = {}
    for key, r in sorted(mine.items()):
        if key in index:
            groups.setdefault(key[:2], []).append((index[key], r))
    rows = {}
    for key, pairs in groups.items():
        diff = [b["psnr"] - a["psnr"] for a, b in pairs]
        devices: dict[str, int] = {}
        for a, b in pairs:
            name = short(a.get("device", "?")) + (" → " + short(b.get("device", "?"))
                                                  if a.get("device") != b.get("device") else "")
            devices[name] = devices.get(name, 0) + 1
        se = statistics.stdev(diff) / len(diff) ** 0.5 if len(diff) > 1 else float("nan")
        rows[key] = {"images": len(pairs), "base": statistics.fmean(a["psnr"] for a, _ in pairs),
                     "refined": statistics.fmean(b["psnr"] for _, b in pairs), "diff": statistics.fmean(diff),
                     "diff_se": se, "seconds_base": statistics.fmean(a["seconds"] for a, _ in pairs),
                     "seconds_refined": statistics.fmean(b["seconds"] for _, b in pairs),
                     "devices": devices}
    return rows


def short(device: str) -> str:
    """'NVIDIA H100 80GB HBM3' → 'H100'; a CPU's machine name as it is."""
    return device.replace("NVIDIA ", "").split(" ")[0]


def verdict(row: dict) -> str:
    if row["diff"] > 2 * row["diff_se"]:
        return "better"
    if row["diff"] < -2 * row["diff_se"]:
        return "worse"
    return "level"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", nargs="+", required=True, help="image_table.json of the base prior")
    parser.add_argument("--refined", nargs="+", required=True, help="image_table.json of the refined prior")
    parser.add_argument("--card", default="checkpoints/fashion32-dg/card.json")
    parser.add_argument("--out", default="benchmarks/results/refine_fashion32")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    loads = {"base": [json.loads(Path(p).read_text()) for p in args.base],
             "refined": [json.loads(Path(p).read_text()) for p in args.refined]}
    for kind, paths in (("base", args.base), ("refined", args.refined)):
        for i, path in enumerate(paths):
            shutil.copyfile(path, out / f"table_{kind}_{i}.json")
    records = {k: [{**r, "device": d.get("machine", {}).get("device", "?")}
                   for d in docs for r in d["records"]] for k, docs in loads.items()}
    rows = paired(records["base"], records["refined"])
    card = json.loads(Path(args.card).read_text())
    fig = card.get("figures") or {}
    lines = [f"# `{card['name']}`: `{card['base']['checkpoint']}` refined with a learned correction", "",
             f"Loss `{card['loss']}`" + (f" (γ = {card['gamma']})" if card["loss"] == "mse+ce" else "") +
             f", correction applied for t ∈ [{card['t_range'][0]}, {card['t_range'][1]}], "
             f"{card['correction']['parameters']} parameters, {card['training']['steps']} steps "
             f"({card['training']['seconds']} s training on the CPU; "
             + (f"{card['training']['sample_seconds']} s of cached base samples" if
                card['training'].get('sample_seconds') is not None else "cached base samples not timed") +
             "). Recipe: `training.recipe` in the card.", ""]
    if fig:
        d, f = fig["denoising_mse"], fig["frechet"]
        lines += ["## Card figures (base and refined side by side)", "",
                  f"Held-out denoising MSE per pixel ({d['heldout_images']} test images, the same noise for "
                  "both; difference ± its SE over the images):", "",
                  "| t | base | refined | refined − base | Gaussian fit |", "|---|---|---|---|---|"]
        for i, t in enumerate(d["timesteps"]):
            lines.append(f"| {t} | {d['base'][i]:.5f} | {d['refined'][i]:.5f} | "
                         f"{d['refined_minus_base'][i]:+.5f} ± {d['refined_minus_base_se'][i]:.5f} | "
                         f"{d['gaussian'][i]:.5f} |")
        lines += ["", f"Fréchet distance to the test set (classifier features; {f['draws']} draws of "
                  f"{f['n']} DDPM samples, 100 steps, each prior):", "",
                  f"- base: {f['base_mean']} ± {f['base_sd']} (draws {f['base']})",
                  f"- refined: {f['refined_mean']} ± {f['refined_sd']} (draws {f['refined']})",
                  f"- floor ({f['n']} training images): {f['train_vs_test']}", ""]
    info = loads["refined"][-1].get("machine", {})
    lines += ["## Posterior-mean PSNR, base vs refined (paired: same images, observations and seeds)", "",
              f"{info.get('num_samples', 4)} samples per image, presets of problems/*.yaml, "
              f"{info.get('threads', '?')} thread(s); the last column names the device of each pair's runs. "
              "A pair run on two devices shares the image, the observation (its noise comes from a CPU "
              "generator) and the seed, but not the sampler's random stream (a CUDA generator draws other "
              "numbers), so its difference carries the sampler's own spread. 'better'/'worse': the "
              "paired difference is more than 2 SE from 0; else 'level'. Seconds are wall clock with the CPU "
              "shared by other jobs (differently in the two runs), not a cost measurement: both priors make "
              "the same network evaluations, and the correction's own cost is inside each one.", "",
              "| problem | sampler | images | base | refined | refined − base | verdict | "
              "s/image base → refined | devices (images) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for (problem, method), row in sorted(rows.items()):
        lines.append(f"| {problem} | {method} | {row['images']} | {row['base']:.2f} | "
                     f"{row['refined']:.2f} | "
                     f"{row['diff']:+.2f} ± {row['diff_se']:.2f} | {verdict(row)} | "
                     f"{row['seconds_base']:.1f} → {row['seconds_refined']:.1f} | "
                     + ", ".join(f"{d} ({n})" for d, n in row["devices"].items()) + " |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "comparison.json").write_text(json.dumps({f"{p}/{m}": r for (p, m), r in rows.items()}, indent=1)
                                         + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
