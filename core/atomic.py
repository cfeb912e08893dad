"""Output-path checks and atomic writes shared by every metasr writer.

An output is written to a temporary file in the destination folder and moved over the
destination with :func:`os.replace`, so a reader never sees a half-written file and a failure
leaves nothing behind.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from metasr.core.errors import OutputError

__all__ = ["check_output_path", "check_writable_folder", "atomic_writer", "atomic_write_bytes", "atomic_write_text"]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_output_path(out_path: str | os.PathLike, source: str | os.PathLike | None = None) -> Path:
    """Check that ``out_path`` can receive a new file and is not the input.

    Args:
        out_path: Where the output should go.
        source: The input file, which must never be overwritten.

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.

    Raises:
        OutputError: if the path is the input, a folder, or its folder is missing or unwritable.
    """
    out = Path(out_path)
    if source is not None and _same_file(out, Path(source)):
        raise OutputError(
            f"output path {out} is the input file; choose another output path (inputs are never overwritten)"
        )
    if out.is_dir():
        raise OutputError(f"output path {out} is a folder; give a file name")
    check_writable_folder(out.parent if str(out.parent) else Path("."))
    return out


def check_writable_folder(folder: str | os.PathLike) -> None:
    """Check that ``folder`` exists and takes new files, by creating (and removing) one.

    A probe, not permission bits: those mislead root and read-only mounts.

    Raises:
        OutputError: if the folder is missing, not a folder, or not writable.
    """
    folder = Path(folder)
    if not folder.exists():
        raise OutputError(f"output folder {folder} does not exist; create it or choose another output path")
    if not folder.is_dir():
        raise OutputError(f"output folder {folder} is not a folder; choose another output path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".metasr-probe-", dir=folder)
    except OSError as e:
        raise OutputError(
            f"output folder {folder} is not writable ({e.strerror or e}); choose another output path"
        ) from None
    os.close(fd)
    os.unlink(probe)


@contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path``.

    The temporary file is created with mode 0o666 (not mkstemp's 0o600), so the result gets the
    user's umask like any other file. If the block raises, the temporary file is removed and
    ``path`` is untouched.

    Raises:
        OutputError: if the folder cannot be written; no partial file is left behind.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    tmp_name = str(parent / f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or type(e).__name__}; choose another output path") from e
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException as e:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise OutputError(
                f"cannot write {path}: {e.strerror or type(e).__name__}; choose another output path"
            ) from e
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder + ``os.replace``).

    Raises:
        OutputError: if the folder cannot be written; no partial file is left behind.
    """
    with atomic_writer(path) as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))
