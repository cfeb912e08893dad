"""Exclusive locks on what a run writes, so two runs never write one output at once.

A folder run locks its output folder (which holds its resume journal); a single-file run locks
the folder its output goes into; ``metasr-stream`` locks its partial file; ``metasr-eval`` locks
its ``--out`` folder. The lock is an advisory ``flock`` on an open descriptor: the kernel drops it
when the process ends, however it ends (SIGKILL included), so a crashed run never leaves a stale
lock behind. Where ``fcntl`` is missing (Windows) the lock is a no-op.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from metasr.core.errors import OutputError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["exclusive_lock", "lock_fd", "lock_path_for", "output_lock"]


def _busy(role: str, path: Path) -> OutputError:
    from metasr.core.paths import shown

    return OutputError(
        f"{role} {shown(path)} is in use by another metasr run; wait for it to finish or choose another output"
    )


def lock_fd(fd: int, role: str, path: Path, wait: bool = False) -> None:
    """Take an exclusive lock on the open descriptor ``fd`` (of ``path``, named ``role`` in messages).

    Args:
        wait: Block until the other run lets go, instead of refusing.

    Raises:
        OutputError: another process holds the lock (and ``wait`` is false).
    """
    if fcntl is None:  # pragma: no cover
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        raise _busy(role, path) from None
    except OSError as e:  # a file system without locks (some network mounts): run unlocked
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP):
            raise OutputError(f"cannot lock {role} {path}: {e.strerror or type(e).__name__}") from None


@contextmanager
def exclusive_lock(folder: str | os.PathLike[str], role: str = "output folder", wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on the existing folder ``folder`` for the block.

    Raises:
        OutputError: another metasr run holds it (without ``wait``), or it cannot be opened.
    """
    path = Path(folder)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as e:
        raise OutputError(f"cannot open {role} {path}: {e.strerror or type(e).__name__}") from None
    try:
        lock_fd(fd, role, path, wait)
        yield
    finally:
        os.close(fd)  # closing the descriptor drops the lock


def lock_path_for(output: str | os.PathLike[str]) -> Path:
    """The hidden lock file of one output file: ``.NAME.lock`` beside it."""
    out = Path(output)
    return out.with_name(f".{out.name}.lock")


@contextmanager
def output_lock(output: str | os.PathLike[str], role: str = "output") -> Iterator[None]:
    """Hold an exclusive lock on one output file for the block (through ``.NAME.lock`` beside it).

    The lock file is removed at the end. A lock file left by a killed run is taken over (the
    kernel dropped its lock); after locking, the file is checked to still be the one at the path,
    so a run that opened it just before another removed it tries again.

    Raises:
        OutputError: another metasr run writes this output, or the lock file cannot be made.
    """
    out = Path(output)
    path = lock_path_for(out)
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as e:
            raise OutputError(f"cannot lock {role} {out}: {e.strerror or type(e).__name__}") from None
        try:
            lock_fd(fd, role, out)
            try:
                current = os.stat(path, follow_symlinks=False)
            except OSError:
                current = None
            mine = os.fstat(fd)
            if current is None or (current.st_dev, current.st_ino) != (mine.st_dev, mine.st_ino):
                os.close(fd)
                continue  # removed by the run that held it: lock the new one
        except BaseException:
            os.close(fd)
            raise
        try:
            yield
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass
            os.close(fd)
        return
    raise _busy(role, out)  # pragma: no cover - 100 lost races
