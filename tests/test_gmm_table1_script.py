"""``benchmarks/gmm_table1.py``: a merged report scores rows run before the per-seed prior baseline existed
against the same seed's baseline from another row, and shows the 'beats prior' count."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gmm_table1  # noqa: E402


def record(sampler: str, seed: int, sw: float, prior: float | None = None) -> dict:
    r = {"sampler": sampler, "seed": seed, "dx": 10, "dy": 1, "sigma_y": 0.1, "sw": sw, "weight_error": 0.1,
         "nfe_forward": 10, "nfe_backward": 0, "seconds": 1.0, "prior_seconds": 0.5, "overhead": 2.0,
         "num_samples": 8, "warnings": []}
    if prior is not None:
        r["prior_sw"] = prior
    return r


def test_old_rows_take_the_seed_baseline_of_another_row():
    records = [record("new", 0, 1.0, prior=2.0), record("new", 1, 1.0, prior=0.5), record("old", 0, 3.0),
               record("old", 1, 0.1), record("old", 2, 0.1)]
    scored = gmm_table1.with_prior_baseline(records)
    assert [r.get("prior_sw") for r in scored] == [2.0, 0.5, 2.0, 0.5, None]  # seed 2 has no baseline
    assert "prior_sw" not in records[2]  # the stored records are left as they were


def test_merged_report_counts_the_seeds_that_beat_the_prior(monkeypatch, tmp_path):
    part = tmp_path / "part.json"
    part.write_text(json.dumps({"machine": {"version": "0", "torch": "0", "python": "3", "cpu": "x",
                                            "threads": 1, "cores": 1, "total_seconds": 1.0, "command": "c"},
                                "records": [record("new", 0, 1.0, prior=2.0),
                                            record("new", 1, 1.0, prior=0.5),
                                            record("old", 0, 3.0), record("old", 1, 0.1)]}))
    monkeypatch.setattr(sys, "argv", ["gmm_table1.py", "--merge", str(part), "--out", str(tmp_path / "out")])
    gmm_table1.main()
    text = (tmp_path / "out" / "gmm_table1.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[6] for line in text.splitlines()
            if line.startswith("| new ") or line.startswith("| old ")}
    assert rows == {"new": "1/2", "old": "1/2"}
