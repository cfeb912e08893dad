"""Command-line entry points of metasr.training: ``metasr-train`` and ``metasr-eval``."""

from __future__ import annotations

import logging
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from fractions import Fraction
from pathlib import Path
from typing import Any

import click

from metasr.core.cli import (
    EXIT_TERMINATED,
    Terminated,
    Verbosity,
    common_options,
    progress_enabled,
    run_command,
    sigterm_as_interrupt,
)
from metasr.core.errors import InputError, OutputError
from metasr.core.locks import output_lock
from metasr.scanners import IntensityRange
from metasr.training.compare import COMPARE_FILES
from metasr.training.degradations import DEFAULT_REDUCTION_MIX, Degradation
from metasr.training.losses import PIXEL_LOSSES
from metasr.training.models import TRAINABLE_ARCHS
from metasr.training.specs import parse_axes

__all__ = ["train_main", "eval_main", "train_command", "eval_command", "run_eval", "setup_logging", "library_warnings"]

#: Most torch threads a command starts; more than the machine's cores only adds contention.
MAX_THREADS = 1024
_INTENSITY = click.Choice([r.value for r in IntensityRange], case_sensitive=False)


def setup_logging(prog: str, verbosity: Verbosity = Verbosity.NORMAL) -> None:
    logger = logging.getLogger("metasr")
    for handler in [h for h in logger.handlers if getattr(h, "_metasr_cli", False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{prog}: %(message)s"))
    handler._metasr_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    levels = {Verbosity.QUIET: logging.ERROR, Verbosity.NORMAL: logging.INFO, Verbosity.VERBOSE: logging.DEBUG}
    logger.setLevel(levels[verbosity])


class _Keep(logging.Handler):
    """Keeps log records of a library as one-line texts."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(record.getMessage())


@contextmanager
def library_warnings() -> Iterator[None]:
    """torch/pydicom warnings and nibabel's header log become debug notes (``-v``) after the work,
    never noise before an error (nibabel prints header fixes, e.g. a zero pixdim, on stderr)."""
    import nibabel.imageglobals

    nib_log = nibabel.imageglobals.logger
    handlers, propagate = nib_log.handlers[:], nib_log.propagate
    keep = _Keep()
    nib_log.handlers, nib_log.propagate = [keep], False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        nib_log.handlers, nib_log.propagate = handlers, propagate
    texts = [str(w.message) for w in caught] + keep.texts
    log = logging.getLogger("metasr")
    for text in dict.fromkeys(" ".join(t.split())[:240] for t in texts):
        log.debug("note: %s", text)


def _threads(requested: int) -> int:
    """``--threads``, capped at the machine's cores."""
    return max(1, min(int(requested), os.cpu_count() or 1))


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
@click.option("--batch-size", type=click.IntRange(1, 4096), default=8, help="Global mini-batch size.")
@click.option("--patch-size", type=click.IntRange(8, 2048), default=96, help="HR patch size in pixels.")
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
    "--pixel-loss",
    type=click.Choice(PIXEL_LOSSES),
    default="l1",
    show_default=True,
    help="The pixel term: L1 (the paper's), MSE (the conditional mean: what PSNR rewards under noise) or "
    "psnr (minus the patches' mean PSNR: each patch weighs the same, noisy or clean); the last two "
    "for a last fine-tune.",
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
@click.option(
    "--teacher",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also train toward this frozen metasrgan checkpoint's exact x8 self-ensemble (what metasr-run "
    "--ensemble gives), so that one run of the new network gains part of the ensemble's 8-run improvement.",
)
@click.option(
    "--teacher-weight",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="A in (1 - A) * pixel(sr, hr) + A * pixel(sr, teacher x8); with --teacher only.  [default: 0.5]",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly where last.pt left it.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier run's last.pt/best.pt/log.csv in --out.")
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
    "--snapshot-every",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Also keep the weights every N steps as snapshots/step-NNNNNN.pt (for weight averaging: "
    "scripts/average_checkpoints.py); 0: none.",
)
@click.option(
    "--max-minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop cleanly (writing last.pt) after this much wall time.",
)
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0)
@click.option("--device", default="cpu", help="cpu, cuda, cuda:N or auto.")
@click.option("--workers", type=click.IntRange(0, 64), default=0, help="Data loader worker processes.")
@click.option(
    "--threads", type=click.IntRange(1, MAX_THREADS), default=None, help="torch intra-op threads (capped at the cores)."
)
@click.option(
    "--intensity", type=_INTENSITY, default="auto", help="Intensity window of the readers, as metasr-run --intensity."
)
@click.option(
    "--degradations",
    type=click.Choice(["realistic", "bicubic"]),
    default="realistic",
    help="How LR patches are made: realistic = a mix of bicubic, Gaussian PSF + area sampling and k-space "
    "truncation, with Rician/Gaussian noise on part of them; bicubic = the classic clean protocol.",
)
@click.option(
    "--tiles/--no-tiles",
    default=True,
    help="Weight large images by area (one sampling slot per two patch areas, at most 128) instead of one per slice.",
)
@click.option(
    "--max-noise",
    type=click.FloatRange(0, 0.5),
    default=0.03,
    help="Largest noise sigma of the realistic mix, a fraction of the range.",
)
@click.option(
    "--reduction-mix",
    default=DEFAULT_REDUCTION_MIX,
    show_default=True,
    help="Weights of the realistic mix's reductions (bicubic, Gaussian PSF, k-space), e.g. bicubic=0.7,gauss=0.3.",
)
@click.option(
    "--clean-fraction",
    type=click.FloatRange(0, 1),
    default=0.35,
    show_default=True,
    help="Share of the realistic mix's patches left without noise.",
)
@click.option(
    "--hr-noise",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of the realistic mix's HR patches given acquisition noise (sigma up to --max-noise) before "
    "the LR is made; the target keeps it.",
)
@click.option("--no-progress", is_flag=True, help="No progress bar (there is none when stderr is not a terminal).")
@click.option(
    "--tensorboard/--no-tensorboard",
    default=True,
    show_default=True,
    help="TensorBoard event files in --out/tb (needs the tensorboard package).",
)
@common_options("metasr-train")
def train_command(verbosity: Verbosity, **opts: Any) -> int:
    """Train a super-resolution generator (the paper's recipe)."""
    setup_logging("metasr-train", verbosity)
    try:
        with sigterm_as_interrupt(), library_warnings():
            return _run_training(opts, verbosity)
    except Terminated:
        print(f"metasr-train: terminated; {opts['out_dir'] / 'last.pt'} holds the progress", file=sys.stderr)
        return EXIT_TERMINATED


def _run_training(opts: dict[str, Any], verbosity: Verbosity) -> int:
    import torch

    from metasr.training.trainer import Stage, TrainConfig, train

    if opts["threads"]:
        torch.set_num_threads(_threads(opts["threads"]))
    cfg = TrainConfig(
        out_dir=opts["out_dir"],
        data=list(opts["data"]),
        val=list(opts["val"]),
        arch=opts["arch"],
        stage=Stage(opts["stage"]),
        pixel_loss=opts["pixel_loss"],
        steps=opts["steps"],
        batch_size=opts["batch_size"],
        patch_size=opts["patch_size"],
        lr=opts["lr"],
        lr_step=opts["lr_step"],
        lr_gamma=opts["lr_gamma"],
        scales=opts["scales"],
        patches_per_image=opts["patches_per_image"],
        axes=tuple(a.value for a in parse_axes(opts["axes"])),
        val_fraction=opts["val_fraction"],
        val_scales=opts["val_scales"],
        val_images=opts["val_images"],
        val_every=opts["val_every"],
        checkpoint_every=opts["checkpoint_every"],
        snapshot_every=opts["snapshot_every"],
        init=opts["init"],
        teacher=opts["teacher"],
        teacher_weight=_teacher_weight(opts),
        resume=opts["resume"],
        overwrite=opts["overwrite"],
        vgg_weights=opts["vgg_weights"],
        seed=opts["seed"],
        device=opts["device"],
        workers=opts["workers"],
        max_minutes=opts["max_minutes"],
        identity_init=opts["identity_init"],
        intensity=opts["intensity"],
        degradations=opts["degradations"],
        max_noise=opts["max_noise"],
        clean_fraction=opts["clean_fraction"],
        hr_noise=opts["hr_noise"],
        reduction_mix=opts["reduction_mix"],
        tiles=opts["tiles"],
        progress=not opts["no_progress"] and progress_enabled(verbosity),
        tensorboard=opts["tensorboard"],
    )
    out = Path(opts["out_dir"])
    rank0 = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 speaks for the run folder
    with output_lock(out, "run folder") if rank0 and out.parent.is_dir() else nullcontext():
        result = train(cfg)
    best = f", best {result.best} ({result.best_psnr:.3f} dB)" if result.best and result.best_psnr else ""
    logging.getLogger("metasr").info("step %d, %.0f s: wrote %s%s", result.step, result.seconds, result.last, best)
    return 0


def _teacher_weight(opts: dict[str, Any]) -> float:
    weight = opts["teacher_weight"]
    if weight is not None and opts["teacher"] is None:
        raise InputError("--teacher-weight needs --teacher (the checkpoint whose ensemble to train toward)")
    return 0.5 if weight is None else weight


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
    type=click.Path(path_type=Path),
    required=True,
    help="Folder for table.md/.csv, per_image.csv, metrics.{png,pdf,svg}, crops.{png,pdf,svg}.",
)
@click.option("--axes", default="axial", help="Slicing axes of volumes in folder: specs.")
@click.option(
    "--max-images", type=click.IntRange(0, 10**6), default=0, help="Evenly thin to this many images (0: all)."
)
@click.option("--crop-scales", default="2,3,4", help="Scales shown in the crops figure.")
@click.option(
    "--degradation",
    default="bicubic",
    help="How the LR is made: bicubic, gauss[:FWHM] (Gaussian PSF, FWHM in units of the scale, area sampling), "
    "kspace[:hamming|tukey] (k-space truncation).",
)
@click.option(
    "--noise", default="none", help="Noise on the LR: none, rician:SIGMA or gaussian:SIGMA (e.g. rician:0.02)."
)
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, help="Seed of the noise (fixed per image).")
@click.option(
    "--noise-level",
    default="estimate",
    help="What a noise-conditioned model (metasrgan-nc) is told: estimate (from each LR image), oracle (the "
    "sigma of --noise) or a sigma such as 0.02; other models ignore it.",
)
@click.option(
    "--ensemble",
    is_flag=True,
    help="Each network's prediction is the mean of the 8 orientations of the LR (metasr-run --ensemble); 8x the time.",
)
@click.option(
    "--data-consistency",
    is_flag=True,
    help="Make each model's output consistent with its LR in k-space (metasr-run --data-consistency): its k-space "
    "truncation is the LR; for MR acquired at a lower matrix (--degradation kspace). Models are named NAME +dc.",
)
@click.option(
    "--zero-fill",
    is_flag=True,
    help="Also score zero-filled (band-limited) interpolation, as MR scanners interpolate: under k-space truncation "
    "(--degradation kspace) it restores exactly what the LR kept, a stronger baseline than bicubic.",
)
@click.option(
    "--crop",
    "crop_spec",
    default=None,
    help="Crops figure: IMAGE:Y,X,SIZE, the image (its name in per_image.csv) and the HR region shown.",
)
@click.option(
    "--window", "window_spec", default=None, help="Crops figure display window C,W in [0, 1] intensity units."
)
@click.option(
    "--reference",
    type=click.Choice(["stored", "native"]),
    default="stored",
    help="HR reference: the image as stored, or reduced to the resolution it was acquired at (MR stored on a finer "
    "grid than acquired: DICOM AcquisitionMatrix, else the image's spectrum, or --native-factor).",
)
@click.option(
    "--native-factor",
    "native_factors",
    multiple=True,
    help="With --reference native: NAME=F, the stored pixels per acquired sample of the file NAME (its header and "
    "spectrum are silent or wrong), e.g. MR2_UNCR.dcm=2; repeat per file.",
)
@click.option("--device", default="cpu", help="cpu, cuda, cuda:N or auto.")
@click.option(
    "--threads", type=click.IntRange(1, MAX_THREADS), default=None, help="torch intra-op threads (capped at the cores)."
)
@click.option(
    "--intensity", type=_INTENSITY, default="auto", help="Intensity window of the readers, as metasr-run --intensity."
)
@click.option("--no-progress", is_flag=True, help="No progress bar (there is none when stderr is not a terminal).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier evaluation in --out.")
@common_options("metasr-eval")
def eval_command(verbosity: Verbosity, **opts: Any) -> int:
    """Evaluate models against bicubic on held-out images (PSNR/SSIM per scale, figures for a paper)."""
    setup_logging("metasr-eval", verbosity)
    with library_warnings():
        return run_eval(opts, verbosity)


