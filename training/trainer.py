"""The training loop of the paper: L1 stage, GAN stage, checkpoints, exact resume, DDP.

``train(TrainConfig(...))`` runs one stage. Every random choice about the data is a function of
``(seed, step)`` (:class:`~metasr.training.data.ScaleBatchSampler`) and the checkpoint holds the
optimiser, scheduler and RNG states, so ``N`` straight steps and ``k`` steps plus a resume to
``N`` give the same weights on CPU. Under ``torchrun`` every rank takes its share of the same
global batch, batch-norm statistics are reduced over all ranks, and only rank 0 writes.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from metasr.core.errors import CheckpointError, InputError
from metasr.training.checkpoint import model_config, read_checkpoint, save_checkpoint
from metasr.training.data import (
    Axis,
    ImageIndex,
    PatchDataset,
    ScaleBatchSampler,
    build_index,
    load_slice,
    make_pair,
    parse_scales,
    split_index,
)
from metasr.training.losses import GeneratorLoss, LossWeights, VGGPerceptualLoss, discriminator_loss
from metasr.training.models import TRAINABLE_ARCHS, Discriminator, arch_spec, build_model

__all__ = [
    "Stage",
    "TrainConfig",
    "TrainResult",
    "ValidationSet",
    "train",
    "psnr",
    "identity_init",
    "average_checkpoints",
    "recalibrate_batchnorm",
]

log = logging.getLogger("metasr.training")


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
    init: Path | None = None
    resume: bool = False
    vgg_weights: Path | None = None
    adversarial_weight: float = 1e-3
    perceptual_weight: float = 6e-3
    seed: int = 0
    device: str = "cpu"
    workers: int = 0
    max_minutes: float | None = None
    identity_init: bool = False
    progress: bool = True
    tensorboard: bool = True


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


def psnr(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """PSNR in dB for images in [0, 1] (data range 1)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


class ValidationSet:
    """Fixed LR/HR pairs (evaluation protocol) of held-out images at a few scales."""

    def __init__(self, index: ImageIndex, scales: list[Fraction], max_images: int = 16) -> None:
        slices = index.slices
        if max_images and len(slices) > max_images:
            picks = np.linspace(0, len(slices) - 1, max_images).round().astype(int)
            slices = [slices[i] for i in sorted(set(picks.tolist()))]
        self.scales = scales
        self.pairs: list[tuple[Fraction, Tensor, Tensor]] = []
        for ref in slices:
            image = load_slice(ref)
            for s in scales:
                lr, hr = make_pair(image, s)
                self.pairs.append((s, lr, hr))

    def __len__(self) -> int:
        return len(self.pairs)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Mean PSNR per scale and overall (``psnr``), output clipped to [0, 1]."""
        was_training = model.training
        model.eval()
        per: dict[Fraction, list[float]] = {s: [] for s in self.scales}
        for s, lr, hr in self.pairs:
            sr = model(lr[None, None].to(device), s).clamp_(0, 1)[0, 0].cpu()
            per[s].append(psnr(sr, hr))
        model.train(was_training)
        out = {f"psnr_x{float(s):g}": float(np.mean(v)) for s, v in per.items()}
        out["psnr"] = float(np.mean(list(out.values())))
        return out


def average_checkpoints(paths: list[str | os.PathLike]) -> dict[str, Tensor]:
    """Mean of the model weights of several checkpoints of one run (checkpoint averaging).

    Floating-point tensors are averaged; integer buffers (batch-norm counters) come from the last.

    Raises:
        CheckpointError: no paths, or checkpoints of different architectures/shapes.
    """
    if not paths:
        raise CheckpointError("no checkpoints to average")
    states = [read_checkpoint(p) for p in paths]
    archs = {s["config"].get("arch") for s in states}
    if len(archs) != 1:
        raise CheckpointError(f"cannot average checkpoints of different architectures: {sorted(map(str, archs))}")
    out: dict[str, Tensor] = {}
    for key, last in states[-1]["model"].items():
        if any(key not in s["model"] or s["model"][key].shape != last.shape for s in states):
            raise CheckpointError(f"cannot average: weight {key!r} differs in shape between the checkpoints")
        if last.is_floating_point():
            out[key] = torch.stack([s["model"][key].double() for s in states]).mean(0).to(last.dtype)
        else:
            out[key] = last.clone()
    return out


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module,
    dataset: PatchDataset,
    scales: list[Fraction],
    batches: int,
    batch_size: int = 8,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """Recompute batch-norm running statistics as exact averages over ``batches`` training batches.

    The batches cycle through ``scales`` so every scale weighs the same (during training the
    running statistics follow the scales of the last few mini-batches). Weights are unchanged.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the plain mean over the batches
    was_training = model.training
    model.train()
    rng = np.random.default_rng([seed, 4])
    try:
        for k in range(batches):
            scale = str(scales[k % len(scales)])
            items = [(int(rng.integers(len(dataset))), scale, int(rng.integers(0, 2**62))) for _ in range(batch_size)]
            lr = torch.stack([dataset[item][0] for item in items]).to(device)
            model(lr, scale)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    return model


