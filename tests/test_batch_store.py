"""diffinv.batch_store: preparing, resuming and replacing a batch folder; the manifest's exactly-once rule."""

from __future__ import annotations

import json
import multiprocessing
import statistics
from pathlib import Path

import pytest

from diffinv.batch_store import LOCK, MARKER, BatchFolder, read_jsonl
from diffinv.outputs import OutputFolder

CONFIG = {"sampler": "dps", "steps": 50, "shape": (1, 8, 8), "guidance": {"scale": 1.0, "kind": "ddim"}}


def _item(folder: BatchFolder, name: str) -> Path:
    """Write item ``name`` the way the runner does: an OutputFolder commit."""
    with OutputFolder(folder.item_path(name), command="batch") as out:
        return out.commit(lambda tmp: (tmp / "metrics.json").write_text("{}"))


def test_new_then_resume(tmp_path):
    out = tmp_path / "runs" / "x"
    folder = BatchFolder(out)
    assert folder.prepare(CONFIG) == "new"
    marker = json.loads((out / MARKER).read_text())
    assert marker["written_by"] == "diffinv" and marker["command"] == "batch" and "version" in marker
    assert json.loads((out / "config.json").read_text())["shape"] == [1, 8, 8]
    assert (out / LOCK).exists()
    assert BatchFolder(out).prepare(dict(CONFIG)) == "resume"  # tuple vs list: equal after a JSON round trip
    assert folder.path.is_absolute()


def test_empty_existing_folder_is_new(tmp_path):
    (tmp_path / "empty").mkdir()
    assert BatchFolder(tmp_path / "empty").prepare(CONFIG) == "new"


def test_other_config_refused_with_one_line_naming_the_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    BatchFolder("runs/x").prepare(CONFIG)
    with pytest.raises(ValueError) as err:
        BatchFolder("runs/x").prepare({**CONFIG, "sampler": "mcgdiff"})
    message = str(err.value)
    assert "\n" not in message
    assert message == ("out: 'runs/x' holds a run with another configuration (sampler: 'mcgdiff' here, 'dps' "
                       "there); pass --overwrite to replace it or choose another folder")
    with pytest.raises(ValueError, match=r"\(guidance\.scale: 2\.0 here, 1\.0 there\)"):
        BatchFolder("runs/x").prepare({**CONFIG, "guidance": {"scale": 2.0, "kind": "ddim"}})
    with pytest.raises(ValueError, match=r"\(seed: 3 here, missing there\)"):
        BatchFolder("runs/x").prepare({**CONFIG, "seed": 3})


def test_overwrite_replaces_a_diffinv_run(tmp_path):
    out = tmp_path / "x"
    folder = BatchFolder(out)
    folder.prepare(CONFIG)
    _item(folder, "a")
    _item(folder, "sub/b")  # a plain folder holding only an item folder
    folder.record_success({"name": "a", "psnr": 20.0})
    folder.record_failure("c", "boom")
    (out / ".c.diffinv-tmp-123").mkdir()  # a killed run's staging folder
    (out / ".c.diffinv-tmp-123" / "half.png").write_text("x")
    other = {**CONFIG, "steps": 100}
    assert BatchFolder(out, overwrite=True).prepare(other) == "replaced"
    assert sorted(p.name for p in out.iterdir()) == sorted([LOCK, MARKER, "config.json"])
    assert json.loads((out / "config.json").read_text())["steps"] == 100
    assert BatchFolder(out).prepare(other) == "resume"


@pytest.mark.parametrize("foreign", ["notes.txt", "a/extra.txt", "sub/mine/file", "sub/loose.txt"])
def test_overwrite_refuses_foreign_files(tmp_path, foreign):
    out = tmp_path / "x"
    folder = BatchFolder(out)
    folder.prepare(CONFIG)
    _item(folder, "a")
    _item(folder, "sub/b")
    (out / foreign).parent.mkdir(parents=True, exist_ok=True)
    (out / foreign).write_text("mine")
    with pytest.raises(ValueError, match=r"^out: .* holds files diffinv did not write \(e\.g\. '"
                       + foreign.replace(".", r"\.") + r"'\); refusing to replace it even with --overwrite$"):
        BatchFolder(out, overwrite=True).prepare({**CONFIG, "steps": 1})
    assert (out / foreign).read_text() == "mine" and (out / "a").is_dir()


def test_non_batch_folder_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("data").mkdir()
    Path("data/file").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(ValueError, match=r"^out: 'data' is not empty and is not a diffinv batch folder "
                                             r"\(e\.g\. it holds 'file'\); choose another folder$"):
            BatchFolder("data", overwrite=overwrite).prepare(CONFIG)
    assert sorted(p.name for p in Path("data").iterdir()) == ["file"]  # not even a lock file