#: What an evaluation writes into --out: an --out that holds any of them holds an earlier evaluation.
_EVAL_FILES = (
    ("table.md", "table.csv", "per_image.csv")
    + tuple(f"{stem}.{fmt}" for stem in ("metrics", "crops") for fmt in ("png", "pdf", "svg"))
    + COMPARE_FILES
)


def _check_no_evaluation(out: Path, overwrite: bool) -> None:
    found = [name for name in _EVAL_FILES if os.path.lexists(out / name)]
    if found and not overwrite:
        raise OutputError(
            f"--out {out} already holds an evaluation ({', '.join(found[:3])}); pass --overwrite to replace it "
            "or choose another folder"
        )


def _check_eval_out(out: Path, ckpts: Sequence[str], data: Sequence[str], overwrite: bool = False) -> None:
    """The report folder: not a file, not a model or data folder, writable (nothing created yet)."""
    from metasr.core.atomic import check_writable_folder
    from metasr.core.paths import check_resolvable

    check_resolvable(out, "--out")
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; give a folder for the report")
    for source in [*ckpts, *(str(d).partition(":")[2] for d in data)]:
        other = Path(source).expanduser()
        if out.exists() and other.exists() and os.path.samefile(out, other):
            raise OutputError(f"--out {out} is the input {source}; give a separate folder for the report")
    existing = out
    while not existing.exists():
        existing = existing.parent
    check_writable_folder(existing)
    if out.is_dir():
        _check_no_evaluation(out, overwrite)


