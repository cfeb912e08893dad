"""How a derived DICOM file is encoded: its own file meta, lossless compression, lossy history.

File meta
    A derived file is metasr's: its Implementation Class UID and Version Name are metasr's
    (:data:`IMPLEMENTATION_CLASS_UID`), and the source's Source Application Entity Title (and
    other sending/receiving AE titles) are not copied.

Compression (``--compress``)
    ``none`` writes Explicit VR Little Endian (Implicit VR Little Endian inputs keep theirs);
    ``rle``, ``jpeg-ls`` and ``j2k`` write RLE Lossless, JPEG-LS Lossless and JPEG 2000 Lossless
    through pydicom's encoders (native RLE, pyjpegls, pylibjpeg-openjpeg; JPEG 2000 colour as
    YBR_RCT, the reversible transform). ``keep`` (the default)
    writes the source's codec where a lossless encoder for it exists: RLE and JPEG-LS stay
    themselves, lossy or lossless JPEG 2000 become JPEG 2000 Lossless, JPEG-LS near-lossless
    becomes JPEG-LS Lossless; anything else (JPEG, which pydicom cannot encode losslessly,
    uncompressed, deflated, big endian) is written uncompressed, as is an image the kept codec's
    encoder cannot hold (a note says so). Only lossless syntaxes are
    written: the derived pixels are exactly the ones computed.

Lossy history
    A source compressed with a lossy transfer syntax (JPEG baseline/extended, JPEG-LS near-lossless
    with NEAR > 0, JPEG 2000 with the irreversible 9-7 wavelet, or under the lossy-or-lossless
    JPEG 2000 syntax unless the header says Lossy Image Compression ``00``, HTJ2K lossy,
    MPEG/H.264/H.265)
    already lost information, whether or not its header says so: the output carries Lossy Image
    Compression ``01`` with the method and the ratio of that compression appended to any the
    source lists (PS3.3 C.7.6.1.1.5).
"""

from __future__ import annotations

from enum import Enum

import numpy as np

from metasr.core.errors import InputError, OutputError

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "Compression",
    "file_meta",
    "lossy_compression_of",
    "record_lossy_history",
    "output_syntax",
    "compress_pixels",
]

#: metasr's Implementation Class UID (a UUID-derived UID, PS3.5 B.2: no registration needed).
IMPLEMENTATION_CLASS_UID = "2.25.302355517361431229587366122701590384982"

#: Smallest side openjpeg encodes with its default 6 resolution levels.
_J2K_MIN_SIDE = 32
_RLE = "1.2.840.10008.1.2.5"
_JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
_JPEG_LS_NEAR = "1.2.840.10008.1.2.4.81"
_J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
_J2K = "1.2.840.10008.1.2.4.91"
_J2K_MC = "1.2.840.10008.1.2.4.93"
_HTJ2K_LOSSY = "1.2.840.10008.1.2.4.203"
_HTJ2K = "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202"
_EXPLICIT = "1.2.840.10008.1.2.1"
_IMPLICIT = "1.2.840.10008.1.2"
#: Transfer syntaxes that are always lossy, with their Lossy Image Compression Method.
_ALWAYS_LOSSY = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    _HTJ2K_LOSSY: "ISO_15444_15",
    **dict.fromkeys([f"1.2.840.10008.1.2.4.{n}" for n in (100, 101, 104, 105, 106)], "ISO_13818_2"),
    **dict.fromkeys([f"1.2.840.10008.1.2.4.{n}" for n in (102, 103)], "ISO_14496_10"),
    **dict.fromkeys([f"1.2.840.10008.1.2.4.{n}" for n in (107, 108)], "ISO_23008_2"),
}


class Compression(str, Enum):
    """``--compress``: how the derived DICOM's pixel data is encoded (lossless only)."""

    KEEP = "keep"
    NONE = "none"
    RLE = "rle"
    JPEG_LS = "jpeg-ls"
    J2K = "j2k"

    @classmethod
    def parse(cls, text: str | Compression) -> Compression:
        try:
            return cls(str(getattr(text, "value", text)).strip().lower())
        except ValueError:
            choices = ", ".join(c.value for c in cls)
            raise InputError(f"--compress {text!r} is not one of {choices}") from None


_CODEC_SYNTAX = {Compression.RLE: _RLE, Compression.JPEG_LS: _JPEG_LS_LOSSLESS, Compression.J2K: _J2K_LOSSLESS}
#: What ``keep`` writes for a source transfer syntax (the lossless member of its codec family).
_KEEP = {
    _RLE: _RLE,
    _JPEG_LS_LOSSLESS: _JPEG_LS_LOSSLESS,
    _JPEG_LS_NEAR: _JPEG_LS_LOSSLESS,
    _J2K_LOSSLESS: _J2K_LOSSLESS,
    _J2K: _J2K_LOSSLESS,
    _J2K_MC: _J2K_LOSSLESS,
    _HTJ2K_LOSSY: _J2K_LOSSLESS,
    **dict.fromkeys(_HTJ2K, _J2K_LOSSLESS),
}


def file_meta(sop_class: str, sop_instance: str, transfer_syntax: str, version: str):
    """A fresh File Meta Information group naming metasr (nothing copied from the source)."""
    from pydicom.dataset import FileMetaDataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = f"METASR_{version}"[:16]
    return meta


def _first_fragment(ds, frames: int) -> bytes:
    from pydicom.encaps import generate_frames

    try:
        return next(generate_frames(ds.PixelData, number_of_frames=frames))
    except Exception:  # a damaged offset table: the decoder reports it when the pixels are read
        return b""


