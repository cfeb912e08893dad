"""Shared plumbing of metasr's command-line entry points.

Every command is a ``click.Command`` run through :func:`run_command`, which turns user errors
(bad options, :class:`~metasr.core.errors.MetaSRError`) into one line on stderr and exit
code 2, with no traceback. Programming errors still raise, so bugs are not hidden.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from enum import Enum
from typing import Any

import click

from metasr.core.errors import MetaSRError

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "Terminated",
    "Verbosity",
    "common_options",
    "one_line",
    "progress_enabled",
    "run_command",
    "sigterm_as_interrupt",
]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: Exit code after SIGTERM (128 + 15), the shell's convention.
EXIT_TERMINATED = 143


def one_line(text: str) -> str:
    """Collapse a message onto one line; control characters left (a terminal escape in a name) are escaped."""
    collapsed = " ".join(str(text).split())
    if collapsed.isprintable():
        return collapsed
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in collapsed)


def run_command(command: click.Command, argv: Sequence[str] | None, prog: str) -> int:
    """Run ``command`` in-process and return its exit code (0 on success).

    Args:
        command: The click command.
        argv: Arguments without the program name; ``None`` reads ``sys.argv[1:]``.
        prog: Program name used in messages, e.g. ``"metasr-run"``.
    """
    try:
        rv = command.main(args=list(argv) if argv is not None else None, prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.exceptions.Abort:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except click.ClickException as e:
        print(f"{prog}: error: {one_line(e.format_message())} (see {prog} --help)", file=sys.stderr)
        return EXIT_USAGE
    except MetaSRError as e:
        print(f"{prog}: error: {one_line(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    return int(rv) if isinstance(rv, int) else 0


class Verbosity(int, Enum):
    """How much a command prints to stderr besides errors (``-q`` and ``-v``)."""

    QUIET = 0  # errors only
    NORMAL = 1  # status line, notes, progress on a terminal
    VERBOSE = 2  # also per-file details


def _version_text() -> str:
    from metasr import __version__

    return __version__


def common_options(prog: str) -> Callable[[click.Command], click.Command]:
    """Decorate a click command with the options every metasr command has.

    Adds ``--version`` (prints ``<prog> <version>`` and exits 0) and ``-q/--quiet`` /
    ``-v/--verbose``, which reach the command as one ``verbosity`` argument (a :class:`Verbosity`).
    """

    def to_verbosity(ctx: click.Context, _param: click.Parameter, value: int) -> Verbosity:
        quiet = ctx.params.pop("quiet", False)
        if quiet and value:
            raise click.BadParameter("choose either --quiet or --verbose, not both")
        return Verbosity.QUIET if quiet else (Verbosity.VERBOSE if value else Verbosity.NORMAL)

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        command = click.option(
            "-v", "--verbose", "verbosity", count=True, callback=to_verbosity, help="Say more on stderr."
        )(command)
        command = click.option(
            "-q", "--quiet", is_flag=True, is_eager=True, expose_value=True, help="Print errors only."
        )(command)
        return click.version_option(_version_text(), "--version", prog_name=prog, message="%(prog)s %(version)s")(
            command
        )

    return decorate


def progress_enabled(verbosity: Verbosity, stream: Any = None) -> bool:
    """Whether a progress bar may draw: not when quiet, and only on a terminal (no carriage
    returns in log files or pipes)."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return verbosity is not Verbosity.QUIET and bool(isatty and isatty())


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so a run unwinds as on Ctrl-C (then exits with
    :data:`EXIT_TERMINATED`)."""


@contextlib.contextmanager
def sigterm_as_interrupt(error: type[KeyboardInterrupt] = Terminated) -> Iterator[None]:
    """Inside the block, SIGTERM raises ``error`` in the main thread (elsewhere: no change).

    Long commands then finalise what they write (a checkpoint, a video and its summary) for
    ``kill`` as they do for Ctrl-C. The previous handler is restored on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: object) -> None:
        raise error

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