def _parse_crop(text: str | None) -> tuple[str, tuple[int, int, int]] | None:
    """``IMAGE:Y,X,SIZE`` -> ``(image, (y, x, size))``."""
    if text is None:
        return None
    image, _, region = str(text).rpartition(":")
    try:
        y, x, size = (int(v) for v in region.split(","))
        if not image or y < 0 or x < 0 or not 8 <= size <= 4096:
            raise ValueError(region)
    except ValueError:
        raise InputError(
            f"--crop {text!r} is not IMAGE:Y,X,SIZE (the image's name as in per_image.csv, then the top row, "
            f"left column and size of the HR region, SIZE 8..4096)"
        ) from None
    return image, (y, x, size)


def _parse_window(text: str | None) -> tuple[float, float] | None:
    """``C,W`` -> ``(centre, width)`` in [0, 1] intensity units."""
    if text is None:
        return None
    try:
        centre, width = (float(v) for v in str(text).split(","))
        if not (math.isfinite(centre) and math.isfinite(width) and -1 <= centre <= 2 and 0 < width <= 4):
            raise ValueError(text)
    except ValueError:
        raise InputError(
            f"--window {text!r} is not C,W: a centre and a width in [0, 1] intensity units (e.g. 0.45,0.3)"
        ) from None
    return centre, width


