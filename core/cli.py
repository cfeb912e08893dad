"""Shared plumbing of metasr's command-line entry points.

Every command is a ``click.Command`` run through :func:`run_command`, which turns user errors
(bad options, :class:`~metasr.core.errors.MetaSRError`) into one line on stderr and exit
code 2, with no traceback. Programming errors still raise, so bugs are not hidden.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from metasr.core.errors import MetaSRError

__all__ = ["EXIT_USAGE", "EXIT_INTERRUPTED", "run_command", "one_line"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def one_line(text: str) -> str:
    """Collapse a message onto one line."""
    return " ".join(str(text).split())


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
