"""The derived (super-resolved) DICOM image: pixels, identity, provenance, encoding.

Identity (a PACS must accept a rerun without duplicates)
    SOP Instance UID and Series Instance UID are derived deterministically from the source
    instance / series, the exact scale and the model id, so rerunning gives identical UIDs and
    all slices of one series processed alike land in one derived series. The derived Series
    Number is the source's plus :data:`SERIES_NUMBER_OFFSET` (``SERIES_NUMBER_OFFSET`` alone when
    the source has none). Series Description keeps the source's text and adds the super-resolution
    note, within 64 characters (the source's part is shortened, never the note).

Provenance
    Image Type ``DERIVED\\SECONDARY`` (Frame Types alike); Derivation Description and Derivation
    Code Sequence are appended to (an earlier 113040 "Lossy Compression" stays, 113085 "Spatial
    resampling" follows); a Source Image Sequence points at the input; a Contributing Equipment
    item names metasr, its version and the model. Overlay planes (60xx groups) do not follow a new
    pixel grid: they are dropped and a note says so. Smallest/Largest pixel values are dropped.

Encoding
    Compressed or big-endian inputs are written as Explicit VR Little Endian; implicit/explicit
    little-endian inputs keep their transfer syntax. Colour is written as uncompressed RGB.
"""

from __future__ import annotations

import copy
import datetime as _dt
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from metasr.core.errors import InputError
from metasr.scanners.base import DerivationInfo, describe_error, grid_scale, spacing_factors
from metasr.scanners.dicom_geometry import first_item, rescale_geometry
from metasr.scanners.intensity import merge_luma

if TYPE_CHECKING:
    from metasr.scanners.dicom import DicomScan

__all__ = [
    "DERIVATION_CODE",
    "SERIES_NUMBER_OFFSET",
    "encode_derived",
    "derived_instance_uid",
    "derived_series_uid",
    "derived_series_number",
    "derived_series_description",
]

#: (code value, coding scheme, meaning) of the derivation recorded in the output.
DERIVATION_CODE = ("113085", "DCM", "Spatial resampling")
#: Added to the source's Series Number to number the derived series.
SERIES_NUMBER_OFFSET = 1000
_SOURCE_PURPOSE = ("121322", "DCM", "Source image for image processing operation")
_EQUIPMENT_PURPOSE = ("109102", "DCM", "Processing Equipment")
_DROPPED = (
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
)
_MAX_IS = 2**31 - 1


def _code_item(code: tuple[str, str, str]):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def _scale_key(info: DerivationInfo) -> str:
    return str(info.exact_scale) if info.exact_scale is not None else str(info.scale)


def derived_series_uid(source_series: str, info: DerivationInfo) -> str:
    """Series Instance UID of the derived series (deterministic in source series, scale and model)."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["metasr-derived", source_series, info.model_id, _scale_key(info)]))


def derived_instance_uid(source_instance: str, info: DerivationInfo) -> str:
    """SOP Instance UID of a derived instance (deterministic in source instance, scale and model)."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["metasr-derived-instance", source_instance, info.model_id, _scale_key(info)]))


def derived_series_number(source_number) -> int:
    """The source's Series Number plus :data:`SERIES_NUMBER_OFFSET` (the offset alone without one)."""
    try:
        number = int(source_number)
    except (TypeError, ValueError):
        number = 0
    number = max(number, 0) + SERIES_NUMBER_OFFSET
    return number if number <= _MAX_IS else SERIES_NUMBER_OFFSET


def derived_series_description(source: str, info: DerivationInfo) -> str:
    """The source's description followed by the super-resolution note, at most 64 characters."""
    note = f"metasr x{info.scale} SR, not for primary diagnosis"
    if len(note) > 64:
        note = "metasr SR, not for primary diagnosis"
    source = " ".join(str(source or "").split())
    room = 64 - len(note) - 2
    if not source or room < 1:
        return note
    return f"{source[:room].rstrip()}; {note}"


def _drop_overlays(ds) -> bool:
    tags = [elem.tag for elem in ds if 0x6000 <= elem.tag.group <= 0x601E and elem.tag.group % 2 == 0]
    for tag in tags:
        del ds[tag]
    return bool(tags)


def _mark_frame_types_derived(ds) -> None:
    """Enhanced multi-frame images repeat Image Type per frame as Frame Type; keep them consistent."""
    groups = list(ds.get("PerFrameFunctionalGroupsSequence", []) or [])
    shared = first_item(ds, "SharedFunctionalGroupsSequence")
    if shared is not None:
        groups.append(shared)
    for group in groups:
        for elem in group:
            if elem.VR != "SQ" or not elem.keyword.endswith("FrameTypeSequence"):
                continue
            for item in elem.value:
                if item.get("FrameType"):
                    item.FrameType = ["DERIVED", "SECONDARY", *[str(v) for v in list(item.FrameType)[2:]]]


