"""DICOM images (pydicom): read frames, write a derived super-resolved image.

Reading
    Single- and multi-frame images, ``MONOCHROME1``/``MONOCHROME2``, signed or unsigned, 8/16/32
    bits, ``RGB``/``YBR_*`` colour and ``PALETTE COLOR`` (decoded to RGB, processed on luminance and
    written as RGB; uncompressed 4:2:2 YBR included), uncompressed (little or big endian,
    deflated) and the compressed syntaxes that installed decoders handle: RLE natively, JPEG,
    JPEG-LS and JPEG 2000 through pylibjpeg and pyjpegls (installed with metasr). Rows, Columns and
    Number of Frames are checked against the size limits, Samples per Pixel against the
    Photometric Interpretation, the pixel data's length against all of them, and every pixel
    spacing (positive, finite) before the pixel data is decoded. Objects that are not one image
    to super-resolve are refused with the reason: RT Dose grids, Segmentations, and Siemens
    mosaics (several slices tiled into one image; resampling would blend across tile edges).

Intensity
    Frames are made from the *stored* values (before Rescale Slope/Intercept), mapped to [0, 1]
    by :class:`~metasr.scanners.intensity.IntensityMap` with the series' window when one is given
    (:func:`~metasr.scanners.series.group_series`), else one measured from the file (default
    ``auto``: 8-bit unsigned 0..255, wider data a robust percentile window; values beyond it are
    kept as a residual). ``MONOCHROME1`` is inverted, so bright always means a high value for the
    network. Writing maps back with the same window, so the output's stored values stay in the
    input's range and bit depth and its Rescale Slope/Intercept, Window and Photometric
    Interpretation keep their meaning; reading and writing same-size frames gives back exactly
    the input's stored values. Colour images use a window holding all their values.

Writing
    See :mod:`metasr.scanners.dicom_derive` (identity, provenance, encoding) and
    :mod:`metasr.scanners.dicom_geometry` (spacing and positions follow the pixels).
"""

from __future__ import annotations

import io
import os
import zlib
from pathlib import Path

import numpy as np

from metasr.core.errors import InputError, MetaSRError
from metasr.scanners.base import (
    DICOM_SUFFIXES,
    DerivationInfo,
    ImageFormat,
    NotAnImageError,
    ScanImage,
    check_dimensions,
    describe_error,
)
from metasr.scanners.dicom_derive import DERIVATION_CODE, encode_derived
from metasr.scanners.dicom_encoding import lossy_compression_of
from metasr.scanners.dicom_geometry import spacing_of
from metasr.scanners.dicom_padding import fill_padding, find_padding
from metasr.scanners.intensity import IntensityMap, IntensityRange, IntensityWindow, split_luma

__all__ = ["DicomScan", "read_dicom", "read_dicom_header", "read_stored_pixels", "DERIVATION_CODE", "NOT_IMAGES"]

_COLOUR_PHOTOMETRIC = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT"}
_MONO_PHOTOMETRIC = {"MONOCHROME1", "MONOCHROME2"}
_PALETTE = "PALETTE COLOR"
_PALETTE_ELEMENTS = (
    "RedPaletteColorLookupTableDescriptor",
    "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor",
    "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData",
    "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData",
    "PaletteColorLookupTableUID",
)
#: SOP classes holding pixel data that is not one image to super-resolve, with the reason.
NOT_IMAGES = {
    "1.2.840.10008.5.1.4.1.1.481.2": "an RT Dose grid holds dose values on a calculation grid, not an image",
    "1.2.840.10008.5.1.4.1.1.66.4": "a Segmentation holds label masks, not an image",
}
_MOSAIC_TAG = 0x0019100A  # Siemens private NumberOfImagesInMosaic
_DEFLATED = "1.2.840.10008.1.2.1.99"
#: Most bytes a deflated dataset may inflate to (the largest image accepted, plus its header).
MAX_INFLATED_BYTES = 2**31 + 2**24


