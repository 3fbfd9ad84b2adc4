"""The real command line (``python -m diffinv`` in a subprocess) under misuse, races and signals.

Classes covered: data loss (``--overwrite`` only replaces what diffinv wrote, ``--out .``), a race of four
``solve`` runs on one ``--out``, YAML 1.2 numbers, bad values that used to crash, silent mis-readings of
images (``.npy`` scale, 16-bit PNGs, palettes), misleading messages, Ctrl-C / SIGTERM, usage errors and
the permissions of created folders. Every failure must end with exactly one ``error:`` line naming the
argument, the documented exit code and an unchanged file system (names, sizes and mtimes).

Each subprocess (``cli_process.py``) pays the torch import (~2 s), so independent commands run two at a
time (the CI machine has 2 cores) and the successful runs are shared by the tests that inspect them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import png
import pytest
import torch
from cli_process import (
    UMASK,
    leftovers,
    one_error,
    read_png16,
    run,
    run_all,
    snapshot,
    start,
    succeeded,
    write_png16,
)
from PIL import Image
from tiny_prior import save_tiny_prior

from diffinv import outputs
from diffinv.imaging.io import read_image, save_png
from diffinv.rng import make_generator

FAST = ["--steps", "2", "--quiet", "--device", "cpu", "--threads", "1", "--num-samples", "1",
        "--sampler", "dps"]


# -- shared inputs ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("assets")
    save_tiny_prior(root / "tiny1", channels=1, size=16)
    save_tiny_prior(root / "tiny3", channels=3, size=16)
    gen = make_generator(5)
    save_png(torch.rand(1, 16, 16, generator=gen), root / "truth.png")
    save_png(torch.rand(3, 16, 16, generator=gen), root / "rgb.png")
    rng = np.random.default_rng(0)
    write_png16(root / "grey16.png", rng.integers(0, 65536, (16, 16), dtype=np.uint16))
    write_png16(root / "rgb16.png", rng.integers(0, 65536, (16, 16, 3), dtype=np.uint16))
    grey = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    Image.fromarray(grey, "L").convert("P").save(root / "palette.png")
    np.save(root / "scale255.npy", rng.uniform(0, 255, (1, 16, 16)))
    (root / "images3").mkdir()
    for i in range(3):
        save_png(torch.rand(1, 16, 16, generator=gen), root / "images3" / f"{i}.png")
    for name, factor, sigma, extra in [("preset_1e-2", "4", "1e-2", ""), ("preset_four", "four", "0.05", ""),
                                       ("preset_zeta", "4", "0.05", "samplers:\n  dps: {zeta: abc}\n")]:
        (root / f"{name}.yaml").write_text(f"name: p\noperator: {{name: sr_bicubic, factor: {factor}}}\n"
                                           f"noise: {{kind: gaussian, sigma_y: {sigma}}}\n{extra}")
    return root


def solve_args(assets: Path, image: str, *extra, checkpoint: str = "tiny1") -> tuple:
    return ("solve", assets / image, "--checkpoint", assets / checkpoint, *FAST, *extra)


# -- successful runs, shared -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def solved(assets, tmp_path_factory) -> tuple[Path, dict[str, subprocess.CompletedProcess]]:
    root = tmp_path_factory.mktemp("solved")
    cases = {
        "set_numbers": solve_args(assets, "truth.png", "--simulate", "--set", "noise.sigma_y=5e-2",
                                  "--set", "dps.zeta=1e-1", "--out", root / "set_numbers"),
        "preset_palette": solve_args(assets, "palette.png", "--simulate", "--problem",
                                     assets / "preset_1e-2.yaml", "--out", root / "preset_palette"),
        "npy255": solve_args(assets, "scale255.npy", "--simulate", "--value-range", "0,255",
                             "--out", root / "npy255"),
        "grey16": solve_args(assets, "grey16.png", "--problem", "deblur_gauss", "--out", root / "grey16"),
        "rgb16": solve_args(assets, "rgb16.png", "--problem", "deblur_gauss", "--out", root / "rgb16",
                            checkpoint="tiny3"),
    }
    return root, run_all(cases, cwd=root)


def metrics(root: Path, name: str) -> dict:
    return json.loads((root / name / "metrics.json").read_text())


def test_yaml12_numbers_in_set_and_presets_are_accepted(solved):
    root, res = solved
    for name in ("set_numbers", "preset_palette"):
        succeeded(res[name])
    m = metrics(root, "set_numbers")
    assert m["sigma_y"] == 0.05 and m["config"]["sampler_options"]["zeta"] == 0.1
    assert metrics(root, "preset_palette")["sigma_y"] == 0.01


def test_npy_value_range_opt_in(solved):
    root, res = solved
    succeeded(res["npy255"])
    image = metrics(root, "npy255")["image"]
    assert image["value_range"] == [0.0, 255.0] and "0, 255" in image["interpretation"]


@pytest.mark.parametrize("name, image", [("grey16", "grey16.png"), ("rgb16", "rgb16.png")])
def test_16_bit_pngs_are_read_at_full_precision(solved, assets, name, image):
    root, res = solved
    succeeded(res[name])
    # without --simulate and with an operator onto the same shape, the observation is the image itself
    observed = np.load(root / name / "observation.npy")
    assert np.array_equal(observed, read_png16(assets / image))
    info = metrics(root, name)["image"]
    assert info["bit_depth"] == 16 and info["interpretation"] == ("16-bit grey" if name == "grey16"
                                                                  else "16-bit RGB")


def test_grey_palette_png_is_one_channel(solved):
    root, res = solved
    succeeded(res["preset_palette"])
    assert "1 channel" in metrics(root, "preset_palette")["image"]["interpretation"]
    assert np.load(root / "preset_palette" / "samples.npz")["samples"].shape == (1, 1, 16, 16)


def test_output_folders_follow_the_umask(solved):
    root, res = solved
    succeeded(res["set_numbers"])
    out = root / "set_numbers"
    for folder in (out, out / "samples"):
        assert folder.stat().st_mode & 0o777 == 0o777 & ~UMASK, oct(folder.stat().st_mode)
    assert (out / "metrics.json").stat().st_mode & 0o777 == 0o666 & ~UMASK
    assert not leftovers(root)


# -- read_image directly ---------------------------------------------------------------------------------
def test_read_image_16_bit_and_palettes(tmp_path):
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 65536, (5, 7), dtype=np.uint16)
    rgb = rng.integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    png.from_array(grey.tolist(), "L;16").save(tmp_path / "g.png")
    write_png16(tmp_path / "c.png", rgb)
    x, info = read_image(tmp_path / "g.png")
    assert x.shape == (1, 5, 7) and np.array_equal(x[0].numpy(), grey / 65535.0) and info["bit_depth"] == 16
    x, info = read_image(tmp_path / "c.png")
    assert x.shape == (3, 5, 7) and np.array_equal(x.numpy(), rgb.transpose(2, 0, 1) / 65535.0)
    assert info["interpretation"] == "16-bit RGB"
    levels = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    Image.fromarray(levels, "L").convert("P").save(tmp_path / "pg.png")
    x, info = read_image(tmp_path / "pg.png")
    assert x.shape == (1, 5, 7) and np.array_equal(x[0].numpy(), levels / 255.0)
    assert info["interpretation"] == "palette of greys -> 1 channel"
    colour = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(colour, "RGB").convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "pc.png")
    x, info = read_image(tmp_path / "pc.png")
    assert x.shape == (3, 5, 7) and info["interpretation"] == "colour palette -> RGB"


# -- data loss -------------------------------------------------------------------------------------------
def test_overwrite_replaces_only_what_diffinv_wrote(assets, tmp_path):
    user = tmp_path / "photos"
    user.mkdir()
    (user / "holiday.jpg").write_bytes(b"precious")
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    res = run_all({"user": solve_args(assets, "truth.png", "--simulate", "--out", user, "--overwrite"),
                   "cwd": solve_args(assets, "truth.png", "--simulate", "--out", ".", "--overwrite")},
                  cwd=work)
    one_error(res["user"], "out:", "holiday.jpg", "even with --overwrite")
    one_error(res["cwd"], "out:", "current folder")
    assert snapshot(tmp_path) == before
    assert (user / "holiday.jpg").read_bytes() == b"precious"

    own = tmp_path / "own"
    succeeded(run(*solve_args(assets, "truth.png", "--simulate", "--out", own), cwd=tmp_path))
    succeeded(run(*solve_args(assets, "truth.png", "--simulate", "--seed", "1", "--out", own, "--overwrite"),
                  cwd=tmp_path))
    assert metrics(tmp_path, "own")["seed"] == 1  # replaced
    assert json.loads((own / ".diffinv").read_text())["written_by"] == "diffinv"
    assert not leftovers(tmp_path)

    (own / "my_notes.txt").write_text("added by the user")
    before = snapshot(tmp_path)
    res = run(*solve_args(assets, "truth.png", "--simulate", "--out", own, "--overwrite"), cwd=tmp_path)
    one_error(res, "out:", "my_notes.txt", "even with --overwrite")
    assert snapshot(tmp_path) == before


# -- race ------------------------------------------------------------------------------------------------
def test_four_concurrent_runs_on_one_folder_one_wins(assets, tmp_path):
    parent = tmp_path / "race"  # missing: the runs also race to create it
    args = solve_args(assets, "truth.png", "--simulate", "--out", parent / "out")
    procs = [start(*args, cwd=tmp_path) for _ in range(4)]
    ends = [p.communicate(timeout=180) for p in procs]
    results = [subprocess.CompletedProcess(p.args, p.returncode, out, err)
               for p, (out, err) in zip(procs, ends, strict=True)]
    winners = [r for r in results if r.returncode == 0]
    assert len(winners) == 1, [(r.returncode, r.stderr) for r in results]
    succeeded(winners[0])
    for r in results:
        if r.returncode != 0:
            one_error(r, "out:")
    assert sorted(p.name for p in parent.iterdir()) == ["out"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race"]
    assert (parent / "out" / "metrics.json").is_file()


# -- failures that must be one line, with nothing written ------------------------------------------------
def failure_cases(a: Path, root: Path) -> dict[str, tuple[tuple, list[str]]]:
    """name: (command line, what its error line must say); ``a`` holds the inputs, outputs go to root."""
    truth = ("truth.png", "--simulate")

    def solve(*extra, image=truth):
        return solve_args(a, *image, *extra)

    def out(name):
        return ("--out", root / f"out_{name}")

    return {
        "preset_option_type": (solve("--problem", a / "preset_zeta.yaml", *out("preset_option_type")),
                               ["samplers.dps.zeta", "number", "abc"]),
        "set_number": (solve("--set", "dps.zeta=abc", *out("set_number")), ["dps.zeta", "number", "abc"]),
        "set_choice": (solve("--sampler", "mcgdiff", "--set", "mcgdiff.resampling=foo", *out("set_choice")),
                       ["mcgdiff.resampling", "systematic", "foo"]),
        "set_integer": (solve("--set", "operator.factor=four", *out("set_integer")),
                        ["operator.factor", "integer", "four"]),
        "preset_integer": (solve("--problem", a / "preset_four.yaml", *out("preset_integer")),
                           ["operator.factor", "integer", "four"]),
        "image_is_folder": (solve(*out("image_is_folder"), image=("images3",)), ["image:", "is a folder"]),
        "num_samples_text": (("solve", a / "truth.png", "--num-samples", "abc", *out("num_samples_text")),
                             ["--num-samples"]),
        "npy_scale": (solve(*out("npy_scale"), image=("scale255.npy", "--simulate")),
                      ["image:", "--value-range", "0,255"]),
        "out_under_file": (solve("--out", "a_file/sub"), ["out:", "not a folder"]),
        "compare_csv_folder": (("compare", "--samplers", "exact", "--num-samples", "10", "--csv", "a_folder"),
                               ["csv:", "is a folder"]),
        "compare_directions": (("compare", "--samplers", "exact", "--num-directions", "0"),
                               ["num-directions"]),
        "compare_problem_png": (("compare", "--problem", a / "truth.png", "--samplers", "exact"),
                                ["problem:", "not an .npz"]),
        "train_three_images": (("train", "--data", a / "images3", *out("train_three_images"), "--steps", "2"),
                               ["data:", "at least 10", "has 3"]),
        "sample_extension": (("sample", "--checkpoint", a / "tiny1", "--out", "grid.xyz", "-n", "64",
                              "--steps", "1000"), ["out:", "grid.xyz", ".png"]),
        # checked before the checkpoint is even looked up:
        "sample_extension_first": (("sample", "--checkpoint", a / "missing", "--out", "grid.xyz"),
                                   ["out:", "grid.xyz"]),
    }


FAILURES = list(failure_cases(Path("a"), Path("r")))


@pytest.fixture(scope="module")
def failed(assets, tmp_path_factory):
    root = tmp_path_factory.mktemp("failed")
    (root / "a_file").write_text("a regular file")
    (root / "a_folder").mkdir()
    (root / "a_folder" / "kept.txt").write_text("kept")
    before, assets_before = snapshot(root), snapshot(assets)
    cases = failure_cases(assets, root)
    results = run_all({name: args for name, (args, _) in cases.items()}, cwd=root)
    needles = {name: n for name, (_, n) in cases.items()}
    return root, results, needles, (before, snapshot(root)), (assets_before, snapshot(assets))


@pytest.mark.parametrize("name", FAILURES)
def test_bad_input_is_one_error_line(failed, name):
    root, results, needles, _, _ = failed
    one_error(results[name], *needles[name])
    assert not (root / f"out_{name}").exists()


def test_bad_input_leaves_the_file_system_unchanged(failed):
    root, _, _, (before, after), (assets_before, assets_after) = failed
    assert after == before
    assert assets_after == assets_before
    assert not (root / "grid.xyz").exists()


def test_sample_checks_its_output_before_sampling(failed):
    results = failed[1]
    # 64 samples of 1000 steps take minutes on a CPU; the refusal costs about the start-up
    assert results["sample_extension"].seconds < 30


def test_unwritable_parent_is_one_error_line(assets, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions (the file-under-path case covers the message)")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        before = snapshot(tmp_path)
        res = run(*solve_args(assets, "truth.png", "--simulate", "--out", locked / "out"), cwd=tmp_path)
        one_error(res, "out:", "permission denied")
        assert snapshot(tmp_path) == before
    finally:
        locked.chmod(0o755)


def test_unwritable_parent_message(tmp_path, monkeypatch):
    """The same refusal where permissions count (as root they do not): os.access says no."""
    monkeypatch.setattr(outputs.os, "access", lambda path, mode: False)
    with pytest.raises(ValueError, match=r"^out: cannot write into .* \(permission denied\)$"):
        outputs.OutputFolder(tmp_path / "locked" / "out").check()
    assert not list(tmp_path.iterdir())


def test_card_channels_that_do_not_match_the_weights(assets, tmp_path):
    bad = tmp_path / "tiny_bad_card"
    shutil.copytree(assets / "tiny1", bad)
    card = json.loads((bad / "card.json").read_text())
    card["channels"] = 3  # the weights take 1 channel; card.json's sha256 covers model.safetensors only
    (bad / "card.json").write_text(json.dumps(card, indent=2))
    before = snapshot(tmp_path)
    res = run_all({"rgb": solve_args(assets, "rgb.png", "--simulate", "--out", tmp_path / "o1",
                                     checkpoint=str(bad)),
                   "grey": solve_args(assets, "truth.png", "--simulate", "--out", tmp_path / "o2",
                                      checkpoint=str(bad))}, cwd=tmp_path)
    for r in res.values():
        one_error(r, "checkpoint:", "channel", "card.json")
    assert snapshot(tmp_path) == before


# -- signals ---------------------------------------------------------------------------------------------
def _reached(pid: int, moment: str) -> bool:
    """``handlers``: cli.entry.main installed its SIGTERM handler (bit 15 of SigCgt); ``numpy``: numpy's C
    core is mapped, so torch's C initialisation is importing numpy right then."""
    try:
        if moment == "numpy":
            return "_multiarray_umath" in Path(f"/proc/{pid}/maps").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(ln for ln in status.splitlines() if ln.startswith("SigCgt:")).split()[1], 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


