"""Path rules shared by every metasr command: what an input may be, what a written path may be.

One home for the rules ``metasr-run``, ``metasr-stream``, ``metasr-eval``, ``metasr-export`` and
``metasr-train`` apply before any work:

- names are printed escaped (:func:`shown`), so a newline or a terminal escape in a file name
  never splits or rewrites the one error line;
- a ``file://`` URL is a file (:func:`file_url_path`): the same checks, read as a file;
- OpenCV sequence patterns (``seq%02d.png``) are refused (:func:`check_no_sequence_pattern`): OpenCV
  would open files that nothing checked;
- a report or statistics file follows the rules of an output (:func:`check_new_file`): never over
  an existing file without ``--overwrite``, never a folder, device or FIFO;
- written paths never meet an input, each other, or a protected folder such as the model
  (:func:`check_write_plan`, through symbolic and hard links).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

from metasr.core.errors import InputError, OutputError

__all__ = [
    "check_new_file",
    "check_no_overlap",
    "check_no_sequence_pattern",
    "file_identity",
    "check_resolvable",
    "check_write_plan",
    "file_url_path",
    "is_inside",
    "same_file",
    "shown",
]

Labelled = tuple[str, Path]

#: printf-style conversions OpenCV's image-sequence reader expands (``%d``, ``%03d``, ``%2u``).
_SEQUENCE = re.compile(r"%[-+ #0]*[0-9]*[diouxX]")


def shown(path: str | os.PathLike[str] | bytes, limit: int = 200) -> str:
    """``path`` as one printable line: control characters and undecodable bytes escaped, long names cut.

    ``repr`` rules without the quotes: ``a\\nb`` stays on one line, ``\\x1b[2J`` cannot clear a
    terminal, surrogate-escaped bytes of a non-UTF-8 name print as ``\\udcff``.
    """
    text = os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path)
    if text.isprintable():
        out = text
    else:
        out = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    try:
        out.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates of a non-UTF-8 name
        out = out.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(out) > limit:
        out = out[: limit - 12] + "..." + out[-9:]
    return out


def file_url_path(spec: str) -> Path | None:
    """The local path a ``file://`` URL names, or ``None`` for anything else.

    ``file:///data/v.avi`` and ``file://localhost/data/v.avi`` name ``/data/v.avi``; percent
    escapes are decoded.

    Raises:
        InputError: a ``file://`` URL naming another host or no path.
    """
    if not spec[:7].lower() == "file://":
        return None
    parts = urlsplit(spec)
    if parts.netloc not in ("", "localhost"):
        raise InputError(f"{shown(spec)} names a file on host {shown(parts.netloc)}; give a local path")
    if not parts.path:
        raise InputError(f"{shown(spec)} names no file; give a path such as file:///data/video.mp4")
    return Path(unquote(parts.path))


def check_no_sequence_pattern(path: str | os.PathLike[str], what: str = "input") -> None:
    """Refuse a name OpenCV would read as an image-sequence pattern (``seq%02d.png``).

    Raises:
        InputError: naming the pattern and what to do.
    """
    name = os.fspath(path)
    match = _SEQUENCE.search(name)
    if match is not None:
        raise InputError(
            f"{what} {shown(name)} contains {match.group()!r}, which OpenCV reads as an image-sequence pattern "
            "and opens files that were never checked; rename the file (or convert the sequence to a video)"
        )


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether ``a`` and ``b`` name one file (through symlinks and hard links)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # at least one does not exist (yet): compare where they would be
        return os.path.realpath(a) == os.path.realpath(b)


def is_inside(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """Whether ``path`` (resolved) lies in ``folder`` (resolved) or below it."""
    p, f = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return p == f or f in p.parents


def check_write_plan(
    outputs: Sequence[Labelled], inputs: Sequence[Labelled], protected: Sequence[Labelled] = ()
) -> None:
    """Refuse a run whose outputs collide with an input, with each other, or land in a protected folder.

    Args:
        outputs: ``(label, path)`` of every file the run writes (temporary files too).
        inputs: ``(label, path)`` of every file the run reads.
        protected: ``(label, folder)`` the run reads from and must never write into (a model).

    Raises:
        OutputError: naming both paths and what to do.
    """
    for out_label, out in outputs:
        for in_label, inp in inputs:
            if same_file(out, inp):
                raise OutputError(
                    f"{out_label} {shown(out)} is the {in_label} {shown(inp)}; choose another file "
                    "(inputs are never overwritten)"
                )
        for dir_label, folder in protected:
            if is_inside(out, folder):
                raise OutputError(
                    f"{out_label} {shown(out)} is inside the {dir_label} {shown(folder)}; write it elsewhere"
                )
    for i, (a_label, a) in enumerate(outputs):
        for b_label, b in outputs[i + 1 :]:
            if same_file(a, b):
                raise OutputError(f"{a_label} and {b_label} are the same file ({shown(a)}); give them different names")


def check_new_file(path: Path, role: str, overwrite: bool) -> None:
    """A file the command writes (output, report, statistics): refuse what it must not replace.

    Never a folder, device, FIFO or socket; never an existing file (or link) without ``overwrite``.

    Raises:
        OutputError: naming the path and what to do.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        info = None
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise OutputError(f"cannot use {role} {shown(path)}: {reason}; choose another path") from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise OutputError(f"{role} {shown(path)} is a folder; give a file name")
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise OutputError(f"{role} {shown(path)} is a device, FIFO or socket, not a file; choose another path")
    if (info is not None or os.path.islink(path)) and not overwrite:
        raise OutputError(f"{role} {shown(path)} already exists; pass --overwrite to replace it or choose another name")


def check_resolvable(path: str | os.PathLike[str], role: str = "--out") -> None:
    """Refuse an output path the file system cannot follow: a symbolic link loop on the way, a path
    too long, or a file where a folder should be.

    Raises:
        OutputError: naming the part of the path that fails.
    """
    full = Path(os.path.abspath(path))
    for part in [full, *full.parents]:
        try:
            os.stat(part)
        except FileNotFoundError:
            continue  # not created yet: its parent decides
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise OutputError(
                    f"{role} {shown(path)} goes through a symbolic link loop at {shown(part)}; choose another path"
                ) from None
            if e.errno == errno.ENAMETOOLONG:
                raise OutputError(f"{role} {shown(path, 80)} is too long for the file system; shorten it") from None
            if e.errno == errno.ENOTDIR:
                raise OutputError(f"{role} {shown(path)}: a part of it is not a folder; fix the path") from None
            raise OutputError(f"cannot use {role} {shown(path)}: {e.strerror or type(e).__name__}") from None
        return


def file_identity(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(device, inode)`` of the file ``path`` names (through symbolic links), or ``None`` if there is none.

    Two paths with one identity are one file, whether through symbolic links, hard links or
    another spelling of the path.
    """
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _resolved(path: Path) -> str:
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):  # a symbolic link loop: compare the spelling
        return os.path.abspath(path)


def check_no_overlap(writes: Sequence[tuple[str, str | os.PathLike]], inputs: Sequence[str | os.PathLike]) -> None:
    """Check, before any work, that no path a command writes is an input or another written path.

    Compared by file identity (symbolic and hard links, other spellings) for paths that exist, and
    by resolved path for all; written paths that differ only in letter case count as one.

    Args:
        writes: ``(role, path)`` pairs, e.g. ``("output", p)``, ``("--report", r)``.
        inputs: Every file the command reads.

    Raises:
        OutputError: naming the two paths that meet.
    """
    read_ids: dict[tuple[int, int], Path] = {}
    read_keys: dict[str, Path] = {}
    for src in inputs:
        src = Path(src)
        ident = file_identity(src)
        if ident is not None:
            read_ids[ident] = src
        read_keys[_resolved(src)] = src
    seen: dict[str, tuple[str, Path]] = {}
    for role, path in writes:
        path = Path(path)
        ident = file_identity(path)
        src = read_ids.get(ident) if ident is not None else None
        src = src or read_keys.get(_resolved(path))
        key = _resolved(path).casefold()  # two new files differing in case only are one on some file systems
        if src is not None:
            raise OutputError(
                f"{role} {path} is the input file {src}; choose another path (inputs are never overwritten)"
            )
        if key in seen:
            other_role, other = seen[key]
            raise OutputError(f"{role} {path} and {other_role} {other} are the same file; give them different paths")
        seen[key] = (role, path)
