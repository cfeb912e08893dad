"""NIfTI-1/NIfTI-2 volumes (nibabel), super-resolved slice by slice.

Reading
    A 3D volume is cut into 2D slices along one *slice axis*; the frames are the slices and the
    super-resolution enlarges the two in-plane axes. The default slice axis is the one with the
    largest voxel size (the through-plane axis of a typical 2D acquisition, e.g. 1x1x5 mm);
    ties go to the last axis (``k``), so an isotropic volume is processed in axial-index slices.
    A 2D image (or a volume with one slice) is one frame. Trailing singleton dimensions
    (``128x128x10x1``) are ignored and kept in the output; a 4D (or higher) series is processed
    volume by volume, every volume's slices being frames (one window for the series). The header
    dimensions are checked before any voxel is read; ``.nii.gz`` headers are checked before the
    volume is decompressed.

Intensity
    Frames are built from the *stored* voxel values (before ``scl_slope``/``scl_inter``), mapped
    to [0, 1] as in :mod:`metasr.scanners.intensity` with one window for the whole volume
    (default ``auto``: 8-bit unsigned 0..255, wider data a robust percentile window, values
    beyond it kept as a residual). Float volumes with NaN or infinite voxels are refused, as are
    voxel sizes (pixdim) that are not positive finite numbers and files shorter than their
    header's dimensions say (checked before any voxel is allocated).

Writing
    The output has the input's dtype, ``scl_slope``/``scl_inter``, intent and codes; only the two
    in-plane dimensions change. The geometry follows the pixels: for each in-plane axis ``d``,
    with ``f = 1 / r`` (``r`` the exact scale; the size ratio ``n / N`` when none is known), the
    affine column ``A[:, d]`` becomes ``f * A[:, d]`` and the origin moves by
    ``(f - 1) / 2 * A[:, d]``: the outer corner of the field of view stays where it was and the
    voxel size is exactly ``old / r``. The qform and sform are updated alike (each keeps its
    code); pixdim follows. ``.nii.gz`` output is gzip-compressed.
"""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import numpy as np

from metasr.core.errors import InputError, MetaSRError
from metasr.scanners.base import (
    NIFTI_SUFFIXES,
    DerivationInfo,
    ImageFormat,
    ScanImage,
    check_dimensions,
    describe_error,
    grid_map,
)
from metasr.scanners.intensity import IntensityMap, IntensityRange, IntensityWindow

__all__ = ["NiftiScan", "read_nifti", "default_slice_axis", "rescale_affine"]

_GZIP_MAGIC = b"\x1f\x8b"


def default_slice_axis(zooms: tuple[float, ...]) -> int:
    """Axis of the largest voxel size among the first three; ties go to the last such axis."""
    z = [float(v) for v in zooms[:3]]
    return max(range(len(z)), key=lambda i: (z[i], i))


def rescale_affine(
    affine: np.ndarray, axis_factors: dict[int, float], axis_offsets: dict[int, float] | None = None
) -> np.ndarray:
    """Affine after resampling voxel axes (by default with the field of view's corner kept).

    Args:
        affine: 4x4 voxel-to-world affine (voxel centres at integer indices).
        axis_factors: ``{axis: old_length / new_length}`` for each resampled axis.
        axis_offsets: ``{axis: old index of the first new voxel centre}``; default ``(f - 1) / 2``
            (the outer corner kept); 0 keeps the first voxel centre (``--grid center``).
    """
    out = np.array(affine, dtype=np.float64, copy=True)
    for axis, f in axis_factors.items():
        column = np.asarray(affine, dtype=np.float64)[:3, axis]
        offset = 0.5 * (f - 1.0) if axis_offsets is None else float(axis_offsets[axis])
        out[:3, 3] += offset * column
        out[:3, axis] = f * column
    return out


def _nib():
    import nibabel  # a core dependency; imported here to keep `import metasr.scanners` light

    return nibabel


