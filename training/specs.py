"""Dataset specs, anatomical axes and training scale lists, as the command line gives them.

``brats:PATH``, ``div2k:PATH`` and ``folder:PATH`` name a dataset (see :mod:`metasr.training.data`
for what each reads); ``--axes`` names anatomical slicing axes; ``--scales`` a list or a
``START:STOP:STEP`` range of exact scales.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction
from pathlib import Path

from metasr.core.errors import InputError, ScaleError
from metasr.core.scale import parse_scale

__all__ = ["MAX_SCALES", "Axis", "DataSpec", "DatasetKind", "parse_axes", "parse_scales", "parse_spec"]

#: Most scales one ``START:STOP:STEP`` list may hold.
MAX_SCALES = 1000
#: A scale as text: a plain decimal or a ratio of small integers (no exponents, no huge strings).
_SCALE_TEXT = re.compile(r"\s*(\d{1,4}(\.\d{1,6})?|\d{1,4}/\d{1,4})\s*")


class DatasetKind(str, Enum):
    """Kinds of dataset spec."""

    BRATS = "brats"
    DIV2K = "div2k"
    FOLDER = "folder"


class Axis(str, Enum):
    """Anatomical slicing axis of a volume; the voxel axis is found from the file's affine."""

    SAGITTAL = "sagittal"
    CORONAL = "coronal"
    AXIAL = "axial"

    @property
    def codes(self) -> tuple[str, str]:
        """Orientation letters (nibabel's axis codes) of the direction normal to the slices."""
        return {"sagittal": ("L", "R"), "coronal": ("A", "P"), "axial": ("S", "I")}[self.value]

    @property
    def default_voxel_axis(self) -> int:
        """Voxel axis used when the affine names no direction (RAS order)."""
        return {"sagittal": 0, "coronal": 1, "axial": 2}[self.value]


def parse_axes(text: str | Sequence[str]) -> tuple[Axis, ...]:
    """``"axial,coronal"`` (or a sequence of names) -> axes.

    Raises:
        InputError: an unknown or missing axis name.
    """
    names = [a.strip() for a in (text.split(",") if isinstance(text, str) else text) if str(a).strip()]
    if not names:
        raise InputError("no slicing axis given; use axial, coronal or sagittal (comma-separated)")
    axes = []
    for a in names:
        try:
            axes.append(Axis(str(a).lower()))
        except ValueError:
            raise InputError(f"unknown axis {a!r}; use axial, coronal or sagittal") from None
    return tuple(dict.fromkeys(axes))


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``KIND:PATH`` spec."""

    kind: DatasetKind
    path: Path

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.path}"


def parse_spec(text: str) -> DataSpec:
    """Parse ``brats:PATH``, ``div2k:PATH`` or ``folder:PATH``.

    Raises:
        InputError: unknown kind or missing path.
    """
    kind, sep, path = str(text).partition(":")
    if not sep or not path.strip():
        raise InputError(f"data spec {text!r} is not KIND:PATH; use brats:PATH, div2k:PATH or folder:PATH")
    try:
        k = DatasetKind(kind.strip().lower())
    except ValueError:
        raise InputError(f"data spec {text!r} has unknown kind {kind!r}; use brats, div2k or folder") from None
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"data path {p} (from spec {text!r}) does not exist; pass an existing folder")
    if not (p.is_dir() or p.is_file()):
        raise InputError(f"data path {p} (from spec {text!r}) is not a regular file or folder; pass a folder")
    return DataSpec(k, p)


def _scale_of(text: str, whole: str) -> Fraction:
    if not _SCALE_TEXT.fullmatch(text):
        raise ScaleError(f"scales {whole!r}: {text.strip()!r} is not a scale such as 2.3 or 7/3")
    return parse_scale(text)


def parse_scales(text: str, low: float | None = None, high: float | None = None) -> list[Fraction]:
    """Parse ``"1.1:4.0:0.1"`` (inclusive range), ``"2,3,4"`` or ``"2.3"`` into exact scales.

    Args:
        text: The scale list.
        low, high: Allowed range (inclusive); a scale outside it raises.

    Raises:
        ScaleError: malformed text, an empty range, more than :data:`MAX_SCALES` scales, or a
            scale outside ``[low, high]``.
    """
    text = str(text).strip()
    if ":" in text:
        parts = text.split(":")
        if len(parts) not in (2, 3):
            raise ScaleError(f"scales {text!r} must be START:STOP[:STEP], e.g. 1.1:4.0:0.1")
        start, stop = _scale_of(parts[0], text), _scale_of(parts[1], text)
        step = _scale_of(parts[2], text) if len(parts) == 3 else Fraction(1, 10)
        if stop < start:
            raise ScaleError(f"scales {text!r}: STOP is smaller than START")
        count = int((stop - start) / step) + 1
        if count > MAX_SCALES:
            raise ScaleError(f"scales {text!r} give {count} scales; at most {MAX_SCALES} (use a larger STEP)")
        values = [start + k * step for k in range(count)]
    else:
        values = [_scale_of(v, text) for v in text.split(",") if v.strip()]
    if not values:
        raise ScaleError(f"scales {text!r} contain no scale; give e.g. 2,3,4 or 1.1:4.0:0.1")
    if len(values) > MAX_SCALES:
        raise ScaleError(f"scales {text[:40]!r}... give {len(values)} scales; at most {MAX_SCALES}")
    for v in values:
        if v <= 1:
            raise ScaleError(f"scale {float(v):g} is not an enlargement; scales must be greater than 1")
        below = low is not None and v < Fraction(repr(float(low)))
        above = high is not None and v > Fraction(repr(float(high)))
        if below or above:
            raise ScaleError(
                f"scale {float(v):g} is outside the range {low:g}-{high:g} the model was trained for; "
                f"choose scales within it"
            )
    return values
