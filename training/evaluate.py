"""Evaluation protocol of the paper: PSNR/SSIM per scale, model(s) against bicubic.

For every held-out image (its maximal-information crop) of size ``H x W`` and scale ``r``: the LR
image has ``floor(H/r) x floor(W/r)`` pixels, the HR reference is cropped to ``floor(h*r)``, and
LR is the antialiased bicubic resampling at exactly ``1/r`` (:func:`metasr.training.pairs.make_pair`),
or another degradation of :mod:`metasr.training.degradations` (Gaussian PSF with area sampling,
k-space truncation, with Rician/Gaussian noise drawn from a seed fixed per image and scale, so
every model sees the same noisy LR). Confidence intervals are computed over the means of the
images' groups (the file: the volume or series the slices come from), since slices of one
volume are not independent.
Outputs are clipped to [0, 1]; PSNR and SSIM come from scikit-image with ``data_range=1``. Every
(image, scale, model) score is kept, so reports give a spread and paired tests are possible.
Tables and figures are written by :mod:`metasr.training.figures`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from metasr.core.errors import InputError, ScaleError
from metasr.core.noise import estimate_noise_sigma
from metasr.core.scale import DEFAULT_SCALE_RANGE
from metasr.runtime.ensemble import ENSEMBLE_SIZE, self_ensemble
from metasr.scanners import IntensityRange
from metasr.training.checkpoint import load_checkpoint, read_checkpoint
from metasr.training.data import FrameCache, build_index, foreground_box, load_slice
from metasr.training.degradations import Degradation
from metasr.training.distributed import resolve_device
from metasr.training.models import Bicubic, noise_map
from metasr.training.pairs import make_pair
from metasr.training.reference import STORED, NativeGrid, native_grid, reduce_to_native
from metasr.training.specs import Axis, parse_axes

__all__ = [
    "Predictor",
    "EvalRow",
    "ImageScore",
    "EvalReport",
    "load_predictor",
    "bicubic_predictor",
    "evaluate",
    "load_images",
    "load_named_images",
    "image_group",
]

#: ``predict(lr [h, w] float32, scale) -> sr [H, W]``
PredictFn = Callable[[np.ndarray, Fraction], np.ndarray]


@dataclass
class Predictor:
    """A named model for evaluation and the scales it supports."""

    name: str
    predict: PredictFn
    scale_range: tuple[float, float]
    fixed_scale: int | None = None

    def supports(self, scale: Fraction) -> bool:
        if self.fixed_scale is not None:
            return scale == self.fixed_scale
        lo, hi = self.scale_range
        return (lo == float("-inf") or Fraction(repr(float(lo))) <= scale) and (
            hi == float("inf") or scale <= Fraction(repr(float(hi)))
        )


def bicubic_predictor() -> Predictor:
    """Bicubic interpolation (the paper's baseline)."""
    model = Bicubic()

    def predict(lr: np.ndarray, scale: Fraction) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(lr)[None, None], scale)[0, 0].numpy()

    return Predictor("bicubic", predict, (1.0, float("inf")))


def zero_fill_predictor() -> Predictor:
    """Zero-filled (band-limited) interpolation, as MR scanners interpolate: the fair baseline for k-space LR.

    :func:`~metasr.core.kspace.kspace_upscale`: it restores exactly what a k-space truncation
    kept, and nothing above it.
    """
    from metasr.core.kspace import kspace_upscale

    def predict(lr: np.ndarray, scale: Fraction) -> np.ndarray:
        return kspace_upscale(lr, scale).astype(np.float32)

    return Predictor("zero-fill", predict, (1.0, float("inf")))


def data_consistent(predictor: Predictor) -> Predictor:
    """``predictor`` with each output made consistent with its LR (:func:`metasr.core.kspace.kspace_project`).

    What ``metasr-run --data-consistency`` does: the output's k-space truncation is the LR, its
    frequencies above the LR's band are the model's. Named ``NAME +dc``.
    """
    from metasr.core.kspace import kspace_project

    def predict(lr: np.ndarray, scale: Fraction) -> np.ndarray:
        return kspace_project(predictor.predict(lr, scale), lr, scale).astype(np.float32)

    return Predictor(f"{predictor.name} +dc", predict, predictor.scale_range, predictor.fixed_scale)