class NiftiScan(ScanImage):
    """A NIfTI volume read by :func:`read_nifti`.

    Attributes:
        axis: The slice axis (frames are slices along it).
        in_plane: The two in-plane axes, ``(row_axis, col_axis)`` of the frames.
        header: The input's nibabel header (the template of the derived volume).
        shape: The volume's shape.
        slope_inter: The input's ``scl_slope``/``scl_inter`` (1, 0 when unscaled).
    """

    format = ImageFormat.NIFTI

    def __init__(
        self,
        path: str | os.PathLike,
        frames: np.ndarray,
        intensity: IntensityMap,
        spacing: tuple[float, float],
        header,
        axis: int,
        in_plane: tuple[int, int],
        shape: tuple[int, ...],
        slope_inter: tuple[float, float],
        compressed: bool,
        residual: np.ndarray | None = None,
    ) -> None:
        super().__init__(path, frames, intensity, spacing, residual)
        self.header = header
        self.axis = axis
        self.in_plane = in_plane
        self.shape = tuple(shape)
        self.slope_inter = slope_inter
        self.default_suffix = ".nii.gz" if compressed else ".nii"

    @property
    def output_suffixes(self) -> tuple[str, ...]:
        return NIFTI_SUFFIXES  # compression follows the output's name

    def _encode_derived(self, sr: np.ndarray, out: Path, info: DerivationInfo) -> bytes:
        nib = _nib()
        name = out.name.lower()
        _, height, width = sr.shape
        row_axis, col_axis = self.in_plane
        values = self.stored_values(sr, info)  # [F, H, W] in the stored dtype
        volume = _volume_of(values, self.shape, self.in_plane) if len(self.shape) >= 3 else values[0]
        file_shape = list(getattr(self, "file_shape", self.shape))
        file_shape[row_axis], file_shape[col_axis] = height, width
        volume = volume.reshape(file_shape)  # trailing singleton axes of the input come back
        gmap = grid_map(info, self.size, (height, width))
        factors = {row_axis: float(gmap.row[0]), col_axis: float(gmap.col[0])}
        offsets = {row_axis: float(gmap.row[1]), col_axis: float(gmap.col[1])}

        header = self.header.copy()
        qform, qcode = header.get_qform(coded=True)
        sform, scode = header.get_sform(coded=True)
        zooms = list(header.get_zooms())
        for axis, f in factors.items():
            zooms[axis] = zooms[axis] * f
        image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        best = rescale_affine(header.get_best_affine(), factors, offsets)
        image = image_class(volume, best, header=header)
        image.header.set_zooms(zooms)
        if qform is not None:
            image.header.set_qform(rescale_affine(qform, factors, offsets), code=int(qcode))
        else:
            image.header.set_qform(None, code=0)
        if sform is not None:
            image.header.set_sform(rescale_affine(sform, factors, offsets), code=int(scode))
        else:
            image.header.set_sform(None, code=0)
        slope, inter = self.slope_inter
        # Stored values are written as they are, with the input's scaling (exact units).
        image.header.set_slope_inter(slope, inter)
        image.header["descrip"] = f"metasr x{info.scale} super-resolved"[:79].encode()
        data = image.to_bytes()
        return gzip.compress(data, compresslevel=6) if name.endswith(".gz") else data


def _load(nib, data: bytes, name: str):
    """Parse the header, check its dimensions, then build the image (data still on disk/bytes)."""
    compressed = data[:2] == _GZIP_MAGIC
    if compressed:
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
                head = gz.read(544)
        except (OSError, EOFError) as e:
            raise InputError(
                f"{name}: gzip stream is damaged or truncated ({describe_error(e)}); copy the file again"
            ) from e
    else:
        head = data[:544]
    if len(head) >= 348 and head[:4] in ((348).to_bytes(4, "little"), (348).to_bytes(4, "big")):
        header_class, image_class = nib.Nifti1Header, nib.Nifti1Image
    elif len(head) >= 540 and head[:4] in ((540).to_bytes(4, "little"), (540).to_bytes(4, "big")):
        header_class, image_class = nib.Nifti2Header, nib.Nifti2Image
    else:
        raise InputError(f"{name}: not a NIfTI file (no NIfTI-1/NIfTI-2 header); check the file")
    try:
        header = header_class.from_fileobj(io.BytesIO(head), check=False)  # checked here, no silent fixes
        shape = tuple(int(s) for s in header.get_data_shape())
    except Exception as e:  # nibabel raises HeaderDataError, ValueError ... on damaged headers
        raise InputError(f"{name}: NIfTI header is damaged ({describe_error(e)})") from e
    return compressed, header, image_class, shape