def test_bad_paths_refused(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="^out: .* exists and is not a folder$"):
        BatchFolder(tmp_path / "f").prepare(CONFIG)
    (tmp_path / "link").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="^out: .* symbolic link"):
        BatchFolder(tmp_path / "link").prepare(CONFIG)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="^out: .* current folder"):
        BatchFolder(".").prepare(CONFIG)
    with pytest.raises(ValueError, match="^name: "):
        BatchFolder(tmp_path / "x").item_path("../escape")


def test_record_success_exactly_once(tmp_path):
    folder = BatchFolder(tmp_path / "x")
    folder.prepare(CONFIG)
    assert folder.record_success({"name": "a", "psnr": 1.0}) is True
    assert folder.record_success({"name": "a", "psnr": 2.0}) is False
    assert folder.finished() == {"a": {"name": "a", "psnr": 1.0}}
    assert len((tmp_path / "x" / "manifest.jsonl").read_text().splitlines()) == 1


def test_truncated_last_line_tolerated(tmp_path):
    folder = BatchFolder(tmp_path / "x")
    folder.prepare(CONFIG)
    folder.record_success({"name": "a"})
    manifest = tmp_path / "x" / "manifest.jsonl"
    with manifest.open("a") as f:
        f.write('{"name": "b", "ps')  # a process killed mid-write
    assert set(folder.finished()) == {"a"}
    assert folder.record_success({"name": "b", "psnr": 3.0}) is True
    assert folder.finished()["b"] == {"name": "b", "psnr": 3.0}
    assert [r["name"] for r in read_jsonl(manifest)] == ["a", "b"]


def test_failures_one_line_per_name_and_dropped_by_success(tmp_path):
    folder = BatchFolder(tmp_path / "x")
    folder.prepare(CONFIG)
    folder.record_failure("a", "first", seconds=1.5)
    folder.record_failure("b", "other")
    folder.record_failure("a", "second")  # replaces the first line of 'a'
    lines = read_jsonl(tmp_path / "x" / "failures.jsonl")
    assert lines == [{"name": "b", "status": "failed", "error": "other"},
                     {"name": "a", "status": "failed", "error": "second"}]
    assert folder.record_success({"name": "a"})
    assert set(folder.failures()) == {"b"}
    folder.record_failure("a", "late")  # already finished: not recorded
    assert set(folder.failures()) == {"b"}


def test_write_summary(tmp_path):
    folder = BatchFolder(tmp_path / "x")
    folder.prepare(CONFIG)
    names = ["a", "b", "c", "d"]
    folder.record_success({"name": "a", "metrics": {"psnr": 20.0, "ssim": 0.5, "seconds": 2}})
    folder.record_success({"name": "b", "metrics": {"psnr": 24.0, "ssim": None, "seconds": 4}})
    assert folder.write_summary(names) is None
    folder.record_success({"name": "c", "psnr": 31.0, "coverage": "n/a"})  # flat record
    assert folder.write_summary(names) is None
    assert not (tmp_path / "x" / "summary.json").exists()
    folder.record_failure("d", "out of memory")
    summary = folder.write_summary(names)
    assert summary is not None
    assert (summary["items"], summary["finished"], summary["failed"]) == (4, 3, 1)
    assert summary["failed_names"] == ["d"]
    assert set(summary["metrics"]) == {"psnr", "ssim", "seconds"}
    psnr = summary["metrics"]["psnr"]
    assert psnr["n"] == 3 and psnr["mean"] == pytest.approx(25.0)
    assert psnr["sd"] == pytest.approx(statistics.stdev([20.0, 24.0, 31.0])) == pytest.approx(5.567764)
    assert (psnr["min"], psnr["max"]) == (20.0, 31.0)
    assert summary["metrics"]["ssim"] == {"n": 1, "mean": 0.5, "sd": 0.0, "min": 0.5, "max": 0.5}
    assert json.loads((tmp_path / "x" / "summary.json").read_text()) == summary
    rows = (tmp_path / "x" / "summary.csv").read_text().splitlines()
    assert rows[0] == "metric,n,mean,sd,min,max"
    assert rows[1] == "psnr,3,25,5.56776,20,31"
    assert len(rows) == 4


def _writer(out: str, worker: int) -> None:
    folder = BatchFolder(out)
    for i in range(25):
        folder.record_success({"name": f"w{worker}-{i}", "worker": worker})
        if i == 12:
            folder.record_success({"name": "shared", "worker": worker})


def test_concurrent_record_success(tmp_path):
    out = tmp_path / "x"
    BatchFolder(out).prepare(CONFIG)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(out), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 101
    names = [json.loads(line)["name"] for line in lines]
    assert names.count("shared") == 1 and len(set(names)) == 101


def _preparer(out: str, queue) -> None:
    queue.put(BatchFolder(out).prepare(CONFIG))


def test_concurrent_prepare_one_new(tmp_path):
    out = tmp_path / "deep" / "x"
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_preparer, args=(str(out), queue)) for _ in range(4)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(60)
    assert results == ["new", "resume", "resume", "resume"]