def load_predictor(
    source: str | os.PathLike, device: str = "cpu", noise_level: float | None = None, ensemble: bool = False
) -> Predictor:
    """A checkpoint (``.pt``) through torch, or an exported model folder through the runtime.

    ``LABEL=PATH`` names the model ``LABEL`` in the tables and figures (a path that exists as
    written is never split). ``noise_level`` is the sigma a noise-conditioned model is told
    (None: estimated from each LR image, :func:`metasr.core.noise.estimate_noise_sigma`); other
    models ignore it. ``ensemble``: each prediction is the mean of the 8 orientations
    (:mod:`metasr.runtime.ensemble`, as ``Upscaler(ensemble=True)``); an unlabelled model's name
    then ends in `` x8``.

    Raises:
        CheckpointError / ModelError: unusable source.
        InputError: the path does not exist.
    """
    label, sep, rest = str(source).partition("=")
    if sep and label and "/" not in label and not Path(source).exists():
        predictor = load_predictor(rest, device, noise_level, ensemble)
        predictor.name = label
        return predictor
    path = Path(source)
    if path.is_dir():
        from metasr.runtime import Upscaler

        up = Upscaler(path, device="cpu" if device == "cpu" else "auto", ensemble=ensemble)
        fixed = getattr(up, "fixed_scale", None)
        name = f"{getattr(up, 'arch', 'model')} (onnx)" + (f" x{ENSEMBLE_SIZE}" if ensemble else "")
        return Predictor(name, lambda lr, s: up.upscale(lr, s), tuple(up.scale_range), fixed)
    if not path.exists():
        raise InputError(f"model {path} does not exist; pass a checkpoint (.pt) or an exported model folder")
    ckpt = read_checkpoint(path)
    model = load_checkpoint(path, resolve_device(device))
    config = ckpt["config"]
    fixed = getattr(model, "upscale_factor", None)
    scale_range = tuple(config.get("scale_range") or ([fixed] * 2 if fixed else list(DEFAULT_SCALE_RANGE)))
    dev = resolve_device(device)

    conditioned = bool(getattr(model, "noise_input", False))

    def predict(lr: np.ndarray, scale: Fraction) -> np.ndarray:
        x = torch.from_numpy(lr)[None, None].to(dev)
        if conditioned:
            x = noise_map(x, estimate_noise_sigma(lr) if noise_level is None else noise_level)
        with torch.inference_mode():
            return model(x, scale)[0, 0].float().cpu().numpy()

    name = str(config["arch"])
    if ensemble:
        single = predict

        def predict(lr: np.ndarray, scale: Fraction) -> np.ndarray:
            return self_ensemble(lambda x: single(x, scale), lr, Fraction(scale))

        name += f" x{ENSEMBLE_SIZE}"
    return Predictor(name, predict, (float(scale_range[0]), float(scale_range[1])), fixed)


@dataclass
class EvalRow:
    """Metrics of one model at one scale over the images: mean, per-image spread, 95% interval.

    ``*_ci95`` is the half-width of the 95% confidence interval of the mean (Student's t);
    0 for a single image.
    """

    scale: Fraction
    model: str
    psnr: float
    ssim: float
    images: int
    psnr_std: float = 0.0
    ssim_std: float = 0.0
    psnr_ci95: float = 0.0
    ssim_ci95: float = 0.0
    groups: int = 0


@dataclass(frozen=True)
class ImageScore:
    """PSNR/SSIM of one model on one image at one scale (rows of ``per_image.csv``)."""

    image: str
    scale: Fraction
    model: str
    psnr: float
    ssim: float
    group: str = ""


def image_group(name: str) -> str:
    """The independent unit an image name belongs to: its file (``vol.nii.gz:axial12`` -> ``vol.nii.gz``)."""
    return name.rsplit(":", 1)[0] if ":" in name else name


@dataclass
class EvalReport:
    """All rows and per-image scores, plus what the figures need."""

    rows: list[EvalRow] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    scales: list[Fraction] = field(default_factory=list)
    images: int = 0
    samples: dict[Fraction, dict[str, np.ndarray]] = field(default_factory=dict)
    scores: list[ImageScore] = field(default_factory=list)
    sample_name: str = ""
    degradation: str = "bicubic"
    #: crops figure: ``(top, left, size)`` in HR pixels of the sample image (None: the centre)
    crop: tuple[int, int, int] | None = None
    #: crops figure: display window ``(centre, width)`` in [0, 1] intensity units (None: 0..1)
    window: tuple[float, float] | None = None
    #: ``--reference native``: each file's name -> how its reference was made (empty: as stored)
    references: dict[str, str] = field(default_factory=dict)

    def get(self, model: str, scale: Fraction) -> EvalRow | None:
        for r in self.rows:
            if r.model == model and r.scale == scale:
                return r
        return None


