"""Output-path checks and atomic writes shared by every metasr writer.

An output is written to a temporary file in the destination folder and moved over the
destination with :func:`os.replace`, so a reader never sees a half-written file and a failure
leaves nothing behind.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from metasr.core.errors import OutputError
from metasr.core.paths import check_no_overlap, file_identity  # the path rules' home; re-exported here

__all__ = [
    "check_output_path",
    "check_writable_folder",
    "atomic_writer",
    "atomic_write_bytes",
    "atomic_write_text",
    "NAME_MAX",
    "check_name_length",
    "file_identity",
    "check_no_overlap",
    "nearest_existing_folder",
    "check_replaceable",
    "publish_file",
]


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
    check_name_length(out)
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
    _check_not_a_loop(folder)
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


#: Longest file name (in bytes) most file systems take.
NAME_MAX = 255
#: Bytes :func:`atomic_writer`'s temporary name adds to the final name (``.NAME.xxxxxxxx.part``).
_TEMP_EXTRA = len(".") + len(".") + 8 + len(".part")


def check_name_length(path: str | os.PathLike) -> None:
    """Refuse a file name that (with the temporary name written first) is longer than :data:`NAME_MAX` bytes.

    Raises:
        OutputError: naming the length and the limit.
    """
    name = Path(path).name
    size = len(os.fsencode(name))
    if size + _TEMP_EXTRA > NAME_MAX:
        shown = name if len(name) <= 48 else name[:40] + "..." + name[-8:]
        raise OutputError(
            f"output name {shown} is {size} bytes; names of at most {NAME_MAX - _TEMP_EXTRA} bytes can be written "
            f"(file systems take {NAME_MAX}, the temporary file needs {_TEMP_EXTRA} more); choose a shorter output path"
        )


def _check_not_a_loop(path: Path) -> None:
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OutputError(f"{path} is a symbolic link loop; choose another output path") from None
        if e.errno == errno.ENAMETOOLONG:
            shown = str(path)[:60]
            raise OutputError(f"path {shown}... is too long for the file system; choose a shorter path") from None


def nearest_existing_folder(path: str | os.PathLike) -> Path:
    """The closest ancestor of ``path`` (or ``path`` itself) that exists, for probing before creating folders."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        _check_not_a_loop(path)
        path = path.parent
    return path


def check_replaceable(path: str | os.PathLike, role: str = "output") -> None:
    """Refuse to replace anything at ``path`` but a regular file (or a link to one): never a device or FIFO.

    Raises:
        OutputError: naming what is there.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError:
        return  # nothing there (or a dangling link, which atomic replacement removes)
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{role} {path} is a folder; give a file name")
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{role} {path} is a device, FIFO or socket, not a file; choose another path")


def publish_file(tmp: str | os.PathLike, dest: str | os.PathLike, replace: bool = False) -> Path:
    """Move the finished file ``tmp`` to ``dest``; without ``replace``, never over an existing file.

    Without ``replace`` the move is a hard link (which fails when ``dest`` exists, even when
    another process made it a moment ago) followed by removing ``tmp``; so a run that started
    when ``dest`` was free never replaces what another run wrote meanwhile. ``tmp`` is removed on
    any failure.

    Raises:
        OutputError: ``dest`` exists (without ``replace``) or cannot be written.
    """
    tmp, dest = Path(tmp), Path(dest)
    try:
        if replace:
            os.replace(tmp, dest)
            return dest
        try:
            os.link(tmp, dest, follow_symlinks=False)
        except FileExistsError:
            raise OutputError(
                f"output {dest} appeared while this run was working (another run wrote it?); it was kept, "
                "nothing was replaced; pass --overwrite to replace it"
            ) from None
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            if os.path.lexists(dest):  # a file system without hard links: check, then move
                raise OutputError(f"output {dest} already exists; pass --overwrite to replace it") from None
            os.replace(tmp, dest)
            return dest
        os.unlink(tmp)
        return dest
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and not isinstance(e, OutputError):
            raise OutputError(f"cannot write {dest}: {e.strerror or type(e).__name__}; choose another path") from e
        raise
