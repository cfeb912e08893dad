"""Training and evaluation data: dataset specs, slicing, maximal-information crops, LR/HR pairs.

A dataset is named by a spec string:

* ``brats:PATH``: BraTS cases, ``PATH/<case>/<case>_t1ce.nii.gz`` (BraTS 2018-2021 naming), or
  case folders of 2D slice images (the paper's "2D t1ce version"); axial slices; the
  train/validation split is by case.
* ``div2k:PATH``: a folder of HR photographs (PNG), RGB converted to luminance Y.
* ``folder:PATH``: any PNG/TIFF/JPEG/DICOM/NIfTI file(s) under ``PATH`` (or ``PATH`` itself);
  volumes are sliced along the requested axes; the split is by file.

Indexing reads every file once: unreadable files are reported (``logging``) with their path,
skipped and counted; empty slices are skipped; each kept slice remembers its maximal-information
box (the bounding box of the non-background pixels), so training and evaluation only see it.

LR images are made from HR by bicubic downsampling with antialiasing, with the geometry of the
Meta-Upscale index contract: for scale ``r`` and an HR patch of ``P`` pixels, the LR patch has
``h = floor(P / r)`` pixels and the HR patch is cropped to ``floor(h * r)``, so
``model(lr, r).shape == hr.shape`` exactly (exact rational arithmetic, :mod:`metasr.core.scale`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from metasr.core.errors import InputError, ScaleError
from metasr.core.scale import hr_length, parse_scale

__all__ = [
    "DatasetKind",
    "Axis",
    "DataSpec",
    "SliceRef",
    "ImageIndex",
    "parse_spec",
    "parse_scales",
    "read_image_file",
    "foreground_box",
    "max_information_crop",
    "patch_geometry",
    "downscale",
    "make_pair",
    "downscale_exact",
    "build_index",
    "split_index",
    "PatchDataset",
    "ScaleBatchSampler",
    "IMAGE_SUFFIXES",
    "VOLUME_SUFFIXES",
]

log = logging.getLogger("metasr.training.data")

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".dcm")
VOLUME_SUFFIXES = (".nii", ".nii.gz")
#: A pixel is foreground when above this fraction of the image's (volume's) maximum.
FOREGROUND_THRESHOLD = 0.05


class DatasetKind(str, Enum):
    """Kinds of dataset spec."""

    BRATS = "brats"
    DIV2K = "div2k"
    FOLDER = "folder"


class Axis(str, Enum):
    """Slicing axis of a volume in RAS+ orientation (array axis after ``as_closest_canonical``)."""

    SAGITTAL = "sagittal"
    CORONAL = "coronal"
    AXIAL = "axial"

    @property
    def array_axis(self) -> int:
        return {"sagittal": 0, "coronal": 1, "axial": 2}[self.value]


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``KIND:PATH`` spec."""

    kind: DatasetKind
    path: Path

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.path}"


def parse_spec(text: str) -> DataSpec:
    """Parse ``brats:PATH``, ``div2k:PATH`` or ``folder:PATH``.

    Raises:
        InputError: unknown kind or missing path.
    """
    kind, sep, path = str(text).partition(":")
    if not sep or not path:
        raise InputError(f"data spec {text!r} is not KIND:PATH; use brats:PATH, div2k:PATH or folder:PATH")
    try:
        k = DatasetKind(kind.strip().lower())
    except ValueError:
        raise InputError(f"data spec {text!r} has unknown kind {kind!r}; use brats, div2k or folder") from None
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"data path {p} (from spec {text!r}) does not exist; pass an existing folder")
    return DataSpec(k, p)


def parse_scales(text: str, low: float | None = None, high: float | None = None) -> list[Fraction]:
    """Parse ``"1.1:4.0:0.1"`` (inclusive range), ``"2,3,4"`` or ``"2.3"`` into exact scales.

    Args:
        text: The scale list.
        low, high: Allowed range (inclusive); a scale outside it raises.

    Raises:
        ScaleError: malformed text, an empty range, or a scale outside ``[low, high]``.
    """
    text = str(text).strip()
    if ":" in text:
        parts = text.split(":")
        if len(parts) not in (2, 3):
            raise ScaleError(f"scales {text!r} must be START:STOP[:STEP], e.g. 1.1:4.0:0.1")
        start, stop = parse_scale(parts[0]), parse_scale(parts[1])
        step = parse_scale(parts[2]) if len(parts) == 3 else Fraction(1, 10)
        if stop < start:
            raise ScaleError(f"scales {text!r}: STOP is smaller than START")
        count = int((stop - start) / step) + 1
        values = [start + k * step for k in range(count)]
    else:
        values = [parse_scale(v) for v in text.split(",") if v.strip()]
    if not values:
        raise ScaleError(f"scales {text!r} contain no scale")
    for v in values:
        if v <= 1:
            raise ScaleError(f"scale {float(v):g} is not an enlargement; scales must be greater than 1")
        below = low is not None and v < Fraction(repr(float(low)))
        above = high is not None and v > Fraction(repr(float(high)))
        if below or above:
            raise ScaleError(
                f"scale {float(v):g} is outside the range {low:g}-{high:g} the model was trained for; "
                f"choose scales within it"
            )
    return values


