"""CLI smoke tests (Typer CliRunner): listings, compare outputs, one-line errors with non-zero exits."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from diffinv import __version__
from diffinv.benchmarks.gmm import make_problem, save_problem
from diffinv.operators.registry import OPERATORS
from diffinv.samplers.registry import SAMPLERS

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def error_line(result) -> str:
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_help_version_and_listings():
    assert run("--help").exit_code == 0
    res = run("version")
    assert res.exit_code == 0 and __version__ in res.output
    res = run("operators")
    assert res.exit_code == 0
    assert [ln.split()[0] for ln in res.output.strip().splitlines()] == list(OPERATORS)
    res = run("samplers")
    assert res.exit_code == 0
    assert [ln.split()[0] for ln in res.output.strip().splitlines()] == list(SAMPLERS)


def test_compare_writes_outputs(tmp_path):
    out = tmp_path / "out"
    res = run("compare", "--dx", "4", "--seeds", "0-1", "--samplers", "exact", "--num-samples", "200",
              "--json", str(out / "r.json"), "--csv", str(out / "r.csv"), "--figure", str(out / "f.png"),
              "--save-samples", str(out / "samples"), "-q")
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "r.json").read_text())
    assert len(doc["records"]) == 2 and doc["summary"][0]["sampler"] == "exact"
    header = (out / "r.csv").read_text().splitlines()[0].split(",")
    assert header == ["sampler", "seed", "dx", "dy", "sigma_y", "sw", "prior_sw", "weight_error",
                      "nfe_forward", "nfe_backward", "seconds"]
    assert (out / "f.png").stat().st_size > 0
    saved = np.load(out / "samples" / "exact.npz")
    assert saved["samples"].shape == (200, 4) and "samples_seed1" in saved.files


def test_compare_user_problem(tmp_path):
    path = tmp_path / "p.npz"
    save_problem(make_problem(6, 2, seed=4), path)
    res = run("compare", "--problem", str(path), "--samplers", "exact", "--num-samples", "100", "-q")
    assert res.exit_code == 0, res.output
    assert "exact" in res.output


@pytest.mark.parametrize(("change", "needle"), [
    ({"A": np.ones((2, 5))}, "A must have shape"),
    ({"sigma_y": np.float64(0.0)}, "sigma_y"),
    ({"sigma_y": np.float64(-1.0)}, "sigma_y"),
    ({"y": np.ones(3)}, "y must have shape"),
    ({"weights": np.ones(3)}, "weights"),
])
def test_bad_problem_file_is_one_line(tmp_path, change, needle):
    gmm = make_problem(6, 2, seed=4)
    path = tmp_path / "p.npz"
    save_problem(gmm, path)
    data = dict(np.load(path))
    data.update(change)
    np.savez(path, **data)
    res = run("compare", "--problem", str(path), "--samplers", "exact", "--num-samples", "10", "-q")
    assert res.exit_code == 2
    assert needle in error_line(res)


@pytest.mark.parametrize(("args", "needle"), [
    (["--samplers", "nope"], "unknown name 'nope'"),
    (["--seeds", "x"], "seeds"),
    (["--seeds", "0"], "for seed 0 alone write 0-0"),
    (["--samplers", "pgdm", "--set", "pgdm.step=bogus"], "pgdm.step: expected one of 'paper', 'tweedie'"),
    (["--dx", "7"], "dx"),
    (["--dtype", "float16"], "dtype"),
    (["--set", "exact"], "SAMPLER.OPTION=VALUE"),
])
def test_bad_options_are_one_line(args, needle):
    res = run("compare", *args, "-q")
    assert res.exit_code == 2
    assert needle in error_line(res)
