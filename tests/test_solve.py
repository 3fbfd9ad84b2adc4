"""``diffinv solve`` end to end on a tiny random-weight prior: outputs, metrics, errors, atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_prior import save_tiny_prior
from typer.testing import CliRunner

from cli.main import app
from diffinv.imaging.io import load_image, save_png
from diffinv.rng import make_generator

runner = CliRunner()
FAST = ["--steps", "4", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("solve")
    save_tiny_prior(root / "tiny1", channels=1, size=16)
    gen = make_generator(1)
    save_png(torch.rand(1, 16, 16, generator=gen), root / "truth.png")
    save_png(torch.rand(1, 4, 4, generator=gen), root / "low.png")
    save_png(torch.rand(1, 20, 20, generator=gen), root / "big.png")
    save_png(torch.rand(3, 16, 16, generator=gen), root / "rgb.png")
    return root


def run(root, *args):
    return runner.invoke(app, ["solve", "--checkpoint", str(root / "tiny1"), *FAST, *[str(a) for a in args]])


def one_error(result, *needles):
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert result.exit_code != 0 and len(lines) == 1 and "Traceback" not in result.output, result.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_simulate_writes_every_output(root):
    out = root / "run1"
    res = run(root, root / "truth.png", "--simulate", "--problem", "sr4", "--sampler", "pgdm",
              "--num-samples", 3, "--out", out)
    assert res.exit_code == 0, res.output
    names = {p.name for p in out.iterdir()}
    assert {"observation.png", "samples", "samples.npz", "mean.png", "std.png", "grid.png", "metrics.json",
            "truth.png", "observation.npy"} <= names
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["000.png", "001.png", "002.png"]
    samples = np.load(out / "samples.npz")["samples"]
    assert samples.shape == (3, 1, 16, 16) and samples.min() >= 0 and samples.max() <= 1
    m = json.loads((out / "metrics.json").read_text())
    for key in ("psnr", "ssim", "residual", "nfe_forward", "nfe_backward", "seconds", "seed", "version",
                "config"):
        assert key in m
    assert m["nfe_forward"] == 3 * 4 and m["config"]["problem"]["name"] == "sr4"
    assert Image.open(out / "observation.png").size == (4, 4)
    assert not [p for p in root.iterdir() if p.name.startswith(".run1")]  # no temporary folder left


def test_same_seed_same_samples(root):
    a, b = root / "seed_a", root / "seed_b"
    for out in (a, b):
        res = run(root, root / "truth.png", "--simulate", "--sampler", "ddrm", "--seed", 7, "--out", out)
        assert res.exit_code == 0
    assert np.array_equal(np.load(a / "samples.npz")["samples"], np.load(b / "samples.npz")["samples"])


def test_observation_mode_sr_and_inpainting(root):
    res = run(root, root / "low.png", "--problem", "sr4", "--sampler", "ddrm", "--out", root / "obs_sr")
    assert res.exit_code == 0, res.output
    m = json.loads((root / "obs_sr" / "metrics.json").read_text())
    assert m["psnr"] is None and m["residual"] > 0
    res = run(root, root / "truth.png", "--problem", "inpaint_box", "--sampler", "ddrm",
              "--out", root / "obs_box")
    assert res.exit_code == 0, res.output
    obs = load_image(root / "obs_box" / "observation.png")
    assert obs.shape == (1, 16, 16) and abs(float(obs[0, 8, 8]) - 0.5) < 0.01  # hole shown grey


def test_size_mismatch_is_one_clear_error_and_resize_opts_in(root):
    res = run(root, root / "big.png", "--simulate", "--out", root / "x1")
    one_error(res, "1×20×20", "1×16×16", "--resize")
    assert not (root / "x1").exists()
    one_error(run(root, root / "big.png", "--problem", "sr4", "--out", root / "x2"), "1×20×20", "1×4×4")
    res = run(root, root / "big.png", "--simulate", "--resize", "--sampler", "ddrm", "--out", root / "x3")
    assert res.exit_code == 0, res.output
    one_error(run(root, root / "rgb.png", "--simulate", "--out", root / "x4"), "3×16×16", "1×16×16")


@pytest.mark.parametrize("args, needles", [
    (["--problem", "nope"], ["problem", "nope"]),
    (["--sampler", "nope"], ["sampler", "nope"]),
    (["--set", "operator.factr=2"], ["operator.factr"]),
    (["--set", "noise.sigma_y=0"], ["sigma_y"]),
    (["--num-samples", "0"], ["num-samples"]),
    (["--device", "tpu"], ["device"]),
])
def test_bad_options(root, args, needles):
    one_error(run(root, root / "truth.png", "--simulate", "--out", root / "bad", *args), *needles)
    assert not (root / "bad").exists()


def test_missing_image_and_checkpoint(root):
    one_error(run(root, root / "missing.png", "--out", root / "m"), "missing.png")
    res = runner.invoke(app, ["solve", str(root / "truth.png"), "--simulate", "--checkpoint",
                              str(root / "none"), *FAST, "--out", str(root / "m")])
    one_error(res, "checkpoint")


def test_non_empty_out_needs_overwrite_and_failures_leave_nothing(root, monkeypatch):
    out = root / "keep"
    out.mkdir()
    (out / "mine.txt").write_text("x")
    one_error(run(root, root / "truth.png", "--simulate", "--sampler", "ddrm", "--out", out), "--overwrite")
    assert (out / "mine.txt").exists()

    import diffinv.solve as solve_module

    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(solve_module, "save_row", broken)
    res = run(root, root / "truth.png", "--simulate", "--sampler", "ddrm", "--out", root / "half")
    one_error(res, "disk full")
    assert not (root / "half").exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".half")]


def test_sampler_options_are_checked_before_the_prior_is_loaded(root):
    """A bad sampler option is named even when the checkpoint does not exist (nothing was loaded)."""
    res = runner.invoke(app, ["solve", str(root / "truth.png"), "--simulate", "--sampler", "mcgdiff",
                              "--set", "samplers.mcgdiff.kappa=2", "--checkpoint", str(root / "none"),
                              *FAST, "--out", str(root / "k")])
    one_error(res, "mcgdiff.kappa")


def test_error_messages_are_shown_verbatim(root):
    """Square brackets in a message (a file name, a gloo error) are text, not rich markup."""
    line = one_error(run(root, root / "a[b]c[/x].png", "--out", root / "v"), "file")
    assert "a[b]c[/x].png" in line
