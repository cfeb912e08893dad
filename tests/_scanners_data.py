"""Tiny images for the scanners tests: CT-like DICOM slices, blobs at known positions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid


def ct_phantom(size: int = 64, seed: int = 0) -> np.ndarray:
    """HU values: air around a soft-tissue disc with texture and a bone insert."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    c = size / 2
    hu = np.full((size, size), -1000.0)
    body = (yy - c) ** 2 + (xx - c) ** 2 < (0.4 * size) ** 2
    hu[body] = 40 + 25 * np.sin(xx[body] / 3.0) + rng.normal(0, 6, int(body.sum()))
    hu[(yy - c + 2) ** 2 + (xx - c - 5) ** 2 < (0.1 * size) ** 2] = 900
    return np.rint(hu)


def blob(shape: tuple[int, int], row: float, col: float, sigma: float = 1.6) -> np.ndarray:
    """A Gaussian blob in [0, 1] centred on (row, col) pixel coordinates."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.exp(-((yy - row) ** 2 + (xx - col) ** 2) / (2 * sigma**2))


def centroid(image: np.ndarray, floor: float = 0.05) -> tuple[float, float]:
    """Intensity-weighted centre (row, col) of the values above ``floor`` of the peak."""
    w = np.asarray(image, dtype=np.float64)
    w = np.where(w > floor * w.max(), w, 0.0)
    yy, xx = np.mgrid[: w.shape[0], : w.shape[1]]
    return float((w * yy).sum() / w.sum()), float((w * xx).sum() / w.sum())


def write_ct(
    path: Path,
    hu: np.ndarray,
    *,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    spacing: tuple[float, float] = (0.7, 0.7),
    position: tuple[float, float, float] = (-100.0, -80.0, 12.5),
    orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    **extra,
) -> Path:
    """A signed 16-bit CT slice (RescaleIntercept -1024) holding ``hu`` (2D, or [F, h, w] frames)."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = np.asarray(hu)
    stored = np.rint(hu + 1024).astype(np.int16)
    frames = stored.shape[0] if stored.ndim == 3 else 1
    ds.Rows, ds.Columns = stored.shape[-2], stored.shape[-1]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = stored.tobytes()
    ds.PixelSpacing = list(spacing)
    ds.ImagePositionPatient = list(position)
    ds.ImageOrientationPatient = list(orientation)
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SOPInstanceUID = sop_uid or generate_uid()
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def physical(ds, row: float, col: float) -> np.ndarray:
    """Patient coordinates (mm) of pixel coordinates (row, col) by a dataset's plane geometry."""
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
    return ipp + col * col_mm * iop[:3] + row * row_mm * iop[3:]
