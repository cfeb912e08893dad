"""PNG, TIFF and JPEG images through OpenCV, keeping 16-bit and float data intact.

Images are decoded with ``cv2.IMREAD_UNCHANGED`` (so 16-bit PNG/TIFF stay 16-bit and float TIFF
stays float) after the header's width and height have been checked against
:data:`~metasr.scanners.base.MAX_SIDE`, so a header claiming 65535x65535 is refused before any
allocation. Colour images are processed on luminance (see :mod:`metasr.scanners.intensity`);
alpha is resampled bicubically with the chroma, on the luma's grid when the scale is known.
Only single-page TIFFs are accepted.

What OpenCV would change silently is handled explicitly: palette PNGs are read as RGB (and
written back as RGB), gray + alpha PNGs as RGBA, 1/2/4-bit gray PNGs as 8-bit gray (0..255),
each with a note; an EXIF
orientation (JPEG, TIFF) is applied so the frames are upright as a viewer shows them, and the
output is stored upright without the tag (a note says so; OpenCV turns TIFFs itself); TIFFs
with 2 or more than 4 samples per pixel are refused rather than losing a channel.

Output format follows the output file's suffix (``.png``, ``.tif``/``.tiff``, ``.jpg``/``.jpeg``)
and keeps the input's bit depth; a suffix whose format cannot hold it (16-bit into JPEG) is an
:class:`~metasr.core.errors.OutputError`. JPEG output is lossy (quality 95).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from metasr.core.errors import InputError, OutputError
from metasr.scanners.base import (
    DerivationInfo,
    ImageFormat,
    ScanImage,
    check_dimensions,
    describe_error,
    planes_on_grid,
)
from metasr.scanners.intensity import IntensityMap, IntensityRange, IntensityWindow, merge_luma, split_luma

__all__ = ["RasterScan", "read_raster", "raster_format", "raster_header_size", "RASTER_SUFFIXES"]

#: Suffix -> format of the raster formats written and listed in folders.
RASTER_SUFFIXES: dict[str, ImageFormat] = {
    ".png": ImageFormat.PNG,
    ".tif": ImageFormat.TIFF,
    ".tiff": ImageFormat.TIFF,
    ".jpg": ImageFormat.JPEG,
    ".jpeg": ImageFormat.JPEG,
}
_CANONICAL_SUFFIX = {ImageFormat.PNG: ".png", ImageFormat.TIFF: ".tif", ImageFormat.JPEG: ".jpg"}
# What each encoder can hold (OpenCV's PNG/JPEG/TIFF writers).
_WRITABLE_DTYPES = {
    ImageFormat.PNG: {np.dtype(np.uint8), np.dtype(np.uint16)},
    ImageFormat.JPEG: {np.dtype(np.uint8)},
    ImageFormat.TIFF: {np.dtype(t) for t in (np.uint8, np.uint16, np.int16, np.float32, np.float64)},
}
_JPEG_QUALITY = 95


@contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own stderr warnings (e.g. "PNG input buffer is incomplete") while decoding:
    failures are reported as one InputError line instead. The previous level is restored."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(level)


def raster_format(head: bytes) -> ImageFormat | None:
    """Format of a raster image from its first bytes, or ``None``."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ImageFormat.PNG
    if head.startswith(b"\xff\xd8\xff"):
        return ImageFormat.JPEG
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return ImageFormat.TIFF
    return None


def _png_size(data: bytes) -> tuple[int, int, int]:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ValueError("no IHDR chunk")
    width, height = struct.unpack(">II", data[16:24])
    return width, height, 1


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int, int]:
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise ValueError("marker expected")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _JPEG_SOF:
            if i + 9 > n:
                break
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height, 1
        i += 2 + length
    raise ValueError("no frame header (SOF) found")