def _pydicom():
    import pydicom  # a core dependency; imported here to keep `import metasr.scanners` light

    return pydicom


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
    #: Pixel Padding of the input (:class:`~metasr.scanners.dicom_padding.Padding`), or ``None``.
    padding = None
    #: ``(method, ratio)`` when the input's transfer syntax lost information, else ``None``.
    lossy = None

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
        residual: np.ndarray | None = None,
    ) -> None:
        super().__init__(path, frames, intensity, spacing, residual)
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
        return encode_derived(self, sr, out, info)


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
            f"{name}: pixel data is compressed as {ts.name} and no installed plugin decodes it (metasr installs"
            " them by default: the install is incomplete); install them with"
            f" pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pyjpegls, or: {options}"
        )


def _check_inflated_size(data: bytes, name: str) -> None:
    """A deflated dataset must not inflate beyond :data:`MAX_INFLATED_BYTES` (checked by streaming,
    keeping nothing) before pydicom inflates it whole."""
    if data[132:136] != b"\x02\x00\x00\x00" or data[136:138] != b"UL":
        return
    meta_end = 144 + int.from_bytes(data[140:144], "little")
    if _DEFLATED.encode() not in data[144:meta_end]:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending, total = data[meta_end:], 0
    try:
        while pending and not inflater.eof:
            total += len(inflater.decompress(pending, 2**24))
            pending = inflater.unconsumed_tail
            if total > MAX_INFLATED_BYTES:
                raise InputError(
                    f"{name}: deflated DICOM inflates to more than {MAX_INFLATED_BYTES:,} bytes; refusing it"
                    " (a damaged or hostile file)"
                )
    except zlib.error:
        return  # pydicom reports the damaged stream


def _parse(data: bytes, name: str, stop_before_pixels: bool = False):
    """``(dataset, element tags, has_preamble)`` of a DICOM file's bytes."""
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    has_preamble = data[128:132] == b"DICM"
    if has_preamble:
        _check_inflated_size(data, name)
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=not has_preamble, stop_before_pixels=stop_before_pixels)
        elements = set(ds.keys())  # forces the top-level parse of a forced read
    except InvalidDicomError as e:
        raise InputError(f"{name}: not a DICOM file ({describe_error(e)}); check the file") from e
    except Exception as e:  # pydicom raises many types on damaged files; report them as one line
        raise InputError(
            f"{name}: DICOM file is damaged or truncated ({type(e).__name__}: {describe_error(e)}); copy it again"
        ) from e
    return ds, elements, has_preamble


def read_dicom_header(path: str | os.PathLike, data: bytes | None = None):
    """The header of a DICOM file (no pixel data), for grouping files into series.

    Raises:
        InputError: if the file is not DICOM or its header is damaged.
    """
    path = Path(path)
    if data is None:
        data = path.read_bytes()
    ds, _, _ = _parse(data, path.name, stop_before_pixels=True)
    return ds


def _refuse_without_pixels(ds, elements: set, has_preamble: bool, name: str) -> None:
    sop = ds.get("SOPClassUID")
    kind = getattr(sop, "name", None) or (str(sop) if sop else "object")
    if 0x7FE00008 in elements or 0x7FE00009 in elements:
        raise InputError(f"{name}: DICOM {kind} holds float pixel data, which is not supported")
    if not has_preamble and not elements & {0x00080016, 0x00280010}:  # neither SOP Class nor Rows
        raise InputError(f"{name}: not a DICOM file (no DICOM header found); check the file")
    if "Image" in kind:  # an image SOP class without pixels: most likely cut short
        raise InputError(f"{name}: DICOM {kind} has no pixel data; the file looks truncated, copy it again")
    raise NotAnImageError(f"{name}: DICOM {kind} has no pixel data; metasr needs an image (CT, MR, CR, DX, US, SC ...)")


