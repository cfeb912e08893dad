"""The training loop of the paper: L1 stage, GAN stage, checkpoints, exact resume, DDP.

``train(TrainConfig(...))`` runs one stage. Every random choice about the data is a function of
``(seed, step)`` (:class:`~metasr.training.pairs.ScaleBatchSampler`) and the checkpoint holds the
optimiser, scheduler and RNG states, so ``N`` straight steps and ``k`` steps plus a resume to
``N`` give the same weights on CPU. Under ``torchrun`` every rank takes its share of the same
global batch, batch-norm statistics are reduced over all ranks, and only rank 0 writes.

Everything that can be checked (numbers, devices, checkpoints, the run folder, the data) is
checked before the run folder is created, so a bad run writes nothing.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from metasr.core.errors import CheckpointError, InputError
from metasr.core.manifest import sha256_file
from metasr.training.checkpoint import model_config, read_checkpoint, save_checkpoint
from metasr.training.config import (
    VALIDATION_DEGRADATIONS,
    Stage,
    TrainConfig,
    TrainResult,
    check_config,
    degradation_mix,
    scales_for,
)
from metasr.training.data import ImageIndex, build_index, split_index, tile_index
from metasr.training.degradations import Degradation
from metasr.training.distill import EnsembleTeacher, check_teacher
from metasr.training.distributed import (
    agree_stop,
    dist_info,
    distribute_batchnorm,
    maybe_init_distributed,
    resolve_device,
)
from metasr.training.losses import GeneratorLoss, LossWeights, VGGPerceptualLoss, discriminator_loss
from metasr.training.models import Discriminator, arch_spec, build_model
from metasr.training.pairs import PatchDataset, ScaleBatchSampler
from metasr.training.runlog import RunLog, check_run_folder
from metasr.training.specs import parse_axes, parse_scales
from metasr.training.validation import ValidationSet
from metasr.training.warmstart import identity_init, load_init

__all__ = ["Stage", "TrainConfig", "TrainResult", "check_config", "train"]

log = logging.getLogger("metasr.training")


def train(cfg: TrainConfig, on_step: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Run one training stage as configured; see the module docstring.

    Raises:
        InputError: bad numbers, data, scales, device or architecture.
        CheckpointError: an unusable ``--init`` or ``--resume`` checkpoint.
        OutputError: a run folder that cannot be written or would lose an earlier run.
    """
    started = time.monotonic()
    cfg.stage = Stage(cfg.stage)
    check_config(cfg)
    scales = scales_for(cfg.arch, cfg.scales)
    val_scales = parse_scales(cfg.val_scales) if arch_spec(cfg.arch).kind == "meta" else scales
    device = resolve_device(cfg.device)
    check_run_folder(cfg)
    joined = maybe_init_distributed(device)
    try:
        return _Run(cfg, scales, val_scales, device, started).execute(on_step)
    finally:
        if joined:
            dist.destroy_process_group()


