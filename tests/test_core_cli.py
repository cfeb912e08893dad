"""The options every metasr command shares (metasr.core.cli)."""

from __future__ import annotations

import io

import click
import pytest

from metasr.core.cli import EXIT_USAGE, Verbosity, common_options, progress_enabled, run_command


@click.command()
@common_options("demo")
def _demo(verbosity: Verbosity) -> int:
    click.echo(f"verbosity={verbosity.name}")
    return 0


@pytest.mark.parametrize(
    ("argv", "expected"),
    [([], "NORMAL"), (["-q"], "QUIET"), (["--quiet"], "QUIET"), (["-v"], "VERBOSE"), (["--verbose"], "VERBOSE")],
)
def test_verbosity_flags(argv, expected, capsys):
    assert run_command(_demo, argv, "demo") == 0
    assert capsys.readouterr().out.strip() == f"verbosity={expected}"


def test_quiet_and_verbose_together_is_one_line_usage_error(capsys):
    assert run_command(_demo, ["-q", "-v"], "demo") == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "choose either --quiet or --verbose" in err[0]


def test_version_prints_program_and_version(capsys):
    from metasr import __version__

    assert run_command(_demo, ["--version"], "demo") == 0
    assert capsys.readouterr().out.strip() == f"demo {__version__}"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_and_never_when_quiet():
    assert progress_enabled(Verbosity.NORMAL, _Tty())
    assert not progress_enabled(Verbosity.QUIET, _Tty())
    assert not progress_enabled(Verbosity.NORMAL, io.StringIO())  # a pipe or a log file


def test_sigterm_unwinds_like_ctrl_c_inside_the_block_only():
    import os
    import signal
    import time

    from metasr.core.cli import Terminated, sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated), sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # never reached: the handler raises as soon as the signal is delivered
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back

    class Custom(Terminated):
        pass

    with pytest.raises(Custom), sigterm_as_interrupt(Custom):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
