"""Geometry of DICOM images: reading pixel spacing (validated) and moving it onto a resampled grid.

A derived image's grid follows the network's pixels: output pixel ``i`` shows input coordinate
``(i + 0.5) / r - 0.5``. With ``f = new_spacing / old_spacing`` per axis (exactly ``1/r``),
Pixel Spacing (and Imager/Nominal Scanned Pixel Spacing, and the enhanced functional groups'
Pixel Measures) is multiplied by ``f``; Image Position (Patient), the centre of the first pixel,
moves by ``(f - 1) / 2`` of an old pixel along the row and column directions, so the outer
top-left corner of the field of view stays where it was. Ultrasound calibration regions (pixel
bounds, reference pixel, physical size per pixel) are mapped onto the new grid the same way.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from metasr.core.errors import InputError

__all__ = ["spacing_of", "rescale_geometry", "first_item", "ultrasound_spacing"]

_TAGS = {
    "ImagePositionPatient": "(0020,0032)",
    "ImageOrientationPatient": "(0020,0037)",
    "PixelSpacing": "(0028,0030)",
    "ImagerPixelSpacing": "(0018,1164)",
    "NominalScannedPixelSpacing": "(0018,2010)",
}


def _ds(value: float) -> object:
    from pydicom.valuerep import DSfloat

    return DSfloat(float(value), auto_format=True)


def first_item(item, keyword):
    """First item of sequence ``keyword`` in ``item`` (``None`` when absent or empty)."""
    seq = item.get(keyword) if item is not None else None
    return seq[0] if seq else None


def _raw_text(item, keyword) -> str:
    try:
        value = item[keyword].value
    except Exception:  # a value pydicom cannot convert: show the raw bytes
        raw = item.get_item(keyword)
        value = getattr(raw, "value", b"")
    if isinstance(value, bytes):
        return value.decode("latin-1", "replace")
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _numbers(item, keyword) -> list[float] | None:
    """The element's values as floats: ``None`` when absent or empty, ``[]`` when not all numeric."""
    if item is None or keyword not in item:
        return None
    try:
        value = item[keyword].value
    except Exception:  # pydicom may refuse to convert a malformed DS
        return []
    if value is None or value == "" or (isinstance(value, (bytes, list, tuple)) and len(value) == 0):
        return None
    values = [value] if isinstance(value, (str, bytes, int, float)) else list(value)
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        return []


def _checked_spacing(item, keyword: str, name: str) -> tuple[float, float] | None:
    """A spacing element as two positive finite floats; ``None`` when absent or empty."""
    numbers = _numbers(item, keyword)
    if numbers is None:
        return None
    if len(numbers) != 2 or not all(math.isfinite(v) and v > 0 for v in numbers):
        tag = _TAGS.get(keyword, keyword)
        raise InputError(
            f"{name}: {keyword} {tag} is {_raw_text(item, keyword)[:60]!r}; it must be two positive finite numbers"
            f' (mm between rows, between columns); correct or remove it (e.g. dcmodify -m "{tag}=0.5\\0.5")'
            " and retry"
        )
    return numbers[0], numbers[1]


def _check_plane(item, name: str) -> None:
    """Image Position (3 finite numbers) and Orientation (6 finite, two non-zero directions), if present."""
    for keyword, count in (("ImagePositionPatient", 3), ("ImageOrientationPatient", 6)):
        numbers = _numbers(item, keyword)
        if numbers is None:
            continue
        ok = len(numbers) == count and all(math.isfinite(v) for v in numbers)
        if ok and count == 6:
            ok = math.hypot(*numbers[:3]) > 0 and math.hypot(*numbers[3:]) > 0
        if not ok:
            what = "six finite numbers (two non-zero direction vectors)" if count == 6 else "three finite numbers"
            raise InputError(
                f"{name}: {keyword} {_TAGS[keyword]} is {_raw_text(item, keyword)[:60]!r}; it must be {what};"
                " correct or remove it (e.g. dcmodify) and retry"
            )