def _tiff_size(data: bytes) -> tuple[int, int, int]:
    bo = "<" if data[:2] == b"II" else ">"
    (magic,) = struct.unpack(bo + "H", data[2:4])
    big = magic == 43
    if big:
        (offset,) = struct.unpack(bo + "Q", data[8:16])
        count_fmt, entry_size, next_fmt = "Q", 20, "Q"
    else:
        (offset,) = struct.unpack(bo + "I", data[4:8])
        count_fmt, entry_size, next_fmt = "H", 12, "I"
    cs, ns = struct.calcsize(count_fmt), struct.calcsize(next_fmt)
    width = height = None
    pages = 0
    seen: set[int] = set()
    while offset and offset not in seen:
        seen.add(offset)
        (count,) = struct.unpack(bo + count_fmt, data[offset : offset + cs])
        if count > 4096:
            raise ValueError("implausible IFD")
        base = offset + cs
        if pages == 0:
            for k in range(count):
                entry = data[base + k * entry_size : base + (k + 1) * entry_size]
                tag, typ = struct.unpack(bo + "HH", entry[:4])
                if tag not in (256, 257):
                    continue
                value = entry[12:] if big else entry[8:]
                fmt = {3: "H", 4: "I", 16: "Q"}.get(typ)
                if fmt is None:
                    raise ValueError("unexpected size type")
                (v,) = struct.unpack(bo + fmt, value[: struct.calcsize(fmt)])
                if tag == 256:
                    width = v
                else:
                    height = v
        pages += 1
        end = base + count * entry_size
        (offset,) = struct.unpack(bo + next_fmt, data[end : end + ns])
    if width is None or height is None:
        raise ValueError("no ImageWidth/ImageLength")
    return width, height, pages


def raster_header_size(data: bytes, fmt: ImageFormat, source: str = "image") -> tuple[int, int, int]:
    """``(width, height, pages)`` from a PNG/JPEG/TIFF header, without decoding pixels.

    Raises:
        InputError: if the header cannot be parsed (truncated or damaged file).
    """
    parse = {ImageFormat.PNG: _png_size, ImageFormat.JPEG: _jpeg_size, ImageFormat.TIFF: _tiff_size}[fmt]
    try:
        return parse(data)
    except (ValueError, struct.error, IndexError) as e:
        raise InputError(
            f"{source}: {fmt.value.upper()} header is damaged or truncated ({describe_error(e)}); re-export the image"
        ) from e


