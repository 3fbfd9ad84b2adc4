r"""The bookkeeping of a ``diffinv batch`` run folder ``OUT``, shared safely by several processes.

Layout of ``OUT``::

    OUT/NAME/              one folder per finished item, written whole by diffinv.outputs.OutputFolder
                           (NAME may hold '/': OUT/sub/a/ for item 'sub/a')
    OUT/manifest.jsonl     one JSON line per finished item ({"name": ..., "metrics": {...}, ...})
    OUT/failures.jsonl     one JSON line per failed item ({"name", "status": "failed", "error", ...})
    OUT/summary.json|csv   written once every item is finished or failed
    OUT/config.json        the configuration of the run (a resumed run must have the same one)
    OUT/.diffinv-batch     marker: {"written_by": "diffinv", "command": "batch", "version": ...}
    OUT/.diffinv-batch.lock  taken (blocking ``flock``, held briefly) around every bookkeeping write;
                           never deleted, so every process always locks the same file

Exactly once: an item counts as finished only once its line is in ``manifest.jsonl``. The item folder is
committed (renamed into place) *before* its line is appended, so a crash between the two leaves a complete
folder that the runner re-records or redoes, never a line without a folder. :meth:`BatchFolder.record_success`
re-reads the manifest under the lock and never appends a second line for a name. Lines are appended in one
``write`` on an ``O_APPEND`` descriptor and fsynced; a garbled line (a process killed mid-write) is skipped
on reading. Every other file is written atomically (temporary file in ``OUT``, then ``os.replace``).

Errors are one-line ``ValueError``\ s that name the argument (``out: ...``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from diffinv.outputs import STAMP, _foreign_entry, _umask, absolute, check_writable_parent, read_stamp

MARKER, LOCK = ".diffinv-batch", ".diffinv-batch.lock"
CONFIG, MANIFEST, FAILURES = "config.json", "manifest.jsonl", "failures.jsonl"
RESERVED = (CONFIG, MANIFEST, FAILURES, "summary.json", "summary.csv", MARKER, LOCK)
METRIC_KEYS = ("psnr", "ssim", "residual", "coverage", "seconds", "nfe_forward", "nfe_backward")
_LEFTOVER = re.compile(r"\..+\.diffinv-(tmp-.*|old-.*|lock)")  # staging leftovers of OutputFolder / ours


def read_jsonl(path: str | Path) -> list[dict]:
    """The JSON objects of a JSON-lines file, skipping garbled lines (a missing file: ``[]``)."""
    return _parse_jsonl(_read_bytes(Path(path)))


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _parse_jsonl(data: bytes) -> list[dict]:
    out = []
    for line in data.split(b"\n"):
        try:
            obj = json.loads(line.decode())
        except ValueError:  # also UnicodeDecodeError: a line cut inside a character
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def _by_name(records: list[dict], first: bool) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for r in records:
        name = r.get("name")
        if isinstance(name, str) and not (first and name in out):
            out[name] = r
    return out


_MISSING = object()


def _short(value: Any) -> str:
    text = "missing" if value is _MISSING else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _first_difference(here: Any, there: Any, path: str = "") -> str | None:
    """``key.path: X here, Y there`` for the first (sorted) place where two JSON values differ."""
    if isinstance(here, dict) and isinstance(there, dict):
        pairs = [(f"{path}.{k}" if path else str(k), here.get(k, _MISSING), there.get(k, _MISSING))
                 for k in sorted(set(here) | set(there), key=str)]
    elif isinstance(here, list) and isinstance(there, list):
        pairs = [(f"{path}[{i}]", here[i] if i < len(here) else _MISSING,
                  there[i] if i < len(there) else _MISSING) for i in range(max(len(here), len(there)))]
    elif here == there and isinstance(here, bool) == isinstance(there, bool):
        return None
    else:
        return f"{path or 'config'}: {_short(here)} here, {_short(there)} there"
    for sub, a, b in pairs:
        found = (f"{sub}: {_short(a)} here, {_short(b)} there" if a is _MISSING or b is _MISSING
                 else _first_difference(a, b, sub))
        if found:
            return found
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


class BatchFolder:
    """The run folder of ``diffinv batch``: marker, configuration, manifest, failures, summary."""

    def __init__(self, out: str | Path, overwrite: bool = False) -> None:
        self.given, self.path, self.overwrite = str(out), absolute(out), overwrite
        self.lock_path = self.path / LOCK

    # -- preparation -------------------------------------------------------------------------------
    def prepare(self, config: dict) -> str:
        """Make ``OUT`` a batch folder for ``config`` (before any work): "new", "resume" or "replaced".

        ``"new"``: ``OUT`` was missing or empty and now holds the marker and ``config.json``. ``"resume"``:
        it holds a batch run of the same configuration. ``"replaced"``: it held one of another
        configuration, ``overwrite`` was given, and everything in it was diffinv's; all of it is gone.
        Anything else raises a one-line ``ValueError`` (``out: ...``) and changes nothing.
        """
        here = json.loads(json.dumps(config, default=str))
        self._check_path()
        self._classify(here)  # refuse a foreign folder before putting a lock file in it
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"out: cannot create {self.given!r} ({err.strerror})") from None
        with self._locked():
            status = self._classify(here)  # again: another job may have prepared it meanwhile
            if status == "replaced":
                for entry in self.path.iterdir():
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry)
                    elif entry.name != LOCK:
                        entry.unlink()
            if status != "resume":
                from diffinv import __version__

                marker = {"written_by": "diffinv", "command": "batch", "version": __version__}
                self._write(MARKER, json.dumps(marker, indent=2) + "\n")
                self._write(CONFIG, json.dumps(here, indent=2, sort_keys=True) + "\n")
        return status

    def _check_path(self) -> None:
        p, given = self.path, repr(self.given)
        if not p.name:
            raise ValueError(f"out: {given} cannot be a batch folder")
        cwd = absolute(Path.cwd())
        if cwd == p or p in cwd.parents:
            raise ValueError(f"out: {given} is the current folder or holds it; choose another folder")
        if p.is_symlink():
            raise ValueError(f"out: {given} is a symbolic link; name a real folder")
        if p.exists() and not p.is_dir():
            raise ValueError(f"out: {given} exists and is not a folder")
        check_writable_parent(p, "out")
        if p.is_dir() and not os.access(p, os.W_OK | os.X_OK):
            raise ValueError(f"out: cannot write into {given} (permission denied)")

    def _classify(self, here: dict) -> str:
        """What :meth:`prepare` would do ("new", "resume", "replaced"), or its ValueError."""
        p, given = self.path, repr(self.given)
        names = sorted(os.listdir(p)) if p.is_dir() else []
        content = [n for n in names if n != LOCK and not n.startswith(".config.json.diffinv-tmp-")
                   and not n.startswith(f".{MARKER}.diffinv-tmp-")]
        if not content:
            return "new"
        if read_marker(p) is None:
            raise ValueError(f"out: {given} is not empty and is not a diffinv batch folder (e.g. it holds "
                             f"{content[0]!r}); choose another folder")
        try:
            there = json.loads((p / CONFIG).read_text())
        except (OSError, ValueError):
            there = None
        if there is None and set(content) == {MARKER}:  # a run killed between marker and config.json
            return "new"
        diff = "config.json missing or unreadable there" if there is None else _first_difference(here, there)
        if diff is None:
            return "resume"
        if not self.overwrite:
            raise ValueError(f"out: {given} holds a run with another configuration ({diff}); pass "
                             "--overwrite to replace it or choose another folder")
        foreign = _foreign_in(p, top=True)
        if foreign is not None:
            raise ValueError(f"out: {given} holds files diffinv did not write (e.g. {foreign!r}); refusing "
                             "to replace it even with --overwrite")
        return "replaced"

    # -- records -----------------------------------------------------------------------------------
    def item_path(self, name: str) -> Path:
        """``OUT/name``; ``name`` is a relative POSIX path ('sub/a' nests) of non-hidden parts."""
        parts = name.split("/") if isinstance(name, str) else [""]
        if any(not part or part.startswith(".") for part in parts) or parts[0] in RESERVED:
            raise ValueError(f"name: {name!r} cannot name a batch item (use a relative path of non-empty, "
                             "non-hidden parts other than the bookkeeping files)")
        return self.path.joinpath(*parts)

    def finished(self) -> dict[str, dict]:
        """Name -> manifest record of every finished item (the first line of a name wins)."""
        return _by_name(read_jsonl(self.path / MANIFEST), first=True)

    def failures(self) -> dict[str, dict]:
        """Name -> failure record of every item whose last attempt failed."""
        return _by_name(read_jsonl(self.path / FAILURES), first=False)

    def record_success(self, record: dict) -> bool:
        """Append ``record`` (with a ``"name"``) to the manifest unless its name is there: True if appended.

        Call it only after the item folder is committed. A failure line of the same name is dropped.
        """
        name = record.get("name") if isinstance(record, dict) else None
        if not isinstance(name, str) or not name:
            raise ValueError(f"record: expected a dict with a non-empty 'name', got {_short(record)}")
        line = (json.dumps(record, default=str) + "\n").encode()
        with self._locked():
            path = self.path / MANIFEST
            data = _read_bytes(path)
            if name in _by_name(_parse_jsonl(data), first=True):
                return False
            if data and not data.endswith(b"\n"):
                line = b"\n" + line  # the last line was cut short: start on a line of our own
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666 & ~_umask())
            try:
                if os.write(fd, line) != len(line):  # one write: no other line can land inside ours
                    raise OSError(f"out: short write to {str(path)!r} (disk full?)")
                os.fsync(fd)
            finally:
                os.close(fd)
            failures = read_jsonl(self.path / FAILURES)
            if any(r.get("name") == name for r in failures):
                self._write(FAILURES, _jsonl([r for r in failures if r.get("name") != name]))
        return True

    def record_failure(self, name: str, error: str, **extra: Any) -> None:
        """Record that item ``name`` failed (one line per item; nothing if it is already finished)."""
        with self._locked():
            if name in self.finished():
                return
            kept = [r for r in read_jsonl(self.path / FAILURES) if r.get("name") != name]
            kept.append({"name": name, "status": "failed", "error": str(error), **extra})
            self._write(FAILURES, _jsonl(kept))

    def write_summary(self, names: list[str]) -> dict | None:
        """Once every name is finished or failed: write ``summary.json``/``summary.csv`` and return it.

        ``metrics`` holds, per key of :data:`METRIC_KEYS` with at least one finite number among the finished
        records (``record["metrics"][key]`` or else ``record[key]``): n, mean, sample sd (0.0 for n = 1),
        min and max. Returns None (writing nothing) while some name is still open. Repeated names count once.
        """
        names = list(dict.fromkeys(names))
        with self._locked():
            done, failed = self.finished(), self.failures()
            if any(n not in done and n not in failed for n in names):
                return None
            ok = [done[n] for n in names if n in done]
            bad = sorted(n for n in names if n not in done)
            sources = [r["metrics"] if isinstance(r.get("metrics"), dict) else r for r in ok]
            metrics = {}
            for key in METRIC_KEYS:
                values = [v for v in (_number(src.get(key)) for src in sources) if v is not None]
                if values:
                    metrics[key] = {"n": len(values), "mean": statistics.fmean(values),
                                    "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                                    "min": min(values), "max": max(values)}
            summary = {"items": len(names), "finished": len(ok), "failed": len(bad), "failed_names": bad,
                       "metrics": metrics}
            rows = ["metric,n,mean,sd,min,max"]
            rows += [f"{k},{m['n']}," + ",".join(f"{m[s]:.6g}" for s in ("mean", "sd", "min", "max"))
                     for k, m in metrics.items()]
            self._write("summary.json", json.dumps(summary, indent=2) + "\n")
            self._write("summary.csv", "\n".join(rows) + "\n")
        return summary

    # -- low level ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive, blocking ``flock`` on ``OUT/.diffinv-batch.lock`` (not re-entrant: never nest)."""
        try:
            fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o666 & ~_umask())
        except OSError as err:
            raise ValueError(f"out: cannot write into {self.given!r} ({err.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the last descriptor releases the lock

    def _write(self, name: str, text: str) -> None:
        """Write ``OUT/name`` atomically: a temporary file beside it, fsynced, then ``os.replace``."""
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.diffinv-tmp-", dir=self.path)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fchmod(f.fileno(), 0o666 & ~_umask())
                os.fsync(f.fileno())
            os.replace(tmp, self.path / name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, default=str) + "\n" for r in records)


def read_marker(folder: Path) -> dict | None:
    """The batch marker of ``folder`` if diffinv's batch command wrote it, else None."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(marker, dict) and {"written_by": "diffinv", "command": "batch"}.items() <= marker.items()
    return marker if ok else None


def _foreign_in(folder: Path, top: bool) -> str | None:
    """The first entry below ``folder`` (relative POSIX path) that diffinv did not write, else None.

    diffinv's: the bookkeeping files (at the top), staging leftovers ``.NAME.diffinv-tmp-*``, ``-old-*``
    and ``-lock`` (at any depth), item folders holding only what their stamp lists, and plain folders whose
    contents are all diffinv's (the parents of nested items).
    """
    for name in sorted(os.listdir(folder)):
        entry = folder / name
        if _LEFTOVER.fullmatch(name) or (top and name in RESERVED and entry.is_file()
                                         and not entry.is_symlink()):
            continue
        if entry.is_symlink() or not entry.is_dir():
            return name
        if read_stamp(entry) is not None:
            inner = _foreign_entry(entry)
        elif (entry / STAMP).exists():
            inner = STAMP
        else:
            inner = _foreign_in(entry, top=False)
        if inner is not None:
            return f"{name}/{inner}"
    return None
