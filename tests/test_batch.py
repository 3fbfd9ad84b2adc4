"""``diffinv batch`` end to end on a tiny random-weight prior: exactly once under torchrun (2 ranks, gloo)
and across shards, resume after SIGKILL / SIGTERM with identical outputs, a bad item fails alone, another
configuration is refused, items per call give each item its own samples, solve and batch agree."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_process import _env, one_error, run, start
from tiny_prior import save_tiny_prior

from diffinv.batch import BatchConfig, list_inputs, run_batch
from diffinv.distributed import item_seed
from diffinv.imaging.io import save_png
from diffinv.job import SolveConfig
from diffinv.solve import solve

NAMES = [f"item{i}" for i in range(10)]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    save_tiny_prior(root / "tiny", channels=1, size=16)
    gen = torch.Generator().manual_seed(0)
    (root / "in").mkdir()
    for name in NAMES:
        save_png(torch.rand(1, 16, 16, generator=gen, dtype=torch.float64), root / "in" / f"{name}.png")
    return root


def common(root, out, *extra, sampler="ddrm", steps=4):
    return ("batch", root / "in", "--out", out, "--checkpoint", root / "tiny", "--sampler", sampler,
            "--steps", steps, "--num-samples", 2, "--simulate", "--device", "cpu", "--quiet", "--threads", 1,
            *extra)


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def samples(out: Path, name: str) -> np.ndarray:
    return np.load(out / name / "samples.npz")["samples"]


def assert_every_item_once(out: Path, names=NAMES) -> list[dict]:
    records = manifest(out)
    assert sorted(r["name"] for r in records) == sorted(names)  # each exactly once
    for name in names:
        assert (out / name / "metrics.json").is_file() and (out / name / ".diffinv").is_file()
    assert not [p for p in out.rglob("*diffinv-tmp*")], "staging folders left behind"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] == len(names) and summary["failed"] == 0
    return records


@pytest.fixture(scope="module")
def reference(root):
    """An uninterrupted single-process run (ddrm, 4 steps)."""
    out = root / "ref"
    res = run(*common(root, out), cwd=root)
    assert res.returncode == 0, res.stderr
    assert_every_item_once(out)
    return out


def test_torchrun_two_ranks_write_every_item_exactly_once(root, reference):
    out = root / "ranks"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "diffinv", *[str(a) for a in common(root, out)]]
    res = subprocess.run(cmd, cwd=root, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    records = assert_every_item_once(out)
    assert {r["rank"] for r in records} == {0, 1}
    for name in NAMES:  # the number of workers does not change an item's samples
        np.testing.assert_array_equal(samples(out, name), samples(reference, name))
    other = [a if a != "ddrm" else "pgdm" for a in cmd]  # another configuration: every rank stops
    res = subprocess.run(other, cwd=root, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "another configuration" in res.stderr
    assert len(manifest(out)) == len(NAMES)


def test_shards_split_the_items_and_the_last_one_writes_the_summary(root, reference):
    out = root / "shards"
    first = run(*common(root, out, "--shard", "1/3"), cwd=root)
    assert first.returncode == 0, first.stderr
    assert not (out / "summary.json").exists()
    for k in (2, 3):
        res = run(*common(root, out, "--shard", f"{k}/3"), cwd=root)
        assert res.returncode == 0, res.stderr
    assert_every_item_once(out)
    np.testing.assert_array_equal(samples(out, "item7"), samples(reference, "item7"))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_run_resumes_to_identical_outputs(root, sig):
    """Killed after a few items, the re-run ends with every item once and outputs identical to an
    uninterrupted run's (dps with 60 steps: long enough per item to stop it part-way)."""
    slow = {"sampler": "dps", "steps": 60}
    ref = root / f"slow-ref-{sig.name}"
    if not (ref / "summary.json").exists():
        assert run(*common(root, ref, **slow), cwd=root).returncode == 0
    out = root / f"killed-{sig.name}"
    proc = start(*common(root, out, **slow), cwd=root)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        path = out / "manifest.jsonl"
        if path.exists() and len(path.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    assert proc.returncode == (-9 if sig == signal.SIGKILL else 143)
    done = len(manifest(out))
    assert 3 <= done < len(NAMES), f"the run was not stopped part-way ({done} items)"
    res = run(*common(root, out, **slow), cwd=root)
    assert res.returncode == 0, res.stderr
    assert f"{len(NAMES) - done} done" in res.stdout
    assert_every_item_once(out)
    for name in NAMES:
        np.testing.assert_array_equal(samples(out, name), samples(ref, name))


def test_a_bad_item_fails_alone_and_is_recorded(root, reference):
    folder = root / "mixed"
    folder.mkdir()
    for name in NAMES[:3]:
        (folder / f"{name}.png").write_bytes((root / "in" / f"{name}.png").read_bytes())
    (folder / "broken.png").write_bytes(b"not an image")
    save_png(torch.rand(1, 20, 20, dtype=torch.float64), folder / "wrong_size.png")
    out = root / "mixed-out"
    args = list(common(root, out, "--items-per-call", 4))
    args[1] = folder
    res = run(*args, cwd=root)
    assert res.returncode == 1
    assert "2 item(s) failed" in res.stderr and "Traceback" not in res.stderr
    failures = {json.loads(line)["name"]: json.loads(line)["error"]
                for line in (out / "failures.jsonl").read_text().splitlines()}
    assert set(failures) == {"broken", "wrong_size"}
    assert "image" in failures["broken"] and "resize" in failures["wrong_size"]
    assert sorted(r["name"] for r in manifest(out)) == NAMES[:3]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == 2 and summary["finished"] == 3
    # 3 items per call here, not the reference's: float32 kernels may round differently with the batch
    # size (up to 4e-5 on [0, 1] seen on an AMD EPYC), so equal up to that, not bit for bit
    np.testing.assert_allclose(samples(out, "item1"), samples(reference, "item1"), atol=1e-4, rtol=0)


def test_another_configuration_in_the_same_out_is_refused(root, reference):
    res = run(*common(root, reference, sampler="pgdm"), cwd=root)
    one_error(res, "another configuration", "sampler", "--overwrite")
    assert len(manifest(reference)) == len(NAMES)
    again = run(*common(root, reference), cwd=root)  # the same configuration: nothing to redo
    assert again.returncode == 0 and "0 done, 10 already finished" in again.stdout


def test_overwrite_replaces_a_run_of_another_configuration(root, reference):
    out = root / "replaced"
    assert run(*common(root, out), cwd=root).returncode == 0
    (out / "item0").rename(out / "item0-moved")  # still diffinv's (stamped) folder
    res = run(*common(root, out, "--overwrite", sampler="pgdm"), cwd=root)
    assert res.returncode == 0, res.stderr
    assert not (out / "item0-moved").exists()
    assert all(r["metrics"]["nfe_backward"] > 0 for r in manifest(out))  # pgdm's, not ddrm's


def test_items_per_call_give_each_item_its_own_samples(root, reference, tmp_path):
    """B = 4 items in every network call: per item the samples of a run alone (float noise aside), the
    seed in the manifest, and `solve --seed S` reproduces the item."""
    job = SolveConfig(image="", sampler="ddrm", steps=4, num_samples=2, simulate=True, device="cpu",
                      checkpoint=str(root / "tiny"))
    report = run_batch(BatchConfig(inputs=str(root / "in"), out=str(tmp_path / "b4"), job=job,
                                   items_per_call=4))
    assert report.finished == NAMES and report.summary["finished"] == 10
    records = {r["name"]: r for r in manifest(tmp_path / "b4")}
    for name in NAMES:
        np.testing.assert_allclose(samples(tmp_path / "b4", name), samples(reference, name), atol=1e-4,
                                   rtol=0)  # batch-size rounding, see above
        assert records[name]["seed"] == item_seed(0, name) and records[name]["items_per_call"] in (2, 4)
    one = solve(SolveConfig(image=str(root / "in" / "item5.png"), sampler="ddrm", steps=4, num_samples=2,
                            simulate=True, device="cpu", checkpoint=str(root / "tiny"),
                            seed=item_seed(0, "item5")), write=False)
    np.testing.assert_allclose(one.samples.float().numpy(), samples(reference, "item5"), atol=1e-6)


def test_inputs_names_sidecars_and_errors(tmp_path):
    (tmp_path / "sub").mkdir()
    for rel in ("a.png", "b.npy", "b.mask.png", "c.kernel.npy", "sub/d.jpg", ".hidden.png", "notes.txt"):
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "c.png").write_bytes(b"x")
    items = list_inputs(tmp_path)
    assert [i.name for i in items] == ["a", "b", "c"]
    by_name = {i.name: i for i in items}
    assert by_name["b"].mask.endswith("b.mask.png") and by_name["c"].kernel.endswith("c.kernel.npy")
    assert [i.name for i in list_inputs(tmp_path, recursive=True)] == ["a", "b", "c", "sub/d"]
    assert [i.name for i in list_inputs(tmp_path, recursive=True, pattern="*.png")] == ["a", "c"]
    (tmp_path / "a.npy").write_bytes(b"x")
    with pytest.raises(ValueError, match="both make the item 'a'"):
        list_inputs(tmp_path)
    with pytest.raises(ValueError, match="inputs: no PNG"):
        list_inputs(tmp_path / "sub", pattern="*.png")
    with pytest.raises(ValueError, match="not a folder"):
        list_inputs(tmp_path / "a.png")


def test_bad_options_are_one_line_errors(root):
    one_error(run(*common(root, root / "o1", "--items-per-call", 0), cwd=root), "items-per-call")
    one_error(run(*common(root, root / "o2", "--shard", "4/3"), cwd=root), "shard")
    one_error(run("batch", root / "missing", "--out", root / "o3", cwd=root), "inputs")
    assert not (root / "o1").exists() and not (root / "o2").exists()

