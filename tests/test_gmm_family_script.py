"""``benchmarks/gmm_family.py``: the committed report's one command — worker processes (``--jobs``) give the
same records as one process, in a fixed order, and ``--skip`` leaves cells out."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gmm_family  # noqa: E402

VOLATILE = ("seconds", "prior_seconds", "overhead")


def run(monkeypatch, out: Path, *args: str) -> list[dict]:
    monkeypatch.setattr(sys, "argv", ["gmm_family.py", "--dims", "4", "--dys", "1,2", "--skip", "4:2",
                                      "--samplers", "ddrm,exact", "--seeds", "0-1", "--num-samples", "64",
                                      "--threads", "1", "--out", str(out), *args])
    gmm_family.main()
    records = json.loads((out / "gmm_family.json").read_text())["records"]
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


def test_jobs_give_the_records_of_one_process(monkeypatch, tmp_path):
    one = run(monkeypatch, tmp_path / "one")
    two = run(monkeypatch, tmp_path / "two", "--jobs", "2")
    assert one == two
    assert {(r["dx"], r["dy"]) for r in one} == {(4, 1)}  # --skip 4:2
    assert [r["sampler"] for r in one] == ["ddrm", "ddrm", "exact", "exact", "prior", "prior"]
    assert "jobs 2" in (tmp_path / "two" / "gmm_family.md").read_text()


def test_render_rewrites_the_report_from_its_json(monkeypatch, tmp_path):
    run(monkeypatch, tmp_path / "one")
    monkeypatch.setattr(sys, "argv", ["gmm_family.py", "--render", str(tmp_path / "one" / "gmm_family.json"),
                                      "--out", str(tmp_path / "again")])
    gmm_family.main()
    for name in ("gmm_family.md", "gmm_family.json", "gmm_family.csv"):
        assert (tmp_path / "again" / name).read_text() == (tmp_path / "one" / name).read_text()


def test_targets_mark_each_miss():
    """DCPS above its line at d_x = 40 (not at d_x = 100, whose line is 2.61), MCGDiff over 2x the floor, and
    a DPS run worse than the prior are each marked missed; the failure count gets its interval."""
    def row(name, median, ratio=1.0, beats=20):
        return {"sampler": name, "sw_median": median, "sw_median_lo": median / 2, "sw_median_hi": median * 2,
                "ratio_to_floor": ratio, "beats_prior_runs": beats, "prior_runs": 20}

    summary = {"40,1": [row("mcgdiff", 0.5, ratio=2.5), row("dcps", 1.3), row("dps", 1.0, beats=19)],
               "100,2": [row("mcgdiff", 0.1), row("dcps", 2.5), row("pgdm", 3.0)]}
    lines = gmm_family.targets(summary)
    forty = next(line for line in lines if line.startswith("| (40, 1)"))
    hundred = next(line for line in lines if line.startswith("| (100, 2)"))
    assert forty == ("| (40, 1) | **2.50 (missed)** | **1.30 [0.65, 2.60] (missed)** | **19/20 (missed)** "
                     "| — |")
    assert hundred == "| (100, 2) | 1.00 | 2.50 [1.25, 5.00] | — | 20/20 |"
    assert any(line.startswith("- dps: 1 of 20 runs no better than the prior") for line in lines)
    assert any(line.startswith("- pgdm: 0 of 20 runs") for line in lines)