class RasterScan(ScanImage):
    """A PNG/TIFF/JPEG image.

    Attributes:
        chroma: ``[1, h, w, 2]`` chroma planes of a colour image, else ``None``.
        alpha: ``[1, h, w, 1]`` alpha in [0, 1], else ``None``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fmt: ImageFormat,
        frames: np.ndarray,
        intensity: IntensityMap,
        chroma: np.ndarray | None = None,
        alpha: np.ndarray | None = None,
        alpha_map: IntensityMap | None = None,
        residual: np.ndarray | None = None,
    ) -> None:
        super().__init__(path, frames, intensity, spacing=None, residual=residual)
        self.format = fmt
        suffix = Path(path).suffix.lower()
        self.default_suffix = suffix if RASTER_SUFFIXES.get(suffix) is fmt else _CANONICAL_SUFFIX[fmt]
        self.chroma = chroma
        self.alpha = alpha
        self.alpha_map = alpha_map

    @property
    def is_color(self) -> bool:
        return self.chroma is not None

    def close(self) -> None:
        super().close()
        self.chroma = self.alpha = None

    def check_output_name(self, out_path: str | os.PathLike) -> None:
        """A raster input may be written as any raster format that holds its bit depth."""
        out = Path(out_path)
        suffix = out.suffix.lower()
        fmt = RASTER_SUFFIXES.get(suffix)
        if fmt is None:
            raise OutputError(
                f"output {out.name}: unknown image suffix {suffix or '(none)'!r};"
                f" use one of {', '.join(RASTER_SUFFIXES)}"
            )
        dtype = np.dtype(self.intensity.dtype)
        if not any(dtype in kinds for kinds in _WRITABLE_DTYPES.values()):
            raise OutputError(
                f"output {out.name}: the input's {dtype} pixels cannot be written as PNG, TIFF or JPEG;"
                " convert the input to uint16 or float32 first"
            )
        if dtype not in _WRITABLE_DTYPES[fmt]:
            fits = " or ".join(_CANONICAL_SUFFIX[f] for f, kinds in _WRITABLE_DTYPES.items() if dtype in kinds)
            raise OutputError(
                f"output {out.name}: {fmt.value.upper()} cannot hold {dtype} pixels of the input; use a {fits} output"
            )

    def _encode_derived(self, sr: np.ndarray, out: Path, info: DerivationInfo) -> bytes:
        suffix = out.suffix.lower()
        fmt = RASTER_SUFFIXES[suffix]  # checked by check_output_name
        if self.chroma is None:
            pixels = self.stored_values(sr, info)[0]
        else:
            chroma = planes_on_grid(self.chroma, sr.shape[1], sr.shape[2], info, self.size)
            rgb = merge_luma(sr, chroma, scale=info.exact_scale)[0]
            pixels = self.intensity.from_unit(rgb)[..., ::-1]  # RGB -> OpenCV's BGR
            if self.alpha is not None and self.alpha_map is not None:
                alpha = planes_on_grid(self.alpha, sr.shape[1], sr.shape[2], info, self.size)
                a = merge_luma(sr, chroma, alpha, scale=info.exact_scale)[0][..., 3]
                pixels = np.concatenate([pixels, self.alpha_map.from_unit(a)[..., None]], axis=-1)
        params = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY] if fmt is ImageFormat.JPEG else []
        ok, buf = cv2.imencode(suffix, np.ascontiguousarray(pixels), params)
        if not ok:
            raise OutputError(f"output {out.name}: OpenCV could not encode a {fmt.value.upper()} image")
        return buf.tobytes()


def _tiff_ifd0_values(data: bytes, tags: set[int]) -> dict[int, int]:
    """First value of each SHORT/LONG tag in ``tags`` in a TIFF structure's first IFD (``{}`` if unreadable)."""
    found: dict[int, int] = {}
    try:
        bo = "<" if data[:2] == b"II" else ">"
        (magic,) = struct.unpack(bo + "H", data[2:4])
        if magic == 43:  # BigTIFF
            (offset,) = struct.unpack(bo + "Q", data[8:16])
            (count,) = struct.unpack(bo + "Q", data[offset : offset + 8])
            base, size, value_at = offset + 8, 20, 12
        else:
            (offset,) = struct.unpack(bo + "I", data[4:8])
            (count,) = struct.unpack(bo + "H", data[offset : offset + 2])
            base, size, value_at = offset + 2, 12, 8
        for k in range(min(count, 4096)):
            entry = data[base + k * size : base + (k + 1) * size]
            tag, typ = struct.unpack(bo + "HH", entry[:4])
            fmt = {3: "H", 4: "I"}.get(typ)
            if tag in tags and fmt is not None:
                found[tag] = struct.unpack(bo + fmt, entry[value_at : value_at + struct.calcsize(fmt)])[0]
    except (struct.error, IndexError, ValueError):
        return found
    return found


def _jpeg_exif(data: bytes) -> bytes:
    """The TIFF structure inside a JPEG's EXIF APP1 segment, or ``b""``."""
    i, n = 2, len(data)
    while i + 4 <= n and data[i] == 0xFF:
        marker = data[i + 1]
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no EXIF before the pixels
            break
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker == 0xE1 and data[i + 4 : i + 10] == b"Exif\x00\x00":
            return data[i + 10 : i + 2 + length]
        i += 2 + length
    return b""


def _orientation(data: bytes, fmt: ImageFormat) -> int:
    """EXIF/TIFF orientation (1..8; 1 when absent or invalid). OpenCV applies a TIFF's itself."""
    if fmt is ImageFormat.JPEG:
        exif = _jpeg_exif(data)
        value = _tiff_ifd0_values(exif, {274}).get(274, 1) if exif else 1
    elif fmt is ImageFormat.TIFF:
        value = _tiff_ifd0_values(data, {274}).get(274, 1)
    else:
        value = 1
    return value if 1 <= value <= 8 else 1


