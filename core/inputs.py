"""What kind of thing an input path is, asked once before anything reads it.

Every command refuses FIFOs, devices and sockets as inputs before opening them (reading
``/dev/zero`` never ends, a FIFO blocks); the wording of what the path is lives here.
"""

from __future__ import annotations

import os
import stat

from metasr.core.errors import InputError

__all__ = ["special_kind", "stat_input"]


def stat_input(path: str | os.PathLike, what: str = "input", hint: str = "check the path") -> os.stat_result:
    """``os.stat`` of an input, following links.

    Args:
        path: The input.
        what: How messages name it (``"input"``, ``"input video"``).
        hint: What to do when it does not exist.

    Raises:
        InputError: it does not exist, or the file system refuses to look it up (one line).
    """
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist; {hint}") from None
    except OSError as e:
        raise InputError(f"cannot read {what} {path}: {e.strerror or type(e).__name__}") from None


def special_kind(info: os.stat_result) -> str | None:
    """``"a FIFO (named pipe)"``, ``"a device"`` or ``"a socket"``; None for files and folders."""
    mode = info.st_mode
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"
