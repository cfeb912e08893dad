"""What one training run is asked to do (:class:`TrainConfig`), checked before anything runs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from fractions import Fraction
from pathlib import Path

from metasr.core.errors import InputError
from metasr.scanners import IntensityRange
from metasr.training.degradations import (
    DEFAULT_REDUCTION_MIX,
    Degradation,
    DegradationMix,
    Kind,
    NoiseKind,
    parse_reduction_mix,
)
from metasr.training.losses import PIXEL_LOSSES
from metasr.training.models import TRAINABLE_ARCHS, arch_spec
from metasr.training.specs import parse_axes, parse_scales

__all__ = [
    "LIMITS",
    "DEGRADATION_MIXES",
    "VALIDATION_DEGRADATIONS",
    "Stage",
    "TrainConfig",
    "TrainResult",
    "check_config",
    "degradation_mix",
    "scales_for",
]

#: Upper bounds of the sizes a run may ask for (beyond them a typo would allocate without end).
LIMITS = {"batch_size": 4096, "patch_size": 2048, "patches_per_image": 100_000, "steps": 10**9}


class Stage(str, Enum):
    """Training stage: pixel loss only, or the adversarial (+ perceptual) fine-tune."""

    L1 = "l1"
    GAN = "gan"


@dataclass
class TrainConfig:
    """Everything one training run needs (the CLI fills it from its options)."""

    out_dir: Path
    data: list[str]
    val: list[str] = field(default_factory=list)
    arch: str = "metasrgan"
    stage: Stage = Stage.L1
    steps: int = 1000
    batch_size: int = 8
    patch_size: int = 96
    lr: float = 1e-4
    lr_step: int = 60_000
    lr_gamma: float = 0.8
    scales: str = "1.1:4.0:0.1"
    patches_per_image: int = 16
    axes: tuple[str, ...] = ("axial",)
    val_fraction: float = 0.1
    val_scales: str = "1.5,2,3,4"
    val_images: int = 16
    val_every: int = 500
    checkpoint_every: int = 500
    snapshot_every: int = 0
    init: Path | None = None
    resume: bool = False
    overwrite: bool = False
    vgg_weights: Path | None = None
    adversarial_weight: float = 1e-3
    perceptual_weight: float = 6e-3
    pixel_loss: str = "l1"
    seed: int = 0
    device: str = "cpu"
    workers: int = 0
    max_minutes: float | None = None
    identity_init: bool = False
    intensity: str = IntensityRange.AUTO.value
    degradations: str = "realistic"
    tiles: bool = True
    max_noise: float = 0.03
    clean_fraction: float = 0.35
    hr_noise: float = 0.0
    reduction_mix: str = DEFAULT_REDUCTION_MIX
    progress: bool = True
    tensorboard: bool = True
    teacher: Path | None = None
    teacher_weight: float = 0.5


@dataclass
class TrainResult:
    """What a run produced."""

    step: int
    last: Path | None
    best: Path | None
    best_psnr: float | None
    interrupted: bool = False
    stopped_early: bool = False
    seconds: float = 0.0


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_int(cfg: TrainConfig, name: str, low: int, high: int) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"{_flag(name)} must be a whole number from {low} to {high}, got {value!r}")


def _check_float(cfg: TrainConfig, name: str, low: float, high: float, low_open: bool = True) -> None:
    value = getattr(cfg, name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bound = ">" if low_open else ">="
        raise InputError(f"{_flag(name)} must be a finite number {bound} {low:g} and <= {high:g}, got {value!r}")


def check_config(cfg: TrainConfig) -> None:
    """Refuse every out-of-range number and unknown choice of ``cfg`` with one line.

    Raises:
        InputError: naming the option, the accepted range and the value found.
    """
    if cfg.arch not in TRAINABLE_ARCHS:
        raise InputError(f"unknown architecture {cfg.arch!r}; choose one of: {', '.join(TRAINABLE_ARCHS)}")
    for name, low in (("steps", 0), ("batch_size", 1), ("patch_size", 8), ("patches_per_image", 1)):
        _check_int(cfg, name, low, LIMITS.get(name, 10**9))
    for name in ("lr_step", "val_every", "checkpoint_every"):
        _check_int(cfg, name, 1, 10**9)
    _check_int(cfg, "val_images", 0, 10**6)
    _check_int(cfg, "snapshot_every", 0, 10**9)
    _check_int(cfg, "seed", 0, 2**63 - 1)
    _check_int(cfg, "workers", 0, 64)
    _check_float(cfg, "lr", 0.0, 1.0)
    _check_float(cfg, "lr_gamma", 0.0, 1.0)
    _check_float(cfg, "val_fraction", 0.0, 0.9, low_open=False)
    _check_float(cfg, "adversarial_weight", 0.0, 1e3, low_open=False)
    _check_float(cfg, "perceptual_weight", 0.0, 1e3, low_open=False)
    if cfg.pixel_loss not in PIXEL_LOSSES:
        raise InputError(f"unknown --pixel-loss {cfg.pixel_loss!r}; choose one of: {', '.join(PIXEL_LOSSES)}")
    if cfg.max_minutes is not None:
        _check_float(cfg, "max_minutes", 0.0, 1e7)
    try:
        IntensityRange(cfg.intensity)
    except ValueError:
        choices = ", ".join(r.value for r in IntensityRange)
        raise InputError(f"unknown --intensity {cfg.intensity!r}; choose one of: {choices}") from None
    parse_axes(cfg.axes)
    if cfg.degradations not in DEGRADATION_MIXES:
        raise InputError(f"unknown --degradations {cfg.degradations!r}; choose one of: {', '.join(DEGRADATION_MIXES)}")
    _check_float(cfg, "max_noise", 0.0, 0.5, low_open=False)
    _check_float(cfg, "clean_fraction", 0.0, 1.0, low_open=False)
    _check_float(cfg, "hr_noise", 0.0, 1.0, low_open=False)
    parse_reduction_mix(cfg.reduction_mix)
    _check_float(cfg, "teacher_weight", 0.0, 1.0)
    if cfg.teacher is not None and cfg.stage is not Stage.L1:
        raise InputError("--teacher applies to the l1 stage; leave it out of the gan stage")


#: ``--degradations``: how training LR patches are made (:mod:`metasr.training.degradations`).
DEGRADATION_MIXES = ("realistic", "bicubic")


def degradation_mix(cfg: TrainConfig) -> DegradationMix | None:
    """The training mix of ``cfg``; ``None`` for the classic bicubic-only protocol."""
    if cfg.degradations == "bicubic":
        return None
    kinds = parse_reduction_mix(cfg.reduction_mix)
    return DegradationMix(kinds=kinds, max_sigma=cfg.max_noise, clean=cfg.clean_fraction, hr_noise=cfg.hr_noise)


#: Validation degradations, cycled over the validation images so ``best.pt`` is chosen for all of them.
VALIDATION_DEGRADATIONS = (
    Degradation(Kind.BICUBIC),
    Degradation(Kind.GAUSS),
    Degradation(Kind.GAUSS, noise=NoiseKind.RICIAN, sigma=0.02),
    Degradation(Kind.KSPACE),
)


def scales_for(arch: str, text: str) -> list[Fraction]:
    fixed = arch_spec(arch).fixed_scale
    if fixed is not None:  # the fixed-scale baselines train at their own scale only
        return [Fraction(fixed)]
    scales = parse_scales(text)
    if max(scales) > 8:
        raise InputError(f"training scales up to x{float(max(scales)):g} are outside the supported range (<= 8)")
    return scales
