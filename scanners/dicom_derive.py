"""The derived (super-resolved) DICOM image: pixels, identity, provenance, encoding.

Identity (a PACS must accept a rerun without duplicates, and never one UID for two images)
    SOP Instance UID and Series Instance UID are derived deterministically from the source
    instance / series and everything that decides the pixels (:func:`derivation_key`: model id,
    exact scale, grid, precision and other runtime settings, the stored-value window), so a rerun
    gives identical UIDs, all slices of one series processed alike land in one derived series, and
    any change that changes pixels gives new UIDs. The derived Series Number is the source's plus
    ``1000 k`` with ``k`` (1..999) from the same key, so two derivations of one series are told
    apart. Series Date/Time, Content Date/Time and Instance Creation Date/Time are the
    derivation's. Series Description keeps the source's text and adds the super-resolution note,
    within 64 characters (the source's part is shortened, never the note).

Provenance
    Image Type ``DERIVED\\SECONDARY`` (enhanced CT/MR/PET: ``DERIVED\\PRIMARY``, value 2 may only be
    PRIMARY there; Frame Types alike); Derivation Description and Derivation Code Sequence are
    appended to (an earlier 113040 "Lossy Compression" stays, 113085 "Spatial resampling"
    follows); a Source Image Sequence points at the input (enhanced IODs: all three per frame in
    the Derivation Image functional group, the source listed in Referenced Series Sequence); a
    Contributing Equipment item names metasr, its version and the model. Overlay planes (60xx
    groups) do not follow a new pixel grid: they are dropped and a note says so.
    Smallest/Largest pixel values are dropped. Pixel Padding Value / Range Limit are kept exactly
    (:mod:`metasr.scanners.dicom_padding`).

Encoding
    See :mod:`metasr.scanners.dicom_encoding` (own file meta, ``--compress``, lossy history).
    Colour (RGB, YBR, palette) is written as RGB.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from metasr.core.errors import InputError, OutputError
from metasr.scanners.base import DerivationInfo, describe_error, grid_map, planes_on_grid
from metasr.scanners.dicom_encoding import (
    Compression,
    compress_pixels,
    file_meta,
    output_syntax,
    record_lossy_history,
)
from metasr.scanners.dicom_geometry import first_item, rescale_geometry
from metasr.scanners.dicom_padding import restore_padding
from metasr.scanners.intensity import merge_luma

if TYPE_CHECKING:
    from metasr.scanners.dicom import DicomScan

__all__ = [
    "DERIVATION_CODE",
    "SERIES_NUMBER_OFFSET",
    "encode_derived",
    "derivation_key",
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
_UID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
#: Enhanced MR attributes that describe an acquisition and may only be present in ORIGINAL or MIXED
#: images (MR Pulse Sequence and Bulk Motion Synchronization modules, as dciodvfy checks them); a
#: derived image drops them (the source instance, referenced, still has them).
_MR_ORIGINAL_ONLY = (
    "PulseSequenceName",
    "MRAcquisitionType",
    "EchoPulseSequence",
    "MultipleSpinEcho",
    "MultiPlanarExcitation",
    "PhaseContrast",
    "VelocityEncodingAcquisitionSequence",
    "TimeOfFlightContrast",
    "ArterialSpinLabelingContrast",
    "SteadyStatePulseSequence",
    "EchoPlanarPulseSequence",
    "SaturationRecovery",
    "SpectrallySelectedSuppression",
    "OversamplingPhase",
    "GeometryOfKSpaceTraversal",
    "RectilinearPhaseEncodeReordering",
    "SegmentedKSpaceTraversal",
    "CoverageOfKSpace",
    "NumberOfKSpaceTrajectories",
    "BulkMotionCompensationTechnique",
    "BulkMotionSignalSource",
)
#: Enhanced IODs whose Image/Frame Type value 2 is PRIMARY only (PS3.3 C.8.13.1.1.1, C.8.15.2, C.8.22).
_PRIMARY_ONLY = re.compile(r"Enhanced (CT|MR|PET)|Legacy Converted Enhanced")


def _code_item(code: tuple[str, str, str]):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def _scale_key(info: DerivationInfo) -> str:
    return str(info.exact_scale) if info.exact_scale is not None else str(info.scale)


def derivation_key(info: DerivationInfo, window=None) -> list[str]:
    """Everything that decides the derived pixels, as text: model id, exact scale, grid, the
    runtime's pixel settings (precision, noise...) and the stored-value window mapped to [0, 1].

    The one source of the derived UIDs and series number: two derivations that differ in any of
    these are different images and get different instance and series UIDs.
    """
    grid = getattr(info.grid, "value", info.grid)
    parts = [info.model_id, _scale_key(info), f"grid={grid}"]
    parts += [f"{name}={value}" for name, value in sorted(info.pixel_settings)]
    if window is not None:
        parts.append(f"window={float(window.low)!r}..{float(window.high)!r}")
    return parts


def derived_series_uid(source_series: str, info: DerivationInfo, window=None) -> str:
    """Series Instance UID of the derived series (deterministic in the source series and :func:`derivation_key`)."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["metasr-derived", source_series, *derivation_key(info, window)]))


