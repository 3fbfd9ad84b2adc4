"""Shared CLI plumbing: one-line errors, progress bars on stderr, option parsing helpers."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cli.entry import Terminated, raising_signals
from diffinv.samplers.base import SamplingError
from diffinv.typed import parse_value

stderr = Console(stderr=True)
stdout = Console(soft_wrap=True)  # a message stays one line in a pipe (tables still fit the width)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on one line to stderr and return an Exit to raise."""
    stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def one_line_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn exceptions into one error line: bad input → exit 2, run-time failure → exit 1, SIGINT → 130,
    SIGTERM → 143 (inside the command :func:`cli.entry.raising_signals` makes both signals raise).

    Set DIFFINV_DEBUG=1 to see the traceback instead.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if os.environ.get("DIFFINV_DEBUG"):
            return func(*args, **kwargs)
        try:
            with raising_signals():
                return func(*args, **kwargs)
        except typer.Exit:
            raise
        except (ValueError, FileNotFoundError, IsADirectoryError, PermissionError) as err:
            raise fail(str(err).splitlines()[0] if str(err) else type(err).__name__, 2) from None
        except SamplingError as err:
            raise fail(str(err), 1) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except Terminated:
            raise fail("terminated", 143) from None
        except Exception as err:  # noqa: BLE001 - the CLI must never show a traceback
            raise fail(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}", 1) from None

    return wrapper


def parse_overrides(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """['dcps.lr=0.5', 'dps.zeta=1'] → {'dcps': {'lr': 0.5}, 'dps': {'zeta': 1}} (values read as YAML 1.2)."""
    result: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        sampler, dot, option = key.partition(".")
        if not sep or not dot or not sampler or not option:
            raise ValueError(f"set: expected SAMPLER.OPTION=VALUE, got {item!r}")
        result.setdefault(sampler.strip(), {})[option.strip()] = parse_value(value)
    return result


def split_names(text: str | None) -> tuple[str, ...]:
    """'dps,mcgdiff' → ('dps', 'mcgdiff'); None → ()."""
    if not text:
        return ()
    return tuple(n.strip() for n in text.split(",") if n.strip())


@contextmanager
def progress_bar(total: int, quiet: bool = False):
    """A rich progress bar with ETA on stderr (from the first item on); yields a callback(description) that
    advances it."""
    if quiet:
        yield lambda _description: None
        return
    columns = [TextColumn("{task.description:<24}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    progress = Progress(*columns, console=stderr, transient=False)
    task = progress.add_task("starting", total=total)
    state = {"started": False}

    def advance(description: str) -> None:
        if state["started"]:
            progress.advance(task)
        else:  # shown from the first item on: an error while loading leaves only its own line
            progress.start()
            state["started"] = True
        progress.update(task, description=description)

    try:
        yield advance
        progress.update(task, completed=total, description="done")
    finally:
        if state["started"]:
            progress.stop()
