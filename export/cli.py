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
from typing import TYPE_CHECKING

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
from metasr.core.errors import DependencyError, MetaSRError, OutputError

if TYPE_CHECKING:
    from metasr.serve.repository import RepositoryOptions

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
@click.option(
    "--triton",
    "triton_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write a Triton model repository serving the export to this new (or empty) folder: "
    "tritonserver --model-repository DIR, with metasr installed in Triton's Python (as metasr-serve "
    "--write-repository).",
)
@click.option(
    "--triton-device",
    default="auto",
    show_default=True,
    help="Device of the Triton model: auto, cpu, cuda[:N] or tensorrt[:N] (with --triton).",
)
@click.option(
    "--triton-instances",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Model instances in the Triton repository (with --triton).",
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
    triton_dir: Path | None,
    triton_device: str,
    triton_instances: int,
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
    triton = _triton_options(triton_dir, triton_device, triton_instances, checkpoint, out_dir)
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
    if triton is not None:
        from metasr.serve.repository import write_repository

        try:
            config = write_repository(triton_dir, result.out_dir, triton)
        except MetaSRError as e:
            raise OutputError(f"{one_line(str(e))}; the export in {result.out_dir} is complete") from None
        log(f"Triton model repository: {config.parent.parent} (tritonserver --model-repository {config.parent.parent})")
    if trt_problem:
        print(
            f"{PROG}: error: TensorRT engines were not built ({one_line(trt_problem)}); the ONNX export in "
            f"{result.out_dir} is complete and verified",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return 0


def _triton_options(
    triton_dir: Path | None, device: str, instances: int, checkpoint: Path, out_dir: Path | None
) -> RepositoryOptions | None:
    """The checked repository options of ``--triton``, before any work (None without ``--triton``).

    The repository folder must be new or empty and apart from the checkpoint and the export folder.
    """
    if triton_dir is None:
        if device != "auto" or instances != 1:
            raise click.UsageError("--triton-device and --triton-instances apply to --triton DIR; add it")
        return None
    from metasr.serve.repository import RepositoryOptions

    options = RepositoryOptions(device=device, instances=instances).checked()
    repo = triton_dir.expanduser().resolve()
    export = (out_dir or checkpoint.parent).expanduser().resolve()
    ckpt = checkpoint.expanduser().resolve()
    if repo.exists() and (not repo.is_dir() or any(repo.iterdir())):
        raise OutputError(f"--triton {triton_dir} exists and is not an empty folder; choose a new folder")
    if repo == export or export in repo.parents or repo in export.parents or repo in ckpt.parents:
        raise OutputError(
            f"--triton {triton_dir} overlaps the export folder or the checkpoint; give the repository its own folder"
        )
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``metasr-export``; returns the exit code."""
    return run_command(export_command, argv, PROG)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