def _jpeg_ls_near(code: bytes) -> int | None:
    """NEAR of the first scan (SOS: Ls, Ns, Ns x (Ci, Tm), NEAR, ILV)."""
    pos = code.find(b"\xff\xda")
    if pos < 0 or len(code) < pos + 5:
        return None
    ns = code[pos + 4]
    near = pos + 5 + 2 * ns
    return code[near] if near < len(code) else None


def _j2k_irreversible(code: bytes) -> bool | None:
    """Whether the codestream's COD marker names the irreversible 9-7 wavelet (SPcod transformation 0)."""
    pos = code.find(b"\xff\x52")
    if pos < 0 or len(code) < pos + 14:
        return None
    return code[pos + 13] == 0


def lossy_compression_of(ds, transfer_syntax: str, frames: int) -> tuple[str, float | None] | None:
    """``(method, ratio)`` of a source whose transfer syntax lost information, else ``None``.

    Call before the compressed Pixel Data is dropped: the method is read from the codestream where
    the transfer syntax allows both (JPEG-LS NEAR, JPEG 2000 wavelet) and the ratio from its size.
    """
    ts = str(transfer_syntax)
    if "PixelData" not in ds:
        return None
    method = _ALWAYS_LOSSY.get(ts)
    if method is None and ts == _JPEG_LS_NEAR:
        near = _jpeg_ls_near(_first_fragment(ds, frames))
        method = "ISO_14495_1" if near is None or near > 0 else None
    elif method is None and ts in (_J2K, _J2K_MC):
        # The 9-7 wavelet always loses; the 5-3 one loses when layers were truncated, which the
        # codestream does not tell: lossy unless the header says it is not.
        irreversible = _j2k_irreversible(_first_fragment(ds, frames))
        said_lossless = str(ds.get("LossyImageCompression", "") or "").strip() == "00"
        method = "ISO_15444_1" if irreversible or not said_lossless else None
    if method is None:
        return None
    try:
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        raw = int(ds.Rows) * int(ds.Columns) * frames * samples * int(ds.BitsAllocated) // 8
        ratio = raw / max(len(ds.PixelData), 1)
    except Exception:  # header values already checked; a ratio is optional
        ratio = None
    return method, ratio


def _values(ds, keyword: str) -> list:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]


def record_lossy_history(ds, lossy: tuple[str, float | None] | None) -> None:
    """Lossy Image Compression ``01`` with the source's method and ratio, when the source was lossy."""
    if lossy is None:
        return
    method, ratio = lossy
    already = str(ds.get("LossyImageCompression", "") or "").strip() == "01"
    methods = _values(ds, "LossyImageCompressionMethod") if already else []
    ratios = _values(ds, "LossyImageCompressionRatio") if already else []
    if already and method in [str(m) for m in methods]:
        return  # the source recorded this compression itself
    ds.LossyImageCompression = "01"
    from pydicom.valuerep import DSfloat

    if ratio is not None and (not ratios or len(ratios) == len(methods)):
        ds.LossyImageCompressionRatio = [*ratios, DSfloat(round(ratio, 2), auto_format=True)]
        ds.LossyImageCompressionMethod = [*methods, method]
    elif not ratios:
        ds.LossyImageCompressionMethod = [*methods, method]


def output_syntax(compress: Compression | str, source_syntax: str) -> str:
    """The transfer syntax a derived image is written with (see the module docstring)."""
    compress = Compression.parse(compress)
    if compress is Compression.KEEP:
        uncompressed = _IMPLICIT if str(source_syntax) == _IMPLICIT else _EXPLICIT
        return _KEEP.get(str(source_syntax), uncompressed)
    if compress is Compression.NONE:
        return _IMPLICIT if str(source_syntax) == _IMPLICIT else _EXPLICIT
    return _CODEC_SYNTAX[compress]


def compress_pixels(ds, syntax: str, pixels: np.ndarray, name: str) -> None:
    """Encode ``pixels`` (``[F, H, W]`` or ``[F, H, W, 3]`` in the header's layout) into ``ds`` with ``syntax``.

    Raises:
        OutputError: when no installed encoder handles ``syntax`` for this image, naming what to do.
    """
    from pydicom.uid import UID

    uid = UID(syntax)
    arr = pixels[0] if pixels.shape[0] == 1 else pixels
    if uid == _J2K_LOSSLESS and min(pixels.shape[1:3]) < _J2K_MIN_SIDE:
        raise OutputError(
            f"{name}: the output is {pixels.shape[2]}x{pixels.shape[1]} pixels; the JPEG 2000 encoder (openjpeg, 6"
            f" resolution levels) needs at least {_J2K_MIN_SIDE} per side; use --compress none, rle or jpeg-ls"
        )
    kwargs = {}
    colour_j2k = uid == _J2K_LOSSLESS and int(ds.get("SamplesPerPixel", 1)) == 3
    if colour_j2k:
        # Lossless JPEG 2000 colour is stored with the reversible colour transform as YBR_RCT
        # (PS3.5 8.2.4; ultrasound IODs accept no RGB there); decoders give back the same RGB.
        kwargs["use_mct"] = True
    try:
        ds.compress(uid, arr, generate_instance_uid=False, **kwargs)
        if colour_j2k:
            ds.PhotometricInterpretation = "YBR_RCT"
    except Exception as e:  # no plugin, or an image the encoder cannot hold
        raise OutputError(
            f"{name}: cannot encode the output as {uid.name} ({type(e).__name__}: {' '.join(str(e).split())[:200]});"
            " use --compress none"
        ) from e
