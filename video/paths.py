"""Checks of the paths a run writes against what it reads, before any work.

Two names are the same file when they resolve to one inode (symlinks, hard links, ``..``) or,
for a file not created yet, to one absolute path once symlinks in its folders are resolved.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from metasr.core.errors import OutputError

__all__ = ["check_write_plan", "is_inside", "same_file"]

Labelled = tuple[str, Path]


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether ``a`` and ``b`` name one file (through symlinks and hard links)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # at least one does not exist (yet): compare where they would be
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
                    f"{out_label} {out} is the {in_label} {inp}; choose another file (inputs are never overwritten)"
                )
        for dir_label, folder in protected:
            if is_inside(out, folder):
                raise OutputError(f"{out_label} {out} is inside the {dir_label} {folder}; write it elsewhere")
    for i, (a_label, a) in enumerate(outputs):
        for b_label, b in outputs[i + 1 :]:
            if same_file(a, b):
                raise OutputError(f"{a_label} and {b_label} are the same file ({a}); give them different names")
