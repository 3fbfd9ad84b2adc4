"""Running ``python -m diffinv`` in subprocesses for the CLI reliability tests, and their checks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import png

UMASK = 0o022  # every subprocess runs with it, so created folders must be 0755 (mkdtemp alone gives 0700)
LEFTOVER = ".diffinv-"  # lock files (.NAME.diffinv-lock) and staging folders (.NAME.diffinv-tmp-*)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DIFFINV_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                         env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def command(*args) -> list[str]:
    return [sys.executable, "-m", "diffinv", *[str(a) for a in args]]


def run(*args, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """One command to its end; the result also carries its wall time (``.seconds``)."""
    started = time.perf_counter()
    res = subprocess.run(command(*args), cwd=cwd, env=_env(), capture_output=True, text=True,
                         timeout=timeout, umask=UMASK)
    res.seconds = time.perf_counter() - started
    return res


def run_all(cases: dict[str, tuple], cwd: Path) -> dict[str, subprocess.CompletedProcess]:
    """Run independent commands two at a time; {name: completed process}."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run, *args, cwd=cwd) for name, args in cases.items()}
        return {name: f.result() for name, f in futures.items()}


def start(*args, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(command(*args), cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, umask=UMASK)


def one_error(res, *needles: str, code: int = 2) -> str:
    """The run failed with ``code`` and exactly one line on stderr, ``error: ...`` containing ``needles``."""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    shown = f"exit {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}"
    assert res.returncode == code, shown
    assert "Traceback" not in res.stderr + res.stdout, shown
    assert len(lines) == 1 and lines[0].startswith("error: "), shown
    for needle in needles:
        assert needle in lines[0], shown
    return lines[0]


def succeeded(res) -> None:
    assert res.returncode == 0, f"exit {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}"
    assert "wrote " in res.stdout and "Traceback" not in res.stderr


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry below ``root``: kind, size (files) and mtime — what a failed run must leave as it was."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        out[path.relative_to(root).as_posix()] = (path.is_dir(), 0 if path.is_dir() else st.st_size,
                                                  st.st_mtime_ns)
    return out


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if LEFTOVER in p.name)


def write_png16(path: Path, array: np.ndarray) -> None:
    """A 16-bit PNG of (H, W) or (H, W, 3) uint16 values, through pypng."""
    h, w = array.shape[:2]
    rgb = array.ndim == 3
    with open(path, "wb") as f:
        png.Writer(w, h, greyscale=not rgb, bitdepth=16).write(f, array.reshape(h, -1).tolist())



def read_png16(path: Path) -> np.ndarray:
    """(C, H, W) float64 on [0, 1] of a 16-bit PNG, read independently of diffinv."""
    w, h, rows, meta = png.Reader(filename=str(path)).asDirect()
    a = np.vstack([np.asarray(r, np.float64) for r in rows]).reshape(h, w, meta["planes"])
    return a.transpose(2, 0, 1) / 65535.0
