"""Format detection by content (then by suffix) and the format-independent entry points.

Every file is checked before it is read: it must be a regular file (not a folder, FIFO or
device, which would block or never end) of at most :data:`MAX_FILE_BYTES`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from metasr.core.errors import InputError
from metasr.core.inputs import special_kind, stat_input
from metasr.core.native import quiet_native_output
from metasr.scanners.base import DICOM_SUFFIXES, NIFTI_SUFFIXES, ImageFormat, ScanImage, recorded_warnings
from metasr.scanners.images import RASTER_SUFFIXES, raster_format
from metasr.scanners.intensity import IntensityRange, IntensityWindow

__all__ = ["read_image", "iter_images", "detect_format", "SUPPORTED_SUFFIXES", "MAX_FILE_BYTES"]

#: Largest input file read (4 GiB: a file at the pixel limit in 64-bit floats), checked before reading.
MAX_FILE_BYTES = 2**32

#: File suffixes :func:`iter_images` lists (files without a suffix are listed when they are DICOM).
SUPPORTED_SUFFIXES: tuple[str, ...] = DICOM_SUFFIXES + NIFTI_SUFFIXES + tuple(RASTER_SUFFIXES)


def _full_suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _is_nifti_header(head: bytes) -> bool:
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return head[:4] in ((348).to_bytes(4, "little"), (348).to_bytes(4, "big"))
    return len(head) >= 8 and head[4:8] in (b"n+2\x00", b"ni2\x00")


def detect_format(path: Path, head: bytes) -> ImageFormat | None:
    """Format of a file from its first bytes (at least 352), falling back on its suffix.

    Returns ``None`` when neither content nor suffix names a supported format.
    """
    if len(head) >= 132 and head[128:132] == b"DICM":
        return ImageFormat.DICOM
    fmt = raster_format(head[:8])
    if fmt is not None:
        return fmt
    if _is_nifti_header(head):
        return ImageFormat.NIFTI
    suffix = _full_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        return ImageFormat.NIFTI  # gzip-compressed: the reader checks the header inside
    if suffix in DICOM_SUFFIXES or suffix == "":
        return ImageFormat.DICOM  # DICOM written without the 128-byte preamble
    if suffix in RASTER_SUFFIXES:
        return RASTER_SUFFIXES[suffix]  # the reader reports the content does not match
    return None


def check_input_file(path: Path) -> int:
    """Size of ``path`` if it is a non-empty regular file within :data:`MAX_FILE_BYTES`.

    Raises:
        InputError: for a missing path, a folder, a FIFO/device/socket, an empty or oversized file.
    """
    if str(path) == "":
        raise InputError("input path is empty; give an image file")
    info = stat_input(path)
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"input {path} is a folder; give a file (folders are processed by metasr-run)")
    kind = special_kind(info)
    if kind is not None:
        raise InputError(f"input {path} is {kind}, not a regular file; give an image file")
    if info.st_size == 0:
        raise InputError(f"input {path} is empty (0 bytes); re-export or copy the file again")
    if info.st_size > MAX_FILE_BYTES:
        raise InputError(
            f"input {path} is {info.st_size / 2**30:.1f} GiB; at most {MAX_FILE_BYTES // 2**30} GiB per file is"
            " accepted (split it first)"
        )
    return int(info.st_size)


def _read_input(path: Path) -> bytes:
    size = check_input_file(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(size + 1)  # never more than stat said: a file growing meanwhile is cut
    except OSError as e:
        raise InputError(f"cannot read input {path}: {e.strerror or type(e).__name__}") from e
    if not data:
        raise InputError(f"input {path} is empty (0 bytes); re-export or copy the file again")
    return data


def read_image(
    path: str | os.PathLike,
    axis: int | None = None,
    *,
    intensity: IntensityRange | str = IntensityRange.AUTO,
    window: IntensityWindow | None = None,
) -> ScanImage:
    """Read a DICOM, NIfTI, PNG, TIFF or JPEG file into frames in [0, 1].

    The format is detected from the content (DICOM preamble, PNG/JPEG/TIFF signatures, NIfTI
    header), then from the suffix. The file is read once and closed before returning; it is
    never modified.

    Args:
        path: The input file.
        axis: NIfTI only: the volume axis whose slices are the frames (default: see
            :func:`metasr.scanners.nifti.read_nifti`). Ignored by 2D formats.
        intensity: Window mapped to [0, 1] (``auto``, ``full``, ``data`` or ``robust``; see
            :mod:`metasr.scanners.intensity`).
        window: The series' window from :func:`~metasr.scanners.series.group_series`, shared by
            all files of a series; ``None`` measures it from this file with ``intensity``.

    Returns:
        A :class:`~metasr.scanners.base.ScanImage` (DICOM, NIfTI or raster subclass). Warnings the
        format libraries raise while reading (e.g. pydicom on excess pixel padding or a value
        that breaks its VR) are collected in its ``notes`` as one-line texts instead of printed.

    Raises:
        InputError: one line saying what is wrong with the file and what to do.
    """
    if isinstance(path, str) and not path:
        raise InputError("input path is empty; give an image file")
    path = Path(path)
    try:
        intensity = IntensityRange(intensity)
    except ValueError:
        choices = ", ".join(v.value for v in IntensityRange)
        raise InputError(f"intensity {intensity!r} is not one of {choices}") from None
    data = _read_input(path)
    fmt = detect_format(path, data[:352])
    if fmt is None:
        raise InputError(f"{path.name}: not a supported image; expected DICOM, NIfTI (.nii/.nii.gz), PNG, TIFF or JPEG")
    notes: list[str] = []
    # pydicom/nibabel warnings and what libpng/libtiff print to fd 2 become notes, not stderr noise
    with recorded_warnings(notes, path.name), quiet_native_output() as native:
        if fmt is ImageFormat.DICOM:
            from metasr.scanners.dicom import read_dicom

            scan: ScanImage = read_dicom(path, data, intensity=intensity, window=window)
        elif fmt is ImageFormat.NIFTI:
            from metasr.scanners.nifti import read_nifti

            scan = read_nifti(path, data, axis=axis, intensity=intensity, window=window)
        else:
            from metasr.scanners.images import read_raster

            scan = read_raster(path, data, intensity=intensity, window=window)
    notes += [f"{path.name}: {line.strip()}" for line in native.getvalue().splitlines() if line.strip()][:5]
    scan.notes.extend(notes)
    return scan


def _looks_like_bare_dicom(head: bytes) -> bool:
    """A dataset without the 128-byte preamble (as some PACS exports write): it starts with a
    little-endian element of group 0x0002 or 0x0008, explicit (a VR of two letters) or implicit
    (a 4-byte length that fits the file)."""
    if len(head) < 12 or head[:2] not in (b"\x02\x00", b"\x08\x00"):
        return False
    if head[4:6].isalpha() and head[4:6].isupper():
        return True
    return int.from_bytes(head[4:8], "little") < 1024


def _is_dicom_file(path: Path) -> bool:
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM" or _looks_like_bare_dicom(head)


def is_image_file(path: Path) -> bool:
    """The one image-file detector of every folder walker (``metasr-run``, ``metasr-train``, ``metasr-eval``).

    A visible regular file with a supported suffix (:data:`SUPPORTED_SUFFIXES`), or any visible
    regular file that starts like DICOM, with or without the 128-byte preamble. FIFOs, devices
    and broken links are never opened.
    """
    if path.name.startswith("."):
        return False
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
    except (OSError, ValueError):
        return False
    return _full_suffix(path) in SUPPORTED_SUFFIXES or _is_dicom_file(path)


def iter_images(folder: str | os.PathLike, recursive: bool = False) -> Iterator[Path]:
    """Supported image files in ``folder``, sorted by name.

    Files are listed by suffix (:data:`SUPPORTED_SUFFIXES`); other files (``IM0001``,
    UID-named files) are listed when they start like a DICOM file, with or without the 128-byte
    preamble. Hidden files (``.name``, e.g. partial outputs) and anything but regular files
    (FIFOs, devices) are skipped.

    Raises:
        InputError: if ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    for path in sorted(candidates):
        if is_image_file(path):
            yield path
