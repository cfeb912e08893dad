"""Shared plumbing of metasr's command-line entry points.

Every command is a ``click.Command`` run through :func:`run_command`, which turns user errors
(bad options, :class:`~metasr.core.errors.MetaSRError`) into one line on stderr and exit
code 2, with no traceback. Programming errors still raise, so bugs are not hidden.
"""

from __future__ import annotations

import contextlib
import errno
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
    "SignalGuard",
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
    except OSError as e:
        if e.errno not in _ENVIRONMENT_ERRNOS:
            raise
        # the file system refused (full, read-only, a link loop, a name too long): one line, never a traceback
        where = f" {e.filename}" if e.filename else ""
        print(f"{prog}: error: cannot write{where}: {one_line(e.strerror or str(e))}; {_FIX_SPACE}", file=sys.stderr)
        return EXIT_USAGE
    return int(rv) if isinstance(rv, int) else 0


#: What the file system answers when it refuses a write for reasons outside the program.
_ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ELOOP, errno.ENAMETOOLONG, errno.EFBIG, errno.EIO}
)
_FIX_SPACE = "free space or choose another output path"


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


class SignalGuard:
    """The one SIGTERM (and Ctrl-C) handler of every metasr command.

    Inside the ``with`` block SIGTERM raises ``terminated`` (a :class:`Terminated`) and SIGINT
    raises ``KeyboardInterrupt`` in the main thread, so a run unwinds as on Ctrl-C; inside a
    :meth:`critical` section (an output and its journal line being written) the signal is held
    back until the next :meth:`check`. Elsewhere than the main thread it does nothing. The
    previous handlers are restored on exit.
    """

    def __init__(self, terminated: type[KeyboardInterrupt] = Terminated, sigint: bool = True) -> None:
        self.terminated = terminated
        self.pending: int | None = None
        self._depth = 0
        self._signals = (signal.SIGINT, signal.SIGTERM) if sigint else (signal.SIGTERM,)
        self._old: dict[int, object] = {}

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in self._signals:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
        self._old = {}

    def _handle(self, signum: int, _frame: object) -> None:
        if self._depth:
            self.pending = signum
            return
        self.raise_signal(signum)

    def raise_signal(self, signum: int) -> None:
        if signum == signal.SIGTERM:
            raise self.terminated()
        raise KeyboardInterrupt()

    def check(self) -> None:
        """Raise a signal that arrived inside a critical section."""
        if self.pending is not None and not self._depth:
            signum, self.pending = self.pending, None
            self.raise_signal(signum)

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """A block that a signal does not cut short; the signal waits for the next :meth:`check`."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1


@contextlib.contextmanager
def sigterm_as_interrupt(error: type[KeyboardInterrupt] = Terminated) -> Iterator[None]:
    """Inside the block, SIGTERM raises ``error`` in the main thread (elsewhere: no change).

    Long commands then finalise what they write (a checkpoint, a video and its summary) for
    ``kill`` as they do for Ctrl-C. A :class:`SignalGuard` for SIGTERM only.
    """
    with SignalGuard(error, sigint=False):
        yield
