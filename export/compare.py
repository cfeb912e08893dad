"""``metasr-eval``, with ``--compare``: several networks scored and timed through the runtime.

``metasr-eval --compare A.pt B.pt DIR ...`` evaluates every model the way users run it: each
checkpoint is exported (unverified, to a temporary folder) and every model, export folders as
given, runs through :class:`metasr.runtime.Upscaler`. Besides the usual report it writes
``compare.md``/``compare.csv`` (PSNR/SSIM with file-grouped 95 % intervals, gain over bicubic,
parameters, milliseconds per 256x256 image) and ``compare.{png,pdf,svg}``.

The command is the training package's ``metasr-eval`` with two more parameters; it lives here
because exporting a checkpoint is this package's work (training never imports export).
"""

from __future__ import annotations

import copy
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import click
import numpy as np

from metasr.core.cli import Verbosity, run_command
from metasr.core.errors import InputError
from metasr.training.cli import eval_command as _plain_eval
from metasr.training.cli import run_eval

__all__ = ["eval_command", "eval_main", "split_label", "count_parameters", "time_model", "TIMING_SIZE"]

PROG = "metasr-eval"
#: Side of the square input every model is timed on.
TIMING_SIZE = 256
#: Timed runs per model and scale (after one warm-up run); the median is reported.
TIMING_RUNS = 5


def split_label(source: str) -> tuple[str | None, Path]:
    """``LABEL=PATH`` -> ``(LABEL, PATH)``; a path that exists as written is never split."""
    label, sep, rest = str(source).partition("=")
    if sep and label and "/" not in label and not Path(source).exists():
        return label, Path(rest)
    return None, Path(source)


def count_parameters(path: Path) -> int | None:
    """Trainable parameters of a checkpoint, or of the ``best.pt`` an export folder ships (None: none)."""
    from metasr.training.checkpoint import load_checkpoint

    ckpt = path / "best.pt" if path.is_dir() else path
    if not ckpt.is_file():
        return None
    model = load_checkpoint(ckpt, "cpu")
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def time_model(upscaler: Any, scale: Fraction, size: int = TIMING_SIZE, runs: int = TIMING_RUNS) -> float:
    """Median milliseconds of ``upscaler.upscale`` on one ``size`` x ``size`` image at ``scale``."""
    image = np.random.default_rng(0).random((size, size), dtype=np.float32)
    upscaler.upscale(image, scale)  # warm-up: sessions, plans and caches
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        upscaler.upscale(image, scale)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _export_dir(path: Path, work: Path, index: int) -> tuple[Path, str]:
    """The export folder a source runs from, and a note of where it came from."""
    from metasr.export import export_model

    if path.is_dir():
        if not (path / "manifest.json").is_file():
            raise InputError(f"--compare {path} is a folder without manifest.json; pass a checkpoint or an export")
        return path, f"export {path}"
    if not path.is_file():
        raise InputError(f"--compare {path} does not exist; pass checkpoints (.pt) or exported model folders")
    result = export_model(path, work / f"m{index}", verify=False)
    return result.out_dir, f"checkpoint {path} (exported for this run)"


def _budget(path: Path) -> str:
    """The training budget a run folder records beside its checkpoint (config.json, log.csv)."""
    run = path.parent if path.is_file() else path
    try:
        config = json.loads((run / "config.json").read_text())
    except (OSError, ValueError):
        return ""
    if not isinstance(config, dict):
        return ""
    keys = ("arch", "stage", "steps", "batch_size", "patch_size", "degradations")
    return ", ".join(f"{k} {config[k]}" for k in keys if k in config)


