"""DICOM images (pydicom): read frames, write a derived super-resolved image.

Reading
    Single- and multi-frame images, ``MONOCHROME1``/``MONOCHROME2``, signed or unsigned, 8/16/32
    bits, ``RGB``/``YBR_*`` colour (processed on luminance), uncompressed (little or big endian,
    deflated) and the compressed syntaxes that installed decoders handle: RLE natively, JPEG,
    JPEG-LS and JPEG 2000 through pylibjpeg (``pip install "metasr[jpeg]"``). Rows, Columns and
    Number of Frames are checked against the size limits before the pixel data is decoded.

Intensity
    Frames are made from the *stored* values (before Rescale Slope/Intercept), mapped to [0, 1]
    by :class:`~metasr.scanners.intensity.IntensityMap`: by default the data's own minimum and
    maximum over all frames (8-bit unsigned: 0..255). ``MONOCHROME1`` is inverted, so bright
    always means a high value for the network. Writing maps back with the same window, so the
    output's stored values stay in the input's range and bit depth, and the input's Rescale
    Slope/Intercept, Window and Photometric Interpretation keep their meaning; reading and
    writing same-size frames gives back exactly the input's stored values.

Derived image (design.md, "DICOM output of a derived image")
    New SOP Instance UID; a new Series Instance UID derived deterministically from the input
    series, the model and the scale (so all slices of one series processed alike land in one
    derived series); same study, patient and frame of reference. Rows/Columns are the new size;
    Pixel Spacing (and Imager Pixel Spacing, and the functional groups' Pixel Measures) scaled by
    ``old_size / new_size`` per axis so the field of view is preserved; Image Position (Patient)
    moved by half the change of pixel size along the row and column directions, so the outer
    corner of the field of view stays where it was; ultrasound calibration regions (pixel
    indices and physical size per pixel) follow the new grid. Image Type ``DERIVED\\SECONDARY``, a Series
    Description saying "not for primary diagnosis", Derivation Description and Code Sequence
    (113085, DCM, "Spatial resampling"), a Source Image Sequence pointing at the input and a
    Contributing Equipment item naming metasr, its version and the model. Smallest/Largest pixel
    value elements are dropped. Compressed or big-endian inputs are written as Explicit VR Little
    Endian; implicit/explicit little-endian inputs keep their transfer syntax.
"""

from __future__ import annotations

import copy
import datetime as _dt
import io
import os
from pathlib import Path

import numpy as np

from metasr.core.errors import InputError, MetaSRError
from metasr.scanners.base import (
    DICOM_SUFFIXES,
    DerivationInfo,
    ImageFormat,
    ScanImage,
    check_dimensions,
    describe_error,
)
from metasr.scanners.intensity import IntensityMap, IntensityRange, merge_luma, split_luma

__all__ = ["DicomScan", "read_dicom", "DERIVATION_CODE"]

#: (code value, coding scheme, meaning) of the derivation recorded in the output.
DERIVATION_CODE = ("113085", "DCM", "Spatial resampling")
_SOURCE_PURPOSE = ("121322", "DCM", "Source image for image processing operation")
_EQUIPMENT_PURPOSE = ("109102", "DCM", "Processing Equipment")
_COLOUR_PHOTOMETRIC = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT"}
_MONO_PHOTOMETRIC = {"MONOCHROME1", "MONOCHROME2"}
_DROPPED = (
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
)


def _pydicom():
    import pydicom  # a core dependency; imported here to keep `import metasr.scanners` light

    return pydicom


def _code_item(code: tuple[str, str, str]):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def _ds(value: float) -> object:
    from pydicom.valuerep import DSfloat

    return DSfloat(float(value), auto_format=True)