def _eval_degradation(opts: dict[str, Any]) -> Degradation:
    from metasr.training.degradations import parse_degradation, parse_noise

    noise, sigma = parse_noise(opts["noise"])
    return parse_degradation(opts["degradation"]).with_noise(noise, sigma)


def _native_factors(reference: str, texts: Sequence[str]) -> dict[str, Fraction] | None:
    """``--reference``/``--native-factor``: None (as stored) or the given factors by file name."""
    from metasr.training.reference import parse_native_factors

    if reference != "native":
        if texts:
            raise InputError("--native-factor needs --reference native; add it or drop --native-factor")
        return None
    return parse_native_factors(texts)


def _eval_images(
    opts: dict[str, Any], axes: Sequence[Any], native: Any, skipped: dict[str, str], grids: dict[str, Any]
) -> list[tuple[str, Any]]:
    """The named HR images of ``--data`` (reduced with ``--reference native``); fills ``skipped`` and ``grids``."""
    from metasr.training.evaluate import load_named_images

    named = load_named_images(
        list(opts["data"]),
        [a.value for a in axes],
        opts["max_images"],
        intensity=opts["intensity"],
        skipped=skipped,
        native=native,
        grids=grids,
    )
    if not named:
        raise InputError("no images to evaluate; check --data and --max-images")
    return named


def _warn_interpolated(grids: dict[str, Any]) -> None:
    """Name each stored reference whose header states a coarser acquisition than its grid."""
    for name, grid in sorted(grids.items()):
        if grid.reduces:
            logging.getLogger("metasr").warning(
                "%s is stored at %.3g pixels per acquired sample (%s): its reference is interpolated; "
                "--reference native scores against the acquired resolution",
                name,
                float(grid.factor),
                grid.source,
            )


def _noise_level(text: str, degradation: Degradation) -> float | None:
    """``--noise-level``: None (estimate), the degradation's sigma (oracle) or a given sigma."""
    if text == "estimate":
        return None
    if text == "oracle":
        return float(degradation.sigma)
    try:
        value = float(text)
        if not (math.isfinite(value) and 0.0 <= value <= 0.5):
            raise ValueError(text)
    except ValueError:
        raise InputError(
            f"--noise-level {text!r} is not estimate, oracle or a sigma from 0 to 0.5 of the range (e.g. 0.02)"
        ) from None
    return value


def _scale_span(predictor: Any) -> tuple[float, float]:
    fixed = predictor.fixed_scale
    return tuple(predictor.scale_range) if fixed is None else (fixed, fixed)


