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