def _prepare_data(cfg: TrainConfig, val_scales: list[Fraction]) -> tuple[ImageIndex, ImageIndex, ValidationSet | None]:
    """Training index, validation index and validation pairs (the min size keeps half a patch)."""
    min_size = max(8, cfg.patch_size // 2)
    index = build_index(cfg.data, axes=parse_axes(cfg.axes), min_size=min_size, intensity=cfg.intensity)
    if cfg.val:
        val_index = build_index(cfg.val, min_size=min_size, intensity=cfg.intensity)
        train_index = index
    else:
        train_index, val_index = split_index(index, cfg.val_fraction, cfg.seed)
    if not len(train_index):
        raise InputError("the training set is empty after the validation split; add data or lower --val-fraction")
    if cfg.tiles:
        train_index = tile_index(train_index, cfg.patch_size)
    val_degradations = VALIDATION_DEGRADATIONS if degradation_mix(cfg) is not None else (Degradation(),)
    noise = arch_spec(cfg.arch).noise_input
    val_set = (
        ValidationSet(val_index, val_scales, cfg.val_images, val_degradations, noise_map=noise)
        if len(val_index)
        else None
    )
    return train_index, val_index, val_set


class _Run:
    """One training run: the restored state, the networks and optimisers, one step, validation."""

    def __init__(
        self, cfg: TrainConfig, scales: list[Fraction], val_scales: list[Fraction], device: torch.device, started: float
    ) -> None:
        self.cfg, self.scales, self.device, self.started = cfg, scales, device, started
        self.rank, self.world = dist_info()
        self.is_main = self.rank == 0
        out_dir = Path(cfg.out_dir)
        self.last_path, self.best_path = out_dir / "last.pt", out_dir / "best.pt"
        resumed = self._read_resume()
        init = read_checkpoint(cfg.init) if (cfg.init is not None and resumed is None) else None
        torch.manual_seed(cfg.seed)
        arch_args: dict[str, Any] = {}
        if arch_spec(cfg.arch).kind == "meta":
            arch_args["scale_range"] = [float(min(scales)), float(max(scales))]  # a list: JSON-friendly
        self.model = build_model(cfg.arch, **arch_args)
        self.config = model_config(cfg.arch, self.model, arch_args)
        self.disc: nn.Module | None = Discriminator() if cfg.stage is Stage.GAN else None
        self.step, self.best_psnr = 0, None
        states = self._restore(resumed, init)
        self.teacher_digest = self._check_teacher(resumed, scales)
        gan = self.disc is not None
        perceptual = VGGPerceptualLoss(cfg.vgg_weights).to(device) if (gan and cfg.vgg_weights) else None
        adversarial = cfg.adversarial_weight if gan else 0.0
        self.criterion = GeneratorLoss(
            LossWeights(adversarial=adversarial, perceptual=cfg.perceptual_weight, pixel=cfg.pixel_loss), perceptual
        )
        # The data last: every checkpoint and weight file is checked before a large dataset is indexed.
        self.train_index, self.val_index, self.val_set = _prepare_data(cfg, val_scales)
        self._place_networks(states)
        self._build_optimisers(states)
        self.teacher = EnsembleTeacher(cfg.teacher, device) if cfg.teacher is not None else None
        self.metrics: dict[str, float] = {}
        self.diverged = False
        self.saved_step: int | None = self.step if resumed is not None else None
        self.result = TrainResult(step=self.step, last=None, best=None, best_psnr=self.best_psnr)

    # -- restore ---------------------------------------------------------------------------

    def _read_resume(self) -> dict[str, Any] | None:
        cfg = self.cfg
        if not cfg.resume:
            return None
        if not self.last_path.is_file():
            raise CheckpointError(
                f"--resume: {self.last_path} does not exist; start without --resume or pass the run folder "
                f"of an earlier run"
            )
        ckpt = read_checkpoint(self.last_path)
        stage = ckpt.get("stage", "l1")
        if ckpt["config"].get("arch") != cfg.arch or stage != cfg.stage.value:
            raise CheckpointError(
                f"--resume: {self.last_path} is a {ckpt['config'].get('arch')} / {stage} run, "
                f"not {cfg.arch} / {cfg.stage.value}"
            )
        return ckpt

    def _restore(self, resumed: dict[str, Any] | None, init: dict[str, Any] | None) -> dict[str, Any]:
        """Weights from ``last.pt`` (resume), ``--init`` or identity; returns the optimiser states."""
        if resumed is None:
            if init is not None:
                load_init(self.model, init, Path(self.cfg.init), self.cfg.arch)
            elif self.cfg.identity_init:
                identity_init(self.model)
            return {}
        try:
            self.model.load_state_dict(resumed["model"])
        except RuntimeError as e:
            raise CheckpointError(
                f"--resume: {self.last_path} does not fit the model ({str(e).splitlines()[0]})"
            ) from e
        self.step = int(resumed["step"])
        self.best_psnr = resumed.get("best_psnr")
        if "torch_rng" in resumed:
            torch.set_rng_state(resumed["torch_rng"])
        keys = ("optimizer", "scheduler", "discriminator", "d_optimizer", "d_scheduler")
        return {k: resumed.get(k) for k in keys}

    def _check_teacher(self, resumed: dict[str, Any] | None, scales: list[Fraction]) -> str | None:
        """The teacher's sha256 after checking it; a resumed run keeps the teacher it began with."""
        cfg = self.cfg
        digest = None
        if cfg.teacher is not None:
            check_teacher(Path(cfg.teacher), cfg.arch, cfg.patch_size, scales)
            digest = sha256_file(cfg.teacher)
        if resumed is not None:
            info = resumed.get("training") or {}
            was = (info.get("teacher_sha256"), info.get("teacher_weight") if info.get("teacher_sha256") else None)
            now = (digest, cfg.teacher_weight if digest else None)
            if was != now:
                began = f"a teacher of sha256 {was[0][:12]} at weight {was[1]:g}" if was[0] else "no teacher"
                raise CheckpointError(
                    f"--resume: {self.last_path} was trained with {began}; resume with the same --teacher and "
                    f"--teacher-weight, or start a new run with --init {self.last_path}"
                )
        return digest

    def _place_networks(self, states: dict[str, Any]) -> None:
        self.model.to(self.device).train()
        if self.disc is not None:
            if states.get("discriminator") is not None:
                self.disc.load_state_dict(states["discriminator"])
            self.disc.to(self.device).train()
        if self.world > 1:
            self.model = distribute_batchnorm(self.model)
            if self.disc is not None:
                self.disc = distribute_batchnorm(self.disc)
        ddp = nn.parallel.DistributedDataParallel
        self.net = ddp(self.model) if self.world > 1 else self.model
        self.dnet = None if self.disc is None else (ddp(self.disc) if self.world > 1 else self.disc)

    def _build_optimisers(self, states: dict[str, Any]) -> None:
        cfg = self.cfg

        def make(module: nn.Module, opt_state: Any, sched_state: Any) -> tuple[Any, Any]:
            opt = torch.optim.Adam(module.parameters(), lr=cfg.lr)
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
            if opt_state is not None:
                opt.load_state_dict(opt_state)
                sched.load_state_dict(sched_state)
            return opt, sched

        self.opt, self.sched = make(self.model, states.get("optimizer"), states.get("scheduler"))
        self.d_opt = self.d_sched = None
        if self.disc is not None:
            self.d_opt, self.d_sched = make(self.disc, states.get("d_optimizer"), states.get("d_scheduler"))

    # -- checkpoints -----------------------------------------------------------------------

    def _training_info(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "stage": cfg.stage.value,
            "pixel_loss": cfg.pixel_loss,
            "data": list(cfg.data),
            "val": list(cfg.val),
            "patch_size": cfg.patch_size,
            "batch_size": cfg.batch_size,
            "scales": cfg.scales,
            "lr": cfg.lr,
            "seed": cfg.seed,
            "world_size": self.world,
            "intensity": cfg.intensity,
            "tiles": cfg.tiles,
            "degradations": mix.describe() if (mix := degradation_mix(cfg)) is not None else "bicubic",
            "init": str(cfg.init) if cfg.init else None,
            "teacher": str(cfg.teacher) if cfg.teacher else None,
            "teacher_weight": cfg.teacher_weight if cfg.teacher else None,
            "teacher_sha256": self.teacher_digest,
        }

    def save_last(self) -> None:
        if not self.is_main:
            return
        extra: dict[str, Any] = {
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "best_psnr": self.best_psnr,
            "stage": self.cfg.stage.value,
            "training": self._training_info(),
        }
        if self.disc is not None:
            extra.update(
                discriminator={k: v.detach().cpu() for k, v in self.disc.state_dict().items()},
                d_optimizer=self.d_opt.state_dict(),
                d_scheduler=self.d_sched.state_dict(),
            )
        save_checkpoint(self.last_path, self.model, self.config, self.step, self.metrics, **extra)
        self.saved_step = self.step

    def _save_shippable(self, path: Path) -> None:
        """The form that gets shipped: weights, config, step, metrics and training facts (no optimiser)."""
        info = self._training_info()
        save_checkpoint(path, self.model, self.config, self.step, self.metrics, stage=info["stage"], training=info)

    def save_snapshot(self) -> None:
        """The weights now, kept as ``snapshots/step-NNNNNN.pt`` (for weight averaging)."""
        self._save_shippable(self.last_path.parent / "snapshots" / f"step-{self.step:06d}.pt")

    def save_best(self) -> None:
        self._save_shippable(self.best_path)
        self.result.best = self.best_path

    def validate(self) -> bool:
        """Validation PSNR now; writes ``best.pt`` when it improved (returns whether it did)."""
        self.metrics = self.val_set.evaluate(self.model, self.device)
        if self.best_psnr is None or self.metrics["psnr"] > self.best_psnr:
            self.best_psnr = self.metrics["psnr"]
            self.save_best()
            return True
        return False

    # -- one step --------------------------------------------------------------------------

    def train_step(self, lr_t: torch.Tensor, hr_t: torch.Tensor, scale: str) -> dict[str, Any]:
        """One update of the discriminator (GAN stage) and the generator; returns the log row."""
        d_loss_value = float("nan")
        if self.dnet is not None:
            with torch.no_grad():
                fake = self.net(lr_t, scale)
            d_loss = discriminator_loss(self.dnet(hr_t), self.dnet(fake.detach()))
            self.d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            self.d_opt.step()
            self.d_sched.step()
            d_loss_value = float(d_loss.detach())
        sr = self.net(lr_t, scale)
        fake_logits = None
        if self.disc is not None:
            for p in self.disc.parameters():
                p.requires_grad_(False)
            # The bare module: the discriminator is not updated here, so DDP must not sync it.
            fake_logits = self.disc(sr)
        loss, terms = self.criterion(sr, hr_t, fake_logits)
        if self.teacher is not None:  # (1 - A) * pixel(sr, hr) + A * pixel(sr, teacher's x8 ensemble)
            weight = self.cfg.teacher_weight
            taught = self.criterion.pixel_term(sr, self.teacher(lr_t, scale))
            loss = (1.0 - weight) * loss + weight * taught
            terms["teacher"] = float(taught.detach())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.disc is not None:
            for p in self.disc.parameters():
                p.requires_grad_(True)
        self.opt.step()
        self.sched.step()
        self.step += 1
        value = float(loss.detach())
        if not math.isfinite(value):
            self.diverged = True
            kept = f"{self.last_path} keeps step {self.saved_step}" if self.saved_step is not None else "nothing saved"
            raise InputError(f"training diverged at step {self.step}: the loss is {value}; {kept}; lower --lr")
        return {
            "step": self.step,
            "seconds": round(time.monotonic() - self.started, 2),
            "scale": scale,
            "loss": value,
            "d_loss": d_loss_value,
            "lr": self.sched.get_last_lr()[0],
            **terms,
        }

    # -- the run ---------------------------------------------------------------------------

    def _loader(self) -> tuple[torch.utils.data.DataLoader, ScaleBatchSampler]:
        cfg = self.cfg
        sampler = ScaleBatchSampler(
            len(self.train_index),
            cfg.batch_size,
            self.scales,
            cfg.seed,
            start_step=self.step,
            stop_step=cfg.steps,
            patches_per_image=cfg.patches_per_image,
            rank=self.rank,
            world_size=self.world,
        )
        loader = torch.utils.data.DataLoader(
            PatchDataset(
                self.train_index,
                cfg.patch_size,
                degradations=degradation_mix(cfg),
                noise_map=arch_spec(self.cfg.arch).noise_input,
            ),
            batch_sampler=sampler,
            num_workers=cfg.workers,
            persistent_workers=False,
            prefetch_factor=4 if cfg.workers else None,
        )
        return loader, sampler

    def _announce(self) -> None:
        skipped = self.train_index.skipped
        if skipped:
            log.warning("%d unreadable files skipped (-v lists them)", len(skipped))
            for path, reason in skipped.items():
                log.debug("skipped %s: %s", path, reason)
        log.info(
            "training on %d slices (%d held out for validation), %d empty/small slices skipped",
            len(self.train_index),
            len(self.val_index),
            self.train_index.skipped_slices,
        )

    def execute(self, on_step: Callable[[int, dict[str, float]], None] | None) -> TrainResult:
        cfg = self.cfg
        runlog = RunLog(Path(cfg.out_dir), cfg, self.step, self.is_main) if self.is_main else None
        if self.is_main:
            self._announce()
        try:
            if cfg.steps == 0 and not cfg.resume:
                if self.val_set is not None and self.is_main:
                    self.validate()
            elif self.step < cfg.steps:
                self._loop(runlog, on_step)
        except KeyboardInterrupt:
            self.result.interrupted = True
            raise
        finally:
            if not self.diverged:  # non-finite weights never replace the last good checkpoint
                self.save_last()
            self.result.step = self.step
            self.result.last = self.last_path if self.is_main else None
            self.result.best_psnr = self.best_psnr
            self.result.seconds = time.monotonic() - self.started
            if runlog is not None:
                runlog.close()
        if self.result.best is None and self.is_main and self.best_path.is_file():
            self.result.best = self.best_path
        return self.result

    def _loop(self, runlog: RunLog | None, on_step: Callable[[int, dict[str, float]], None] | None) -> None:
        cfg = self.cfg
        loader, sampler = self._loader()
        if runlog is not None:
            runlog.open_progress(cfg.steps, self.step, f"{cfg.arch} {cfg.stage.value}")
        deadline = self.started + cfg.max_minutes * 60 if cfg.max_minutes else None
        for lr_t, hr_t in loader:
            scale = sampler.scale(self.step)
            row = self.train_step(
                lr_t.to(self.device, non_blocking=True), hr_t.to(self.device, non_blocking=True), scale
            )
            stop_now = deadline is not None and agree_stop(time.monotonic() > deadline, self.world, self.device)
            if self.is_main:
                self._after_step(row, runlog, stop_now)
            if on_step is not None:
                on_step(self.step, row)
            if stop_now:
                self.result.stopped_early = self.step < cfg.steps
                break

    def _after_step(self, row: dict[str, Any], runlog: RunLog, stop_now: bool) -> None:
        """Rank 0: progress and logs, validation (``best.pt``) and ``last.pt`` when due."""
        cfg, step = self.cfg, self.step
        runlog.step(row, self.dnet is not None)
        val_now = self.val_set is not None and (step % cfg.val_every == 0 or step == cfg.steps or stop_now)
        if val_now:
            self.validate()
            row["val_psnr"] = self.metrics["psnr"]
            runlog.validation(step, self.metrics, self.best_psnr)
        if step % 50 == 0 or val_now or step == cfg.steps:
            runlog.row(row)
        if step % cfg.checkpoint_every == 0:
            self.save_last()
        if cfg.snapshot_every and step % cfg.snapshot_every == 0:
            self.save_snapshot()