def _refuse_non_images(ds, name: str) -> None:
    """RT Dose, SEG and Siemens mosaics carry pixels that must not be resampled as one image."""
    reason = NOT_IMAGES.get(str(ds.get("SOPClassUID", "")))
    if reason:
        raise NotAnImageError(f"{name}: {reason}; metasr super-resolves images only (skip this file)")
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if "MOSAIC" in image_type or _MOSAIC_TAG in ds:
        raise InputError(
            f"{name}: a Siemens mosaic tiles several slices into one image; super-resolving it would blend"
            " across tile edges, so de-mosaic it first (e.g. dcm2niix) and process the slices"
        )


def _whole(ds, keyword: str, tag: str, default: int, name: str) -> int:
    """An integer element (``default`` when absent or empty), refusing fractions and text."""
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not number.is_integer():
        raise InputError(
            f"{name}: DICOM header is damaged: {keyword} {tag} is {str(value)!r}, not a whole number; correct it"
            " (e.g. dcmodify) and retry"
        )
    return int(number)


def _check_bits(ds, name: str) -> None:
    bits_allocated = int(ds.BitsAllocated)
    if bits_allocated not in (8, 16, 32):
        raise InputError(f"{name}: {bits_allocated}-bit pixels are not supported; expected 8, 16 or 32 bits allocated")
    bits_stored = _whole(ds, "BitsStored", "(0028,0101)", bits_allocated, name)
    if not 1 <= bits_stored <= bits_allocated:
        raise InputError(
            f"{name}: Bits Stored (0028,0101) is {bits_stored} with {bits_allocated} bits allocated; it must be"
            f" 1..{bits_allocated}, correct the header (e.g. dcmodify)"
        )
    representation = _whole(ds, "PixelRepresentation", "(0028,0103)", 0, name)
    if representation not in (0, 1):
        raise InputError(
            f"{name}: Pixel Representation (0028,0103) is {representation}; it must be 0 (unsigned) or 1 (signed),"
            " correct the header (e.g. dcmodify)"
        )


def _check_layout(ds, name: str) -> tuple[int, int, int, str, int]:
    """``(rows, cols, frames, photometric, samples)`` after checking the header's consistency."""
    required = ("SOPClassUID", "Rows", "Columns", "BitsAllocated", "PhotometricInterpretation")
    missing = [k for k in required if k not in ds or ds.get(k) in (None, "")]
    if missing:
        raise InputError(f"{name}: DICOM image lacks {', '.join(missing)}; the file is incomplete")
    rows, cols = int(ds.Rows), int(ds.Columns)
    n_frames = _whole(ds, "NumberOfFrames", "(0028,0008)", 1, name) or 1  # 0 is read as one frame, as pydicom does
    check_dimensions(name, rows, cols, n_frames)
    photometric = str(ds.PhotometricInterpretation).strip().upper()
    if photometric not in _MONO_PHOTOMETRIC | _COLOUR_PHOTOMETRIC | {_PALETTE}:
        raise InputError(
            f"{name}: Photometric Interpretation {photometric} is not supported; expected MONOCHROME1,"
            " MONOCHROME2, PALETTE COLOR, RGB or YBR"
        )
    samples = _whole(ds, "SamplesPerPixel", "(0028,0002)", 1, name)
    expected = 1 if photometric in _MONO_PHOTOMETRIC | {_PALETTE} else 3
    if samples != expected:
        raise InputError(
            f"{name}: Photometric Interpretation {photometric} with Samples per Pixel {samples} is inconsistent"
            f" ({photometric} has {expected}); correct the header (e.g. dcmodify) first"
        )
    _check_bits(ds, name)
    return rows, cols, n_frames, photometric, samples


def _transfer_syntax(ds, name: str):
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is None:  # a bare dataset (no file meta): the parser found its encoding
        implicit, little = ds.original_encoding
        ts = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        if meta is None:
            ds.file_meta = meta = _pydicom().dataset.FileMetaDataset()
        meta.TransferSyntaxUID = ts
    _check_decodable(name, ts)
    return ts