class _Models:
    """Exports, loads and times the compared models; the callbacks :func:`run_eval` takes."""

    def __init__(self, sources: Sequence[str], opts: dict[str, Any], work: Path) -> None:
        self.sources, self.opts, self.work = list(sources), opts, work
        self.facts: dict[str, Any] = {}
        self.upscalers: dict[str, Any] = {}

    def load(self) -> list[Any]:
        from metasr.runtime import Upscaler
        from metasr.runtime.ensemble import ENSEMBLE_SIZE
        from metasr.training.compare import ModelFacts
        from metasr.training.evaluate import Predictor

        device = "cpu" if self.opts["device"] == "cpu" else "auto"
        predictors = []
        for index, source in enumerate(self.sources):
            label, path = split_label(source)
            folder, note = _export_dir(path, self.work, index)
            consistent = bool(self.opts.get("data_consistency"))
            up = Upscaler(
                folder,
                device=device,
                threads=self.opts["threads"],
                ensemble=self.opts["ensemble"],
                data_consistency=consistent,
            )
            name = label or (path.parent.name if path.is_file() else path.name)
            if self.opts["ensemble"] and not label:  # as metasr-eval names an unlabelled model's ensemble
                name += f" x{ENSEMBLE_SIZE}"
            if consistent:  # as metasr-eval --data-consistency names every model; timed with it
                name += " +dc"
            budget = _budget(path)
            self.facts[name] = ModelFacts(name, count_parameters(path), note=note + (f"; {budget}" if budget else ""))
            self.upscalers[name] = up
            fixed = getattr(up, "fixed_scale", None)
            predictors.append(Predictor(name, up.upscale, tuple(up.scale_range), fixed))
        return predictors

    def files(self, report: Any) -> dict[str, bytes]:
        from metasr.training.compare import INTERPOLATORS, ModelFacts, compare_files

        facts = {name: ModelFacts(name) for name in INTERPOLATORS} | self.facts
        for name, up in self.upscalers.items():
            for scale in report.scales:
                if report.get(name, scale) is not None:  # the scales it was scored at
                    facts[name].ms[scale] = time_model(up, scale)
        return compare_files(report, facts)


def _compare(ctx: click.Context, verbosity: Verbosity, opts: dict[str, Any]) -> int:
    sources = [*opts["ckpts"], *opts.pop("sources")]
    if not sources:
        raise InputError("--compare needs the models: give checkpoints (.pt) or export folders as arguments")
    if ctx.get_parameter_source("scales") is click.core.ParameterSource.DEFAULT:
        opts["scales"] = "2"  # the paper's table; fixed-scale baselines are x2
    opts["ckpts"] = tuple(sources)
    with tempfile.TemporaryDirectory(prefix="metasr-compare-") as tmp:
        models = _Models(sources, opts, Path(tmp))
        return run_eval(opts, verbosity, load_models=models.load, extra_files=models.files)


def _callback(**opts: Any) -> int:
    ctx = click.get_current_context()
    verbosity = opts.pop("verbosity")
    if opts.pop("compare"):
        from metasr.training.cli import library_warnings, setup_logging

        setup_logging(PROG, verbosity)
        with library_warnings():
            return _compare(ctx, verbosity, opts)
    extra = opts.pop("sources")
    if extra:
        raise InputError(f"unexpected arguments {' '.join(extra)}; models go after --ckpt, or use --compare")
    if not opts["ckpts"]:
        raise InputError("--ckpt is required: pass a checkpoint (.pt) or an exported model folder")
    return _plain_eval.callback(verbosity=verbosity, **opts)


def _params() -> list[click.Parameter]:
    params = []
    for param in _plain_eval.params:
        if param.name == "ckpts":  # with --compare the models may come as arguments
            param = copy.copy(param)
            param.required = False
        params.append(param)
    compare = click.Option(
        ["--compare"],
        is_flag=True,
        help="Compare networks as in the paper's table: every model (checkpoints are exported) runs through the "
        "runtime; writes compare.md/.csv (PSNR/SSIM with 95% intervals, parameters, ms per 256x256 image) and "
        "compare.{png,pdf,svg}. Default --scales 2.",
    )
    return [compare, *params, click.Argument(["sources"], nargs=-1, metavar="[MODEL]...")]


eval_command = click.Command(
    PROG,
    params=_params(),
    callback=_callback,
    help=(_plain_eval.help or "") + "\n\nWith --compare: several networks against each other (the paper's table).",
    context_settings=dict(_plain_eval.context_settings),
)


def eval_main(argv: Sequence[str] | None = None) -> int:
    """``metasr-eval`` (with ``--compare``): returns the exit code."""
    return run_command(eval_command, argv, PROG)