class DicomScan(ScanImage):
    """A DICOM image read by :func:`read_dicom`.

    Attributes:
        dataset: The input's header (pixel data removed), the template of the derived image.
        photometric: The input's Photometric Interpretation.
        transfer_syntax: The input's Transfer Syntax UID.
        chroma: ``[F, h, w, 2]`` chroma planes of a colour image, else ``None``.
    """

    format = ImageFormat.DICOM
    default_suffix = ".dcm"

    def __init__(
        self,
        path: str | os.PathLike,
        frames: np.ndarray,
        intensity: IntensityMap,
        spacing: tuple[float, float] | None,
        dataset,
        photometric: str,
        transfer_syntax: str,
        chroma: np.ndarray | None = None,
    ) -> None:
        super().__init__(path, frames, intensity, spacing)
        self.dataset = dataset
        self.photometric = photometric
        self.transfer_syntax = transfer_syntax
        self.chroma = chroma

    @property
    def is_color(self) -> bool:
        return self.chroma is not None

    def close(self) -> None:
        super().close()
        self.chroma = None

    @property
    def output_suffixes(self) -> tuple[str, ...]:
        return (*DICOM_SUFFIXES, "")  # PACS exports often name files IM0001

    def _encode_derived(self, sr: np.ndarray, out: Path, info: DerivationInfo) -> bytes:
        pydicom = _pydicom()
        from pydicom.dataelem import DataElement
        from pydicom.dataset import Dataset
        from pydicom.sequence import Sequence
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

        src = self.dataset
        ds = copy.deepcopy(src)
        # Convert every element that is still raw: a body read as implicit VR (some files declare an
        # explicit syntax but are implicit inside) leaves raw elements without a VR, which an
        # explicit-VR writer cannot encode; conversion takes the VR from the dictionary.
        for _ in ds.iterall():
            pass
        n_frames, height, width = sr.shape
        old_h, old_w = self.size
        bits_allocated = int(src.BitsAllocated)
        signed = int(src.get("PixelRepresentation", 0)) == 1
        stored = np.dtype(f"<{'i' if signed else 'u'}{bits_allocated // 8}")

        # Pixels, in the input's stored-value space and bit depth.
        if self.chroma is None:
            pixels = self.intensity.from_unit(sr)
        else:
            pixels = self.intensity.from_unit(merge_luma(sr, self.chroma, scale=info.exact_scale))
            ds.PhotometricInterpretation = "RGB"  # decoders hand us RGB; it is written uncompressed
            ds.PlanarConfiguration = 0
        pixels = np.ascontiguousarray(pixels.astype(stored))
        raw = pixels.tobytes()
        if len(raw) % 2:
            raw += b"\x00"
        for keyword in _DROPPED + ("PixelData",):
            if keyword in ds:
                delattr(ds, keyword)
        ds.Rows, ds.Columns = height, width
        ds["PixelData"] = DataElement(0x7FE00010, "OB" if bits_allocated <= 8 else "OW", raw)

        _rescale_geometry(ds, old_h / height, old_w / width)

        # Identity and provenance.
        now = _dt.datetime.now()
        old_sop = str(src.get("SOPInstanceUID", ""))
        old_series = str(src.get("SeriesInstanceUID", old_sop))
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=["metasr-derived", old_series, info.model_id, str(info.scale)])
        ds.InstanceCreationDate = now.strftime("%Y%m%d")
        ds.InstanceCreationTime = now.strftime("%H%M%S")
        old_type = list(src.get("ImageType", [])) if "ImageType" in src else []
        ds.ImageType = ["DERIVED", "SECONDARY", *[str(v) for v in old_type[2:]]]
        _mark_frame_types_derived(ds)
        ds.SeriesDescription = f"metasr x{info.scale} super-resolved; not for primary diagnosis"[:64]
        ds.DerivationDescription = (
            f"Super-resolved by metasr {info.software_version} (model {info.model_name}, id {info.model_id}) at scale"
            f" {info.scale}: {old_w}x{old_h} -> {width}x{height} pixels, field of view preserved. Not for primary"
            " diagnosis."
        )[:1024]
        ds.DerivationCodeSequence = Sequence([_code_item(DERIVATION_CODE)])
        source = Dataset()
        source.ReferencedSOPClassUID = src.SOPClassUID
        source.ReferencedSOPInstanceUID = old_sop
        source.PurposeOfReferenceCodeSequence = Sequence([_code_item(_SOURCE_PURPOSE)])
        ds.SourceImageSequence = Sequence([source])
        equipment = Dataset()
        equipment.Manufacturer = "metasr"
        equipment.ManufacturerModelName = str(info.model_name)[:64]
        equipment.SoftwareVersions = str(info.software_version)[:64]
        equipment.ContributionDateTime = now.strftime("%Y%m%d%H%M%S")
        equipment.ContributionDescription = (
            f"Super-resolution (Meta-SRGAN) at scale {info.scale}; model id {info.model_id}"
        )[:1024]
        equipment.PurposeOfReferenceCodeSequence = Sequence([_code_item(_EQUIPMENT_PURPOSE)])
        previous = list(src.get("ContributingEquipmentSequence", []))
        ds.ContributingEquipmentSequence = Sequence([*copy.deepcopy(previous), equipment])

        # File meta: little-endian uncompressed syntaxes are kept, everything else is made explicit LE.
        ts = self.transfer_syntax
        out_ts = ts if ts in (ImplicitVRLittleEndian, ExplicitVRLittleEndian) else ExplicitVRLittleEndian
        meta = getattr(ds, "file_meta", None) or pydicom.dataset.FileMetaDataset()
        meta.TransferSyntaxUID = out_ts
        meta.MediaStorageSOPClassUID = src.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta = meta
        buf = io.BytesIO()
        try:
            pydicom.dcmwrite(
                buf, ds, implicit_vr=out_ts == ImplicitVRLittleEndian, little_endian=True, enforce_file_format=True
            )
        except Exception as e:  # a header value pydicom reads but cannot encode again
            raise InputError(
                f"{self.path.name}: the derived DICOM cannot be encoded ({type(e).__name__}: {describe_error(e)});"
                " the input's header holds a value pydicom cannot write back, repair it (e.g. dcmodify) first"
            ) from e
        return buf.getvalue()


