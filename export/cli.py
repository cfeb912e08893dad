"""``metasr-export``: a checkpoint -> verified ONNX graphs (+ TensorRT engines) and manifest.json.

Thin wrapper of :func:`metasr.export.export_model`. Progress goes to stderr, the one-line summary
to stdout (``-q``: errors only). With ``--trt`` where TensorRT or a GPU is missing, the availability check runs first;
the ONNX export is then still written and verified, and the command exits 2 with one line saying
why no engines were built.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click

from metasr.core.cli import (
    EXIT_TERMINATED,
    EXIT_USAGE,
    Terminated,
    Verbosity,
    common_options,
    one_line,
    run_command,
    sigterm_as_interrupt,
)
from metasr.core.errors import DependencyError

__all__ = ["main", "export_command"]

PROG = "metasr-export"


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.2f} MB"


@click.command(name=PROG, context_settings={"help_option_names": ["-h", "--help"]})
@common_options(PROG)
@click.option(
    "--ckpt",
    "checkpoint",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Checkpoint written by metasr-train (metasrgan, srgan or edsr).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Export folder (default: the checkpoint's folder).",
)
@click.option("--trt", is_flag=True, help="Also build TensorRT engines (needs TensorRT and a CUDA GPU).")
@click.option("--fp16", is_flag=True, help="fp16 TensorRT engines (with --trt).")
@click.option("--opset", type=click.IntRange(13, 18), default=17, show_default=True, help="ONNX opset.")
@click.option("--force", is_flag=True, help="Replace an export of a different checkpoint in --out.")
@click.option(
    "--min-size",
    type=click.IntRange(1),
    default=16,
    show_default=True,
    help="TensorRT profile: smallest LR height/width.",
)
@click.option(
    "--opt-size",
    type=click.IntRange(1),
    default=256,
    show_default=True,
    help="TensorRT profile: LR height/width to optimise for.",
)
@click.option(
    "--max-size",
    type=click.IntRange(1),
    default=1024,
    show_default=True,
    help="TensorRT profile: largest LR height/width.",
)
@click.option(
    "--max-batch", type=click.IntRange(1), default=4, show_default=True, help="TensorRT profile: largest batch."
)
@click.option(
    "--max-hr-size",
    type=click.IntRange(1),
    default=None,
    help="TensorRT profile: largest HR height/width per upscale call (default: --max-size); "
    "bounds the upscale engine's memory (256 floats per HR pixel).",
)
@click.option(
    "--no-verify", is_flag=True, help="Skip the ONNX Runtime vs PyTorch parity check (the ONNX checker still runs)."
)
def export_command(
    checkpoint: Path,
    out_dir: Path | None,
    trt: bool,
    fp16: bool,
    opset: int,
    force: bool,
    min_size: int,
    opt_size: int,
    max_size: int,
    max_batch: int,
    max_hr_size: int | None,
    no_verify: bool,
    verbosity: Verbosity,
) -> int:
    """Export a metasr checkpoint to ONNX (and TensorRT), verified against PyTorch."""
    from metasr.export import Profiles, export_model
    from metasr.export.tensorrt import check_available

    if fp16 and not trt:
        raise click.UsageError("--fp16 applies to TensorRT engines; add --trt")
    try:
        profiles = Profiles(
            min_size=min_size,
            opt_size=opt_size,
            max_size=max_size,
            opt_batch=1,
            max_batch=max_batch,
            max_hr_size=max_hr_size or max_size,
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    trt_problem = None
    if trt:
        try:
            check_available()
        except DependencyError as e:
            trt_problem = str(e)

    def log(message: str) -> None:
        if verbosity is not Verbosity.QUIET:
            click.echo(f"{PROG}: {message}", err=True)

    if trt_problem:
        log(f"TensorRT unavailable, exporting ONNX only: {one_line(trt_problem)}")
    try:
        with sigterm_as_interrupt():  # SIGTERM unwinds like Ctrl-C: the temporary folder is removed
            result = export_model(
                checkpoint,
                out_dir,
                opset=opset,
                force=force,
                verify=not no_verify,
                trt=trt and trt_problem is None,
                fp16=fp16 and trt_problem is None,
                profiles=profiles,
                log=log,
            )
    except Terminated:
        print(f"{PROG}: terminated; nothing was written", file=sys.stderr)
        return EXIT_TERMINATED
    sizes = ", ".join(f"{p.name} ({_size(p)})" for p in result.files[:-1])
    parity = (
        f"parity max abs error {result.parity.max_abs_error:.2g} over {result.parity.cases} cases"
        if result.parity is not None
        else "parity not checked (--no-verify)"
    )
    if verbosity is not Verbosity.QUIET:
        click.echo(f"exported {result.manifest['arch']} to {result.out_dir}: {sizes}; {parity}; {result.seconds:.1f} s")
    if trt_problem:
        print(
            f"{PROG}: error: TensorRT engines were not built ({one_line(trt_problem)}); the ONNX export in "
            f"{result.out_dir} is complete and verified",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``metasr-export``; returns the exit code."""
    return run_command(export_command, argv, PROG)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