def _check_pixel_length(ds, ts, layout: tuple[int, int, int, str, int], name: str) -> None:
    """Uncompressed pixel data must hold exactly Rows x Columns x Frames x Samples values."""
    if ts.is_compressed:
        return
    rows, cols, n_frames, photometric, samples = layout
    if photometric == "YBR_FULL_422":
        samples = 2  # uncompressed 4:2:2: two chroma values per two pixels (PS3.3 C.7.6.3.1.2)
    frame = rows * cols * samples * int(ds.BitsAllocated) // 8
    expected, found = frame * n_frames, len(ds.PixelData)
    if found + (expected % 2) < expected:
        raise InputError(
            f"{name}: pixel data holds {found} bytes but Rows x Columns x Frames x Samples needs {expected};"
            " the file is truncated or its header is wrong, copy or repair it"
        )
    if found >= expected + frame:
        raise InputError(
            f"{name}: pixel data holds {found} bytes, {found // frame} frame(s) of {cols}x{rows}, but the header"
            f" says {n_frames}; correct Number of Frames or Rows/Columns (e.g. dcmodify) first"
        )


def _decode(ds, layout, name: str) -> np.ndarray:
    rows, cols, n_frames, photometric, samples = layout
    try:
        pixels = np.asarray(ds.pixel_array)
    except Exception as e:  # truncated/damaged pixel data, decoder failures
        raise InputError(
            f"{name}: DICOM pixel data cannot be decoded ({type(e).__name__}: {describe_error(e)});"
            " the file may be truncated"
        ) from e
    try:
        if photometric in _COLOUR_PHOTOMETRIC:
            return pixels.reshape(n_frames, rows, cols, samples)
        pixels = pixels.reshape(n_frames, rows, cols)
        return _palette_to_rgb(ds, pixels, name) if photometric == _PALETTE else pixels
    except ValueError:
        raise InputError(
            f"{name}: decoded pixel data has shape {pixels.shape}, not {n_frames} frame(s) of {cols}x{rows};"
            " the header is inconsistent"
        ) from None


def _palette_to_rgb(ds, indices: np.ndarray, name: str) -> np.ndarray:
    """PALETTE COLOR indices -> RGB through the image's lookup tables (pydicom's ``apply_color_lut``);
    the header then describes RGB (8 or 16 bits, as the tables), so the output is written as RGB."""
    from pydicom.pixels import apply_color_lut

    try:
        rgb = np.asarray(apply_color_lut(indices, ds))
    except Exception as e:  # missing or damaged lookup tables
        raise InputError(
            f"{name}: PALETTE COLOR lookup tables cannot be applied ({type(e).__name__}: {describe_error(e)})"
        ) from e
    bits = rgb.dtype.itemsize * 8
    if bits == 16 and (np.all(rgb % 257 == 0) or "Ultrasound" in str(getattr(ds.get("SOPClassUID"), "name", ""))):
        # 16-bit tables that hold 8-bit colours (v * 257), and ultrasound (whose IODs allow 8-bit
        # colour only): 8-bit RGB, exact in the first case, the nearest 8-bit colour in the second.
        rgb, bits = np.rint(rgb / 257.0).astype(np.uint8), 8
    ds.PhotometricInterpretation = "RGB"
    ds.SamplesPerPixel = 3
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PlanarConfiguration = 0
    for keyword in _PALETTE_ELEMENTS:
        if keyword in ds:
            delattr(ds, keyword)
    return rgb.reshape(*indices.shape, 3)


def _map_options(ds, pixels: np.ndarray) -> dict:
    """``bits``/``signed`` keywords of the intensity map for these stored values."""
    integer = np.issubdtype(pixels.dtype, np.integer)
    bits_allocated = int(ds.BitsAllocated)
    bits_stored = int(ds.get("BitsStored", bits_allocated) or bits_allocated)
    return {
        "bits": min(max(bits_stored, 1), pixels.dtype.itemsize * 8) if integer else None,
        "signed": int(ds.get("PixelRepresentation", 0)) == 1 if integer else None,
    }


