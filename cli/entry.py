"""The console-script entry point: signals first, then the (heavy) Typer app.

Installed before torch is imported, so that Ctrl-C or SIGTERM during start-up also ends with one line and
the conventional exit code: 130 for SIGINT, 143 for SIGTERM (128 + the signal number). Two phases:

* start-up (imports, option parsing) and after a command: the signal ends the process at once with its
  line (``os._exit``). Nothing has been written yet, and an exception raised here could be swallowed: torch's
  C initialisation clears any error raised while it imports numpy, so the run would just go on.
* inside a command (:func:`raising_signals`, entered by :func:`cli.common.one_line_errors`): both signals
  raise (``KeyboardInterrupt`` / :class:`Terminated`), so ``finally`` blocks run and no half-written output
  or temporary folder is left behind.

The process ends with ``os._exit`` after an interruption, so that the interpreter does not turn the exit
code into a death by SIGINT. ``DIFFINV_DEBUG=1`` shows tracebacks instead.
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from typing import NoReturn

SIGNAL_EXITS = {signal.SIGINT: (130, "interrupted"), signal.SIGTERM: (143, "terminated")}


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM (a BaseException, so ``except Exception`` does not swallow it)."""


def _raise(signum, frame) -> None:  # noqa: ARG001
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated()


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _exit_now(signum, frame) -> NoReturn:  # noqa: ARG001
    """Start-up handler: one line and the signal's exit code, at once (module docstring)."""
    code, word = SIGNAL_EXITS[signum]
    _flush()
    os.write(2, f"error: {word}\n".encode())
    os._exit(code)


@contextmanager
def raising_signals():
    """Inside a command run by :func:`main`: SIGINT / SIGTERM raise, so clean-up runs (module docstring).

    Does nothing where :func:`main` did not install its handlers (tests, library use, other threads)."""
    switched = [s for s in SIGNAL_EXITS if signal.getsignal(s) is _exit_now]
    for s in switched:
        signal.signal(s, _raise)
    try:
        yield
    finally:
        for s in switched:
            signal.signal(s, _exit_now)


def _exit_line(message: str, code: int) -> NoReturn:
    _flush()
    sys.stderr.write(f"error: {message}\n")
    _flush()
    os._exit(code)


def run_app(args: list[str] | None = None) -> int:
    """Run the Typer app without click's standalone handling; usage errors become one ``error:`` line (2)."""
    from cli.main import app

    try:
        code = app(args=args, prog_name="diffinv", standalone_mode=False)
    except Exception as err:  # click's exceptions (Typer may vendor its own click): matched by name
        names = {c.__name__ for c in type(err).__mro__}
        if "NoArgsIsHelpError" in names:
            err.show()
            return 2
        if "Abort" in names:
            sys.stderr.write("error: interrupted\n")
            return 130
        if "ClickException" in names:
            sys.stderr.write(f"error: {' '.join(err.format_message().split())}\n")
            return int(getattr(err, "exit_code", 2) or 2)
        if os.environ.get("DIFFINV_DEBUG"):
            raise
        sys.stderr.write(f"error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}\n")
        return 1
    return code if isinstance(code, int) else 0


def main() -> None:
    """Run the ``diffinv`` app with signal handling around its import and its run."""
    debug = bool(os.environ.get("DIFFINV_DEBUG"))
    if debug:
        signal.signal(signal.SIGTERM, _raise)
    else:
        for s in SIGNAL_EXITS:
            signal.signal(s, _exit_now)
    try:
        code = run_app()
    except KeyboardInterrupt:
        if debug:
            raise
        _exit_line("interrupted", 130)
    except Terminated:
        if debug:
            raise
        _exit_line("terminated", 143)
    if code in (130, 143):  # a command reported an interruption: exit without the interpreter's SIGINT death
        _flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