# --------------------------------------------------------------------------------------------
# Batch norm across DDP ranks on any device (torch's SyncBatchNorm is CUDA-only)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose gradient is the sum of the ranks' gradients (every output uses every input).

    Written here because ``torch.distributed.nn.functional.all_reduce`` is deprecated in favour of
    a private module.
    """

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:  # type: ignore[override]
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class _DistributedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are reduced over all ranks (autograd-aware)."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3)), count])
        stats = _AllReduceSum.apply(stats)
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean.detach() * m)
            self.running_var.mul_(1 - m).add_(var.detach() * (n / max(float(n) - 1, 1)) * m)
        y = (x - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        return y * self.weight[None, :, None, None] + self.bias[None, :, None, None]


def _distribute_batchnorm(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = _DistributedBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            _distribute_batchnorm(child)
    return module


# --------------------------------------------------------------------------------------------


@torch.no_grad()
def identity_init(model: nn.Module) -> nn.Module:
    """Start Meta-SRGAN as nearest-neighbour upsampling instead of a random mapping.

    Two head channels carry the normalised input (``PReLU(x) - PReLU(-x) = (1 + a) x``), the
    trunk's residual branch starts at zero (zero-gamma tail batch norm), and the Meta-Upscale
    weight-prediction network starts with a zero last layer whose bias reads those two channels
    at the centre tap. The output is then exactly the LR pixel ``(index_row[i], index_col[j])``;
    every other weight keeps its random initialisation and all of them train. With a CPU-sized
    budget this saves the thousands of updates a random network needs to reach bicubic quality.

    Raises:
        InputError: for architectures other than metasrgan.
    """
    from metasr.training.models import MetaSRGAN

    if not isinstance(model, MetaSRGAN):
        raise InputError("--identity-init applies to the metasrgan architecture only")
    conv, prelu = model.trunk.head[0], model.trunk.head[1]
    k = conv.kernel_size[0] // 2
    conv.weight[:2].zero_()
    conv.bias[:2].zero_()
    conv.weight[0, 0, k, k] = 1.0
    conv.weight[1, 0, k, k] = -1.0
    bn = model.trunk.tail[1]
    bn.weight.zero_()
    bn.bias.zero_()
    up = model.upscale
    last = up.wpn[2]
    last.weight.zero_()
    last.bias.zero_()
    gain = 1.0 + float(prelu.weight.mean())
    centre = (up.kernel_size * up.kernel_size) // 2
    taps = up.kernel_size * up.kernel_size
    for o in range(up.out_channels):  # element (c*k*k + tap) * Cout + o
        last.bias[(0 * taps + centre) * up.out_channels + o] = 1.0 / gain
        last.bias[(1 * taps + centre) * up.out_channels + o] = -1.0 / gain
    return model


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _maybe_init_distributed(device: torch.device) -> bool:
    """Join the process group ``torchrun`` describes in the environment (returns True if it did)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend)
    return True


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda was asked for but no CUDA GPU is available; use --device cpu")
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def _scales_for(arch: str, text: str) -> list[Fraction]:
    fixed = arch_spec(arch).fixed_scale
    if fixed is not None:  # the fixed-scale baselines train at their own scale only
        return [Fraction(fixed)]
    scales = parse_scales(text)
    if max(scales) > 8:
        raise InputError(f"training scales up to x{float(max(scales)):g} are outside the supported range (<= 8)")
    return scales


