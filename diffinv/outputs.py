r"""Output folders and files that never lose a user's data.

A command that writes a folder (``solve``, later ``batch`` items) goes through :class:`OutputFolder`:

1. ``check()`` — before any expensive work, and without touching the file system: the target is not a
   file or a link, not the working folder (or above it); if it exists and is not empty it may be
   replaced only with ``overwrite`` *and* only if diffinv wrote it: it holds diffinv's stamp
   ``.diffinv`` (JSON listing every file diffinv put there) and nothing else; the nearest existing
   ancestor is a writable folder.
2. ``with folder:`` — creates missing parent folders (removed again if the run fails), then takes an
   exclusive, non-blocking ``flock`` on ``PARENT/.NAME.diffinv-lock`` for the whole run, so that of several
   runs aimed at one folder exactly one proceeds and the others fail at once with one line. The kernel
   drops the lock when its process dies (even by SIGKILL); the holder unlinks the lock file at the end.
   Staging folders left by a killed run (``.NAME.diffinv-tmp-*``) are removed by the next holder.
3. ``commit(write)`` — ``write(tmp)`` fills a fresh staging folder beside the target; the stamp is added,
   the target re-checked under the lock, and the staging folder renamed into place (``rename(2)`` onto a
   missing or empty folder; a folder someone filled meanwhile makes it fail instead of being replaced).
   Replacing an older diffinv folder moves it aside first and back again if the second rename fails.
   Folders get the permissions of the user's umask (``mkdtemp`` would make them 0700).

Errors are one-line ``ValueError``s that name the argument (``out: ...``).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

STAMP = ".diffinv"
LEGACY_SOLVE_FILES = {"observation.png", "observation.npy", "samples", "samples.npz", "mean.png", "std.png",
                      "grid.png", "truth.png", "metrics.json"}


def absolute(path: str | Path) -> Path:
    """An absolute, normalised path (``..`` folded) without resolving symbolic links."""
    return Path(os.path.normpath(os.path.abspath(os.fspath(path))))


def nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable_parent(path: Path, name: str) -> None:
    """The nearest existing ancestor of ``path`` must be a folder that this user may write into."""
    base = nearest_existing(path.parent)
    if not base.is_dir():
        raise ValueError(f"{name}: cannot create {str(path)!r}: {str(base)!r} is not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ValueError(f"{name}: cannot write into {str(base)!r} (permission denied)")


def check_output_file(path: str | Path | None, name: str, suffixes: Iterable[str]) -> None:
    """Before any work: ``path`` (if given) has a known extension, is not a folder, can be written."""
    if path is None:
        return
    p = absolute(path)
    suffixes = tuple(suffixes)
    if p.is_dir():
        raise ValueError(f"{name}: {str(path)!r} is a folder; expected a file path ending in "
                         f"{' or '.join(suffixes)}")
    if p.suffix.lower() not in suffixes:
        raise ValueError(f"{name}: {str(path)!r} has an unknown extension; expected {' or '.join(suffixes)}")
    check_writable_parent(p, name)


def _entries(folder: Path) -> list[str]:
    """Every file and folder below ``folder``, as sorted POSIX paths relative to it."""
    out = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        out += [(rel / n).as_posix() for n in dirs + files]
    return sorted(out)


def read_stamp(folder: Path) -> dict[str, Any] | None:
    try:
        stamp = json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) and stamp.get("written_by") == "diffinv" else None


def _foreign_entry(folder: Path) -> str | None:
    """The first entry of ``folder`` that diffinv did not write there (None if it wrote them all)."""
    stamp = read_stamp(folder)
    entries = _entries(folder)
    if stamp is not None:
        allowed = set(stamp.get("files", [])) | {STAMP}
    else:  # folders written before the stamp existed: diffinv's metrics.json and its known files only
        try:
            metrics = json.loads((folder / "metrics.json").read_text())
        except (OSError, ValueError):
            metrics = None
        if not (isinstance(metrics, dict) and {"version", "config", "sampler"} <= set(metrics)):
            return entries[0] if entries else None
        allowed = {e for e in entries if e.split("/")[0] in LEGACY_SOLVE_FILES}
    return next((e for e in entries if e not in allowed), None)


class OutputFolder:
    """A folder written whole or not at all, replacing only what diffinv wrote (module docstring)."""

    def __init__(self, out: str | Path, overwrite: bool = False, command: str = "solve",
                 name: str = "out") -> None:
        self.given, self.path, self.overwrite = str(out), absolute(out), overwrite
        self.command, self.arg = command, name
        self.lock_path = self.path.parent / f".{self.path.name}.diffinv-lock"
        self._fd: int | None = None
        self._created: list[Path] = []
        self._staging: Path | None = None
        self.committed = False

    # -- 1. checks ---------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise a one-line ValueError if this folder may not be written (no file-system changes)."""
        p, arg, given = self.path, self.arg, repr(self.given)
        if not p.name:
            raise ValueError(f"{arg}: {given} cannot be an output folder")
        cwd = absolute(Path.cwd())
        if cwd == p or p in cwd.parents:
            raise ValueError(f"{arg}: {given} is the current folder or holds it; name a new or a "
                             "diffinv-written folder instead")
        if p.is_symlink():
            raise ValueError(f"{arg}: {given} is a symbolic link; name a real folder")
        if p.exists() and not p.is_dir():
            raise ValueError(f"{arg}: {given} exists and is not a folder")
        if p.is_dir() and any(p.iterdir()):
            if not self.overwrite:
                raise ValueError(f"{arg}: {given} is not empty (pass --overwrite to replace a folder that "
                                 "diffinv wrote)")
            foreign = _foreign_entry(p)
            if foreign is not None:
                raise ValueError(f"{arg}: {given} holds files diffinv did not write (e.g. {foreign!r}); "
                                 "refusing to replace it even with --overwrite")
        check_writable_parent(p, arg)
        if p.exists() and not os.access(p.parent, os.W_OK | os.X_OK):
            raise ValueError(f"{arg}: cannot replace {given}: {str(p.parent)!r} is not writable")

    # -- 2. reservation ----------------------------------------------------------------------------
    def __enter__(self) -> OutputFolder:
        self.check()
        try:
            self._make_parents()
            self._lock()
            self.check()  # again, under the lock: a run that just finished may have filled it
            self._remove_stale_staging()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._release()

    def _make_parents(self) -> None:
        missing = []
        parent = self.path.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        mode = 0o777 & ~_umask()
        for folder in reversed(missing):
            try:
                folder.mkdir(mode=mode)
            except FileExistsError:
                continue
            except OSError as err:
                raise ValueError(f"{self.arg}: cannot create {str(folder)!r} ({err.strerror})") from None
            self._created.append(folder)

    def _lock(self) -> None:
        for _ in range(20):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o666 & ~_umask())
            except OSError as err:
                raise ValueError(f"{self.arg}: cannot write into {str(self.path.parent)!r} "
                                 f"({err.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise ValueError(f"{self.arg}: another diffinv run is writing {self.given!r}; wait for "
                                     "it or choose another folder") from None
                raise
            try:
                same = os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return
            os.close(fd)  # the previous holder unlinked it as we opened it: take the new one
        raise ValueError(f"{self.arg}: could not lock {self.given!r}")

    def _remove_stale_staging(self) -> None:
        for stale in self.path.parent.glob(f".{self.path.name}.diffinv-tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in self.path.parent.glob(f".{self.path.name}.diffinv-old-*"):
            shutil.rmtree(stale, ignore_errors=True)

    def _release(self) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        if self._fd is not None:
            try:
                os.unlink(self.lock_path)
            except FileNotFoundError:
                pass
            os.close(self._fd)
            self._fd = None
        if not self.committed:
            for folder in reversed(self._created):
                try:
                    folder.rmdir()
                except OSError:
                    break
        self._created = []

    # -- 3. commit ---------------------------------------------------------------------------------
    def commit(self, write: Callable[[Path], None]) -> Path:
        """Fill a staging folder with ``write(tmp)``, stamp it, and move it into place."""
        if self._fd is None:
            raise RuntimeError("OutputFolder.commit outside its with-block")
        parent = self.path.parent
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.diffinv-tmp-", dir=parent))
        self._staging = tmp
        os.chmod(tmp, 0o777 & ~_umask())
        write(tmp)
        stamp = {"written_by": "diffinv", "command": self.command, "files": _entries(tmp)}
        from diffinv import __version__

        stamp["version"] = __version__
        (tmp / STAMP).write_text(json.dumps(stamp, indent=1) + "\n")
        self.check()
        if self.path.is_dir() and any(self.path.iterdir()):
            trash = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.diffinv-old-", dir=parent))
            os.replace(self.path, trash / "old")
            try:
                os.rename(tmp, self.path)
            except OSError:
                os.replace(trash / "old", self.path)
                shutil.rmtree(trash, ignore_errors=True)
                raise
            shutil.rmtree(trash, ignore_errors=True)
        else:
            try:
                os.rename(tmp, self.path)
            except OSError as err:
                if err.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                    raise ValueError(f"{self.arg}: {self.given!r} was filled by something else while diffinv "
                                     "ran; nothing was written") from None
                raise
        self._staging = None
        self.committed = True
        return self.path