def _direction_cosines(item) -> tuple[np.ndarray, np.ndarray] | None:
    iop = item.get("ImageOrientationPatient") if item is not None else None
    if iop is None or len(iop) != 6:
        return None
    v = np.asarray([float(x) for x in iop], dtype=np.float64)
    return v[:3], v[3:]


def _shifted_position(ipp, cosines, old_spacing, new_spacing) -> list:
    """Centre of the first pixel after resampling with the field of view's corner kept.

    The corner sits half a pixel before the first centre along the row direction (spacing
    between columns) and the column direction (spacing between rows); the new first centre is
    half a *new* pixel from it.
    """
    row_dir, col_dir = cosines
    shift = 0.5 * (new_spacing[1] - old_spacing[1]) * row_dir + 0.5 * (new_spacing[0] - old_spacing[0]) * col_dir
    return [_ds(float(p) + s) for p, s in zip(ipp, shift)]


def _scaled(spacing, f_row: float, f_col: float) -> list:
    return [_ds(float(spacing[0]) * f_row), _ds(float(spacing[1]) * f_col)]


def _first(item, keyword):
    seq = item.get(keyword) if item is not None else None
    return seq[0] if seq else None


def _rescale_geometry(ds, f_row: float, f_col: float) -> None:
    """Scale pixel spacings by ``f = old/new`` per axis and move positions, keeping the field of view."""
    old_spacing = ds.get("PixelSpacing")
    cosines = _direction_cosines(ds)
    if old_spacing is not None and len(old_spacing) == 2:
        new_spacing = _scaled(old_spacing, f_row, f_col)
        if cosines is not None and ds.get("ImagePositionPatient") is not None:
            ds.ImagePositionPatient = _shifted_position(ds.ImagePositionPatient, cosines, old_spacing, new_spacing)
        ds.PixelSpacing = new_spacing
    for keyword in ("ImagerPixelSpacing", "NominalScannedPixelSpacing"):
        if ds.get(keyword) is not None and len(ds.get(keyword)) == 2:
            setattr(ds, keyword, _scaled(ds.get(keyword), f_row, f_col))

    _rescale_us_regions(ds, 1.0 / f_row, 1.0 / f_col)

    # Enhanced multi-frame: per-frame groups override shared ones.
    shared = _first(ds, "SharedFunctionalGroupsSequence")
    shared_measures = _first(shared, "PixelMeasuresSequence")
    shared_orient = _first(shared, "PlaneOrientationSequence")
    shared_spacing = shared_measures.get("PixelSpacing") if shared_measures is not None else None
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence", []) or [])
    for group in per_frame:
        measures = _first(group, "PixelMeasuresSequence")
        spacing = measures.get("PixelSpacing") if measures is not None else None
        spacing = spacing if spacing is not None else shared_spacing
        position = _first(group, "PlanePositionSequence")
        orient = _first(group, "PlaneOrientationSequence") or shared_orient
        cos = _direction_cosines(orient)
        if position is not None and spacing is not None and cos is not None and position.get("ImagePositionPatient"):
            new = _scaled(spacing, f_row, f_col)
            position.ImagePositionPatient = _shifted_position(position.ImagePositionPatient, cos, spacing, new)
        if measures is not None and measures.get("PixelSpacing") is not None:
            measures.PixelSpacing = _scaled(measures.PixelSpacing, f_row, f_col)
    if shared is not None:
        position = _first(shared, "PlanePositionSequence")
        cos = _direction_cosines(shared_orient)
        has_position = position is not None and position.get("ImagePositionPatient")
        if has_position and shared_spacing is not None and cos is not None:
            new = _scaled(shared_spacing, f_row, f_col)
            position.ImagePositionPatient = _shifted_position(position.ImagePositionPatient, cos, shared_spacing, new)
        if shared_spacing is not None:
            shared_measures.PixelSpacing = _scaled(shared_spacing, f_row, f_col)


