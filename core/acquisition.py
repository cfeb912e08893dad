"""What resolution an image was acquired at, from its header or its spectrum (numpy only).

Many MR images are stored on a finer grid than they were acquired on: a scanner that measured
256 x 134 lines of k-space may zero-fill them and store a 484 x 484 image, which holds nothing
above the acquired bandwidth. Evaluation reduces such references to the acquired resolution
(``metasr-eval --reference native``, :mod:`metasr.training.reference`), and the runtime warns
when ``--data-consistency`` would keep a zero-filled band empty.

- :func:`grid_from_header`: ``AcquisitionMatrix`` (0018,1310), ``InPlanePhaseEncodingDirection``
  (0018,1312) and ``PercentPhaseFieldOfView`` (0018,0094) of a DICOM header (any object with a
  ``get`` like a pydicom dataset): the larger axis's stored pixels per acquired sample, used on
  both axes (pixels stay square), rounded to a fraction with a denominator of at most 10; below
  1.05 the image is taken as stored.
- :func:`grid_from_spectrum`: where the header is silent, zero-filling leaves the mean power
  spectrum along a zero-filled axis falling off a cliff at ``0.5 / factor`` cycles per pixel onto
  a floor, where an image acquired at its grid holds signal and noise up to Nyquist. Only cliffs
  at factors from 1.25 to 4; the factor is the simplest fraction within 5 % of the estimate (an
  apodised edge reads a little early: MR2 of the test set reads 2.07 for its 2). Meant for MR
  (a CT kernel's steep roll-off is not zero-filling): callers read only MR and NIfTI files.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

#: Factors below this are taken as "stored at the acquired resolution".
MIN_FACTOR = 1.05
#: The largest factor accepted (from a header or ``--native-factor``).
MAX_FACTOR = 8.0
#: Denominator limit of the factor (the k-space grid needs a rational scale).
MAX_DENOMINATOR = 10

#: The spectrum test (:func:`grid_from_spectrum`): width of the spectrum's bins (cycles per pixel),
SPECTRUM_BIN = 0.01
#: the width of the cliff (a zero-filled axis falls this fast, an apodised one included),
SPECTRUM_CLIFF = 0.03
#: the least fall over the cliff, from the band below it to the highest point above it (dB),
SPECTRUM_DROP_DB = 10.0
#: how many times steeper the cliff must be than the spectrum just below it,
SPECTRUM_STEEPNESS = 3.0
#: the cliffs looked for (factors 4 .. 1.25; near Nyquist many detectors roll off),
SPECTRUM_CUTOFFS = (0.125, 0.4)
#: the relative tolerance of the fraction chosen for the estimated factor,
SPECTRUM_TOLERANCE = 0.05
#: the most slices of a file the mean spectrum is taken over,
SPECTRUM_SLICES = 16
#: and the least pixels a side (shorter lines give too few frequencies per bin).
SPECTRUM_MIN_SIZE = 128


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


def rounded_factor(value: float) -> Fraction:
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
    return NativeGrid(rounded_factor(value), text)


def _band_levels(frames: np.ndarray, axis: int) -> tuple[np.ndarray, float]:
    """Mean power (dB) of ``frames`` ``[n, h, w]`` along ``axis`` in equal bins from 0 to 0.5, and the bins' width.

    The width is :data:`SPECTRUM_BIN`, or wider on short lines so that each bin holds two or more
    frequencies.
    """
    lines = np.moveaxis(np.asarray(frames, dtype=np.float64), axis, -1)
    n = lines.shape[-1]
    count = min(round(0.5 / SPECTRUM_BIN), n // 4)
    lines = lines - lines.mean(axis=-1, keepdims=True)
    power = (np.abs(np.fft.rfft(lines * np.hanning(n), axis=-1)) ** 2).reshape(-1, n // 2 + 1).mean(axis=0)
    bins = np.minimum((np.arange(n // 2 + 1) / n * 2 * count).astype(int), count - 1)
    mean = np.bincount(bins, power, minlength=count) / np.bincount(bins, minlength=count)
    return 10.0 * np.log10(np.maximum(mean, 1e-30)), 0.5 / count


def spectral_cutoff(frames: np.ndarray, axis: int) -> float | None:
    """The frequency (cycles per pixel) above which ``frames`` hold nothing along ``axis``, or None.

    The mean power spectrum of the lines along ``axis`` (each Hann-windowed, its mean removed),
    in bins of :data:`SPECTRUM_BIN` (wider on lines under 200 pixels), must fall by
    :data:`SPECTRUM_DROP_DB` or more within :data:`SPECTRUM_CLIFF`: from the mean of the band just
    below the cliff to the highest bin above it, :data:`SPECTRUM_STEEPNESS` times more than over
    the band below that. The cutoff lies in the bin before the first one that far below the band
    below the cliff, as far into it as its power is a share of that band's; of several cliffs,
    the deepest.
    """
    levels, width = _band_levels(frames, axis)
    k = max(1, round(SPECTRUM_CLIFF / width))
    lo, hi = (round(f / width) for f in SPECTRUM_CUTOFFS)
    best: tuple[float, float] | None = None
    for c in range(max(lo - k, 2 * k), min(hi + 1, levels.size - k)):
        below = float(levels[c - k : c].mean())
        fall = below - float(levels[c + k :].max())
        slope = float(levels[c - 2 * k : c - k].mean()) - below
        if fall < SPECTRUM_DROP_DB or fall < SPECTRUM_STEEPNESS * max(slope, 0.5):
            continue
        edge = next(i for i in range(c, c + k + 1) if levels[i] <= below - SPECTRUM_DROP_DB)
        # the bin before it straddles the edge: the share of it still passing, from its power
        passing = min(1.0, 10.0 ** ((float(levels[edge - 1]) - below) / 10.0))
        cutoff = (edge - 1 + passing) * width
        if SPECTRUM_CUTOFFS[0] <= cutoff <= SPECTRUM_CUTOFFS[1] and (best is None or fall > best[1]):
            best = (cutoff, fall)
    return None if best is None else best[0]


def _simplest_fraction(value: float) -> Fraction:
    """The fraction of smallest denominator (<= 10) within :data:`SPECTRUM_TOLERANCE` of ``value``.

    Of two at the same denominator, the larger (reducing a little more leaves no empty band).
    """
    for q in range(1, MAX_DENOMINATOR + 1):
        near = [Fraction(p, q) for p in (math.floor(value * q), math.ceil(value * q)) if p > 0]
        near = [f for f in near if abs(float(f) - value) <= SPECTRUM_TOLERANCE * value]
        if near:
            return max(near)
    return rounded_factor(value)


def read_spectrum(frames: np.ndarray) -> tuple[Fraction, str]:
    """:func:`grid_from_spectrum`'s factor (1: none found) and what the spectrum said, as text."""
    frames = np.asarray(frames)  # no copy: a long series is subsampled before anything is converted
    if frames.ndim == 2:
        frames = frames[None]
    if frames.ndim != 3 or not np.issubdtype(frames.dtype, np.number):
        return Fraction(1), "its pixels are not an image stack to read a spectrum from"
    frames = frames[np.flatnonzero(np.ptp(frames, axis=(1, 2)) != 0)]  # constant frames say nothing
    if len(frames) > SPECTRUM_SLICES:
        frames = frames[np.linspace(0, len(frames) - 1, SPECTRUM_SLICES).round().astype(int)]
    frames = frames.astype(np.float64)
    if not np.all(np.isfinite(frames)):
        return Fraction(1), "its pixels are not finite: no spectrum to read"
    if not len(frames) or min(frames.shape[1:]) < SPECTRUM_MIN_SIZE:
        return Fraction(1), f"under {SPECTRUM_MIN_SIZE} pixels a side: too small for its spectrum to tell"
    found = {
        name: cutoff
        for name, axis in (("vertically", 1), ("horizontally", 2))
        if (cutoff := spectral_cutoff(frames, axis)) is not None
    }
    if found:
        name, cutoff = min(found.items(), key=lambda item: item[1])
        factor = _simplest_fraction(0.5 / cutoff)
        if factor >= MIN_FACTOR:
            return factor, f"its spectrum: nothing above {cutoff:.3f} cycles per pixel {name} (zero-filled)"
    return Fraction(1), "its spectrum shows no zero-filling"


