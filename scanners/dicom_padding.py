"""Pixel Padding Value (0028,0120) and Pixel Padding Range Limit (0028,0121): padding stays padding.

Padding marks pixels outside the scanned field of view (a CT's circle, a border). They are not
image: resampling them with their neighbours would smear the padding value into the image (a
ring of -1999..-1993 at the edge of the field of view) and the image into the padding. So:

* reading: the padding pixels (the stored value, or every value between it and the range limit)
  form a mask; before mapping to [0, 1] they take the lowest non-padding value of the image
  (a neutral background for the network, and the intensity window ignores them);
* writing: the mask is enlarged by nearest neighbour on the network's pixel grid and those output
  pixels get exactly the Pixel Padding Value; an output pixel outside the mask whose value fell
  into the padding range is moved just outside it, so no image pixel reads as padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from metasr.scanners.base import DerivationInfo
    from metasr.scanners.dicom import DicomScan

__all__ = ["Padding", "find_padding", "restore_padding", "nearest_indices"]


@dataclass
class Padding:
    """Padding pixels of a DICOM image.

    Attributes:
        mask: ``[F, h, w]`` bool, True where the pixel is padding.
        value: The Pixel Padding Value (written into padding pixels).
        low: Lowest stored value that is padding.
        high: Highest stored value that is padding.
    """

    mask: np.ndarray
    value: int
    low: int
    high: int


def _stored_int(ds, keyword: str) -> int | None:
    if keyword not in ds:
        return None
    value = ds[keyword].value
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    if isinstance(value, bytes):  # an ambiguous US/SS VR left raw by the parser
        if len(value) not in (2, 4):
            return None
        return int.from_bytes(value[:2], "little", signed=signed)
    try:
        number = int(value[0] if isinstance(value, (list, tuple)) else value)
    except (TypeError, ValueError, IndexError):
        return None
    bits = int(ds.get("BitsAllocated", 16) or 16)
    if signed and number >= 2 ** (min(bits, 16) - 1) and bits <= 16:
        number -= 2**16  # read as US but the pixels are signed
    return number


def find_padding(ds, pixels: np.ndarray, photometric: str) -> Padding | None:
    """The padding of a monochrome image, or ``None`` when it declares none or no pixel is padding."""
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or not np.issubdtype(pixels.dtype, np.integer):
        return None
    value = _stored_int(ds, "PixelPaddingValue")
    if value is None:
        return None
    limit = _stored_int(ds, "PixelPaddingRangeLimit")
    low, high = (value, value) if limit is None else (min(value, limit), max(value, limit))
    mask = (pixels >= low) & (pixels <= high)
    if not mask.any():
        return None
    return Padding(mask, value, low, high)


def fill_padding(pixels: np.ndarray, padding: Padding | None) -> np.ndarray:
    """``pixels`` with the padding set to the lowest non-padding value (a copy; the input untouched)."""
    if padding is None or padding.mask.all():
        return pixels
    filled = pixels.copy()
    filled[padding.mask] = np.min(pixels, where=~padding.mask, initial=np.iinfo(pixels.dtype).max)
    return filled


def nearest_indices(n: int, big: int, a: Fraction, b: Fraction) -> np.ndarray:
    """For each of ``big`` output pixels, the input pixel (of ``n``) whose area holds its centre.

    Output ``i`` has its centre at input coordinate ``a i + b`` (:class:`~metasr.scanners.base.GridMap`;
    on the network's grid ``a = 1 / r``, ``b = (a - 1) / 2``), which lies in input pixel
    ``floor(a i + b + 1/2)``; computed exactly in integers.
    """
    a, c = Fraction(a), Fraction(b) + Fraction(1, 2)
    den = a.denominator * c.denominator // np.gcd(a.denominator, c.denominator)
    i = np.arange(big, dtype=np.int64)
    idx = (a.numerator * (den // a.denominator) * i + c.numerator * (den // c.denominator)) // den
    return np.clip(idx, 0, n - 1)


def restore_padding(scan: DicomScan, pixels: np.ndarray, info: DerivationInfo) -> np.ndarray:
    """Stored output values ``[F, H, W]`` with the padding put back exactly (see the module docstring)."""
    from metasr.scanners.base import grid_map

    padding = getattr(scan, "padding", None)
    if padding is None:
        return pixels
    _, height, width = pixels.shape
    gmap = grid_map(info, scan.size, (height, width))
    rows = nearest_indices(scan.size[0], height, *gmap.row)
    cols = nearest_indices(scan.size[1], width, *gmap.col)
    mask = padding.mask[:, rows][:, :, cols]
    out = pixels.copy()
    inside = (out >= padding.low) & (out <= padding.high) & ~mask
    if inside.any():
        info_range = np.iinfo(out.dtype) if np.issubdtype(out.dtype, np.integer) else None
        above, below = padding.high + 1, padding.low - 1
        can_above = info_range is None or above <= info_range.max
        can_below = info_range is None or below >= info_range.min
        values = out[inside].astype(np.int64)
        go_up = (above - values <= values - below) if can_above and can_below else np.full(values.shape, can_above)
        out[inside] = np.where(go_up, above, below).astype(out.dtype)
    out[mask] = padding.value
    return out