def _unique_names(predictors: Sequence[Predictor]) -> None:
    seen: dict[str, int] = {}
    for p in predictors:
        if p.name in seen:
            seen[p.name] += 1
            p.name = f"{p.name} #{seen[p.name]}"
        else:
            seen[p.name] = 1


def _t95(n: int) -> float:
    """Two-sided 95% quantile of Student's t with ``n - 1`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1))


def summarise(scores: Sequence[ImageScore], model: str, scale: Fraction) -> EvalRow | None:
    """Mean, sample standard deviation and 95% interval of the finite scores of one model/scale.

    The standard deviation is per image; the 95% interval of the mean is computed over the means
    of the images' groups (:attr:`ImageScore.group`; each image its own group when none is set),
    because slices of one volume are not independent samples. An exact reconstruction has
    infinite PSNR: then the mean is infinite and the spread 0.
    """
    mine = [s for s in scores if s.model == model and s.scale == scale]
    if not mine:
        return None
    n = len(mine)
    psnr = np.array([s.psnr for s in mine], dtype=np.float64)
    ssim = np.array([s.ssim for s in mine], dtype=np.float64)
    keys = [s.group or s.image for s in mine]
    groups = sorted(set(keys))

    def group_means(values: np.ndarray) -> np.ndarray:
        return np.array([values[[k == g for k in keys]].mean() for g in groups])

    def spread(values: np.ndarray) -> tuple[float, float]:
        if n < 2 or not np.isfinite(values).all():
            return 0.0, 0.0
        std = float(values.std(ddof=1))
        if len(groups) < 2:
            return std, 0.0
        means = group_means(values)
        return std, _t95(len(groups)) * float(means.std(ddof=1)) / math.sqrt(len(groups))

    (p_std, p_ci), (s_std, s_ci) = spread(psnr), spread(ssim)
    return EvalRow(scale, model, float(psnr.mean()), float(ssim.mean()), n, p_std, s_std, p_ci, s_ci, len(groups))


def evaluate(
    predictors: Sequence[Predictor],
    images: Sequence[np.ndarray],
    scales: Sequence[Fraction],
    sample_scales: Sequence[Fraction] = (),
    sample_image: int | None = None,
    progress: Callable[[int], None] | None = None,
    names: Sequence[str] | None = None,
    degradation: Degradation | None = None,
    seed: int = 0,
) -> EvalReport:
    """PSNR/SSIM of each predictor at each scale it supports, per image and summarised.

    Args:
        predictors: Models; bicubic is usually the first.
        images: HR images (maximal-information crops), float32 in [0, 1].
        scales: Exact scales.
        sample_scales: Scales at which to keep LR/SR/HR of ``sample_image`` for the crops figure.
        sample_image: Index of that image (default: the middle one).
        progress: Called with the number of (image, scale) pairs done since the last call.
        names: A name per image for the per-image scores (default ``image0``, ``image1``...);
            the part before the last ``:`` names its group (:func:`image_group`).
        degradation: How the LR is made (default: antialiased bicubic, no noise).
        seed: Seed of the noise; image ``i`` at scale ``p/q`` draws from ``(seed, i, p, q)``.
    """
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if not images:
        raise InputError("no images to evaluate")
    names = list(names) if names is not None else [f"image{i}" for i in range(len(images))]
    _unique_names(predictors)
    report = EvalReport(models=[p.name for p in predictors], scales=list(scales), images=len(images))
    report.degradation = degradation.label if degradation is not None else Degradation().label
    sample_image = len(images) // 2 if sample_image is None else sample_image
    report.sample_name = names[sample_image] if 0 <= sample_image < len(names) else ""
    for idx, image in enumerate(images):
        for s in scales:
            rng = np.random.default_rng([seed, idx, s.numerator, s.denominator])
            lr_t, hr_t = make_pair(image, s, degradation, rng)
            lr, hr = lr_t.numpy(), hr_t.numpy().astype(np.float64)
            if min(hr.shape) < 7:
                raise ScaleError(
                    f"image {names[idx]} ({image.shape[0]}x{image.shape[1]}) is too small for SSIM at scale "
                    f"{float(s):g}; evaluate larger images or smaller scales"
                )
            keep = idx == sample_image and s in sample_scales
            if keep:
                report.samples[s] = {"LR": lr, "HR": hr.astype(np.float32)}
            for p in predictors:
                if not p.supports(s):
                    continue
                sr = np.clip(np.asarray(p.predict(lr, s), dtype=np.float64), 0.0, 1.0)
                if sr.shape != hr.shape:
                    raise InputError(f"{p.name} returned {sr.shape} at scale {float(s):g}, expected {hr.shape}")
                score = ImageScore(
                    names[idx],
                    s,
                    p.name,
                    float(peak_signal_noise_ratio(hr, sr, data_range=1.0)),
                    float(structural_similarity(hr, sr, data_range=1.0)),
                    image_group(names[idx]),
                )
                report.scores.append(score)
                if keep:
                    report.samples[s][p.name] = sr.astype(np.float32)
            if progress is not None:
                progress(1)
    for s in scales:
        for p in predictors:
            row = summarise(report.scores, p.name, s)
            if row is not None:
                report.rows.append(row)
    return report


def load_named_images(
    specs: Sequence[str],
    axes: Sequence[str] = ("axial",),
    max_images: int = 0,
    min_size: int = 16,
    intensity: IntensityRange | str = IntensityRange.AUTO,
    skipped: dict[str, str] | None = None,
    native: Mapping[str, Fraction] | None = None,
    grids: dict[str, NativeGrid] | None = None,
) -> list[tuple[str, np.ndarray]]:
    """``(name, crop)`` of every usable slice of ``specs`` (evenly thinned to ``max_images``).

    Every file is read as ``metasr-run`` reads it (:func:`metasr.scanners.read_image`); crops
    are the maximal-information regions. Unreadable files are added to ``skipped`` (path ->
    one-line reason) when it is given.

    ``native`` (the ``--native-factor`` factors by file name; ``{}`` for none): each slice is
    first reduced to its file's acquired resolution (:mod:`metasr.training.reference`) and the
    crop is found on the reduced slice. ``None``: the references are the images as stored.
    ``grids`` receives each file's name -> grid: the one used, or with ``native=None`` the one its
    header or its spectrum states (nothing reduced).

    Raises:
        InputError: a ``native`` name that is no evaluated file, or an image too small to reduce.
    """
    index = build_index(specs, axes=parse_axes(axes), min_size=min_size, intensity=intensity)
    if skipped is not None:
        skipped.update(index.skipped)
    refs = index.slices
    if max_images and len(refs) > max_images:
        picks = sorted(set(np.linspace(0, len(refs) - 1, max_images).round().astype(int).tolist()))
        refs = [refs[i] for i in picks]
    cache = FrameCache(4, index.intensity)
    if native:
        files = {Path(r.path).name for r in index.slices}
        unknown = sorted(set(native) - files)
        if unknown:
            some = ", ".join(sorted(files)[:5]) + (", ..." if len(files) > 5 else "")
            raise InputError(f"--native-factor names {unknown[0]}, which is not an evaluated file ({some})")
    found: dict[str, NativeGrid] = {}

    def grid_of(path: str) -> NativeGrid:
        # one header read per file; a silent MR/NIfTI file's spectrum from the frames the cache keeps
        if path not in found:
            found[path] = native_grid(path, native, frames=lambda: cache.get(path).frames)
        return found[path]

    out = []
    for r in refs:
        grid = grid_of(r.path) if native is not None or grids is not None else STORED
        if native is None or not grid.reduces:
            out.append((r.name, load_slice(r, cache)))
            continue
        decoded = cache.get(r.path)
        stack = decoded.slices(Axis(r.axis) if r.axis is not None else None)
        reduced = reduce_to_native(stack[r.index], grid.factor)
        box = foreground_box(reduced, float(decoded.frames.max()))
        if box is None or min(box[2] - box[0], box[3] - box[1]) < min_size:
            continue
        top, left, bottom, right = box
        out.append((r.name, np.ascontiguousarray(reduced[top:bottom, left:right])))
    if grids is not None:
        grids.update({Path(p).name: g for p, g in found.items()})
    return out


def load_images(
    specs: Sequence[str], axes: Sequence[str] = ("axial",), max_images: int = 0, min_size: int = 16
) -> list[np.ndarray]:
    """The crops of :func:`load_named_images`, without their names."""
    return [image for _, image in load_named_images(specs, axes, max_images, min_size)]