def _upright(img: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (the transforms OpenCV applies when it honours the tag)."""
    if orientation >= 5:
        img = np.swapaxes(img, 0, 1)
    flips = {2: (False, True), 3: (True, True), 4: (True, False), 6: (False, True), 7: (True, True), 8: (True, False)}
    rows, cols = flips.get(orientation, (False, False))
    if rows:
        img = img[::-1]
    if cols:
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


def _png_layout(data: bytes) -> tuple[int, int]:
    """``(bit depth, colour type)`` from a PNG's IHDR."""
    return data[24], data[25]


def _check_samples(data: bytes, fmt: ImageFormat, name: str) -> None:
    if fmt is not ImageFormat.TIFF:
        return
    samples = _tiff_ifd0_values(data, {277}).get(277, 1)
    if samples == 2 or samples > 4:
        raise InputError(
            f"{name}: TIFF has {samples} samples per pixel; metasr reads gray, RGB or RGBA (1, 3 or 4), so"
            " save the channels as separate gray images or as RGB(A) first"
        )


def _decode_notes(data: bytes, fmt: ImageFormat, name: str) -> list[str]:
    notes = []
    if fmt is ImageFormat.PNG and len(data) >= 26:
        depth, colour = _png_layout(data)
        if colour == 3:
            notes.append(f"{name}: palette PNG is processed and written as RGB")
        elif colour == 0 and depth < 8:
            notes.append(f"{name}: {depth}-bit gray PNG is processed and written as 8-bit gray (0..255)")
        elif colour == 4:
            notes.append(f"{name}: gray + alpha PNG is processed and written as RGBA")
    return notes


def _gray_scan(path: Path, fmt: ImageFormat, img: np.ndarray, intensity, window) -> RasterScan:
    imap = IntensityMap.for_data(img, policy=intensity, source=path.name, window=window)
    return RasterScan(path, fmt, imap.to_unit(img)[None], imap, residual=imap.residual(img[None]))


def _colour_scan(path: Path, fmt: ImageFormat, img: np.ndarray, intensity, window) -> RasterScan:
    name = path.name
    rgb = img[..., 2::-1]  # OpenCV's BGR(A) -> RGB
    imap = IntensityMap.for_data(rgb, policy=intensity, source=name, window=window)
    if imap.residual(rgb) is not None:  # colour has no residual path: its window holds every value
        full = IntensityWindow(imap.data_low, max(imap.data_high, imap.data_low + 1.0))
        imap = IntensityMap.for_data(rgb, source=name, window=full)
    y, chroma = split_luma(imap.to_unit(rgb))
    alpha = alpha_map = None
    if img.shape[2] == 4:
        a = img[..., 3]
        alpha_map = IntensityMap.for_data(a, policy=IntensityRange.FULL, source=name)
        alpha = alpha_map.to_unit(a)[None, ..., None]
    return RasterScan(path, fmt, y[None], imap, chroma=chroma[None], alpha=alpha, alpha_map=alpha_map)


def read_raster(
    path: str | os.PathLike,
    data: bytes | None = None,
    *,
    intensity: IntensityRange | str = IntensityRange.AUTO,
    window: IntensityWindow | None = None,
) -> RasterScan:
    """Read a PNG/TIFF/JPEG file (see the module docstring).

    Args:
        path: The image file.
        data: Its bytes if already read (avoids a second read).
        intensity: Window policy, see :class:`~metasr.scanners.intensity.IntensityRange`.
        window: A window shared with other files; ``None`` measures it from this image.

    Raises:
        InputError: if the file is not a readable PNG/TIFF/JPEG within the size limits.
    """
    path = Path(path)
    if data is None:
        data = path.read_bytes()
    name = path.name
    fmt = raster_format(data[:8])
    if fmt is None:
        raise InputError(f"{name}: not a PNG, TIFF or JPEG file")
    width, height, pages = raster_header_size(data, fmt, name)
    check_dimensions(name, height, width)
    if pages > 1:
        raise InputError(f"{name}: TIFF has {pages} pages; only single-page TIFFs are supported, split it first")
    _check_samples(data, fmt, name)
    with _quiet_opencv():
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(
            f"{name}: {fmt.value.upper()} data cannot be decoded (damaged or truncated file?); re-export it"
        )
    notes = _decode_notes(data, fmt, name)
    orientation = _orientation(data, fmt)
    if orientation != 1:
        if fmt is ImageFormat.JPEG:  # OpenCV's TIFF decoder has already turned the pixels upright
            img = _upright(img, orientation)
        notes.append(f"{name}: orientation tag {orientation} applied; the output is stored upright without it")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        scan = _gray_scan(path, fmt, img, intensity, window)
    elif img.ndim == 3 and img.shape[2] in (3, 4):
        scan = _colour_scan(path, fmt, img, intensity, window)
    else:
        raise InputError(f"{name}: {img.shape[-1]}-channel images are not supported; expected gray, RGB or RGBA")
    scan.notes.extend(notes)
    return scan