class _CsvLog:
    def __init__(self, path: Path, resume: bool) -> None:
        self.fields = [
            "step",
            "seconds",
            "scale",
            "loss",
            "l1",
            "adversarial",
            "perceptual",
            "d_loss",
            "lr",
            "val_psnr",
        ]
        new = not (resume and path.is_file())
        self._f = open(path, "w" if new else "a", newline="")
        self._w = csv.DictWriter(self._f, fieldnames=self.fields, extrasaction="ignore")
        if new:
            self._w.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        self._w.writerow(row)
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def _build_model(cfg: TrainConfig, scales: list[Fraction]) -> tuple[nn.Module, dict[str, Any]]:
    if cfg.arch not in TRAINABLE_ARCHS:
        raise InputError(f"unknown architecture {cfg.arch!r}; choose one of: {', '.join(TRAINABLE_ARCHS)}")
    args: dict[str, Any] = {}
    if arch_spec(cfg.arch).kind == "meta":
        args["scale_range"] = [float(min(scales)), float(max(scales))]  # a list: JSON-friendly config
    model = build_model(cfg.arch, **args)
    return model, model_config(cfg.arch, model, args)


def _load_init(model: nn.Module, path: Path, arch: str) -> int:
    ckpt = read_checkpoint(path)
    if ckpt["config"].get("arch") != arch:
        raise CheckpointError(
            f"--init checkpoint {path} holds a {ckpt['config'].get('arch')!r} model, "
            f"not {arch!r}; pass a checkpoint of the same architecture"
        )
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"--init checkpoint {path} does not fit the model ({str(e).splitlines()[0]})") from e
    return int(ckpt.get("step", 0))