def spacing_of(ds, name: str) -> tuple[float, float] | None:
    """``(row_mm, col_mm)`` of a dataset, validating every spacing, position and orientation it holds.

    Raises:
        InputError: naming the element when a spacing is not two positive finite numbers, a
            position not three finite numbers or an orientation not six.
    """
    found = None
    for keyword in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"):
        spacing = _checked_spacing(ds, keyword, name)
        found = found or (spacing if keyword != "NominalScannedPixelSpacing" else None)
    _check_plane(ds, name)
    groups = [first_item(ds, "SharedFunctionalGroupsSequence"), *(ds.get("PerFrameFunctionalGroupsSequence") or [])]
    for group in groups:
        spacing = _checked_spacing(first_item(group, "PixelMeasuresSequence"), "PixelSpacing", name)
        found = found or spacing
        _check_plane(first_item(group, "PlanePositionSequence"), name)
        _check_plane(first_item(group, "PlaneOrientationSequence"), name)
    return found or ultrasound_spacing(ds)


#: Physical Units X/Y Direction code for centimetres (PS3.3 C.8.5.5.1.15).
_CM = 3


def ultrasound_spacing(ds) -> tuple[float, float] | None:
    """``(row_mm, col_mm)`` of the first calibrated 2D ultrasound region (both axes in cm), else ``None``.

    Ultrasound images carry their calibration as regions (Physical Delta X/Y per pixel) instead of
    Pixel Spacing; the first 2D tissue region in centimetres gives the pixel size.
    """
    for region in ds.get("SequenceOfUltrasoundRegions", []) or []:
        try:
            spatial = int(region.get("RegionSpatialFormat", 0) or 0)
            units = (
                int(region.get("PhysicalUnitsXDirection", 0) or 0),
                int(region.get("PhysicalUnitsYDirection", 0) or 0),
            )
            dx, dy = float(region.get("PhysicalDeltaX")), float(region.get("PhysicalDeltaY"))
        except (TypeError, ValueError):
            continue
        if spatial == 1 and units == (_CM, _CM) and all(math.isfinite(v) and v > 0 for v in (dx, dy)):
            return abs(dy) * 10.0, abs(dx) * 10.0
    return None


def _direction_cosines(item) -> tuple[np.ndarray, np.ndarray] | None:
    iop = item.get("ImageOrientationPatient") if item is not None else None
    if iop is None or len(iop) != 6:
        return None
    v = np.asarray([float(x) for x in iop], dtype=np.float64)
    if not np.isfinite(v).all():
        return None
    return v[:3], v[3:]


def _shifted_position(ipp, cosines, old_spacing, b_row: float, b_col: float) -> list:
    """Centre of the first pixel after resampling: ``b`` old pixels along each in-plane direction.

    With the outer top-left corner kept (``--grid corner``), the corner sits half an old pixel
    before the first centre and the new first centre half a *new* pixel from it: ``b = (f - 1) / 2``.
    With the first centre kept (``--grid center``) ``b = 0``.
    """
    row_dir, col_dir = cosines
    row_mm, col_mm = float(old_spacing[0]), float(old_spacing[1])
    shift = float(b_col) * col_mm * row_dir + float(b_row) * row_mm * col_dir
    return [_ds(float(p) + s) for p, s in zip(ipp, shift)]


def _times(value, factor) -> float:
    """``value * factor`` computed on the decimal text of ``value`` (0.9 / (9/5) gives exactly 0.5)."""
    try:
        return float(Fraction(str(value).strip()) * Fraction(factor))
    except (ValueError, ZeroDivisionError):
        return float(value) * float(factor)


def _scaled(spacing, f_row, f_col) -> list:
    return [_ds(_times(spacing[0], f_row)), _ds(_times(spacing[1], f_col))]


def _move_plane(measures_spacing, position, orientation, b_row: float, b_col: float) -> None:
    cos = _direction_cosines(orientation)
    if position is not None and measures_spacing is not None and cos is not None:
        ipp = position.get("ImagePositionPatient")
        if ipp is not None and len(ipp) == 3:
            position.ImagePositionPatient = _shifted_position(ipp, cos, measures_spacing, b_row, b_col)


