"""Training and evaluation data: dataset specs, reading through the scanners, the slice index.

A dataset is named by a spec string:

* ``brats:PATH``: BraTS cases, ``PATH/<case>/<case>_t1ce.nii.gz`` (BraTS 2018-2021 naming), or
  case folders of 2D slice images (the paper's "2D t1ce version"); axial slices; the
  train/validation split is by case.
* ``div2k:PATH``: a folder of HR photographs (PNG), RGB converted to luminance Y.
* ``folder:PATH``: every image file under ``PATH`` (or ``PATH`` itself) that the scanners read:
  DICOM (by content, so suffix-less ``IM0001`` files too), NIfTI, PNG, TIFF, JPEG; volumes are
  sliced along the requested anatomical axes, multi-frame files give all their frames; the split
  is by file.

Every file is read by :func:`metasr.scanners.read_image`, the reader deployment uses, so the
networks train and are evaluated on exactly the [0, 1] values ``metasr-run`` feeds them (the same
intensity window, MONOCHROME1 inverted, rescale handled as the runtime does).

Indexing reads every file once: unreadable files are skipped and recorded with their reason
(:attr:`ImageIndex.skipped`); empty slices are skipped; each kept slice remembers its
maximal-information box (the bounding box of the non-background pixels), so training and
evaluation only see it.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from metasr.core.errors import InputError
from metasr.scanners import ImageFormat, IntensityRange, iter_images, read_image
from metasr.scanners.base import NIFTI_SUFFIXES
from metasr.training.specs import Axis, DatasetKind, DataSpec, parse_spec

__all__ = [
    "SliceRef",
    "ImageIndex",
    "DecodedFile",
    "read_frames",
    "read_file",
    "foreground_box",
    "max_information_crop",
    "build_index",
    "split_index",
    "tile_index",
    "load_slice",
    "FrameCache",
]

#: A pixel is foreground when above this fraction of the file's (volume's) maximum.
FOREGROUND_THRESHOLD = 0.05


# --------------------------------------------------------------------------------------------
# Reading (through metasr.scanners)


@dataclass
class DecodedFile:
    """The frames of one file as the scanners read them, re-sliceable along anatomical axes.

    Attributes:
        frames: float32 ``[F, h, w]`` in [0, 1] (the scanners' frames).
        frame_axis: Voxel axis of the frames of a 3D NIfTI volume, else ``None``.
        voxel_axes: Voxel axis of each anatomical axis for a 3D volume, else ``None``.
    """

    frames: np.ndarray
    frame_axis: int | None = None
    voxel_axes: dict[Axis, int] | None = None

    @property
    def is_volume(self) -> bool:
        return self.voxel_axes is not None

    def slices(self, axis: Axis | None) -> np.ndarray:
        """``[n, h, w]`` slices along ``axis`` (volumes), or the frames (2D and multi-frame files).

        Slicing a volume along another voxel axis gives the frames ``read_image(path, axis=k)``
        would give: rows and columns are the remaining voxel axes in ascending order.
        """
        if self.voxel_axes is None or axis is None:
            return self.frames
        target = self.voxel_axes[Axis(axis)]
        if target == self.frame_axis:
            return self.frames
        return np.moveaxis(np.moveaxis(self.frames, 0, self.frame_axis), target, 0)


def _voxel_axes(header: object) -> dict[Axis, int]:
    """Voxel axis closest to each anatomical direction, from a nibabel header's affine."""
    import nibabel as nib

    try:
        codes = nib.orientations.aff2axcodes(header.get_best_affine())  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a degenerate affine names no direction: keep the voxel order
        codes = (None, None, None)
    found: dict[Axis, int] = {}
    for axis in Axis:
        hits = [i for i, c in enumerate(codes) if c in axis.codes]
        found[axis] = hits[0] if hits else axis.default_voxel_axis
    if len(set(found.values())) != 3:  # an oblique affine can map two directions to one axis
        found = {axis: axis.default_voxel_axis for axis in Axis}
    return found


def read_file(path: str | os.PathLike, intensity: IntensityRange | str = IntensityRange.AUTO) -> DecodedFile:
    """Read one image file with :func:`metasr.scanners.read_image`.

    Raises:
        InputError: the file cannot be read (the scanners' one-line reason).
    """
    path = Path(path)
    try:
        with read_image(path, intensity=intensity) as scan:
            frames = scan.frames
            shape = tuple(getattr(scan, "shape", ()))
            if scan.format is ImageFormat.NIFTI and len(shape) == 3:
                return DecodedFile(frames, int(scan.axis), _voxel_axes(scan.header))  # type: ignore[attr-defined]
            return DecodedFile(frames)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - an odd file must cost one verdict, not the whole run
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise InputError(f"{path.name}: cannot be read ({type(e).__name__}: {reason})") from e


def read_frames(
    path: str | os.PathLike, axis: Axis | str | None = None, intensity: IntensityRange | str = IntensityRange.AUTO
) -> np.ndarray:
    """float32 ``[n, h, w]`` in [0, 1]: the frames of a file, or a volume's slices along ``axis``."""
    return read_file(path, intensity).slices(Axis(axis) if axis is not None else None)


# --------------------------------------------------------------------------------------------
# Maximal-information crop


def foreground_box(
    image: np.ndarray, reference_max: float | None = None, threshold: float = FOREGROUND_THRESHOLD
) -> tuple[int, int, int, int] | None:
    """Bounding box ``(top, left, bottom, right)`` (exclusive ends) of the non-background pixels.

    Background is everything at or below ``threshold * reference_max`` (default: the image's own
    maximum). Returns ``None`` for an empty image.
    """
    top_value = float(image.max()) if reference_max is None else float(reference_max)
    if top_value <= 0:
        return None
    mask = image > threshold * top_value
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def max_information_crop(
    image: np.ndarray, reference_max: float | None = None, threshold: float = FOREGROUND_THRESHOLD
) -> np.ndarray | None:
    """Crop an image to its maximal-information region (bounding box of its foreground)."""
    box = foreground_box(image, reference_max, threshold)
    if box is None:
        return None
    top, left, bottom, right = box
    return image[top:bottom, left:right]


# --------------------------------------------------------------------------------------------
# Index of slices


@dataclass(frozen=True)
class SliceRef:
    """One 2D training/evaluation image: a frame of a file or a slice of a volume, and its crop box."""

    path: str
    axis: str | None  # Axis value for volume slices, None for frames of 2D/multi-frame files
    index: int  # slice (volume) or frame number
    box: tuple[int, int, int, int]
    group: str  # split unit: the BraTS case or the file
    frames: int = 1  # frames in the file (2D files: 1)

    @property
    def name(self) -> str:
        stem = Path(self.path).name
        if self.axis is not None:
            return f"{stem}:{self.axis}{self.index}"
        return f"{stem}:frame{self.index}" if self.frames > 1 else stem

    @property
    def height(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def width(self) -> int:
        return self.box[3] - self.box[1]


@dataclass
class ImageIndex:
    """The slices of one or more dataset specs, with what was skipped and why."""

    slices: list[SliceRef] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # unreadable file -> one-line reason
    skipped_slices: int = 0
    intensity: str = IntensityRange.AUTO.value

    def __len__(self) -> int:
        return len(self.slices)

    @property
    def skipped_files(self) -> list[str]:
        return list(self.skipped)

    @property
    def groups(self) -> list[str]:
        return sorted({s.group for s in self.slices})

    def extend(self, other: ImageIndex) -> None:
        self.slices += other.slices
        self.skipped.update(other.skipped)
        self.skipped_slices += other.skipped_slices


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _images_under(path: Path, volumes: bool = True) -> list[Path]:
    """Image files under ``path`` (recursively; DICOM detected by content), or ``[path]`` for a file."""
    if path.is_file():
        return [path]
    return [p for p in iter_images(path, recursive=True) if volumes or not _is_nifti(p)]


#: The t1ce modality in BraTS file names: ``<case>_t1ce.nii.gz`` (2018-2021), ``<case>-t1c.nii.gz`` (2023).
_T1CE_NAME = re.compile(r"[-_]t1ce?\.nii(\.gz)?$", re.IGNORECASE)


def _brats_files(root: Path) -> list[tuple[Path, str]]:
    """``(file, case)`` pairs: the t1ce volume of every case folder (at any depth, e.g. under
    ``HGG/``/``LGG/``), else the 2D images of each top-level case folder, plus loose 2D slices."""
    if root.is_file():
        return [(root, root.name)]
    volumes: dict[Path, Path] = {}
    for p in sorted(root.rglob("*")):
        if _T1CE_NAME.search(p.name) and p.is_file() and not any(part.startswith(".") for part in p.parts):
            volumes.setdefault(p.parent, p)  # one volume per case folder: the first by name
    pairs = [(vol, case_dir.name) for case_dir, vol in volumes.items()]
    for case_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not any(d == case_dir or case_dir in d.parents for d in volumes):
            pairs += [(p, case_dir.name) for p in _images_under(case_dir, volumes=False)]
    # Loose 2D slices at the top level: the case is the file name up to its last underscore.
    for p in iter_images(root):
        if not _is_nifti(p):
            pairs.append((p, p.stem.rsplit("_", 1)[0]))
    return pairs


def _index_file(
    path: Path, group: str, axes: Sequence[Axis], min_size: int, threshold: float, intensity: str
) -> ImageIndex:
    out = ImageIndex()
    decoded = read_file(path, intensity)
    # One reference maximum per file (a volume, a multi-frame series): a dark slice stays dark.
    vmax = float(decoded.frames.max()) if decoded.frames.size else 0.0
    for axis in axes if decoded.is_volume else (None,):
        stack = decoded.slices(axis)
        for i in range(stack.shape[0]):
            box = foreground_box(stack[i], vmax, threshold)
            if box is None or min(box[2] - box[0], box[3] - box[1]) < min_size:
                out.skipped_slices += 1
                continue
            name = axis.value if axis is not None else None
            out.slices.append(SliceRef(str(path), name, i, box, group, int(stack.shape[0])))
    return out


def _spec_files(spec: DataSpec, axes: Sequence[Axis]) -> tuple[list[tuple[Path, str]], Sequence[Axis]]:
    if spec.kind is DatasetKind.BRATS:
        return _brats_files(spec.path), (Axis.AXIAL,)
    if spec.kind is DatasetKind.DIV2K:
        return [(p, p.name) for p in _images_under(spec.path, volumes=False)], (Axis.AXIAL,)
    return [(p, str(p.relative_to(spec.path)) if p != spec.path else p.name) for p in _images_under(spec.path)], axes


def build_index(
    specs: Sequence[str | DataSpec],
    axes: Sequence[Axis | str] = (Axis.AXIAL,),
    min_size: int = 16,
    threshold: float = FOREGROUND_THRESHOLD,
    intensity: IntensityRange | str = IntensityRange.AUTO,
) -> ImageIndex:
    """Index every usable slice of the given specs.

    Args:
        specs: Dataset specs (``brats:``/``div2k:``/``folder:``).
        axes: Slicing axes for volumes of ``folder:`` specs (BraTS is always axial).
        min_size: Slices whose maximal-information box is smaller than this (either side) are
            skipped, as are empty slices.
        threshold: Foreground threshold relative to the file's (volume's) maximum.
        intensity: Intensity window of the scanners (as ``metasr-run --intensity``).

    Raises:
        InputError: a malformed spec, or no usable slice at all (the message names the specs and
            the first unreadable file's reason).
    """
    axes = [Axis(a) for a in axes]
    intensity = IntensityRange(intensity).value
    index = ImageIndex(intensity=intensity)
    parsed = [spec if isinstance(spec, DataSpec) else parse_spec(spec) for spec in specs]
    for s in parsed:
        pairs, spec_axes = _spec_files(s, axes)
        for path, group in pairs:
            try:
                index.extend(_index_file(path, f"{s.kind.value}:{group}", spec_axes, min_size, threshold, intensity))
            except InputError as e:
                index.skipped[str(path)] = " ".join(str(e).split())
    if not index.slices:
        names = ", ".join(str(s) for s in parsed) or "(none given)"
        first = next(iter(index.skipped.values()), None)
        why = f"; first unreadable: {first}" if first else ""
        raise InputError(
            f"no usable images in {names}: found no readable image with content of at least "
            f"{min_size}x{min_size} pixels ({len(index.skipped)} unreadable files, "
            f"{index.skipped_slices} empty or too small slices){why}; check the paths and formats"
        )
    return index


def split_index(index: ImageIndex, val_fraction: float, seed: int = 0) -> tuple[ImageIndex, ImageIndex]:
    """Split by group (BraTS case / file) so no slice of a validation group is trained on.

    The assignment depends only on the group name and the seed, not on the other groups.
    """
    if val_fraction <= 0:
        return index, ImageIndex(intensity=index.intensity)
    groups = index.groups

    def key(g: str) -> float:
        digest = hashlib.sha256(f"{seed}:{g}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    ranked = sorted(groups, key=key)
    n_val = min(len(groups) - 1, max(1, round(len(groups) * val_fraction))) if len(groups) > 1 else 0
    val_groups = set(ranked[:n_val])
    train = ImageIndex(
        [s for s in index.slices if s.group not in val_groups],
        dict(index.skipped),
        index.skipped_slices,
        index.intensity,
    )
    val = ImageIndex([s for s in index.slices if s.group in val_groups], intensity=index.intensity)
    return train, val


def tile_index(index: ImageIndex, patch_size: int, max_repeats: int = 128) -> ImageIndex:
    """Weight large images by their area: each slice appears once per two patch areas of its crop.

    A 2000x1800 radiograph then gives as many training patches as ~100 small slices instead of
    one; a slice smaller than two patches appears once. The order of the slices is kept (each
    repeated in place), so the result depends only on the index.
    """
    slices: list[SliceRef] = []
    for ref in index.slices:
        repeats = min(max_repeats, max(1, (ref.height * ref.width) // (2 * patch_size * patch_size)))
        slices += [ref] * repeats
    return ImageIndex(slices, dict(index.skipped), index.skipped_slices, index.intensity)


class FrameCache:
    """Per-process LRU cache of decoded files (volumes are sliced many times)."""

    def __init__(self, capacity: int = 8, intensity: IntensityRange | str = IntensityRange.AUTO) -> None:
        self.capacity = capacity
        self.intensity = IntensityRange(intensity).value
        self._items: OrderedDict[str, DecodedFile] = OrderedDict()

    def get(self, path: str) -> DecodedFile:
        decoded = self._items.get(path)
        if decoded is None:
            decoded = read_file(path, self.intensity)
            self._items[path] = decoded
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(path)
        return decoded


def load_slice(
    ref: SliceRef, cache: FrameCache | None = None, intensity: IntensityRange | str = IntensityRange.AUTO
) -> np.ndarray:
    """The maximal-information crop of one indexed slice, float32 in [0, 1]."""
    decoded = cache.get(ref.path) if cache is not None else read_file(ref.path, intensity)
    stack = decoded.slices(Axis(ref.axis) if ref.axis is not None else None)
    top, left, bottom, right = ref.box
    return np.ascontiguousarray(stack[ref.index, top:bottom, left:right], dtype=np.float32)
