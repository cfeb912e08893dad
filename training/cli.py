"""Command-line entry points of metasr.training: ``metasr-train`` and ``metasr-eval``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from metasr.core.cli import run_command
from metasr.training.models import TRAINABLE_ARCHS

__all__ = ["train_main", "eval_main", "train_command", "eval_command"]


def _setup_logging(prog: str) -> None:
    logger = logging.getLogger("metasr")
    if not any(getattr(h, "_metasr_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{prog}: %(message)s"))
        handler._metasr_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--arch", type=click.Choice(TRAINABLE_ARCHS), default="metasrgan", help="Generator architecture.")
@click.option(
    "--data",
    "data",
    multiple=True,
    required=True,
    help="Training data spec, repeatable: brats:PATH, div2k:PATH or folder:PATH.",
)
@click.option(
    "--val",
    "val",
    multiple=True,
    help="Held-out validation spec(s); default: split off --val-fraction of the training cases/files.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Run folder (last.pt, best.pt, log.csv, tb/).",
)
@click.option(
    "--steps",
    type=click.IntRange(min=0),
    default=1000,
    help="Total number of updates (0: write the initialised checkpoint and stop).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, help="Global mini-batch size.")
@click.option("--patch-size", type=click.IntRange(min=8), default=96, help="HR patch size in pixels.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4, help="Adam learning rate.")
@click.option(
    "--lr-step",
    type=click.IntRange(min=1),
    default=60_000,
    help="Multiply the learning rate by --lr-gamma every this many updates.",
)
@click.option("--lr-gamma", type=click.FloatRange(min=0, min_open=True), default=0.8)
@click.option(
    "--scales",
    default="1.1:4.0:0.1",
    help="Training scales: START:STOP:STEP or a list 2,3,4 (one per mini-batch, uniformly).",
)
@click.option(
    "--stage",
    type=click.Choice(["l1", "gan"]),
    default="l1",
    help="Loss: L1 only, or L1 + adversarial (+ perceptual with --vgg-weights).",
)
@click.option(
    "--init",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Start from this checkpoint's weights (transfer, e.g. DIV2K -> BraTS).",
)
@click.option(
    "--identity-init",
    is_flag=True,
    help="metasrgan: start as nearest-neighbour upsampling instead of "
    "a random mapping (when neither --init nor --resume is given).",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly where last.pt left it.")
@click.option(
    "--vgg-weights",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="torchvision VGG19 state dict for the perceptual loss (gan stage).",
)
@click.option("--axes", default="axial", help="Slicing axes of volumes in folder: specs, e.g. axial,coronal,sagittal.")
@click.option("--patches-per-image", type=click.IntRange(min=1), default=16)
@click.option("--val-fraction", type=click.FloatRange(0, 0.9), default=0.1)
@click.option("--val-scales", default="1.5,2,3,4", help="Scales of the validation PSNR that selects best.pt.")
@click.option(
    "--val-images", type=click.IntRange(min=0), default=16, help="At most this many validation images (0: all)."
)
@click.option("--val-every", type=click.IntRange(min=1), default=500)
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=500, help="Write last.pt every N steps.")
@click.option(
    "--max-minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop cleanly (writing last.pt) after this much wall time.",
)
@click.option("--seed", type=int, default=0)
@click.option("--device", default="cpu", help="cpu, cuda, cuda:N or auto.")
@click.option("--workers", type=click.IntRange(min=0), default=0, help="Data loader worker processes.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch intra-op threads.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def train_command(**opts: Any) -> int:
    """Train a super-resolution generator (the paper's recipe)."""
    _setup_logging("metasr-train")
    previous = _sigterm_as_interrupt()
    try:
        return _run_training(opts)
    finally:
        if previous is not None:
            import signal

            signal.signal(signal.SIGTERM, previous)


def _run_training(opts: dict[str, Any]) -> int:
    import torch

    from metasr.training.trainer import Stage, TrainConfig, train

    if opts["threads"]:
        torch.set_num_threads(int(opts["threads"]))
    cfg = TrainConfig(
        out_dir=opts["out_dir"],
        data=list(opts["data"]),
        val=list(opts["val"]),
        arch=opts["arch"],
        stage=Stage(opts["stage"]),
        steps=opts["steps"],
        batch_size=opts["batch_size"],
        patch_size=opts["patch_size"],
        lr=opts["lr"],
        lr_step=opts["lr_step"],
        lr_gamma=opts["lr_gamma"],
        scales=opts["scales"],
        patches_per_image=opts["patches_per_image"],
        axes=tuple(a.strip() for a in str(opts["axes"]).split(",") if a.strip()),
        val_fraction=opts["val_fraction"],
        val_scales=opts["val_scales"],
        val_images=opts["val_images"],
        val_every=opts["val_every"],
        checkpoint_every=opts["checkpoint_every"],
        init=opts["init"],
        resume=opts["resume"],
        vgg_weights=opts["vgg_weights"],
        seed=opts["seed"],
        device=opts["device"],
        workers=opts["workers"],
        max_minutes=opts["max_minutes"],
        identity_init=opts["identity_init"],
        progress=not opts["no_progress"],
    )
    _check_axes(cfg.axes)
    result = train(cfg)
    best = f", best {result.best} ({result.best_psnr:.3f} dB)" if result.best and result.best_psnr else ""
    logging.getLogger("metasr").info("step %d, %.0f s: wrote %s%s", result.step, result.seconds, result.last, best)
    return 0


def _sigterm_as_interrupt() -> object:
    """Let ``kill`` stop a run like Ctrl-C does, so last.pt is written; returns the old handler."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def _check_axes(axes: Sequence[str]) -> None:
    from metasr.core.errors import InputError
    from metasr.training.data import Axis

    for a in axes:
        try:
            Axis(a)
        except ValueError:
            raise InputError(f"unknown axis {a!r}; use axial, coronal or sagittal") from None


def train_main(argv: Sequence[str] | None = None) -> int:
    """``metasr-train``: returns the exit code."""
    return run_command(train_command, argv, "metasr-train")


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option(
    "--ckpt",
    "ckpts",
    multiple=True,
    required=True,
    help="Checkpoint (.pt) or exported model folder; repeat to add baselines (e.g. SRGAN/EDSR x2, "
    "evaluated at their scale only).",
)
@click.option("--data", "data", multiple=True, required=True, help="Held-out data spec(s): brats:, div2k:, folder:.")
@click.option("--scales", default="1.1:4.0:0.1", help="START:STOP:STEP or a list such as 2,3,4.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for table.md, table.csv, metrics.png, crops.png.",
)
@click.option("--axes", default="axial", help="Slicing axes of volumes in folder: specs.")
@click.option("--max-images", type=click.IntRange(min=0), default=0, help="Evenly thin to this many images (0: all).")
@click.option("--crop-scales", default="2,3,4", help="Scales shown in crops.png.")
@click.option("--device", default="cpu")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch intra-op threads.")
@click.option("--no-progress", is_flag=True)
def eval_command(
    ckpts: tuple[str, ...],
    data: tuple[str, ...],
    scales: str,
    out_dir: Path,
    axes: str,
    max_images: int,
    crop_scales: str,
    device: str,
    threads: int | None,
    no_progress: bool,
) -> int:
    """Evaluate models against bicubic on held-out images (PSNR/SSIM per scale)."""
    import torch
    from tqdm.auto import tqdm

    from metasr.training.data import parse_scales
    from metasr.training.evaluate import bicubic_predictor, evaluate, load_images, load_predictor, write_report

    _setup_logging("metasr-eval")
    if threads:
        torch.set_num_threads(threads)
    axes_list = tuple(a.strip() for a in axes.split(",") if a.strip())
    _check_axes(axes_list)
    models = [load_predictor(c, device) for c in ckpts]
    main = models[0]
    lo, hi = main.scale_range if main.fixed_scale is None else (main.fixed_scale, main.fixed_scale)
    scale_list = parse_scales(scales, lo, hi)
    shown = [s for s in parse_scales(crop_scales) if s in scale_list]
    images = load_images(list(data), axes_list, max_images)
    bar = tqdm(
        total=len(images) * len(scale_list),
        desc="metasr-eval",
        unit="img",
        file=sys.stderr,
        disable=no_progress,
        dynamic_ncols=True,
    )
    try:
        report = evaluate([bicubic_predictor(), *models], images, scale_list, sample_scales=shown, progress=bar.update)
    finally:
        bar.close()
    written = write_report(report, out_dir)
    logging.getLogger("metasr").info(
        "%d images x %d scales: wrote %s", len(images), len(scale_list), ", ".join(str(p) for p in written.values())
    )
    return 0


def eval_main(argv: Sequence[str] | None = None) -> int:
    """``metasr-eval``: returns the exit code."""
    return run_command(eval_command, argv, "metasr-eval")
