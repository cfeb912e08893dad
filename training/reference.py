"""Native-resolution references for evaluation.

Many MR images are stored on a finer grid than they were acquired on: a scanner that measured
256 x 134 lines of k-space may zero-fill them and store a 484 x 484 image. Such an image holds
nothing above the acquired bandwidth, so scoring super-resolution against it mostly scores how
well a method interpolates band-limited data: a method that restores detail is penalised for it,
and bicubic looks better than it is. ``metasr-eval --reference native`` first reduces each such
image to the resolution it was acquired at (k-space truncation, which undoes zero-filling), then
makes the LR from that reference as usual.

How far to reduce comes from the DICOM header, else the image's spectrum
(:mod:`metasr.core.acquisition` has the rules), or from the user:

- ``--native-factor NAME=F`` gives the factor of the file named ``NAME`` (a file whose header is
  silent or wrong, or whose spectrum misleads); it wins over the header and the spectrum.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from fractions import Fraction
from pathlib import Path

import numpy as np

from metasr.core.acquisition import (
    MAX_FACTOR,
    STORED,
    NativeGrid,
    acquired_grid,
    grid_from_header,
    grid_from_spectrum,
    rounded_factor,
)
from metasr.core.errors import InputError
from metasr.core.kspace import kspace_downscale
from metasr.core.scale import hr_length

__all__ = [
    "NativeGrid",
    "STORED",
    "grid_from_header",
    "grid_from_spectrum",
    "native_grid",
    "native_size",
    "parse_native_factors",
    "reduce_to_native",
]

_NAME_FACTOR = re.compile(r"^(?P<name>.+)=(?P<factor>[^=]+)$")


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
        out[name] = rounded_factor(value)
    return out


def native_grid(
    path: str | os.PathLike,
    given: Mapping[str, Fraction] | None = None,
    frames: Callable[[], np.ndarray] | None = None,
) -> NativeGrid:
    """The grid ``path`` is reduced to: ``given`` (by file name), else :func:`~metasr.core.acquisition.acquired_grid`.

    Args:
        frames: Returns the file's frames in [0, 1] (``[n, h, w]``), called only when the header
            of an MR DICOM or a NIfTI file is silent; without it nothing is read from the pixels.
    """
    path = Path(path)
    if given and path.name in given:
        factor = given[path.name]
        return NativeGrid(factor, f"given (--native-factor {path.name}={float(factor):g})")
    from metasr.scanners import ImageFormat, detect_format
    from metasr.scanners.dicom import read_dicom_header

    try:
        with open(path, "rb") as fh:
            head = fh.read(352)
        kind = detect_format(path, head)
        if kind is ImageFormat.NIFTI:
            return acquired_grid(None, frames)
        if kind is not ImageFormat.DICOM:
            return STORED
        ds = read_dicom_header(path)
    except Exception:  # noqa: BLE001 - unreadable, or a damaged header: nothing is stated
        return STORED
    return acquired_grid(ds, frames)


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
    reduced = kspace_downscale(np.asarray(image, dtype=np.float64), factor, native_size(image.shape, factor))
    return np.clip(reduced, 0.0, 1.0).astype(np.float32)