def _decompress_exactly(header, data: bytes, name: str) -> bytes:
    """Decompress only the bytes the (already checked) header needs: a small ``.nii.gz`` whose
    stream inflates far beyond its header's dimensions cannot exhaust memory."""
    needed = int(header.get_data_offset()) + int(np.prod(header.get_data_shape(), dtype=np.int64)) * int(
        header.get_data_dtype().itemsize
    )
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
            raw = gz.read(needed)
    except (OSError, EOFError) as e:
        raise InputError(
            f"{name}: gzip stream is damaged or truncated ({describe_error(e)}); copy the file again"
        ) from e
    if len(raw) < needed:
        raise InputError(f"{name}: NIfTI file is truncated ({len(raw)} of {needed} bytes); copy the file again")
    return raw


def _check_zooms(header, shape: tuple[int, ...], name: str) -> tuple[float, ...]:
    """Voxel sizes of the image's axes, each a positive finite number (a singleton axis: any, read as 1)."""
    pixdim = [float(v) for v in header["pixdim"][1 : len(shape) + 1]]
    for axis, size in enumerate(pixdim):
        if axis >= 3:
            continue  # time and other non-spatial axes: any step (0 is common), never resampled
        if shape[axis] == 1 and not (np.isfinite(size) and size > 0):
            pixdim[axis] = 1.0  # no spacing between slices of a single slice
        elif not (np.isfinite(size) and size > 0):
            raise InputError(
                f"{name}: NIfTI pixdim[{axis + 1}] (voxel size along axis {axis}) is {size:.6g}; it must be a positive"
                " finite number in mm, correct the header (e.g. nibabel set_zooms) and retry"
            )
    return tuple(pixdim)


def _check_length(header, data: bytes, name: str) -> None:
    """An uncompressed file must hold every voxel its header claims: checked before allocating."""
    offset = int(header.get_data_offset())
    needed = offset + int(np.prod(header.get_data_shape(), dtype=np.int64)) * int(header.get_data_dtype().itemsize)
    if len(data) < needed:
        raise InputError(
            f"{name}: NIfTI header claims {needed} bytes of voxels and header but the file has {len(data)};"
            " the file is truncated or its header is wrong, copy it again"
        )


def _slicing(shape: tuple[int, ...], header, axis, name: str) -> tuple[tuple[int, ...], int, tuple[int, int]]:
    """``(shape, slice axis, in-plane axes)`` of a 2D image or 3D volume, sizes checked."""
    # Trailing singleton dimensions (a 3D volume stored as X x Y x Z x 1 by FSL or dipy) are
    # dropped for processing and put back when writing; a real 4D series is processed volume by
    # volume (every volume's slices are frames).
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) < 2:
        raise InputError(f"{name}: NIfTI image has shape {shape}; expected a 2D image or 3D volume")
    zooms = _check_zooms(header, shape, name)
    if len(shape) == 2:
        if axis not in (None, 2, -1):
            raise InputError(f"{name}: a 2D NIfTI image has no slice axis {axis}; omit the axis")
        axis, in_plane = 2, (0, 1)
        check_dimensions(name, shape[0], shape[1])
    else:
        if axis is None:
            # A volume with a singleton axis is a stack of one slice along it, whatever the zooms.
            singleton = [a for a in range(3) if shape[a] == 1]
            axis = singleton[-1] if singleton else default_slice_axis(zooms)
        elif isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -3 <= int(axis) <= 2:
            raise InputError(f"{name}: slice axis must be 0, 1 or 2 for a 3D volume, got {axis!r}")
        axis = int(axis) % 3
        in_plane = tuple(a for a in range(3) if a != axis)
        frames = int(np.prod([n for a, n in enumerate(shape) if a not in in_plane], dtype=np.int64))
        check_dimensions(name, shape[in_plane[0]], shape[in_plane[1]], frames)

    return shape, axis, in_plane


