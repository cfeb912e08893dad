"""The reader/writer interface every scanner format implements.

A reader turns one file into a :class:`ScanImage`: float32 frames in [0, 1] plus what is needed
to write a derived (super-resolved) image back in the input's format, units and geometry. Readers
load the pixels eagerly and close the file before returning; a :class:`ScanImage` is still a
context manager so callers can release its arrays deterministically.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from fractions import Fraction
from pathlib import Path

import numpy as np

from metasr.core.atomic import atomic_write_bytes, check_output_path
from metasr.core.errors import InputError, OutputError
from metasr.core.resample import resize_on_grid_linear
from metasr.core.scale import MIN_SIDE  # one limit for readers and the runtime
from metasr.scanners.intensity import IntensityMap

__all__ = [
    "DICOM_SUFFIXES",
    "NIFTI_SUFFIXES",
    "ImageFormat",
    "DerivationInfo",
    "Grid",
    "NotAnImageError",
    "ScanImage",
    "MIN_SIDE",
    "MAX_SIDE",
    "MAX_PIXELS",
    "check_dimensions",
    "describe_error",
    "GridMap",
    "grid_map",
    "grid_scale",
    "resample_on_map",
    "spacing_factors",
]

#: Largest accepted image side, checked on the header before any pixel is decoded.
MAX_SIDE = 16384
#: Largest accepted number of pixels in one file (all frames), checked on the header: the
#: float32 frames of such a file take 2 GiB.
MAX_PIXELS = 2**29


class ImageFormat(str, Enum):
    """File formats the scanners read and write."""

    DICOM = "dicom"
    NIFTI = "nifti"
    PNG = "png"
    TIFF = "tiff"
    JPEG = "jpeg"


#: File suffixes of DICOM and NIfTI files (read by detection, accepted for outputs).
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".ima")
NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")


class Grid(str, Enum):
    """Where the resampled grid sits on the input's field of view.

    ``corner`` (default): the outer corner of the field of view is kept, pixels are exactly
    ``old / r``; output pixel ``i`` shows input coordinate ``(i + 0.5) / r - 0.5``. ``center``: the
    centres of the first and last pixel are kept (MONAI, ITK), pixels are ``old (n - 1) / (N - 1)``
    and output pixel ``i`` shows input coordinate ``i (n - 1) / (N - 1)``.
    """

    CORNER = "corner"
    CENTER = "center"


class NotAnImageError(InputError):
    """The file is a DICOM object that holds no image to super-resolve (SR, RT Plan, KOS, dose...).

    A folder run reports such files as ``skipped``, not as failures.
    """


@dataclass(frozen=True)
class DerivationInfo:
    """Provenance written into a derived image (DICOM ContributingEquipment, descriptions).

    Everything that changes the derived pixels is here (scale, model id, grid, and the runtime's
    other settings in ``pixel_settings``), so that the derived DICOM UIDs have one home: change
    any of them and the instance and series UIDs change; settings that do not change pixels
    (tile size, threads, the device at fp32) are not here and keep the UIDs.

    Attributes:
        scale: The scale as the user gave it, e.g. ``"2.3"`` (or ``"512x512"`` for a size).
        model_id: Hash identifying the exported model (``Upscaler.model_id``).
        software_version: metasr version, e.g. ``"0.1.0"``.
        model_name: Human-readable model name (the manifest's), e.g. ``"metasrgan-mri"``.
        exact_scale: The exact scale the frames were made with (``Scale.value``). Colour and
            alpha planes are then resampled on the network's pixel grid, so they stay aligned with
            the luma; ``None`` resamples them by the size ratio.
        pixel_settings: Other ``(name, value)`` settings that change pixels (precision, noise
            setting...); they enter the derived UIDs and the derived series number.
        grid: Where the new grid sits (:class:`Grid`); it changes pixels and geometry.
        compress: DICOM output encoding: ``keep``, ``none``, ``rle``, ``jpeg-ls`` or ``j2k``
            (lossless only; it does not change pixels, so not the UIDs either).
        created: When the derivation ran (Series/Content Date and Time; one per run so a series
            carries one time); ``None``: when the file is written.
    """

    scale: str
    model_id: str
    software_version: str
    model_name: str
    exact_scale: Fraction | None = None
    pixel_settings: tuple[tuple[str, str], ...] = ()
    grid: Grid | str = Grid.CORNER
    compress: str = "keep"
    created: datetime | None = None


class _LogCollector(logging.Handler):
    """Routes nibabel's log records to the recording thread's list while any recording is active."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()
        self.lock = threading.Lock()
        self.active = 0
        self.saved: tuple[list[logging.Handler], bool] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        records = getattr(self.local, "records", None)
        if records is not None:
            records.append(record)

    @contextmanager
    def collect(self, logger: logging.Logger) -> Iterator[list[logging.LogRecord]]:
        with self.lock:
            if self.active == 0:
                self.saved = (logger.handlers[:], logger.propagate)
                logger.handlers, logger.propagate = [self], False
            self.active += 1
        outer = getattr(self.local, "records", None)
        self.local.records = records = []
        try:
            yield records
        finally:
            self.local.records = outer
            with self.lock:
                self.active -= 1
                if self.active == 0 and self.saved is not None:
                    logger.handlers, logger.propagate = self.saved


_NIBABEL_LOG = _LogCollector()


@contextmanager
def recorded_warnings(notes: list[str], source: str) -> Iterator[None]:
    """Collect the warnings raised inside as one-line notes about ``source`` (duplicates once).

    pydicom and nibabel report odd but readable files (excess padding, a value that breaks its VR)
    through :mod:`warnings`, and nibabel also logs header fixes straight to stderr; either would
    print lines of library internals on the user's stderr. The command-line tools print these
    notes in one line each instead; if the block raises, the error says what matters and the
    notes are dropped. nibabel's logger is redirected only while a block runs (thread-safe).
    """
    with _NIBABEL_LOG.collect(logging.getLogger("nibabel.global")) as logged:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    messages = [w.message for w in caught] + [r.getMessage() for r in logged]
    for message in messages:
        error = message if isinstance(message, BaseException) else Exception(message)
        text = f"{source}: {describe_error(error, limit=240)}"
        if text not in notes:
            notes.append(text)


def describe_error(error: BaseException, limit: int = 200) -> str:
    """A library exception as a short single line (for wrapping into one-line user errors)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_dimensions(source: str, height: int, width: int, frames: int = 1) -> None:
    """Refuse sizes outside ``MIN_SIDE..MAX_SIDE`` (or over ``MAX_PIXELS``) before decoding.

    Raises:
        InputError: naming the size found and the accepted range.
    """
    height, width, frames = int(height), int(width), int(frames)
    if height < MIN_SIDE or width < MIN_SIDE:
        raise InputError(
            f"{source}: image is {width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed to super-resolve"
        )
    if height > MAX_SIDE or width > MAX_SIDE:
        raise InputError(
            f"{source}: header claims {width}x{height} pixels; at most {MAX_SIDE} per side is accepted"
            " (crop or split the image first)"
        )
    if frames < 1:
        raise InputError(f"{source}: header claims {frames} frames; expected at least 1")
    if height * width * frames > MAX_PIXELS:
        raise InputError(
            f"{source}: header claims {frames} frame(s) of {width}x{height} pixels; at most {MAX_PIXELS} pixels"
            " per file are accepted (split the file first)"
        )


def grid_scale(info: DerivationInfo, old_size: tuple[int, int], new_size: tuple[int, int]) -> Fraction | None:
    """The exact scale the frames were made with, if it explains the new size on both axes.

    ``None`` when ``info`` carries no exact scale or when ``floor(n * r) != N`` on an axis (frames
    resized by other means): geometry then follows the size ratio.
    """
    r = info.exact_scale
    if r is None:
        return None
    r = Fraction(r)
    if r <= 0 or any(int(n * r) != big for n, big in zip(old_size, new_size)):
        return None
    return r


@dataclass(frozen=True)
class GridMap:
    """Where output pixels sit on the input: output pixel ``i`` shows input coordinate ``a i + b``.

    Attributes:
        row: ``(a, b)`` along the rows (vertical axis).
        col: ``(a, b)`` along the columns.
    """

    row: tuple[Fraction, Fraction]
    col: tuple[Fraction, Fraction]

    @property
    def factors(self) -> tuple[Fraction, Fraction]:
        """``(row, col)`` factors from old to new pixel spacing."""
        return self.row[0], self.col[0]

    @property
    def offsets(self) -> tuple[Fraction, Fraction]:
        """``(row, col)`` input coordinate of the first output pixel's centre."""
        return self.row[1], self.col[1]


def _is_center(info: DerivationInfo) -> bool:
    return str(getattr(info.grid, "value", info.grid)) == Grid.CENTER.value


def grid_map(info: DerivationInfo, old_size: tuple[int, int], new_size: tuple[int, int]) -> GridMap:
    """The output grid on the input (see :class:`Grid`): ``corner`` with the exact scale when it
    explains the new size (else the size ratio), ``center`` with ``a = (n - 1) / (N - 1)``."""
    axes = []
    scale = grid_scale(info, old_size, new_size)
    for n, big in zip(old_size, new_size):
        if _is_center(info) and big > 1 and n > 1:
            axes.append((Fraction(n - 1, big - 1), Fraction(0)))
            continue
        a = 1 / scale if scale is not None else Fraction(n, big)
        axes.append((a, (a - 1) / 2))
    return GridMap(axes[0], axes[1])


def resample_on_map(image: np.ndarray, height: int, width: int, gmap: GridMap, linear: bool = False) -> np.ndarray:
    """Bicubic (or bilinear) resampling of ``[h, w]``/``[h, w, C]`` onto ``gmap`` (edges replicated)."""
    import cv2

    (ar, br), (ac, bc) = gmap.row, gmap.col
    to_source = np.array([[float(ac), 0.0, float(bc)], [0.0, float(ar), float(br)]], dtype=np.float64)
    flags = (cv2.INTER_LINEAR if linear else cv2.INTER_CUBIC) | cv2.WARP_INVERSE_MAP
    out = cv2.warpAffine(image, to_source, (width, height), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(height, width, *image.shape[2:])


def spacing_factors(
    old_size: tuple[int, int], new_size: tuple[int, int], scale: Fraction | None
) -> tuple[Fraction, Fraction]:
    """``(row, col)`` factors from old to new pixel spacing: exactly ``1/r`` on the network's grid,
    else the size ratio ``old / new`` (field of view preserved). Exact fractions, so a spacing
    asked for (``old / r`` with ``r = old / wanted``) comes out exactly."""
    if scale is not None:
        return 1 / scale, 1 / scale
    return Fraction(old_size[0], new_size[0]), Fraction(old_size[1], new_size[1])


class ScanImage(ABC):
    """One input file, read into frames in [0, 1], that can write derived images back.

    Attributes:
        path: The input file.
        frames: float32 ``[F, h, w]`` in [0, 1] (colour inputs: luminance).
        spacing: ``(row_mm, col_mm)`` pixel spacing, or ``None`` when the file has none.
        intensity: The map between stored values and [0, 1].
    """

    format: ImageFormat
    default_suffix: str

    def __init__(
        self,
        path: str | os.PathLike,
        frames: np.ndarray,
        intensity: IntensityMap,
        spacing: tuple[float, float] | None = None,
        residual: np.ndarray | None = None,
    ) -> None:
        self.path = Path(path)
        self.frames = np.ascontiguousarray(frames, dtype=np.float32)
        self.intensity = intensity
        self.spacing = spacing
        #: ``[F, h, w]`` stored-unit excess of pixels beyond the intensity window, or ``None``.
        self.residual = residual
        #: One-line remarks about the file from the format libraries (see :func:`recorded_warnings`).
        self.notes: list[str] = []

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of one frame."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    def close(self) -> None:
        """Release the pixel arrays; the file itself was closed after reading."""
        self.frames = np.empty((0, 0, 0), dtype=np.float32)
        self.residual = None

    def stored_values(self, sr: np.ndarray, info: DerivationInfo) -> np.ndarray:
        """Gray ``[F, H, W]`` frames in [0, 1] -> stored values, with the out-of-window residual
        resampled on the network's grid and added back."""
        residual = None
        if self.residual is not None:
            height, width = sr.shape[1:]
            if _is_center(info):
                gmap = grid_map(info, self.size, (height, width))
                residual = np.stack([resample_on_map(r, height, width, gmap, linear=True) for r in self.residual])
            else:
                scale = grid_scale(info, self.size, (height, width))
                residual = np.stack([resize_on_grid_linear(r, height, width, scale) for r in self.residual])
        return self.intensity.from_unit(sr, residual)

    def __enter__(self) -> ScanImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        h, w = self.size
        return (
            f"{type(self).__name__}({str(self.path)!r}, format={self.format.value}, frames={self.n_frames},"
            f" size={w}x{h})"
        )

    def write_derived(self, sr_frames: np.ndarray, out_path: str | os.PathLike, info: DerivationInfo) -> Path:
        """Write super-resolved frames as a derived image in the input's format, units and geometry.

        The geometry follows the pixels: with ``info.exact_scale`` (r) explaining the new size,
        the spacing becomes exactly ``old / r`` per axis with the outer top-left corner kept (the
        field of view is ``N * old / r``); without it, the size ratio with the field of view kept.

        Args:
            sr_frames: float32 ``[F, H, W]`` (or ``[H, W]`` when ``F == 1``) in [0, 1].
            out_path: Destination file (written atomically; never the input).
            info: Provenance recorded in formats that carry it.

        Returns:
            The path written.

        Raises:
            OutputError: if ``out_path`` is the input or cannot be written.
            InputError: if ``sr_frames`` does not match the input's frames or is not finite.
        """
        sr = self._check_sr(sr_frames)
        out = check_output_path(out_path, self.path)
        self.check_output_name(out)
        with recorded_warnings(self.notes, f"writing {out.name}"):
            data = self._encode_derived(sr, out, info)
        atomic_write_bytes(out, data)
        return out

    def check_output_name(self, out_path: str | os.PathLike) -> None:
        """Refuse an output name whose suffix promises another format than the one written.

        A derived image is written in the input's format (that is what keeps its units, geometry
        and metadata), so ``-o out.png`` for a DICOM input would be a DICOM file under a PNG name.
        Called before any work starts, so a wrong name costs nothing.

        Raises:
            OutputError: naming the suffixes this input can be written as.
        """
        name = Path(out_path).name.lower()
        if not any(name.endswith(s) if s else "." not in name for s in self.output_suffixes):
            shown = ", ".join(s or "no suffix" for s in self.output_suffixes)
            raise OutputError(
                f"output {Path(out_path).name}: a {self.format.value.upper()} input is written as"
                f" {self.format.value.upper()} ({shown}); name the output e.g. {Path(out_path).stem}"
                f"{self.default_suffix}"
            )

    @property
    def output_suffixes(self) -> tuple[str, ...]:
        """Suffixes an output of this input may carry (``""``: a name without a dot, as ``IM0001``)."""
        return (self.default_suffix,)

    def _check_sr(self, sr_frames: np.ndarray) -> np.ndarray:
        sr = np.asarray(sr_frames)
        if sr.ndim == 2:
            sr = sr[None]
        if sr.ndim != 3 or sr.shape[0] != self.n_frames:
            raise InputError(
                f"super-resolved frames have shape {tuple(np.shape(sr_frames))}; expected [{self.n_frames}, H, W]"
                f" for {self.path.name}"
            )
        if sr.shape[1] < 1 or sr.shape[2] < 1:
            raise InputError(f"super-resolved frames have an empty size {sr.shape[2]}x{sr.shape[1]}")
        if not np.issubdtype(sr.dtype, np.floating) or not np.isfinite(sr).all():
            raise InputError("super-resolved frames must be finite floats in [0, 1]")
        return np.clip(sr.astype(np.float32, copy=False), 0.0, 1.0)

    @abstractmethod
    def _encode_derived(self, sr: np.ndarray, out: Path, info: DerivationInfo) -> bytes:
        """Serialise the derived image (``sr`` already checked: float32 ``[F, H, W]`` in [0, 1])."""


def planes_on_grid(planes: np.ndarray, height: int, width: int, info: DerivationInfo, old_size) -> np.ndarray:
    """``[F, h, w, C]`` colour/alpha planes on the output grid when it is ``center`` (bicubic);
    unchanged otherwise (:func:`~metasr.scanners.intensity.merge_luma` resamples them on the
    network's grid itself)."""
    if planes is None or not _is_center(info):
        return planes
    gmap = grid_map(info, old_size, (height, width))
    return np.stack([resample_on_map(np.ascontiguousarray(p), height, width, gmap) for p in planes]).astype(np.float32)