def derived_instance_uid(source_instance: str, info: DerivationInfo, window=None) -> str:
    """SOP Instance UID of a derived instance (deterministic in the source instance and :func:`derivation_key`)."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["metasr-derived-instance", source_instance, *derivation_key(info, window)]))


def derived_series_number(source_number, key: list[str] | None = None) -> int:
    """The source's Series Number plus a multiple of :data:`SERIES_NUMBER_OFFSET` chosen by the derivation.

    ``source + 1000 * k`` with ``k`` in 1..999 from a hash of ``key`` (:func:`derivation_key`):
    a rerun gets the same number, two derivations of one series (x1.8 and x2) different ones
    (unless their hashes meet, 1 in 999), and the source's number stays readable in the last digits.
    """
    try:
        number = int(source_number)
    except (TypeError, ValueError):
        number = 0
    k = 1 + int(hashlib.sha256("|".join(key or []).encode()).hexdigest()[:12], 16) % 999 if key else 1
    number = max(number, 0) + SERIES_NUMBER_OFFSET * k
    return number if number <= _MAX_IS else SERIES_NUMBER_OFFSET * k


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


def _functional_groups(ds) -> list:
    """Every per-frame functional group item, then the shared one (empty for classic IODs)."""
    groups = list(ds.get("PerFrameFunctionalGroupsSequence", []) or [])
    shared = first_item(ds, "SharedFunctionalGroupsSequence")
    return groups + ([shared] if shared is not None else [])


def is_enhanced(ds) -> bool:
    """An enhanced (functional-group) multi-frame image: its derivation goes into the functional groups."""
    name = str(getattr(ds.get("SOPClassUID"), "name", ""))
    groups = "SharedFunctionalGroupsSequence" in ds or "PerFrameFunctionalGroupsSequence" in ds
    return groups or bool(_PRIMARY_ONLY.search(name))


def _derived_type(values, value2: str) -> list[str]:
    return ["DERIVED", value2, *[str(v) for v in list(values or [])[2:]]]


def mark_derived_types(ds) -> None:
    """Image Type ``DERIVED\\SECONDARY``; enhanced CT/MR/PET (where value 2 may only be PRIMARY,
    "secondary" being a property of the IOD, not of the frames) ``DERIVED\\PRIMARY``, Frame Types alike."""
    enhanced = _PRIMARY_ONLY.search(str(getattr(ds.get("SOPClassUID"), "name", "")))
    value2 = "PRIMARY" if enhanced else "SECONDARY"
    if "ImageType" in ds and ds.ImageType:
        ds.ImageType = _derived_type(ds.ImageType, value2)
    else:
        ds.ImageType = ["DERIVED", value2]
    for group in _functional_groups(ds):
        for elem in group:
            if elem.VR != "SQ" or not elem.keyword.endswith("FrameTypeSequence"):
                continue
            for item in elem.value:
                if item.get("FrameType"):
                    item.FrameType = _derived_type(item.FrameType, value2)


def _set_pixels(scan: DicomScan, ds, sr: np.ndarray, info: DerivationInfo) -> np.ndarray:
    """Stored values in the input's bit depth and units, as the new (uncompressed) Pixel Data; returns them."""
    from pydicom.dataelem import DataElement

    bits_allocated = int(ds.BitsAllocated)
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    stored = np.dtype(f"<{'i' if signed else 'u'}{bits_allocated // 8}")
    if scan.chroma is None:
        pixels = scan.stored_values(sr, info)
        pixels = restore_padding(scan, pixels, info)
    else:
        chroma = planes_on_grid(scan.chroma, sr.shape[1], sr.shape[2], info, scan.size)
        pixels = scan.intensity.from_unit(merge_luma(sr, chroma, scale=info.exact_scale))
        ds.PhotometricInterpretation = "RGB"  # decoders hand us RGB (YBR and palette colour included)
        ds.PlanarConfiguration = 0
    pixels = np.ascontiguousarray(pixels.astype(stored))
    raw = pixels.tobytes()
    if len(raw) % 2:
        raw += b"\x00"
    for keyword in (*_DROPPED, "PixelData"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.Rows, ds.Columns = sr.shape[1], sr.shape[2]
    ds["PixelData"] = DataElement(0x7FE00010, "OB" if bits_allocated <= 8 else "OW", raw)
    return pixels


def _created(info: DerivationInfo) -> _dt.datetime:
    return info.created or _dt.datetime.now()


def _set_identity(scan: DicomScan, ds, info: DerivationInfo) -> None:
    src = scan.dataset
    window = scan.intensity.window
    key = derivation_key(info, window)
    old_sop = str(src.get("SOPInstanceUID", "") or "") or f"file:{scan.path.resolve()}"
    old_series = str(src.get("SeriesInstanceUID", "") or "") or old_sop
    ds.SOPInstanceUID = derived_instance_uid(old_sop, info, window)
    ds.SeriesInstanceUID = derived_series_uid(old_series, info, window)
    ds.SeriesNumber = derived_series_number(src.get("SeriesNumber"), key)
    ds.SeriesDescription = derived_series_description(src.get("SeriesDescription", ""), info)
    created = _created(info)
    date, time = created.strftime("%Y%m%d"), created.strftime("%H%M%S")
    # The derived series was made now: its series and content dates are the derivation's
    # (acquisition and study dates stay the source's).
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.ContentDate, ds.ContentTime = date, time
    mark_derived_types(ds)


def _is_uid(value) -> bool:
    return bool(value) and len(str(value)) <= 64 and _UID.fullmatch(str(value)) is not None


def _derivation_text(scan: DicomScan, info: DerivationInfo, new_size: tuple[int, int], earlier) -> str:
    (old_h, old_w), (height, width) = scan.size, new_size
    grid = getattr(info.grid, "value", info.grid)
    settings = dict(info.pixel_settings)
    ensemble = settings.get("ensemble")
    how = f", self-ensemble {ensemble} (mean of the image's orientations)" if ensemble else ""
    if settings.get("data-consistency"):
        how += ", k-space data consistency (the acquired k-space kept)"
    text = (
        f"Super-resolved by metasr {info.software_version} (model {info.model_name}, id {info.model_id}) at scale"
        f" {info.scale}: {old_w}x{old_h} -> {width}x{height} pixels, {grid} grid{how}. Not for primary diagnosis."
    )
    earlier = " ".join(str(earlier or "").split())
    if earlier:
        room = 1024 - len(text) - 2
        text = f"{earlier[:room]}; {text}" if room > 0 else text
    return text[:1024]


def _derivation_codes(earlier):
    from pydicom.sequence import Sequence

    codes = [copy.deepcopy(item) for item in earlier or []]
    if not any(item.get("CodeValue") == DERIVATION_CODE[0] for item in codes):
        codes.append(_code_item(DERIVATION_CODE))
    return Sequence(codes)


def _source_item(src, frame: int | None = None):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    source = Dataset()
    source.ReferencedSOPClassUID = src.SOPClassUID
    source.ReferencedSOPInstanceUID = str(src.get("SOPInstanceUID", "") or "")
    if frame is not None:
        source.ReferencedFrameNumber = frame
    source.PurposeOfReferenceCodeSequence = Sequence([_code_item(_SOURCE_PURPOSE)])
    return source


def _record_enhanced_derivation(scan: DicomScan, ds, info: DerivationInfo, new_size: tuple[int, int]) -> None:
    """Enhanced IODs: derivation per frame, in the Derivation Image functional group (PS3.3 C.7.6.16.2.6),
    with each frame pointing at its source frame; the source is listed in the Common Instance Reference module."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    src = scan.dataset
    for keyword in ("DerivationDescription", "DerivationCodeSequence", "SourceImageSequence"):
        if keyword in ds:
            delattr(ds, keyword)  # not part of the enhanced IODs' top level
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence", []) or [])
    shared = first_item(ds, "SharedFunctionalGroupsSequence")

    targets = list(enumerate(per_frame, start=1)) if per_frame else [(None, shared)]
    shared_old = first_item(shared, "DerivationImageSequence") if shared is not None else None
    for frame, group in targets:
        if group is None:
            continue
        old = first_item(group, "DerivationImageSequence") or shared_old
        item = Dataset()
        earlier = old.get("DerivationDescription") if old else ""
        item.DerivationDescription = _derivation_text(scan, info, new_size, earlier)
        item.DerivationCodeSequence = _derivation_codes(old.get("DerivationCodeSequence") if old else None)
        if _is_uid(src.get("SOPInstanceUID")):
            item.SourceImageSequence = Sequence([_source_item(src, frame)])
        group.DerivationImageSequence = Sequence([item])
    if shared is not None and per_frame and "DerivationImageSequence" in shared:
        del shared.DerivationImageSequence  # a per-frame group of the same kind replaces it
    instance = Dataset()
    instance.ReferencedSOPClassUID = src.SOPClassUID
    instance.ReferencedSOPInstanceUID = str(src.get("SOPInstanceUID", "") or "")
    series = Dataset()
    series.SeriesInstanceUID = str(src.get("SeriesInstanceUID", "") or "")
    series.ReferencedInstanceSequence = Sequence([instance])
    referenced = any(group is not None for _, group in targets)  # a damaged file without groups: nowhere
    if referenced and series.SeriesInstanceUID and _is_uid(instance.ReferencedSOPInstanceUID):
        ds.ReferencedSeriesSequence = Sequence([series])
        evidence_series = Dataset()
        evidence_series.SeriesInstanceUID = series.SeriesInstanceUID
        evidence_series.ReferencedSOPSequence = Sequence([copy.deepcopy(instance)])
        evidence = Dataset()
        evidence.StudyInstanceUID = str(src.get("StudyInstanceUID", "") or "")
        evidence.ReferencedSeriesSequence = Sequence([evidence_series])
        ds.SourceImageEvidenceSequence = Sequence([evidence])
    if "Enhanced MR" in str(getattr(ds.get("SOPClassUID"), "name", "")):
        for keyword in _MR_ORIGINAL_ONLY:
            if keyword in ds:
                delattr(ds, keyword)


def _record_derivation(scan: DicomScan, ds, info: DerivationInfo, new_size: tuple[int, int]) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    src = scan.dataset
    if is_enhanced(ds):
        _record_enhanced_derivation(scan, ds, info, new_size)
    else:
        ds.DerivationDescription = _derivation_text(scan, info, new_size, src.get("DerivationDescription", ""))
        ds.DerivationCodeSequence = _derivation_codes(src.get("DerivationCodeSequence"))
        if _is_uid(src.get("SOPInstanceUID")):  # Type 3: a reference to an invalid UID would be an error
            ds.SourceImageSequence = Sequence([_source_item(src)])
        elif "SourceImageSequence" in ds:
            del ds.SourceImageSequence
    equipment = Dataset()
    equipment.Manufacturer = "metasr"
    equipment.ManufacturerModelName = str(info.model_name)[:64]
    equipment.SoftwareVersions = str(info.software_version)[:64]
    equipment.ContributionDateTime = _created(info).strftime("%Y%m%d%H%M%S")
    equipment.ContributionDescription = (
        f"Super-resolution (Meta-SRGAN) at scale {info.scale}; model {info.model_name} id {info.model_id}"
    )[:1024]
    equipment.PurposeOfReferenceCodeSequence = Sequence([_code_item(_EQUIPMENT_PURPOSE)])
    previous = list(src.get("ContributingEquipmentSequence", []) or [])
    ds.ContributingEquipmentSequence = Sequence([*copy.deepcopy(previous), equipment])


def _encode(scan: DicomScan, ds, pixels: np.ndarray, info: DerivationInfo) -> bytes:
    import pydicom
    from pydicom.uid import UID, ImplicitVRLittleEndian

    out_ts = UID(output_syntax(info.compress, scan.transfer_syntax))
    if out_ts.is_compressed:
        try:
            compress_pixels(ds, out_ts, pixels, scan.path.name)
        except OutputError as e:
            if Compression.parse(info.compress) is not Compression.KEEP:
                raise  # asked for by name: say why it cannot be done
            out_ts = UID(output_syntax(Compression.NONE, scan.transfer_syntax))
            note = f"{scan.path.name}: written uncompressed; {e}"
            if note not in scan.notes:
                scan.notes.append(note)
    ds.file_meta = file_meta(scan.dataset.SOPClassUID, ds.SOPInstanceUID, out_ts, info.software_version)
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
    pixels = _set_pixels(scan, ds, sr, info)
    gmap = grid_map(info, scan.size, new_size)
    rescale_geometry(ds, *gmap.factors, new_size, offsets=gmap.offsets)
    if _drop_overlays(ds):
        note = f"{scan.path.name}: overlay planes (60xx) dropped; they do not follow the new pixel grid"
        if note not in scan.notes:
            scan.notes.append(note)
    _set_identity(scan, ds, info)
    _record_derivation(scan, ds, info, new_size)
    record_lossy_history(ds, scan.lossy)
    return _encode(scan, ds, pixels, info)