# --------------------------------------------------------------------------------------------
# Reading


def _is_volume(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _to_unit(arr: np.ndarray) -> np.ndarray:
    """8-bit data by 0..255, anything wider by the file's own min..max (as metasr.scanners does)."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    a = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if not a.size:
        return a
    low, high = float(a.min()), float(a.max())
    return (a - low) / (high - low) if high > low else np.zeros_like(a)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an RGB image in [0, 1]."""
    return (rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114).astype(np.float32)


def _read_2d(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".dcm":
        import pydicom

        ds = pydicom.dcmread(str(path))
        arr = ds.pixel_array.astype(np.float32)
        arr = arr * float(getattr(ds, "RescaleSlope", 1) or 1) + float(getattr(ds, "RescaleIntercept", 0) or 0)
        if arr.ndim == 3 and getattr(ds, "SamplesPerPixel", 1) == 1:
            arr = arr[0]
        if arr.ndim == 3:
            return _luminance(_to_unit(arr))
        return _to_unit(arr)
    import cv2

    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise InputError(f"cannot decode image {path}")
    if raw.ndim == 3:
        if raw.shape[2] == 4:
            raw = raw[..., :3]
        raw = raw[..., ::-1]  # BGR -> RGB
        unit = _to_unit(raw)
        return _luminance(unit)
    return _to_unit(raw)


def _read_volume(path: Path) -> np.ndarray:
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 4:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"{path} is a {data.ndim}-D NIfTI image; expected a 3-D volume")
    return _to_unit(data)


def read_image_file(path: str | os.PathLike) -> np.ndarray:
    """Read an image as float32 in [0, 1]: ``[h, w]`` for 2D files, ``[X, Y, Z]`` (RAS+) for NIfTI.

    Raises:
        InputError: the file cannot be read or decoded.
    """
    p = Path(path)
    try:
        arr = _read_volume(p) if _is_volume(p) else _read_2d(p)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - every decoder failure is the same user-facing problem
        raise InputError(f"cannot read {p}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    if arr.size == 0:
        raise InputError(f"{p} holds no pixels")
    return arr


def _take_slice(volume: np.ndarray, axis: Axis, index: int) -> np.ndarray:
    sl = np.take(volume, index, axis=axis.array_axis)
    # Rotate so the anterior/superior direction points up, as radiologists view slices.
    return np.ascontiguousarray(np.rot90(sl))


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
    """One 2D training/evaluation image: a file, or one slice of a volume, and its crop box."""

    path: str
    axis: str | None  # Axis value for volume slices, None for 2D files
    index: int
    box: tuple[int, int, int, int]
    group: str  # split unit: the BraTS case or the file

    @property
    def name(self) -> str:
        stem = Path(self.path).name
        return stem if self.axis is None else f"{stem}:{self.axis}{self.index}"

    @property
    def height(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def width(self) -> int:
        return self.box[3] - self.box[1]


@dataclass
class ImageIndex:
    """The slices of one or more dataset specs, with what was skipped."""

    slices: list[SliceRef] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)
    skipped_slices: int = 0

    def __len__(self) -> int:
        return len(self.slices)

    @property
    def groups(self) -> list[str]:
        return sorted({s.group for s in self.slices})

    def extend(self, other: ImageIndex) -> None:
        self.slices += other.slices
        self.skipped_files += other.skipped_files
        self.skipped_slices += other.skipped_slices


def _files_under(path: Path, volumes: bool = True) -> list[Path]:
    if path.is_file():
        return [path]
    found = [
        p
        for p in sorted(path.rglob("*"))
        if p.is_file() and not p.name.startswith(".") and (_is_image(p) or (volumes and _is_volume(p)))
    ]
    return found


def _brats_files(root: Path) -> list[tuple[Path, str]]:
    """``(file, case)`` pairs: t1ce volumes of case folders, or the 2D images of case folders."""
    pairs: list[tuple[Path, str]] = []
    if root.is_file():
        return [(root, root.name)]
    for case_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        case = case_dir.name
        vols = [case_dir / f"{case}_t1ce{ext}" for ext in VOLUME_SUFFIXES]
        vols = [v for v in vols if v.is_file()]
        if not vols:  # other capitalisations / naming of the modality
            vols = sorted(p for p in case_dir.iterdir() if _is_volume(p) and "t1ce" in p.name.lower())
        if vols:
            pairs.append((vols[0], case))
        else:
            pairs += [(p, case) for p in _files_under(case_dir, volumes=False)]
    # Loose 2D slices at the top level: the case is the file name up to its last underscore.
    for p in sorted(root.iterdir()):
        if p.is_file() and _is_image(p):
            pairs.append((p, p.stem.rsplit("_", 1)[0]))
    return pairs


def _index_file(path: Path, group: str, axes: Sequence[Axis], min_size: int, threshold: float) -> ImageIndex:
    out = ImageIndex()
    arr = read_image_file(path)
    if arr.ndim == 3:
        vmax = float(arr.max())
        for axis in axes:
            for i in range(arr.shape[axis.array_axis]):
                box = foreground_box(_take_slice(arr, axis, i), vmax, threshold)
                if box is None or min(box[2] - box[0], box[3] - box[1]) < min_size:
                    out.skipped_slices += 1
                    continue
                out.slices.append(SliceRef(str(path), axis.value, i, box, group))
    else:
        box = foreground_box(arr, None, threshold)
        if box is None or min(box[2] - box[0], box[3] - box[1]) < min_size:
            out.skipped_slices += 1
        else:
            out.slices.append(SliceRef(str(path), None, 0, box, group))
    return out


def build_index(
    specs: Sequence[str | DataSpec],
    axes: Sequence[Axis | str] = (Axis.AXIAL,),
    min_size: int = 16,
    threshold: float = FOREGROUND_THRESHOLD,
) -> ImageIndex:
    """Index every usable slice of the given specs.

    Args:
        specs: Dataset specs (``brats:``/``div2k:``/``folder:``).
        axes: Slicing axes for volumes of ``folder:`` specs (BraTS is always axial).
        min_size: Slices whose maximal-information box is smaller than this (either side) are
            skipped, as are empty slices.
        threshold: Foreground threshold relative to the volume's (image's) maximum.

    Raises:
        InputError: a malformed spec, or no usable slice at all (the message names the specs).
    """
    axes = [Axis(a) for a in axes]
    index = ImageIndex()
    for spec in specs:
        s = spec if isinstance(spec, DataSpec) else parse_spec(spec)
        if s.kind is DatasetKind.BRATS:
            pairs = _brats_files(s.path)
            spec_axes: Sequence[Axis] = (Axis.AXIAL,)
        elif s.kind is DatasetKind.DIV2K:
            pairs = [(p, p.name) for p in _files_under(s.path, volumes=False)]
            spec_axes = (Axis.AXIAL,)
        else:
            pairs = [(p, p.name) for p in _files_under(s.path)]
            spec_axes = axes
        for path, group in pairs:
            try:
                index.extend(_index_file(path, f"{s.kind.value}:{group}", spec_axes, min_size, threshold))
            except InputError as e:
                log.warning("skipped unreadable file %s (%s)", path, e)
                index.skipped_files.append(str(path))
    if not index.slices:
        names = ", ".join(str(s) for s in specs) or "(none given)"
        raise InputError(
            f"no usable images in {names}: found no readable image with content of at least "
            f"{min_size}x{min_size} pixels ({len(index.skipped_files)} unreadable files, "
            f"{index.skipped_slices} empty or too small slices); check the paths and formats"
        )
    return index


def split_index(index: ImageIndex, val_fraction: float, seed: int = 0) -> tuple[ImageIndex, ImageIndex]:
    """Split by group (BraTS case / file) so no slice of a validation group is trained on.

    The assignment depends only on the group name and the seed, not on the other groups.
    """
    if val_fraction <= 0:
        return index, ImageIndex()
    groups = index.groups

    def key(g: str) -> float:
        digest = hashlib.sha256(f"{seed}:{g}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    ranked = sorted(groups, key=key)
    n_val = min(len(groups) - 1, max(1, round(len(groups) * val_fraction))) if len(groups) > 1 else 0
    val_groups = set(ranked[:n_val])
    train = ImageIndex(
        [s for s in index.slices if s.group not in val_groups], index.skipped_files, index.skipped_slices
    )
    val = ImageIndex([s for s in index.slices if s.group in val_groups])
    return train, val


class _ArrayCache:
    """Per-process LRU cache of decoded files (volumes are sliced many times)."""

    def __init__(self, capacity: int = 8) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, path: str) -> np.ndarray:
        arr = self._items.get(path)
        if arr is None:
            arr = read_image_file(path)
            self._items[path] = arr
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(path)
        return arr


def load_slice(ref: SliceRef, cache: _ArrayCache | None = None) -> np.ndarray:
    """The maximal-information crop of one indexed slice, float32 in [0, 1]."""
    arr = cache.get(ref.path) if cache is not None else read_image_file(ref.path)
    image = _take_slice(arr, Axis(ref.axis), ref.index) if ref.axis is not None else arr
    top, left, bottom, right = ref.box
    return np.ascontiguousarray(image[top:bottom, left:right], dtype=np.float32)


# --------------------------------------------------------------------------------------------
# LR/HR geometry


def patch_geometry(patch_size: int, scale: Fraction) -> tuple[int, int]:
    """``(h, H)``: LR size ``floor(P / r)`` and HR size ``floor(h * r)`` (<= P) of a P-pixel patch."""
    h = (int(patch_size) * scale.denominator) // scale.numerator
    if h < 1:
        raise ScaleError(f"patch of {patch_size} pixels is too small for scale {float(scale):g}")
    return h, hr_length(h, scale)


def downscale(hr: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic downsampling with antialiasing to ``size``, clamped to [0, 1].

    Accepts ``[H, W]`` / ``[N, 1, H, W]`` arrays or tensors; returns a tensor of the same rank.
    """
    t = torch.as_tensor(hr, dtype=torch.float32)
    squeeze = t.dim() == 2
    if squeeze:
        t = t[None, None]
    out = F.interpolate(t, size=size, mode="bicubic", align_corners=False, antialias=True).clamp_(0.0, 1.0)
    return out[0, 0] if squeeze else out


def downscale_exact(hr: np.ndarray | torch.Tensor, scale: Fraction, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bicubic downsampling at exactly ``1/scale``, cropped to ``size``, clamped to [0, 1].

    LR pixel ``k`` is centred on HR coordinate ``(k + 0.5) * r - 0.5`` for every ``k``, whatever
    the image size (a resize to a target size would use the size ratio instead of ``r``). The
    image must have at least ``floor(size * r)`` pixels per axis; one replicated pixel is added at
    the far edges so that float rounding of ``(H + 1) / r`` can never drop the last LR pixel.
    Accepts ``[H, W]`` / ``[N, 1, H, W]``; returns the same rank.
    """
    t = torch.as_tensor(hr, dtype=torch.float32)
    squeeze = t.dim() == 2
    if squeeze:
        t = t[None, None]
    h, w = size
    if t.shape[-2] < hr_length(h, scale) or t.shape[-1] < hr_length(w, scale):
        raise ScaleError(
            f"an image of {t.shape[-2]}x{t.shape[-1]} pixels cannot give {h}x{w} LR pixels at scale {float(scale):g}"
        )
    t = F.pad(t, (0, 1, 0, 1), mode="replicate")
    inv = scale.denominator / scale.numerator
    out = F.interpolate(
        t, scale_factor=(inv, inv), mode="bicubic", align_corners=False, antialias=True, recompute_scale_factor=False
    )
    out = out[..., :h, :w].clamp_(0.0, 1.0).contiguous()
    return out[0, 0] if squeeze else out


def make_pair(hr: np.ndarray, scale: Fraction) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluation protocol: LR of ``floor(H/r) x floor(W/r)`` and HR cropped to ``floor(h*r)``.

    The LR is the antialiased bicubic resampling of the image at exactly ``1/r``
    (:func:`downscale_exact`), so HR row ``i`` and LR row ``i/r`` show the same anatomy everywhere,
    as the Meta-Upscale index contract assumes. (Resizing the ``floor(h*r)`` crop to ``h`` pixels
    instead would resample at ``floor(h*r)/h``, which drifts by up to one LR pixel across the image.)

    Returns ``(lr [h, w], hr [floor(h*r), floor(w*r)])`` tensors.
    """
    big_h, big_w = hr.shape
    h = (big_h * scale.denominator) // scale.numerator
    w = (big_w * scale.denominator) // scale.numerator
    if h < 1 or w < 1:
        raise ScaleError(f"image of {big_h}x{big_w} pixels is too small for scale {float(scale):g}")
    image = torch.as_tensor(np.ascontiguousarray(hr, dtype=np.float32))
    crop = image[: hr_length(h, scale), : hr_length(w, scale)].contiguous()
    return downscale_exact(image, scale, (h, w)), crop


# --------------------------------------------------------------------------------------------
# Training patches


def _augment(patch: np.ndarray, code: int) -> np.ndarray:
    """One of the 8 flips/90-degree rotations (the dihedral group of the square)."""
    if code & 4:
        patch = patch[:, ::-1]
    return np.rot90(patch, code & 3)


class PatchDataset(Dataset):
    """Random HR patches and their LR versions; an item is addressed by ``(slice, scale, seed)``.

    Everything random about an item comes from its seed, so a run is reproducible whatever the
    number of worker processes, and resuming at step ``k`` sees the same batches as a straight run.
    """

    def __init__(self, index: ImageIndex, patch_size: int = 96, augment: bool = True, cache_size: int = 64) -> None:
        if not len(index):
            raise InputError("the training set is empty; pass a --data spec with images")
        self.index = index
        self.patch_size = int(patch_size)
        self.augment = augment
        self.cache_size = cache_size
        self._cache: _ArrayCache | None = None

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: tuple[int, str, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, scale_text, seed = item
        if self._cache is None:  # created lazily so each worker process has its own
            self._cache = _ArrayCache(self.cache_size)
        scale = Fraction(scale_text)
        image = load_slice(self.index.slices[i], self._cache)
        rng = np.random.default_rng(seed)
        h, big = patch_geometry(self.patch_size, scale)
        # one HR pixel more than the target: the LR pixels at the far edge integrate real anatomy
        # beyond floor(h*r), as they would in a scanner's image
        region = big + 1
        if image.shape[0] < region or image.shape[1] < region:  # pad small slices with background
            image = np.pad(image, ((0, max(0, region - image.shape[0])), (0, max(0, region - image.shape[1]))))
        top = int(rng.integers(0, image.shape[0] - region + 1))
        left = int(rng.integers(0, image.shape[1] - region + 1))
        patch = image[top : top + region, left : left + region]
        if self.augment:
            patch = _augment(patch, int(rng.integers(0, 8)))
        patch_t = torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32))
        lr = downscale_exact(patch_t, scale, (h, h))
        hr = patch_t[:big, :big].contiguous()
        return lr[None], hr[None]


class ScaleBatchSampler(Sampler):
    """Mini-batches of ``(slice, scale, seed)`` items, one scale per mini-batch.

    Step ``s`` draws its scale uniformly from ``scales`` and takes the next ``batch_size`` items
    of an epoch permutation of ``len(index) * patches_per_image`` patch slots; everything is a
    function of ``(seed, step)``. Under DDP each rank takes its contiguous share of the global
    batch, so K processes see exactly the samples one process would.
    """

    def __init__(
        self,
        num_slices: int,
        batch_size: int,
        scales: Sequence[Fraction],
        seed: int = 0,
        start_step: int = 0,
        stop_step: int | None = None,
        patches_per_image: int = 16,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size % world_size:
            raise InputError(f"batch size {batch_size} is not divisible by the {world_size} processes")
        self.num_slots = num_slices * patches_per_image
        self.patches_per_image = patches_per_image
        self.batch_size = batch_size
        self.scales = [str(s) for s in scales]
        self.seed = seed
        self.start_step = start_step
        self.stop_step = stop_step
        self.rank = rank
        self.world_size = world_size
        self._perm_epoch = -1
        self._perm: np.ndarray | None = None

    def _slot(self, position: int) -> int:
        epoch, offset = divmod(position, self.num_slots)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, 1, epoch]).permutation(self.num_slots)
            self._perm_epoch = epoch
        return int(self._perm[offset])

    def scale(self, step: int) -> str:
        """The scale of global step ``step`` (the same on every rank)."""
        rng = np.random.default_rng([self.seed, 2, step])
        return self.scales[int(rng.integers(0, len(self.scales)))]

    def batch(self, step: int) -> list[tuple[int, str, int]]:
        """This rank's items of global step ``step``."""
        scale = self.scale(step)
        per_rank = self.batch_size // self.world_size
        first = step * self.batch_size + self.rank * per_rank
        items = []
        for position in range(first, first + per_rank):
            slot = self._slot(position)
            items.append(
                (
                    slot // self.patches_per_image,
                    scale,
                    int(np.random.default_rng([self.seed, 3, position]).integers(0, 2**62)),
                )
            )
        return items

    def __iter__(self) -> Iterator[list[tuple[int, str, int]]]:
        step = self.start_step
        while self.stop_step is None or step < self.stop_step:
            yield self.batch(step)
            step += 1

    def __len__(self) -> int:
        if self.stop_step is None:
            raise TypeError("an endless sampler has no length")
        return max(0, self.stop_step - self.start_step)