def grid_from_spectrum(frames: np.ndarray) -> NativeGrid:
    """The acquired grid that zero-filled ``frames`` (``[n, h, w]`` or one image, in [0, 1]) betray.

    Each axis is tested with :func:`spectral_cutoff` on the mean spectrum of up to
    :data:`SPECTRUM_SLICES` evenly spaced non-constant frames; as with a header, the larger
    factor is used on both axes. Frames under :data:`SPECTRUM_MIN_SIZE` pixels a side, or with
    non-finite values, are not read (as stored, saying why).
    """
    factor, said = read_spectrum(frames)
    return NativeGrid(factor, said if factor > 1 else f"as stored ({said})")


def acquired_grid(header: object | None, frames: Callable[[], np.ndarray] | None = None) -> NativeGrid:
    """The acquired grid of an image: its DICOM header's, else (MR DICOM and NIfTI) its spectrum's.

    Args:
        header: The DICOM header (an object with ``get``, like a pydicom dataset), or None for a
            NIfTI volume (no header states an acquisition).
        frames: Returns the image's frames in [0, 1] (``[n, h, w]``); called only when the header
            of an MR DICOM or a NIfTI file is silent. Without it, or if it raises, nothing is read
            from the pixels.
    """
    silent = NativeGrid(Fraction(1), "as stored (its header states no acquired matrix)")
    if header is not None:
        try:
            rows = int(header.get("Rows", 0) or 0)  # type: ignore[attr-defined]
            columns = int(header.get("Columns", 0) or 0)  # type: ignore[attr-defined]
            modality = str(header.get("Modality", "") or "").strip().upper()  # type: ignore[attr-defined]
        except (AttributeError, TypeError, ValueError):
            return silent
        stated = grid_from_header(header, rows, columns)
        if stated is not None:
            return stated
        if modality != "MR":
            return silent
    unread = silent if header is not None else STORED
    if frames is None:
        return unread
    try:
        pixels = frames()
    except Exception:  # noqa: BLE001 - the pixels are read (and reported) again by the caller
        return unread
    factor, said = read_spectrum(pixels)
    if factor > 1:
        return NativeGrid(factor, said)
    stated_nothing = "its header states no acquired matrix; " if header is not None else ""
    return NativeGrid(Fraction(1), f"as stored ({stated_nothing}{said})")
