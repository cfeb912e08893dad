"""Group input files into series, each with one intensity window shared by all its files.

A series is what must be mapped to [0, 1] alike: all DICOM files of one Series Instance UID
(with one Rescale Slope/Intercept) in a run. A NIfTI volume or a raster image is a series of its
own, whose window :func:`~metasr.scanners.reader.read_image` measures from the file itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from metasr.core.errors import InputError, MetaSRError
from metasr.scanners.base import ImageFormat, recorded_warnings
from metasr.scanners.intensity import IntensityRange, IntensityWindow, measure_window
from metasr.scanners.reader import check_input_file, detect_format

__all__ = ["SeriesGroup", "group_series", "SAMPLE_VALUES"]

#: Pixel values sampled over a whole series for its percentiles (bounds memory for long series).
SAMPLE_VALUES = 2**22


@dataclass
class SeriesGroup:
    """Files read with one intensity window.

    Attributes:
        key: ``dicom:<SeriesInstanceUID>`` (plus ``|rescale`` when a series mixes rescalings),
            else ``file:<path>`` for a file that is its own series or could not be read.
        paths: The files, in input order.
        window: The series' window; ``None``: measured from each file when it is read.
    """

    key: str
    paths: list[Path] = field(default_factory=list)
    window: IntensityWindow | None = None


def _dicom_key(path: Path) -> str | None:
    """Grouping key from a DICOM header (read without pixel data), or ``None`` for no series."""
    import pydicom

    with open(path, "rb") as fh:
        has_preamble = fh.read(132)[128:132] == b"DICM"
        fh.seek(0)
        ds = pydicom.dcmread(fh, stop_before_pixels=True, force=not has_preamble)
        series = str(ds.get("SeriesInstanceUID", "") or "")
        if not series:
            return None
        slope, intercept = ds.get("RescaleSlope", 1), ds.get("RescaleIntercept", 0)
    return f"dicom:{series}|{float(slope)!r},{float(intercept)!r}"


def _series_keys(keys: list[str | None]) -> list[str | None]:
    """Drop the rescale suffix of series whose files share one rescaling (``dicom:<uid>`` then)."""
    variants: dict[str, set[str]] = {}
    for key in keys:
        if key is not None:
            uid, _, rescale = key.partition("|")
            variants.setdefault(uid, set()).add(rescale)
    return [None if k is None else (k if len(variants[k.partition("|")[0]]) > 1 else k.partition("|")[0]) for k in keys]


def _key_of(path: Path) -> str | None:
    """Series key of a DICOM file; ``None`` for anything that is its own series."""
    try:
        size = check_input_file(path)
        with open(path, "rb") as fh:
            head = fh.read(min(size, 352))
        if detect_format(path, head) is not ImageFormat.DICOM:
            return None
        with recorded_warnings([], path.name):
            return _dicom_key(path)
    except (MetaSRError, OSError, ValueError, TypeError, AttributeError, EOFError):
        return None
    except Exception:  # pydicom raises many types on damaged headers; the later read reports them
        return None


def _series_window(paths: list[Path], policy: IntensityRange) -> tuple[IntensityWindow | None, list[Path]]:
    """Window over all files' stored values (strided sample for percentiles, exact min/max).

    Returns the window and the files whose pixels could not be read (they become their own groups).
    """
    from metasr.scanners.dicom import read_stored_pixels

    per_file = max(1024, SAMPLE_VALUES // max(len(paths), 1))
    samples, failed = [], []
    vmin, vmax, dtype, options = np.inf, -np.inf, None, {}
    for path in paths:
        try:
            with recorded_warnings([], path.name):
                pixels, file_options = read_stored_pixels(path)
        except Exception:  # reported in one line when the file itself is read
            failed.append(path)
            continue
        if pixels.size == 0 or (np.issubdtype(pixels.dtype, np.floating) and not np.isfinite(pixels).all()):
            failed.append(path)
            continue
        flat = pixels.reshape(-1)
        samples.append(flat[:: -(-flat.size // per_file)].astype(np.float64))  # at most per_file values
        vmin, vmax = min(vmin, float(flat.min())), max(vmax, float(flat.max()))
        if dtype is None:
            dtype, options = pixels.dtype, file_options
        del pixels, flat
    if dtype is None:
        return None, failed
    sample = np.concatenate(samples)
    return measure_window(sample, vmin, vmax, policy=policy, dtype=dtype, **options), failed


def group_series(
    paths: Iterable[str | os.PathLike], intensity: IntensityRange | str = IntensityRange.AUTO
) -> list[SeriesGroup]:
    """Group files into series and measure one intensity window per DICOM series.

    Reads DICOM headers to group, then the pixels of each multi-file series once (one file at a
    time; a bounded sample per series). Never raises for a bad file: a file that cannot be read
    becomes its own group with ``window=None``, so reading it later reports the error in one line.

    Args:
        paths: Input files, in the order they will be processed.
        intensity: Window policy (``auto``, ``full``, ``data`` or ``robust``).

    Returns:
        The groups in order of their first file; files keep their input order within a group.

    Raises:
        InputError: only for an unknown ``intensity`` policy.
    """
    try:
        policy = IntensityRange(intensity)
    except ValueError:
        choices = ", ".join(v.value for v in IntensityRange)
        raise InputError(f"intensity {intensity!r} is not one of {choices}") from None
    groups: dict[str, SeriesGroup] = {}
    paths = [Path(p) for p in paths]
    for path, key in zip(paths, _series_keys([_key_of(p) for p in paths])):
        key = key or f"file:{path}"
        while key in groups and key.startswith("file:") and path in groups[key].paths:
            key += "+"  # the same file given twice stays two entries
        groups.setdefault(key, SeriesGroup(key)).paths.append(path)
    result: list[SeriesGroup] = []
    for group in groups.values():
        if not group.key.startswith("dicom:") or len(group.paths) < 2:
            result.append(group)
            continue
        window, failed = _series_window(group.paths, policy)
        group.window = window
        group.paths = [p for p in group.paths if p not in failed]
        if group.paths:
            result.append(group)
        result.extend(SeriesGroup(f"file:{p}", [p]) for p in failed)
    return result