def _interrupted(proc: subprocess.Popen, code: int, word: str, tmp_path: Path) -> None:
    out, err = proc.communicate(timeout=120)
    shown = f"exit {proc.returncode}\nstdout: {out}\nstderr: {err}"
    assert proc.returncode == code, shown
    assert "Traceback" not in err + out, shown
    assert [ln for ln in err.splitlines() if ln.strip()] == [f"error: {word}"], shown
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path), sorted(os.listdir(tmp_path))


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"),
                                             (signal.SIGTERM, 143, "terminated")])
def test_signal_during_sampling_cleans_up(assets, tmp_path, sig, code, word):
    proc = start(*solve_args(assets, "truth.png", "--simulate", "--out", tmp_path / "out"),
                 "--steps", "1000", "--num-samples", "16", cwd=tmp_path)
    lock = tmp_path / ".out.diffinv-lock"  # taken right before the sampler starts
    deadline = time.monotonic() + 90
    while not lock.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None and lock.exists(), proc.communicate()
    time.sleep(0.5)
    proc.send_signal(sig)
    _interrupted(proc, code, word, tmp_path)


@pytest.mark.parametrize("sig, code, word, moment", [(signal.SIGINT, 130, "interrupted", "handlers"),
                                                     (signal.SIGINT, 130, "interrupted", "numpy"),
                                                     (signal.SIGTERM, 143, "terminated", "numpy")])
def test_signal_during_start_up(assets, tmp_path, sig, code, word, moment):
    """Right after diffinv's handlers are in place, or while torch imports numpy: torch's C code clears errors
    raised there, so a signal that only raised was lost (the run went on and wrote its folder)."""
    proc = start(*solve_args(assets, "truth.png", "--simulate", "--out", tmp_path / "out"), cwd=tmp_path)
    if Path(f"/proc/{proc.pid}/status").exists():
        deadline = time.monotonic() + 20
        while not _reached(proc.pid, moment) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
    else:
        time.sleep(0.3)
    proc.send_signal(sig)  # a late one (past start-up, even sampling) still must exit with the code
    _interrupted(proc, code, word, tmp_path)
