"""What ``metasr-run`` does to each file: option values checked where they enter, the scale chosen
per file (``--scale``, ``--size`` or ``--spacing``), and reading one input.

Every number from the command line is checked here before anything is read: finite, positive,
in range, bounded in length before it is parsed.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from metasr.core.devicespec import DeviceSpec, parse_device_spec
from metasr.core.errors import InputError, ScaleError
from metasr.core.inputs import special_kind, stat_input
from metasr.core.scale import (
    MAX_OUTPUT_SIDE,
    MAX_SCALE,
    MAX_SCALE_TEXT,
    SCALE_LIMITS,
    Scale,
    parse_decimal,
    parse_scale_option,
    scale_for_size,
    scale_for_spacing,
)
from metasr.runtime.upscaler import check_image

if TYPE_CHECKING:
    from metasr.scanners import ScanImage

__all__ = [
    "MAX_MEMORY_BUDGET_MB",
    "MAX_OUTPUT_SIDE",
    "SCALE_LIMITS",
    "Job",
    "available_cpus",
    "check_regular_file",
    "parse_scale_option",
    "parse_spacing",
    "parse_device",
    "parse_memory_budget",
    "parse_size",
    "parse_threads",
    "parse_tile",
    "read_input",
]

#: Largest ``--memory-budget`` accepted (1 TiB): larger values are typing errors.
MAX_MEMORY_BUDGET_MB = 1024 * 1024

_SIZE = re.compile(r"\s*([0-9]{1,6})\s*[xX]\s*([0-9]{1,6})\s*")


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> ``(H, W)``, each side between 1 and :data:`MAX_OUTPUT_SIDE`."""
    m = _SIZE.fullmatch(text) if len(text) <= MAX_SCALE_TEXT else None
    shown = text if len(text) <= MAX_SCALE_TEXT else text[:MAX_SCALE_TEXT] + "..."
    if m is None or not all(1 <= int(g) <= MAX_OUTPUT_SIDE for g in m.groups()):
        raise InputError(
            f"--size must look like 512x384 (width x height in pixels, each 1 to {MAX_OUTPUT_SIDE}), got {shown!r}"
        )
    return int(m.group(2)), int(m.group(1))


def parse_spacing(text: str) -> Fraction:
    """``--spacing`` text to an exact positive number of millimetres (at most 1000 mm)."""
    value = parse_decimal(text, "--spacing", "0.5", " of millimetres")
    if value > 1000:
        raise ScaleError(f"--spacing is in millimetres and must be at most 1000, got {text.strip()}")
    return value


def parse_memory_budget(text: str, flag: str = "--memory-budget") -> float:
    """``--memory-budget`` (or ``--gpu-memory``) text to MiB: a finite number from 1 to :data:`MAX_MEMORY_BUDGET_MB`."""
    try:
        value = float(text) if len(text) <= MAX_SCALE_TEXT else math.nan
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 1 <= value <= MAX_MEMORY_BUDGET_MB):
        shown = text if len(text) <= MAX_SCALE_TEXT else text[:MAX_SCALE_TEXT] + "..."
        raise InputError(f"{flag} must be a number of MiB from 1 to {MAX_MEMORY_BUDGET_MB}, got {shown!r}")
    return value


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the system has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def parse_threads(threads: int | None) -> tuple[int | None, str | None]:
    """``--threads`` checked and capped at :func:`available_cpus`; returns the count and a note if capped."""
    if threads is None:
        return None, None
    if threads < 1:
        raise InputError(f"--threads must be at least 1, got {threads}")
    cpus = available_cpus()
    if threads > cpus:
        return cpus, f"--threads {threads} capped at {cpus}, the CPUs this process may use"
    return threads, None


def parse_tile(tile: int | None) -> int | None:
    """``--tile`` (LR tile side in pixels) between 16 and :data:`MAX_OUTPUT_SIDE`."""
    if tile is not None and not 16 <= tile <= MAX_OUTPUT_SIDE:
        raise InputError(f"--tile must be a tile side in pixels from 16 to {MAX_OUTPUT_SIDE}, got {tile}")
    return tile


def parse_device(text: str) -> DeviceSpec:
    """``--device`` (``auto``, ``cpu``, ``cuda``, ``tensorrt``, also ``cuda:N`` for GPU ``N``)."""
    if len(text) > MAX_SCALE_TEXT:
        raise InputError(f"--device {text[:MAX_SCALE_TEXT]}...: not a device; use auto, cpu, cuda[:N] or tensorrt[:N]")
    return parse_device_spec(text)