def _rescale_us_regions(ds, g_row: float, g_col: float) -> None:
    """Ultrasound calibration regions are given in pixel indices: map them to the new grid.

    ``g = new_size / old_size``. A region keeps covering the same part of the field of view
    (first pixel: the one holding its left/top edge; last pixel: the one holding its right/bottom
    edge); the reference pixel keeps its position and the physical size per pixel shrinks by ``g``.
    """
    for region in ds.get("SequenceOfUltrasoundRegions", []) or []:
        for axis, g in (("X", g_col), ("Y", g_row)):
            lo, hi, ref, delta = (
                f"RegionLocationMin{axis}0",
                f"RegionLocationMax{axis}1",
                f"ReferencePixel{axis}0",
                f"PhysicalDelta{axis}",
            )
            old_lo = int(region.get(lo) or 0)
            new_lo = int(np.floor(old_lo * g))
            if region.get(lo) is not None:
                setattr(region, lo, new_lo)
            if region.get(hi) is not None:
                setattr(region, hi, max(int(np.ceil((int(region.get(hi)) + 1) * g)) - 1, 0))
            if region.get(ref) is not None:
                centre = (old_lo + int(region.get(ref)) + 0.5) * g - 0.5  # pixel centres, corner-aligned grid
                setattr(region, ref, int(round(centre)) - new_lo)
            if region.get(delta) is not None:
                setattr(region, delta, float(region.get(delta)) / g)


def _mark_frame_types_derived(ds) -> None:
    """Enhanced multi-frame images repeat Image Type per frame as Frame Type; keep them consistent."""
    groups = list(ds.get("PerFrameFunctionalGroupsSequence", []) or [])
    shared = _first(ds, "SharedFunctionalGroupsSequence")
    if shared is not None:
        groups.append(shared)
    for group in groups:
        for elem in group:
            if elem.VR != "SQ" or not elem.keyword.endswith("FrameTypeSequence"):
                continue
            for item in elem.value:
                if item.get("FrameType"):
                    item.FrameType = ["DERIVED", "SECONDARY", *[str(v) for v in list(item.FrameType)[2:]]]


def _spacing_of(ds) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2:
            return float(value[0]), float(value[1])
    measures = _first(_first(ds, "SharedFunctionalGroupsSequence"), "PixelMeasuresSequence")
    if measures is not None and measures.get("PixelSpacing") is not None:
        return float(measures.PixelSpacing[0]), float(measures.PixelSpacing[1])
    return None


def _check_decodable(name: str, ts) -> None:
    """Refuse a compressed transfer syntax no installed plugin can decode, naming what to install."""
    if not ts.is_compressed:
        return
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise InputError(
            f"{name}: pixel data is compressed as {ts.name} ({ts}), which metasr cannot decode; convert the file to an"
            " uncompressed transfer syntax first (e.g. gdcmconv --raw or dcmdjpeg)"
        ) from None
    if not decoder.is_available:
        options = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
        raise InputError(
            f"{name}: pixel data is compressed as {ts.name} and no installed plugin decodes it; install one with"
            f' pip install "metasr[jpeg]" (pylibjpeg) or: {options}'
        )


