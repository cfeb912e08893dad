"""``--select``: which DICOM files of a study a folder run processes (series selection rules).

A rule is ``Keyword=VALUE`` or ``Keyword!=VALUE`` with a DICOM keyword (``Modality``,
``ImageType``, ``SeriesDescription``, ``BodyPartExamined``...). ``VALUE`` may list alternatives
separated by commas (``Modality=CT,MR``). ``=`` holds when one of the element's values equals
one of the alternatives (so ``ImageType=PRIMARY`` means "Image Type contains PRIMARY"); ``!=``
when none does (``ImageType!=LOCALIZER`` drops scouts; a missing element holds ``!=`` and fails
``=``). Comparison ignores case and surrounding spaces; ``*`` and ``?`` match as in file names
(``SeriesDescription=*T1*``). All rules must hold, as in MONAI Deploy's series selector.
Files that are not DICOM fail every rule.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from metasr.core.errors import InputError

__all__ = ["SelectRule", "parse_rules", "rejection", "select_files"]

_RULE = re.compile(r"\s*([A-Za-z][A-Za-z0-9]*)\s*(!=|=)(.*)", re.S)


@dataclass(frozen=True)
class SelectRule:
    """One ``--select`` rule: ``keyword`` (not) equal to one of ``values``."""

    keyword: str
    values: tuple[str, ...]
    negate: bool = False

    def __str__(self) -> str:
        return f"{self.keyword}{'!=' if self.negate else '='}{','.join(self.values)}"

    def holds(self, ds) -> bool:
        element = ds.get(self.keyword) if ds is not None else None
        found = _texts(element)
        hit = any(fnmatch.fnmatchcase(f, w) for f in found for w in self.values)
        return not hit if self.negate else hit


def _texts(value) -> list[str]:
    if value is None:
        return []
    values = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    return [" ".join(str(v).split()).upper() for v in values if str(v).strip()]


def parse_rules(texts: Iterable[str]) -> list[SelectRule]:
    """Parse ``--select`` texts.

    Raises:
        InputError: a rule that is not ``Keyword=VALUE``/``Keyword!=VALUE`` or names no DICOM keyword.
    """
    from pydicom.datadict import tag_for_keyword

    rules = []
    for text in texts:
        m = _RULE.fullmatch(text) if len(text) <= 256 else None
        values = tuple(v.strip().upper() for v in m.group(3).split(",") if v.strip()) if m else ()
        if m is None or not values:
            raise InputError(
                f"--select {text[:80]!r} is not a rule; write Keyword=VALUE or Keyword!=VALUE, e.g. Modality=CT,"
                " ImageType!=LOCALIZER"
            )
        if tag_for_keyword(m.group(1)) is None:
            raise InputError(
                f"--select {text[:80]!r}: {m.group(1)} is not a DICOM keyword (e.g. Modality, ImageType,"
                " SeriesDescription, BodyPartExamined); keywords are CamelCase as in the DICOM dictionary"
            )
        rules.append(SelectRule(m.group(1), values, m.group(2) == "!="))
    return rules


def rejection(ds, rules: Sequence[SelectRule]) -> str | None:
    """Why a dataset (header) is not selected, or ``None`` when every rule holds."""
    for rule in rules:
        if not rule.holds(ds):
            found = _texts(ds.get(rule.keyword)) if ds is not None else []
            shown = "\\".join(found) if found else "absent"
            return f"not selected by --select {rule} ({rule.keyword} is {shown})"
    return None


def _header(path: Path):
    import pydicom

    from metasr.scanners.base import ImageFormat, recorded_warnings
    from metasr.scanners.reader import check_input_file, detect_format

    try:
        size = check_input_file(path)
        with open(path, "rb") as fh:
            head = fh.read(min(size, 352))
        if detect_format(path, head) is not ImageFormat.DICOM:
            return None, "not DICOM (--select filters DICOM attributes)"
        with recorded_warnings([], path.name), open(path, "rb") as fh:
            return pydicom.dcmread(fh, stop_before_pixels=True, force=head[128:132] != b"DICM"), None
    except Exception:  # unreadable: processed, so the read reports what is wrong in one line
        return None, None


def select_files(paths: Sequence[str | os.PathLike], rules: Sequence[SelectRule]) -> tuple[list[Path], dict[Path, str]]:
    """Split ``paths`` into the selected files and the others with the reason (input order kept).

    A file whose header cannot be read is kept in the selection, so that reading it reports the
    problem instead of a silent skip.
    """
    selected, rejected = [], {}
    for p in map(Path, paths):
        if not rules:
            selected.append(p)
            continue
        ds, reason = _header(p)
        reason = reason or (rejection(ds, rules) if ds is not None else None)
        if reason:
            rejected[p] = reason
        else:
            selected.append(p)
    return selected, rejected
