"""LR/HR pairs: the exact-scale downsampling, evaluation pairs, training patches and batches.

LR images are made from HR by bicubic downsampling with antialiasing, with the geometry of the
Meta-Upscale index contract: for scale ``r`` and an HR patch of ``P`` pixels, the LR patch has
``h = floor(P / r)`` pixels and the HR patch is cropped to ``floor(h * r)``, so
``model(lr, r).shape == hr.shape`` exactly (exact rational arithmetic, :mod:`metasr.core.scale`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from metasr.core.errors import InputError, ScaleError
from metasr.core.scale import hr_length
from metasr.training.data import FrameCache, ImageIndex, load_slice
from metasr.training.degradations import Degradation, DegradationMix, Kind, add_noise, hr_needed
from metasr.training.models import noise_map

__all__ = ["patch_geometry", "downscale_exact", "make_pair", "PatchDataset", "ScaleBatchSampler"]


def patch_geometry(patch_size: int, scale: Fraction) -> tuple[int, int]:
    """``(h, H)``: LR size ``floor(P / r)`` and HR size ``floor(h * r)`` (<= P) of a P-pixel patch."""
    h = (int(patch_size) * scale.denominator) // scale.numerator
    if h < 1:
        raise ScaleError(f"patch of {patch_size} pixels is too small for scale {float(scale):g}")
    return h, hr_length(h, scale)


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


def make_pair(
    hr: np.ndarray,
    scale: Fraction,
    degradation: Degradation | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluation protocol: LR of ``floor(H/r) x floor(W/r)`` and HR cropped to ``floor(h*r)``.

    With a ``degradation`` other than plain bicubic (:mod:`metasr.training.degradations`), the LR
    is made that way (noise drawn from ``rng``); k-space truncation uses the largest LR length
    that is a multiple of ``q`` (``r = p/q``), so the HR crop is exactly ``h * r`` pixels.

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
    if degradation is not None and degradation.kind is Kind.KSPACE:
        q = scale.denominator
        h, w = h // q * q, w // q * q
        if h < 1 or w < 1:
            what = f"image of {big_h}x{big_w} pixels"
            raise ScaleError(f"{what} is too small for k-space truncation at x{float(scale):g}")
    image = torch.as_tensor(np.ascontiguousarray(hr, dtype=np.float32))
    crop = image[: hr_length(h, scale), : hr_length(w, scale)].contiguous()
    if degradation is None or degradation == Degradation():
        return downscale_exact(image, scale, (h, w)), crop
    rng = rng if rng is not None else np.random.default_rng(0)
    return torch.from_numpy(degradation.apply(np.asarray(hr, dtype=np.float64), scale, (h, w), rng)), crop


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

    def __init__(
        self,
        index: ImageIndex,
        patch_size: int = 96,
        augment: bool = True,
        cache_size: int = 64,
        degradations: DegradationMix | None = None,
        noise_map: bool = False,
    ) -> None:
        if not len(index):
            raise InputError("the training set is empty; pass a --data spec with images")
        self.index = index
        #: Append the noise map of the sigma each LR was made with (noise-conditioned models).
        self.noise_map = bool(noise_map)
        self.patch_size = int(patch_size)
        self.augment = augment
        #: None: the classic protocol (antialiased bicubic, no noise), exactly as before the mix existed
        self.degradations = degradations
        self.cache_size = cache_size
        self._cache: FrameCache | None = None

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: tuple[int, str, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, scale_text, seed = item
        if self._cache is None:  # created lazily so each worker process has its own
            self._cache = FrameCache(self.cache_size, self.index.intensity)
        scale = Fraction(scale_text)
        image = load_slice(self.index.slices[i], self._cache)
        rng = np.random.default_rng(seed)
        h, big = patch_geometry(self.patch_size, scale)
        degradation = self.degradations.sample(rng) if self.degradations is not None else None
        # one HR pixel more than the target: the LR pixels at the far edge integrate real anatomy
        # beyond floor(h*r), as they would in a scanner's image (k-space may need a little more)
        region = big + 1 if degradation is None else max(big + 1, hr_needed(degradation.kind, h, scale))
        if image.shape[0] < region or image.shape[1] < region:  # pad small slices with background
            image = np.pad(image, ((0, max(0, region - image.shape[0])), (0, max(0, region - image.shape[1]))))
        top = int(rng.integers(0, image.shape[0] - region + 1))
        left = int(rng.integers(0, image.shape[1] - region + 1))
        patch = image[top : top + region, left : left + region]
        if self.augment:
            patch = _augment(patch, int(rng.integers(0, 8)))
        if self.degradations is not None:
            hr_kind, hr_sigma = self.degradations.sample_hr_noise(rng)
            if hr_sigma > 0:  # acquisition noise: in the target, and in the LR through the reduction
                patch = np.clip(add_noise(np.asarray(patch, np.float64), hr_kind, hr_sigma, rng), 0.0, 1.0)
        patch_t = torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32))
        if degradation is None:
            lr = downscale_exact(patch_t, scale, (h, h))
        else:
            lr = torch.from_numpy(degradation.apply(patch, scale, (h, h), rng))
        hr = patch_t[:big, :big].contiguous()
        if self.noise_map:
            sigma = degradation.sigma if degradation is not None else 0.0
            return noise_map(lr[None, None], sigma)[0], hr[None]
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