def rescale_geometry(
    ds, f_row: float, f_col: float, new_size: tuple[int, int], offsets: tuple[float, float] | None = None
) -> None:
    """Multiply pixel spacings by ``f = new/old`` per axis and move positions, keeping the outer corner.

    ``new_size`` is ``(rows, columns)`` of the new grid (ultrasound region bounds stay inside it).
    ``offsets`` is ``(row, col)``: the old pixel coordinate of the first new pixel's centre;
    default ``(f - 1) / 2`` (the outer corner kept), ``(0, 0)`` keeps the first centre.
    """
    b_row, b_col = offsets if offsets is not None else ((float(f_row) - 1) / 2, (float(f_col) - 1) / 2)
    old_spacing = ds.get("PixelSpacing")
    if old_spacing is not None and len(old_spacing) == 2:
        _move_plane(old_spacing, ds, ds, b_row, b_col)
        ds.PixelSpacing = _scaled(old_spacing, f_row, f_col)
    for keyword in ("ImagerPixelSpacing", "NominalScannedPixelSpacing"):
        if ds.get(keyword) is not None and len(ds.get(keyword)) == 2:
            setattr(ds, keyword, _scaled(ds.get(keyword), f_row, f_col))
    _rescale_us_regions(ds, (1.0 / float(f_row), float(b_row)), (1.0 / float(f_col), float(b_col)), new_size)

    # Enhanced multi-frame: per-frame groups override shared ones.
    shared = first_item(ds, "SharedFunctionalGroupsSequence")
    shared_measures = first_item(shared, "PixelMeasuresSequence")
    shared_orient = first_item(shared, "PlaneOrientationSequence")
    shared_spacing = shared_measures.get("PixelSpacing") if shared_measures is not None else None
    for group in list(ds.get("PerFrameFunctionalGroupsSequence", []) or []):
        measures = first_item(group, "PixelMeasuresSequence")
        spacing = measures.get("PixelSpacing") if measures is not None else None
        spacing = spacing if spacing is not None else shared_spacing
        orient = first_item(group, "PlaneOrientationSequence") or shared_orient
        _move_plane(spacing, first_item(group, "PlanePositionSequence"), orient, b_row, b_col)
        if measures is not None and measures.get("PixelSpacing") is not None:
            measures.PixelSpacing = _scaled(measures.PixelSpacing, f_row, f_col)
    if shared is not None:
        _move_plane(shared_spacing, first_item(shared, "PlanePositionSequence"), shared_orient, b_row, b_col)
        if shared_spacing is not None:
            shared_measures.PixelSpacing = _scaled(shared_spacing, f_row, f_col)


def _rescale_region_axis(region, axis: str, g: float, b: float, length: int) -> None:
    """One axis of an ultrasound region on a grid with ``g`` new pixels per old pixel whose first
    centre lies at old coordinate ``b`` (old coordinate ``x`` is new coordinate ``(x - b) g``).

    Bounds: the new pixels whose centres lie inside the old region's outer edges. Reference
    pixel: the new pixel nearest the old one, its physical value corrected for the distance
    between the two centres, so the calibration stays exact.
    """
    lo, hi, ref, delta, value = (
        f"RegionLocationMin{axis}0",
        f"RegionLocationMax{axis}1",
        f"ReferencePixel{axis}0",
        f"PhysicalDelta{axis}",
        f"ReferencePixelPhysicalValue{axis}",
    )
    old_lo = int(region.get(lo) or 0)
    new_lo = max(int(np.ceil((old_lo - 0.5 - b) * g - 1e-9)), 0)  # first new centre inside the old edge
    if region.get(lo) is not None:
        setattr(region, lo, new_lo)
    if region.get(hi) is not None:
        last = min(int(np.floor((int(region.get(hi)) + 0.5 - b) * g + 1e-9)), length - 1)
        setattr(region, hi, max(last, new_lo))
    old_delta = float(region.get(delta)) if region.get(delta) is not None else None
    if region.get(ref) is not None:
        old_ref = old_lo + int(region.get(ref))  # absolute old index of the reference pixel
        new_ref = int(round((old_ref - b) * g))
        setattr(region, ref, new_ref - new_lo)
        if old_delta is not None and region.get(value) is not None:
            moved = new_ref / g + b - old_ref  # old pixels between the two centres
            setattr(region, value, float(region.get(value)) + moved * old_delta)
    if old_delta is not None:
        setattr(region, delta, old_delta / g)


def _rescale_us_regions(ds, row: tuple[float, float], col: tuple[float, float], new_size: tuple[int, int]) -> None:
    """Ultrasound calibration regions are given in pixel indices: map them to the new grid.

    ``row``/``col`` are ``(g, b)``: new pixels per old pixel, old coordinate of the first new centre.
    """
    for region in ds.get("SequenceOfUltrasoundRegions", []) or []:
        _rescale_region_axis(region, "X", col[0], col[1], new_size[1])
        _rescale_region_axis(region, "Y", row[0], row[1], new_size[0])