def _intensity(ds, pixels: np.ndarray, photometric: str, policy, window, name: str) -> IntensityMap:
    options = {**_map_options(ds, pixels), "invert": photometric == "MONOCHROME1", "source": name}
    imap = IntensityMap.for_data(pixels, policy=policy, window=window, **options)
    if photometric in _COLOUR_PHOTOMETRIC and imap.residual(pixels) is not None:
        # Colour has no residual path: its window holds every value.
        full = IntensityWindow(imap.data_low, max(imap.data_high, imap.data_low + 1.0))
        imap = IntensityMap.for_data(pixels, window=full, **options)
    return imap


def _load(path: Path, data: bytes | None):
    """``(dataset, layout, transfer syntax, spacing, stored pixels, (lossy, source photometric))``
    after every check; palette colour is decoded to RGB here (the layout and header then say RGB)."""
    name = path.name
    if data is None:
        data = path.read_bytes()
    ds, elements, has_preamble = _parse(data, name)
    try:
        if 0x7FE00010 not in elements:
            _refuse_without_pixels(ds, elements, has_preamble, name)
        layout = _check_layout(ds, name)
        _refuse_non_images(ds, name)
        ts = _transfer_syntax(ds, name)
        spacing = spacing_of(ds, name)
        _check_pixel_length(ds, ts, layout, name)
    except MetaSRError:
        raise
    except Exception as e:
        raise InputError(f"{name}: DICOM header is damaged ({type(e).__name__}: {describe_error(e)})") from e
    lossy = lossy_compression_of(ds, ts, layout[2]) if ts.is_compressed else None
    pixels = _decode(ds, layout, name)
    source_photometric = layout[3]
    if layout[3] == _PALETTE:
        layout = (*layout[:3], "RGB", 3)
    return ds, layout, ts, spacing, pixels, (lossy, source_photometric)


def read_stored_pixels(path: str | os.PathLike, data: bytes | None = None) -> tuple[np.ndarray, dict]:
    """Stored pixel values of a DICOM image and the options its intensity window needs.

    Returns:
        ``(pixels, options)``: ``[F, h, w]`` (colour ``[F, h, w, 3]``) stored values and the
        ``bits``/``signed`` keywords of :func:`~metasr.scanners.intensity.measure_window`.

    Raises:
        InputError: as :func:`read_dicom`.
    """
    ds, layout, _, _, pixels, _ = _load(Path(path), data)
    pixels = fill_padding(pixels, find_padding(ds, pixels, layout[3]))
    return pixels, _map_options(ds, pixels)


def read_dicom(
    path: str | os.PathLike,
    data: bytes | None = None,
    *,
    intensity: IntensityRange | str = IntensityRange.AUTO,
    window: IntensityWindow | None = None,
) -> DicomScan:
    """Read a DICOM image into frames in [0, 1] (see the module docstring).

    Args:
        path: The DICOM file.
        data: Its bytes if already read.
        intensity: Window policy, see :class:`~metasr.scanners.intensity.IntensityRange`.
        window: The series' window; ``None`` measures it from this file.

    Raises:
        InputError: if the file is not a DICOM image metasr can decode, with what to do.
    """
    path = Path(path)
    name = path.name
    ds, layout, ts, spacing, pixels, (lossy, source_photometric) = _load(path, data)
    photometric = layout[3]
    notes = []
    if source_photometric != photometric or photometric == "YBR_FULL_422":
        notes.append(f"{name}: {source_photometric} decoded to RGB; the output is written as RGB")
        ds.PhotometricInterpretation = photometric = "RGB"
    padding = find_padding(ds, pixels, photometric)
    pixels = fill_padding(pixels, padding)
    imap = _intensity(ds, pixels, photometric, intensity, window, name)
    chroma = residual = None
    if photometric in _COLOUR_PHOTOMETRIC:
        frames, chroma = split_luma(imap.to_unit(pixels))
    else:
        frames = imap.to_unit(pixels)
        residual = imap.residual(pixels)
    del ds.PixelData  # the header is the template of the derived image; the pixels live in `frames`
    scan = DicomScan(path, frames, imap, spacing, ds, photometric, ts, chroma, residual)
    scan.padding, scan.lossy = padding, lossy
    scan.notes.extend(notes)
    return scan