def train(cfg: TrainConfig, on_step: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Run one training stage as configured; see the module docstring.

    Raises:
        InputError: bad data, scales, device or architecture.
        CheckpointError: an unusable ``--init`` or ``--resume`` checkpoint.
    """
    started = time.monotonic()
    cfg.stage = Stage(cfg.stage)
    if cfg.arch not in TRAINABLE_ARCHS:
        raise InputError(f"unknown architecture {cfg.arch!r}; choose one of: {', '.join(TRAINABLE_ARCHS)}")
    if cfg.steps < 0 or cfg.batch_size < 1 or cfg.patch_size < 8:
        raise InputError("need --steps >= 0, --batch-size >= 1 and --patch-size >= 8")
    scales = _scales_for(cfg.arch, cfg.scales)
    device = _resolve_device(cfg.device)
    joined = _maybe_init_distributed(device)
    rank, world = _dist_info()
    out_dir = Path(cfg.out_dir)
    try:
        return _train(cfg, scales, device, rank, world, out_dir, started, on_step)
    finally:
        if joined:
            dist.destroy_process_group()


def _train(
    cfg: TrainConfig,
    scales: list[Fraction],
    device: torch.device,
    rank: int,
    world: int,
    out_dir: Path,
    started: float,
    on_step: Callable[[int, dict[str, float]], None] | None,
) -> TrainResult:
    torch.manual_seed(cfg.seed)
    model, config = _build_model(cfg, scales)
    disc: nn.Module | None = Discriminator() if cfg.stage is Stage.GAN else None

    # Data: the min size keeps slices that hold at least half a patch (smaller ones are padded).
    axes = tuple(Axis(a) for a in cfg.axes)
    min_size = max(8, cfg.patch_size // 2)
    index = build_index(cfg.data, axes=axes, min_size=min_size)
    if cfg.val:
        val_index = build_index(cfg.val, axes=(Axis.AXIAL,), min_size=min_size)
        train_index = index
    else:
        train_index, val_index = split_index(index, cfg.val_fraction, cfg.seed)
    if not len(train_index):
        raise InputError("the training set is empty after the validation split; add data or lower --val-fraction")
    val_set = (
        ValidationSet(
            val_index, parse_scales(cfg.val_scales) if cfg.arch == "metasrgan" else [Fraction(2)], cfg.val_images
        )
        if len(val_index)
        else None
    )

    step = 0
    best_psnr: float | None = None
    opt_state = sched_state = d_state = d_opt_state = d_sched_state = None
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    if cfg.resume:
        if not last_path.is_file():
            raise CheckpointError(
                f"--resume: {last_path} does not exist; start without --resume or pass the run folder of an earlier run"
            )
        ckpt = read_checkpoint(last_path)
        if ckpt["config"].get("arch") != cfg.arch or ckpt.get("stage", "l1") != cfg.stage.value:
            raise CheckpointError(
                f"--resume: {last_path} is a {ckpt['config'].get('arch')} / "
                f"{ckpt.get('stage', 'l1')} run, not {cfg.arch} / {cfg.stage.value}"
            )
        model.load_state_dict(ckpt["model"])
        step = int(ckpt["step"])
        best_psnr = ckpt.get("best_psnr")
        opt_state, sched_state = ckpt.get("optimizer"), ckpt.get("scheduler")
        d_state, d_opt_state, d_sched_state = (
            ckpt.get("discriminator"),
            ckpt.get("d_optimizer"),
            ckpt.get("d_scheduler"),
        )
        if "torch_rng" in ckpt:
            torch.set_rng_state(ckpt["torch_rng"])
    elif cfg.init is not None:
        _load_init(model, Path(cfg.init), cfg.arch)
    elif cfg.identity_init:
        identity_init(model)

    model.to(device).train()
    if disc is not None:
        if d_state is not None:
            disc.load_state_dict(d_state)
        disc.to(device).train()
    if world > 1:
        model = _distribute_batchnorm(model)
        if disc is not None:
            disc = _distribute_batchnorm(disc)
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    dnet = (nn.parallel.DistributedDataParallel(disc) if world > 1 else disc) if disc is not None else None

    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
        sched.load_state_dict(sched_state)
    d_opt = d_sched = None
    if disc is not None:
        d_opt = torch.optim.Adam(disc.parameters(), lr=cfg.lr)
        d_sched = torch.optim.lr_scheduler.StepLR(d_opt, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
        if d_opt_state is not None:
            d_opt.load_state_dict(d_opt_state)
            d_sched.load_state_dict(d_sched_state)
    perceptual = VGGPerceptualLoss(cfg.vgg_weights).to(device) if (cfg.stage is Stage.GAN and cfg.vgg_weights) else None
    weights = LossWeights(
        adversarial=cfg.adversarial_weight if cfg.stage is Stage.GAN else 0.0, perceptual=cfg.perceptual_weight
    )
    criterion = GeneratorLoss(weights, perceptual)

    is_main = rank == 0
    training_info = {
        "stage": cfg.stage.value,
        "data": list(cfg.data),
        "val": list(cfg.val),
        "patch_size": cfg.patch_size,
        "batch_size": cfg.batch_size,
        "scales": cfg.scales,
        "lr": cfg.lr,
        "seed": cfg.seed,
        "world_size": world,
        "init": str(cfg.init) if cfg.init else None,
    }

    def save_last(metrics: dict[str, float]) -> None:
        if not is_main:
            return
        extra: dict[str, Any] = {
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "best_psnr": best_psnr,
            "stage": cfg.stage.value,
            "training": training_info,
        }
        if disc is not None:
            extra.update(
                discriminator={k: v.detach().cpu() for k, v in disc.state_dict().items()},
                d_optimizer=d_opt.state_dict(),
                d_scheduler=d_sched.state_dict(),
            )
        save_checkpoint(last_path, model, config, step, metrics, **extra)

    def save_best(metrics: dict[str, float]) -> None:
        # best.pt is what gets shipped: weights, config, step and metrics only (no optimiser).
        save_checkpoint(best_path, model, config, step, metrics, stage=cfg.stage.value, training=training_info)

    writer = csv_log = None
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        csv_log = _CsvLog(out_dir / "log.csv", cfg.resume)
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out_dir / "tb"), purge_step=step if cfg.resume else None)
        if train_index.skipped_files or index.skipped_files:
            log.warning("%d unreadable files skipped", len(set(train_index.skipped_files + index.skipped_files)))
        log.info(
            "training on %d slices (%d held out for validation), %d empty/small slices skipped",
            len(train_index),
            len(val_index),
            index.skipped_slices,
        )

    result = TrainResult(step=step, last=None, best=None, best_psnr=best_psnr)
    if cfg.steps == 0 and not cfg.resume:
        metrics = val_set.evaluate(model, device) if (val_set and is_main) else {}
        save_last(metrics)
        if is_main and val_set:
            best_psnr = metrics["psnr"]
            save_best(metrics)
            result.best = best_path
        result.last = last_path if is_main else None
        result.best_psnr = best_psnr
        if csv_log:
            csv_log.close()
        if writer:
            writer.close()
        return result

    dataset = PatchDataset(train_index, cfg.patch_size)
    sampler = ScaleBatchSampler(
        len(train_index),
        cfg.batch_size,
        scales,
        cfg.seed,
        start_step=step,
        stop_step=cfg.steps,
        patches_per_image=cfg.patches_per_image,
        rank=rank,
        world_size=world,
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=cfg.workers,
        persistent_workers=False,
        prefetch_factor=4 if cfg.workers else None,
    )
    bar = None
    if is_main and cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=cfg.steps,
            initial=step,
            desc=f"{cfg.arch} {cfg.stage.value}",
            unit="step",
            file=sys.stderr,
            dynamic_ncols=True,
        )
    deadline = started + cfg.max_minutes * 60 if cfg.max_minutes else None
    metrics: dict[str, float] = {}
    interrupted = False
    try:
        for lr_t, hr_t in loader:
            lr_t, hr_t = lr_t.to(device, non_blocking=True), hr_t.to(device, non_blocking=True)
            scale = sampler.scale(step)
            d_loss_value = float("nan")
            if dnet is not None:
                with torch.no_grad():
                    fake = net(lr_t, scale)
                d_loss = discriminator_loss(dnet(hr_t), dnet(fake.detach()))
                d_opt.zero_grad(set_to_none=True)
                d_loss.backward()
                d_opt.step()
                d_sched.step()
                d_loss_value = float(d_loss.detach())
            sr = net(lr_t, scale)
            fake_logits = None
            if dnet is not None:
                for p in disc.parameters():
                    p.requires_grad_(False)
                # The bare module: the discriminator is not updated here, so DDP must not sync it.
                fake_logits = disc(sr)
            loss, terms = criterion(sr, hr_t, fake_logits)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if dnet is not None:
                for p in disc.parameters():
                    p.requires_grad_(True)
            opt.step()
            sched.step()
            step += 1
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError(f"training diverged at step {step}: loss is {float(loss)}")
            stop_now = deadline is not None and _agree_stop(time.monotonic() > deadline, world, device)
            row = {
                "step": step,
                "seconds": round(time.monotonic() - started, 2),
                "scale": scale,
                "loss": float(loss.detach()),
                "d_loss": d_loss_value,
                "lr": sched.get_last_lr()[0],
                **terms,
            }
            if is_main:
                if bar is not None:
                    bar.set_postfix(loss=f"{row['loss']:.4f}", scale=scale, refresh=False)
                    bar.update(1)
                if writer is not None:
                    writer.add_scalar("train/loss", row["loss"], step)
                    for k, v in terms.items():
                        writer.add_scalar(f"train/{k}", v, step)
                    writer.add_scalar("train/lr", row["lr"], step)
                    if dnet is not None:
                        writer.add_scalar("train/d_loss", d_loss_value, step)
                val_now = val_set is not None and (step % cfg.val_every == 0 or step == cfg.steps or stop_now)
                if val_now:
                    metrics = val_set.evaluate(model, device)
                    row["val_psnr"] = metrics["psnr"]
                    if writer is not None:
                        for k, v in metrics.items():
                            writer.add_scalar(f"val/{k}", v, step)
                    if best_psnr is None or metrics["psnr"] > best_psnr:
                        best_psnr = metrics["psnr"]
                        save_best(metrics)
                        result.best = best_path
                    if bar is not None:
                        bar.write(
                            f"step {step}: validation PSNR {metrics['psnr']:.3f} dB (best {best_psnr:.3f})",
                            file=sys.stderr,
                        )
                if step % 50 == 0 or val_now or step == cfg.steps:
                    csv_log.write(row)
                if step % cfg.checkpoint_every == 0:
                    save_last(metrics)
            if on_step is not None:
                on_step(step, row)
            if stop_now:
                result.stopped_early = step < cfg.steps
                break
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        save_last(metrics)
        result.step = step
        result.last = last_path if is_main else None
        result.best_psnr = best_psnr
        result.interrupted = interrupted
        result.seconds = time.monotonic() - started
        if bar is not None:
            bar.close()
        if csv_log is not None:
            csv_log.close()
        if writer is not None:
            writer.close()
    if result.best is None and best_path.is_file() and is_main:
        result.best = best_path
    return result


def _agree_stop(local: bool, world: int, device: torch.device) -> bool:
    """All ranks stop together when any of them reaches the time limit."""
    if world == 1:
        return local
    flag = torch.tensor([1.0 if local else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item() > 0)


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The run configuration as plain data (for logs)."""
    d = asdict(cfg)
    return {k: (str(v) if isinstance(v, (Path, Enum)) else v) for k, v in d.items()}