def read_dicom(
    path: str | os.PathLike,
    data: bytes | None = None,
    *,
    intensity: IntensityRange | str = IntensityRange.AUTO,
) -> DicomScan:
    """Read a DICOM image into frames in [0, 1] (see the module docstring).

    Args:
        path: The DICOM file.
        data: Its bytes if already read.
        intensity: Window policy, see :class:`~metasr.scanners.intensity.IntensityRange`.

    Raises:
        InputError: if the file is not a DICOM image metasr can decode, with what to do.
    """
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    path = Path(path)
    name = path.name
    if data is None:
        data = path.read_bytes()
    has_preamble = data[128:132] == b"DICM"
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=not has_preamble)
        elements = set(ds.keys())  # forces the top-level parse of a forced read
    except InvalidDicomError as e:
        raise InputError(f"{name}: not a DICOM file ({describe_error(e)}); check the file") from e
    except Exception as e:  # pydicom raises many types on damaged files; report them as one line
        raise InputError(
            f"{name}: DICOM file is damaged or truncated ({type(e).__name__}: {describe_error(e)}); copy it again"
        ) from e

    try:
        if 0x7FE00010 not in elements:
            sop = ds.get("SOPClassUID")
            kind = getattr(sop, "name", None) or (str(sop) if sop else "object")
            if 0x7FE00008 in elements or 0x7FE00009 in elements:
                raise InputError(f"{name}: DICOM {kind} holds float pixel data, which is not supported")
            if not has_preamble and not elements & {0x00080016, 0x00280010}:  # neither SOP Class nor Rows
                raise InputError(f"{name}: not a DICOM file (no DICOM header found); check the file")
            if "Image" in kind:  # an image SOP class without pixels: most likely cut short
                raise InputError(f"{name}: DICOM {kind} has no pixel data; the file looks truncated, copy it again")
            raise InputError(
                f"{name}: DICOM {kind} has no pixel data; metasr needs an image (CT, MR, CR, DX, US, SC ...)"
            )
        missing = [k for k in ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation") if k not in ds]
        if missing:
            raise InputError(f"{name}: DICOM image lacks {', '.join(missing)}; the file is incomplete")
        rows, cols = int(ds.Rows), int(ds.Columns)
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        check_dimensions(name, rows, cols, n_frames)
        photometric = str(ds.PhotometricInterpretation).strip().upper()
        if photometric not in _MONO_PHOTOMETRIC | _COLOUR_PHOTOMETRIC:
            raise InputError(
                f"{name}: Photometric Interpretation {photometric} is not supported; expected MONOCHROME1,"
                " MONOCHROME2, RGB or YBR (convert palette images to RGB first)"
            )
        bits_allocated = int(ds.BitsAllocated)
        if bits_allocated not in (8, 16, 32):
            raise InputError(
                f"{name}: {bits_allocated}-bit pixels are not supported; expected 8, 16 or 32 bits allocated"
            )
        meta = getattr(ds, "file_meta", None)
        ts = meta.get("TransferSyntaxUID") if meta is not None else None
        if ts is None:  # a bare dataset (no file meta): the parser found its encoding
            implicit, little = ds.original_encoding
            ts = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
            if meta is None:
                ds.file_meta = meta = pydicom.dataset.FileMetaDataset()
            meta.TransferSyntaxUID = ts
        _check_decodable(name, ts)
    except MetaSRError:
        raise
    except Exception as e:
        raise InputError(f"{name}: DICOM header is damaged ({type(e).__name__}: {describe_error(e)})") from e

    try:
        pixels = ds.pixel_array
    except Exception as e:  # truncated/damaged pixel data, decoder failures
        raise InputError(
            f"{name}: DICOM pixel data cannot be decoded ({type(e).__name__}: {describe_error(e)});"
            " the file may be truncated"
        ) from e
    colour = photometric in _COLOUR_PHOTOMETRIC
    pixels = np.asarray(pixels)
    if colour:
        pixels = pixels.reshape(n_frames, rows, cols, -1)
        if pixels.shape[-1] != 3:
            raise InputError(f"{name}: colour image has {pixels.shape[-1]} samples per pixel; expected 3")
    else:
        pixels = pixels.reshape(n_frames, rows, cols)
    bits_stored = int(ds.get("BitsStored", bits_allocated) or bits_allocated)
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    imap = IntensityMap.for_data(
        pixels,
        policy=intensity,
        bits=min(bits_stored, pixels.dtype.itemsize * 8) if np.issubdtype(pixels.dtype, np.integer) else None,
        signed=signed if np.issubdtype(pixels.dtype, np.integer) else None,
        invert=photometric == "MONOCHROME1",
        source=name,
    )
    chroma = None
    if colour:
        frames, chroma = split_luma(imap.to_unit(pixels))
    else:
        frames = imap.to_unit(pixels)
    del ds.PixelData  # the header is the template of the derived image; the pixels live in `frames`
    return DicomScan(path, frames, imap, _spacing_of(ds), ds, photometric, ts, chroma)