def read_nifti(
    path: str | os.PathLike,
    data: bytes | None = None,
    *,
    axis: int | None = None,
    intensity: IntensityRange | str = IntensityRange.AUTO,
    window: IntensityWindow | None = None,
) -> NiftiScan:
    """Read a NIfTI image into frames in [0, 1] (see the module docstring).

    Args:
        path: A ``.nii`` or ``.nii.gz`` file.
        data: Its bytes if already read.
        axis: Slice axis (0, 1 or 2, negative allowed); default the largest voxel size.
        intensity: Window policy, see :class:`~metasr.scanners.intensity.IntensityRange`.
        window: A window shared with other files; ``None`` measures it from this volume.

    Raises:
        InputError: if the file is not a readable 2D/3D NIfTI image within the size limits.
    """
    nib = _nib()
    path = Path(path)
    name = path.name
    if data is None:
        data = path.read_bytes()
    compressed, header, image_class, shape = _load(nib, data, name)

    shape, axis, in_plane = _slicing(shape, header, axis, name)
    zooms = _check_zooms(header, shape, name)

    try:
        if compressed:
            raw = _decompress_exactly(header, data, name)
        else:
            _check_length(header, data, name)
            raw = data
        image = image_class.from_bytes(raw)
        proxy = image.dataobj
        stored = np.asarray(proxy.get_unscaled() if hasattr(proxy, "get_unscaled") else proxy)
        slope = float(getattr(proxy, "slope", 1.0))
        inter = float(getattr(proxy, "inter", 0.0))
    except MetaSRError:
        raise
    except Exception as e:  # truncated data, bad dtype codes ...
        raise InputError(
            f"{name}: NIfTI voxel data cannot be read ({type(e).__name__}: {describe_error(e)});"
            " the file may be truncated"
        ) from e
    if stored.dtype.names is not None or np.iscomplexobj(stored):
        raise InputError(f"{name}: NIfTI data type {stored.dtype} is not supported; expected integer or float voxels")
    file_shape = tuple(int(n) for n in stored.shape)
    stored = stored.reshape(shape)
    imap = IntensityMap.for_data(stored, policy=intensity, source=name, window=window)
    stack = stored[None] if len(shape) == 2 else _frames_of(stored, in_plane)
    frames = imap.to_unit(stack)
    spacing = (zooms[in_plane[0]], zooms[in_plane[1]])
    residual = imap.residual(stack)
    header = image.header
    scan = NiftiScan(path, frames, imap, spacing, header, axis, in_plane, shape, (slope, inter), compressed, residual)
    scan.file_shape = file_shape
    if len(shape) > 3:
        volumes = int(np.prod(shape[3:], dtype=np.int64))
        scan.notes.append(
            f"{name}: {len(shape)}D NIfTI, {volumes} volumes processed one by one ({shape[axis]} slices each)"
        )
    return scan


def _frames_of(stored: np.ndarray, in_plane: tuple[int, int]) -> np.ndarray:
    """``[F, h, w]`` frames: the in-plane axes last, every other axis (slices, volumes) flattened in order."""
    moved = np.moveaxis(stored, in_plane, (-2, -1))
    return moved.reshape(-1, *moved.shape[-2:])


def _volume_of(frames: np.ndarray, shape: tuple[int, ...], in_plane: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`_frames_of` for frames of a new in-plane size."""
    others = [n for a, n in enumerate(shape) if a not in in_plane]
    return np.moveaxis(frames.reshape(*others, *frames.shape[-2:]), (-2, -1), in_plane)