def _set_pixels(scan: DicomScan, ds, sr: np.ndarray, info: DerivationInfo) -> None:
    """Stored values in the input's bit depth and units, as the new Pixel Data."""
    from pydicom.dataelem import DataElement

    bits_allocated = int(ds.BitsAllocated)
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    stored = np.dtype(f"<{'i' if signed else 'u'}{bits_allocated // 8}")
    if scan.chroma is None:
        pixels = scan.stored_values(sr, info)
    else:
        pixels = scan.intensity.from_unit(merge_luma(sr, scan.chroma, scale=info.exact_scale))
        ds.PhotometricInterpretation = "RGB"  # decoders hand us RGB; it is written uncompressed
        ds.PlanarConfiguration = 0
    raw = np.ascontiguousarray(pixels.astype(stored)).tobytes()
    if len(raw) % 2:
        raw += b"\x00"
    for keyword in (*_DROPPED, "PixelData"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.Rows, ds.Columns = sr.shape[1], sr.shape[2]
    ds["PixelData"] = DataElement(0x7FE00010, "OB" if bits_allocated <= 8 else "OW", raw)


def _set_identity(scan: DicomScan, ds, info: DerivationInfo) -> None:
    src = scan.dataset
    old_sop = str(src.get("SOPInstanceUID", "") or "") or f"file:{scan.path.resolve()}"
    old_series = str(src.get("SeriesInstanceUID", "") or "") or old_sop
    ds.SOPInstanceUID = derived_instance_uid(old_sop, info)
    ds.SeriesInstanceUID = derived_series_uid(old_series, info)
    ds.SeriesNumber = derived_series_number(src.get("SeriesNumber"))
    ds.SeriesDescription = derived_series_description(src.get("SeriesDescription", ""), info)
    now = _dt.datetime.now()
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    old_type = list(src.get("ImageType", [])) if "ImageType" in src else []
    ds.ImageType = ["DERIVED", "SECONDARY", *[str(v) for v in old_type[2:]]]
    _mark_frame_types_derived(ds)


def _record_derivation(scan: DicomScan, ds, info: DerivationInfo, new_size: tuple[int, int]) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    src = scan.dataset
    (old_h, old_w), (height, width) = scan.size, new_size
    text = (
        f"Super-resolved by metasr {info.software_version} (model {info.model_name}, id {info.model_id}) at scale"
        f" {info.scale}: {old_w}x{old_h} -> {width}x{height} pixels. Not for primary diagnosis."
    )
    earlier = " ".join(str(src.get("DerivationDescription", "") or "").split())
    if earlier:
        room = 1024 - len(text) - 2
        text = f"{earlier[:room]}; {text}" if room > 0 else text
    ds.DerivationDescription = text[:1024]
    codes = [copy.deepcopy(item) for item in src.get("DerivationCodeSequence", []) or []]
    if not any(item.get("CodeValue") == DERIVATION_CODE[0] for item in codes):
        codes.append(_code_item(DERIVATION_CODE))
    ds.DerivationCodeSequence = Sequence(codes)
    source = Dataset()
    source.ReferencedSOPClassUID = src.SOPClassUID
    source.ReferencedSOPInstanceUID = str(src.get("SOPInstanceUID", "") or "")
    source.PurposeOfReferenceCodeSequence = Sequence([_code_item(_SOURCE_PURPOSE)])
    ds.SourceImageSequence = Sequence([source])
    equipment = Dataset()
    equipment.Manufacturer = "metasr"
    equipment.ManufacturerModelName = str(info.model_name)[:64]
    equipment.SoftwareVersions = str(info.software_version)[:64]
    equipment.ContributionDateTime = _dt.datetime.now().strftime("%Y%m%d%H%M%S")
    equipment.ContributionDescription = (
        f"Super-resolution (Meta-SRGAN) at scale {info.scale}; model id {info.model_id}"
    )[:1024]
    equipment.PurposeOfReferenceCodeSequence = Sequence([_code_item(_EQUIPMENT_PURPOSE)])
    previous = list(src.get("ContributingEquipmentSequence", []) or [])
    ds.ContributingEquipmentSequence = Sequence([*copy.deepcopy(previous), equipment])


def _encode(scan: DicomScan, ds) -> bytes:
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    ts = scan.transfer_syntax
    out_ts = ts if ts in (ImplicitVRLittleEndian, ExplicitVRLittleEndian) else ExplicitVRLittleEndian
    meta = getattr(ds, "file_meta", None) or pydicom.dataset.FileMetaDataset()
    meta.TransferSyntaxUID = out_ts
    meta.MediaStorageSOPClassUID = scan.dataset.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta = meta
    buf = io.BytesIO()
    try:
        pydicom.dcmwrite(
            buf, ds, implicit_vr=out_ts == ImplicitVRLittleEndian, little_endian=True, enforce_file_format=True
        )
    except Exception as e:  # a header value pydicom reads but cannot encode again
        raise InputError(
            f"{scan.path.name}: the derived DICOM cannot be encoded ({type(e).__name__}: {describe_error(e)});"
            " the input's header holds a value pydicom cannot write back, repair it (e.g. dcmodify) first"
        ) from e
    return buf.getvalue()


def encode_derived(scan: DicomScan, sr: np.ndarray, out: Path, info: DerivationInfo) -> bytes:
    """The derived DICOM file's bytes for checked frames ``sr`` (float32 ``[F, H, W]`` in [0, 1])."""
    ds = copy.deepcopy(scan.dataset)
    # Convert every element that is still raw: a body read as implicit VR (some files declare an
    # explicit syntax but are implicit inside) leaves raw elements without a VR, which an
    # explicit-VR writer cannot encode; conversion takes the VR from the dictionary.
    for _ in ds.iterall():
        pass
    new_size = (int(sr.shape[1]), int(sr.shape[2]))
    _set_pixels(scan, ds, sr, info)
    f_row, f_col = spacing_factors(scan.size, new_size, grid_scale(info, scan.size, new_size))
    rescale_geometry(ds, f_row, f_col, new_size)
    if _drop_overlays(ds):
        note = f"{scan.path.name}: overlay planes (60xx) dropped; they do not follow the new pixel grid"
        if note not in scan.notes:
            scan.notes.append(note)
    _set_identity(scan, ds, info)
    _record_derivation(scan, ds, info, new_size)
    return _encode(scan, ds)