@dataclass(frozen=True)
class Job:
    """How each file's scale is chosen and read: exactly one of ``scale``, ``size``, ``spacing``."""

    scale: Scale | None = None
    size: tuple[int, int] | None = None  # (height, width)
    spacing: Fraction | None = None  # target mm
    allow_extrapolation: bool = False
    axis: int | None = None
    intensity: str = "auto"
    grid: str = "corner"
    compress: str = "keep"
    #: ``--select`` rules (DICOM attribute filters), see :mod:`metasr.scanners.select`.
    select: tuple[str, ...] = ()
    #: When the run started: the Series/Content Date and Time of every output of the run.
    started: datetime = field(default_factory=datetime.now, compare=False)

    @property
    def tag(self) -> str | None:
        """The output-name tag when it is the same for every file (``sr1.8``, ``512x384``), else ``None``."""
        if self.scale is not None:
            return f"sr{self.scale}"
        if self.size is not None:
            return f"{self.size[1]}x{self.size[0]}"
        return None

    def settings(self) -> dict[str, str]:
        """What decides an output besides the input and the model (for resuming only identical work)."""
        asked = (
            f"scale={self.scale.value}"
            if self.scale is not None
            else (f"size={self.size[1]}x{self.size[0]}" if self.size is not None else f"spacing={self.spacing}")
        )
        settings = {"asked": asked, "axis": str(self.axis), "intensity": self.intensity}
        if self.grid != "corner":
            settings["grid"] = self.grid  # absent at the default: journals of earlier runs stay valid
        if self.compress != "keep":
            settings["compress"] = self.compress
        return settings

    def scale_for(self, scan: ScanImage) -> tuple[Scale, str, list[str]]:
        """The scale for one image, the tag naming its output, and notes on the resulting spacing."""
        h, w = scan.size
        notes: list[str] = []
        if self.axis is not None and len(getattr(scan, "shape", ())) < 3:
            notes.append(
                f"{scan.path.name}: --axis {self.axis} is ignored; it chooses the slice axis of NIfTI volumes and this"
                f" is a 2D {scan.format.value.upper()} image"
            )
        if self.scale is not None:
            s, tag = self.scale, f"sr{self.scale}"
        elif self.size is not None:
            s = scale_for_size(h, w, *self.size, scale_range=SCALE_LIMITS)
            tag = f"{self.size[1]}x{self.size[0]}"
        else:
            assert self.spacing is not None
            s = scale_for_spacing(scan.spacing, self.spacing)
            if not SCALE_LIMITS[0] <= s.value <= SCALE_LIMITS[1]:
                raise ScaleError(
                    f"{scan.path.name}: --spacing {_mm(self.spacing)} mm from {_mm(scan.spacing[0])} mm pixels needs "
                    f"scale {s}; the scale must be between 1 and {MAX_SCALE}"
                )
            tag = f"sr{s}"
        if scan.spacing is not None and all(math.isfinite(v) and v > 0 for v in scan.spacing):
            row, col = (Fraction(repr(float(v))) / s.value for v in scan.spacing)
            if self.spacing is not None and row != self.spacing:
                notes.append(
                    f"{scan.path.name}: --spacing {_mm(self.spacing)} mm needs a scale with a denominator over 1000; "
                    f"using scale {s}, which gives {_mm(row)} mm"
                )
            elif self.size is not None:
                notes.append(f"{scan.path.name}: scale {s} gives {_mm(row)} x {_mm(col)} mm pixels")
        return s, tag, notes


def _mm(value: Fraction | float) -> str:
    return f"{float(value):.6g}"


def check_regular_file(path: Path) -> None:
    """Refuse what is not a regular file (FIFO, device, socket) before anything reads from it."""
    info = stat_input(path, hint="give an image file or a folder of images")
    kind = special_kind(info)
    if kind is not None:
        raise InputError(f"input {path} is {kind}; give an image file (copy the data to a file first)")


def read_input(path: Path, job: Job, window: object | None = None) -> ScanImage:
    """Read one input file as the job asks; the only place ``metasr-run`` reads images.

    Args:
        path: A regular file.
        job: Gives the NIfTI axis and the intensity mapping.
        window: The stored-value window mapped to [0, 1] when a caller chose it for a whole
            series; ``None`` lets the reader choose it from this file (``job.intensity``).

    Raises:
        InputError: one line naming the file.
    """
    from metasr.scanners import read_image

    check_regular_file(path)
    kwargs: dict[str, object] = {"intensity": job.intensity}
    if window is not None:
        kwargs["window"] = window
    scan = read_image(path, axis=job.axis, **kwargs)
    try:
        check_image(scan.frames)
    except InputError as e:
        scan.close()
        raise InputError(f"{path.name}: {e}") from None
    return scan
