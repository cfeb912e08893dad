"""Native-resolution references for evaluation.

Many MR images are stored on a finer grid than they were acquired on: a scanner that measured
256 x 134 lines of k-space may zero-fill them and store a 484 x 484 image. Such an image holds
nothing above the acquired bandwidth, so scoring super-resolution against it mostly scores how
well a method interpolates band-limited data: a method that restores detail is penalised for it,
and bicubic looks better than it is. ``metasr-eval --reference native`` first reduces each such
image to the resolution it was acquired at (k-space truncation, which undoes zero-filling), then
makes the LR from that reference as usual.

How far to reduce comes from the DICOM header, or from the user for files whose header is silent:

- ``AcquisitionMatrix`` (0018,1310) holds the frequency samples and the phase-encoding steps;
  ``InPlanePhaseEncodingDirection`` (0018,1312) says which image axis was phase encoded (``COL``:
  the vertical one), and ``PercentPhaseFieldOfView`` (0018,0094) how much of that axis's stored
  extent the phase steps cover (default 100 %).
- Stored pixels per acquired sample: ``columns / frequency samples`` along the frequency axis,
  ``extent * percent / 100 / phase steps`` along the phase axis. The reduction uses the larger of
  the two on both axes (pixels stay square), rounded to a fraction with a denominator of at most
  10; below 1.05 the image is taken as stored.
- ``--native-factor NAME=F`` gives the factor of the file named ``NAME`` (a NIfTI volume, or a
  DICOM whose header is silent or wrong); it wins over the header.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from metasr.core.errors import InputError
from metasr.core.scale import hr_length

#: Factors below this are taken as "stored at the acquired resolution".
MIN_FACTOR = 1.05
#: The largest factor accepted (from a header or ``--native-factor``).
MAX_FACTOR = 8.0
#: Denominator limit of the factor (the k-space grid needs a rational scale).
MAX_DENOMINATOR = 10

_NAME_FACTOR = re.compile(r"^(?P<name>.+)=(?P<factor>[^=]+)$")


@dataclass(frozen=True)
class NativeGrid:
    """How one file is reduced to its acquired resolution.

    Attributes:
        factor: stored pixels per acquired sample used on both axes (>= 1; 1: as stored).
        source: where it came from, a short text for the report.
    """

    factor: Fraction
    source: str

    @property
    def reduces(self) -> bool:
        return self.factor > 1

    @property
    def description(self) -> str:
        """One line for the report: the factor used (if any) and where it came from."""
        if not self.reduces:
            return self.source
        return f"reduced by {self.factor} ({float(self.factor):.3g} stored pixels per acquired sample): {self.source}"


STORED = NativeGrid(Fraction(1), "as stored")


def _rounded(value: float) -> Fraction:
    return Fraction(value).limit_denominator(MAX_DENOMINATOR)


def grid_from_header(ds: object, rows: int, columns: int) -> NativeGrid | None:
    """The acquired grid stated by a DICOM header (a pydicom dataset), or None when it states none.

    Args:
        ds: The dataset (``AcquisitionMatrix``, ``InPlanePhaseEncodingDirection``,
            ``PercentPhaseFieldOfView`` are read; anything missing or malformed gives None).
        rows, columns: The stored image size.
    """
    try:
        matrix = [int(v) for v in (ds.get("AcquisitionMatrix") or [])]  # type: ignore[attr-defined]
        direction = str(ds.get("InPlanePhaseEncodingDirection", "") or "").strip().upper()  # type: ignore[attr-defined]
        percent = float(ds.get("PercentPhaseFieldOfView", 100) or 100)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    if len(matrix) != 4 or direction not in ("ROW", "COL") or rows < 1 or columns < 1:
        return None
    if not (math.isfinite(percent) and 1.0 <= percent <= 100.0):
        percent = 100.0
    freq = matrix[0] or matrix[1]
    phase = matrix[2] or matrix[3]
    if freq <= 0 or phase <= 0:
        return None
    # COL: phase encoded along the columns (vertical axis), frequency along a row.
    phase_extent, freq_extent = (rows, columns) if direction == "COL" else (columns, rows)
    per_phase = phase_extent * percent / 100.0 / phase
    per_freq = freq_extent / freq
    value = max(per_phase, per_freq)
    if not math.isfinite(value) or value > MAX_FACTOR:
        return None
    text = (
        f"AcquisitionMatrix {freq} x {phase} (frequency x phase, phase {direction}, {percent:g} % phase FOV) "
        f"in {rows} x {columns}"
    )
    if value < MIN_FACTOR:
        return NativeGrid(Fraction(1), f"as stored ({text})")
    return NativeGrid(_rounded(value), text)


def parse_native_factors(specs: Iterable[str]) -> dict[str, Fraction]:
    """``NAME=F`` texts (``--native-factor``) -> ``{name: factor}``.

    Raises:
        InputError: a malformed text, a factor outside 1..8, or a name given twice.
    """
    out: dict[str, Fraction] = {}
    for text in specs:
        m = _NAME_FACTOR.match(str(text).strip())
        value = math.nan
        if m:
            try:
                value = float(m["factor"])
            except ValueError:
                value = math.nan
        if not m or not (math.isfinite(value) and 1.0 <= value <= MAX_FACTOR):
            raise InputError(
                f"--native-factor {text!r} is not NAME=F: a file name as in per_image.csv (e.g. MR2_UNCR.dcm) and "
                f"the stored pixels per acquired sample, from 1 to {MAX_FACTOR:g} (e.g. MR2_UNCR.dcm=2)"
            )
        name = m["name"].strip()
        if name in out:
            raise InputError(f"--native-factor names {name} twice; give each file once")
        out[name] = _rounded(value)
    return out


def native_grid(path: str | os.PathLike, given: Mapping[str, Fraction] | None = None) -> NativeGrid:
    """The grid ``path`` is reduced to: ``given`` (by file name), else its DICOM header, else as stored."""
    path = Path(path)
    if given and path.name in given:
        factor = given[path.name]
        return NativeGrid(factor, f"given (--native-factor {path.name}={float(factor):g})")
    from metasr.scanners import ImageFormat, detect_format
    from metasr.scanners.dicom import read_dicom_header

    try:
        with open(path, "rb") as fh:
            head = fh.read(352)
        if detect_format(path, head) is not ImageFormat.DICOM:
            return STORED
        ds = read_dicom_header(path)
        rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    except Exception:  # noqa: BLE001 - not DICOM, or a damaged header: nothing is stated
        return STORED
    return grid_from_header(ds, rows, columns) or NativeGrid(
        Fraction(1), "as stored (its header states no acquired matrix)"
    )


def native_size(shape: tuple[int, int], factor: Fraction) -> tuple[int, int]:
    """The largest reduced size whose k-space grid fits in ``shape`` at ``factor``."""
    q = factor.denominator
    out = []
    for n_hr in shape:
        n = int(n_hr / factor)
        while n > 0 and hr_length(-(-n // q) * q, factor) > n_hr:
            n -= 1
        if n < 1:
            raise InputError(f"an image of {shape[0]}x{shape[1]} pixels is too small to reduce by {float(factor):g}")
        out.append(n)
    return out[0], out[1]


def reduce_to_native(image: np.ndarray, factor: Fraction) -> np.ndarray:
    """``image`` (float, [0, 1]) reduced by ``factor`` with k-space truncation, clipped to [0, 1] (float32).

    It undoes zero-filled interpolation by ``factor`` (up to the edges: the image is mirrored, not
    wrapped; no window); a factor of 1 returns the image unchanged.
    """
    if factor == 1:
        return np.asarray(image, dtype=np.float32)
    from metasr.training.degradations import kspace_downscale

    reduced = kspace_downscale(np.asarray(image, dtype=np.float64), factor, native_size(image.shape, factor))
    return np.clip(reduced, 0.0, 1.0).astype(np.float32)