def run_eval(
    opts: dict[str, Any],
    verbosity: Verbosity,
    load_models: Callable[[], list[Any]] | None = None,
    extra_files: Callable[[Any], dict[str, bytes]] | None = None,
) -> int:
    """The work of ``metasr-eval`` for the parsed options ``opts`` (the command's parameter names).

    Args:
        load_models: Returns the :class:`~metasr.training.evaluate.Predictor` list to evaluate
            (default: ``--ckpt`` loaded by :func:`~metasr.training.evaluate.load_predictor`); with it
            the scales span every model's range, without it the first model's.
        extra_files: More files for ``--out`` rendered from the report (written with the others,
            under the same lock, each atomically).
    """
    import torch
    from tqdm.auto import tqdm

    from metasr.training.evaluate import (
        bicubic_predictor,
        data_consistent,
        evaluate,
        load_predictor,
        zero_fill_predictor,
    )
    from metasr.training.figures import report_files
    from metasr.training.specs import parse_scales

    if opts["threads"]:
        torch.set_num_threads(_threads(opts["threads"]))
    axes = parse_axes(opts["axes"])
    parse_scales(opts["scales"])  # malformed text is found before any model loads
    shown_scales = parse_scales(opts["crop_scales"])
    degradation = _eval_degradation(opts)
    level = _noise_level(opts["noise_level"], degradation)
    crop = _parse_crop(opts["crop_spec"])
    window = _parse_window(opts["window_spec"])
    native = _native_factors(opts.get("reference", "stored"), opts.get("native_factors", ()))
    _check_eval_out(opts["out_dir"], opts["ckpts"], opts["data"], opts["overwrite"])
    if load_models is None:
        models = [load_predictor(c, opts["device"], level, opts["ensemble"]) for c in opts["ckpts"]]
        lo, hi = _scale_span(models[0])
    else:
        models = load_models()
        spans = [_scale_span(m) for m in models]
        lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
    if opts.get("data_consistency") and load_models is None:  # given models run it themselves (--compare)
        models = [data_consistent(m) for m in models]
    if opts.get("zero_fill"):
        models.append(zero_fill_predictor())
    scale_list = parse_scales(opts["scales"], lo, hi)
    shown = [s for s in shown_scales if s in scale_list]
    skipped: dict[str, str] = {}
    grids: dict[str, Any] = {}
    named = _eval_images(opts, axes, native, skipped, grids)
    names = [name for name, _ in named]
    sample_image = None
    if crop is not None:
        if crop[0] not in names:
            some = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            raise InputError(f"--crop image {crop[0]!r} is not among the evaluated images ({some})")
        sample_image = names.index(crop[0])
    bar = tqdm(
        total=len(named) * len(scale_list),
        desc="metasr-eval",
        unit="img",
        file=sys.stderr,
        disable=opts["no_progress"] or not progress_enabled(verbosity),
        dynamic_ncols=True,
    )
    try:
        report = evaluate(
            [bicubic_predictor(), *models],
            [image for _, image in named],
            scale_list,
            sample_scales=shown,
            sample_image=sample_image,
            progress=bar.update,
            names=names,
            degradation=degradation,
            seed=opts["seed"],
        )
    finally:
        bar.close()
    if native is not None:
        report.references = {name: g.description for name, g in grids.items()}
    report.crop = crop[1] if crop is not None else None
    report.window = window
    files = {**report_files(report), **(extra_files(report) if extra_files is not None else {})}
    written = _write_eval(files, opts["out_dir"], opts["overwrite"])
    log = logging.getLogger("metasr")
    if native is None:
        _warn_interpolated(grids)
    if skipped:  # reported once the work succeeded, so a failure stays one line
        log.warning("%d unreadable files skipped (-v lists them)", len(skipped))
        for path, reason in skipped.items():
            log.debug("skipped %s: %s", path, reason)
    log.info("%d images x %d scales: wrote %d files to %s", len(named), len(scale_list), len(written), opts["out_dir"])
    return 0


def _write_eval(files: dict[str, bytes], out: Path, overwrite: bool) -> dict[str, Path]:
    """Write the rendered report under an exclusive lock on --out, checking again that no evaluation appeared."""
    from metasr.core.locks import exclusive_lock
    from metasr.training.figures import write_files

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create output folder {out}: {e.strerror}; choose another --out") from None
    with exclusive_lock(out, "--out folder"):
        _check_no_evaluation(out, overwrite)  # another run may have finished meanwhile
        return write_files(files, out)


def eval_main(argv: Sequence[str] | None = None) -> int:
    """``metasr-eval``: returns the exit code."""
    return run_command(eval_command, argv, "metasr-eval")
