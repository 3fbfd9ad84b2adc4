"""The console-script entry point: signals first, then the (heavy) Typer app.

Installed before torch is imported, so that Ctrl-C or SIGTERM during start-up also ends with one line and
the conventional exit code: 130 for SIGINT, 143 for SIGTERM (128 + the signal number). Inside a command
both signals raise (``KeyboardInterrupt`` / :class:`Terminated`), so ``finally`` blocks run and no
half-written output or temporary folder is left behind. ``DIFFINV_DEBUG=1`` shows tracebacks instead.
"""

from __future__ import annotations

import os
import signal
import sys


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM (a BaseException, so ``except Exception`` does not swallow it)."""


def _on_sigterm(signum, frame) -> None:  # noqa: ARG001
    raise Terminated()


def _exit_line(message: str, code: int) -> None:
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    sys.exit(code)


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
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        sys.exit(run_app())
    except KeyboardInterrupt:
        if os.environ.get("DIFFINV_DEBUG"):
            raise
        _exit_line("interrupted", 130)
    except Terminated:
        if os.environ.get("DIFFINV_DEBUG"):
            raise
        _exit_line("terminated", 143)


if __name__ == "__main__":
    main()
