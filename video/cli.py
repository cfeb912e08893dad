"""``metasr-stream``: super-resolve a video file, an RTSP/HTTP stream or a camera, live.

Exit codes: 0 when a file was read to its end (or the display was closed); 2 for bad
arguments, an unopenable source, an unwritable output or a failed write (nothing is kept then);
3 when a live source was lost mid-way (output finalised, summary printed); 130 after Ctrl-C and
143 after SIGTERM (output finalised, summary printed).

Everything that can be checked is checked before the model loads: numbers, the device, the
display, the input (a regular file, a URL or a camera), every path written (output, its
temporary file, ``--stats``) against the input, the model and each other, through symlinks
and hard links, and every output folder by creating a probe file in it.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click

from metasr.core.atomic import NAME_MAX, atomic_write_text, check_writable_folder
from metasr.core.choices import Device, Precision
from metasr.core.cli import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    Verbosity,
    common_options,
    one_line,
    progress_enabled,
    run_command,
    sigterm_as_interrupt,
)
from metasr.core.devicespec import DeviceSpec, parse_device_spec
from metasr.core.errors import OutputError
from metasr.core.locks import output_lock
from metasr.core.paths import shown
from metasr.core.scale import parse_scale_option
from metasr.video.noise import NativeMessages, native_stderr_captured
from metasr.video.paths import check_write_plan
from metasr.video.pipeline import MAX_FPS_RANGE, EndReason, StreamTerminated, check_rate, check_scale_text
from metasr.video.sources import SourceKind, check_input_file, classify_spec, local_spec
from metasr.video.writer import VideoFileWriter, partial_path

__all__ = ["EXIT_SOURCE_LOST", "main"]

EXIT_SOURCE_LOST = 3
PROG = "metasr-stream"
#: Longest --lost-timeout accepted (a day).
MAX_LOST_TIMEOUT_S = 86_400.0
#: Largest --gpu-memory accepted (1 TiB): larger values are typing errors.
MAX_GPU_MEMORY_MB = 1024 * 1024


def _say(text: str) -> None:
    print(f"{PROG}: {one_line(text)}", file=sys.stderr)  # a newline or escape in a name stays on one line


def _status_line(s: dict[str, Any]) -> str:
    lat = s["latency_ms"]
    latency = f"latency p50 {lat['p50']:.0f} ms p95 {lat['p95']:.0f} ms" if lat["p50"] is not None else "latency -"
    return (
        f"frames in {s['frames_in']} out {s['frames_out']} dropped {s['dropped']} corrupt {s['corrupt']} | "
        f"{s['fps']:.1f} fps | {latency}"
    )


class _StatusPrinter:
    """The live status line: rewritten in place on a terminal; with -v, a line every few seconds elsewhere."""

    def __init__(self, verbosity: Verbosity) -> None:
        self.tty = progress_enabled(verbosity)
        self.plain = verbosity is Verbosity.VERBOSE and not self.tty
        self._last_plain = 0.0
        self._shown = False

    def __call__(self, snapshot: dict[str, Any]) -> None:
        if self.tty:
            sys.stderr.write("\r\033[K" + _status_line(snapshot))
            sys.stderr.flush()
            self._shown = True
        elif self.plain and time.monotonic() - self._last_plain >= 5.0:
            self._last_plain = time.monotonic()
            _say(_status_line(snapshot))

    def finish(self) -> None:
        if self._shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


# -- checks before any work -----------------------------------------------------------------


def _parse_device(device: str, precision: str) -> tuple[DeviceSpec, Precision]:
    spec = parse_device_spec(device)
    return spec, Precision.parse(precision)


def _check_output(output: str, codec: str | None, overwrite: bool) -> Path:
    path = Path(output)
    VideoFileWriter.check_path(path, codec)
    if len(os.fsencode(partial_path(path).name)) > NAME_MAX:
        raise OutputError(
            f"output name {shown(path.name, 48)} is too long: its temporary file's name would be over {NAME_MAX} "
            "bytes; choose a shorter output name"
        )
    _check_not_there(path, overwrite)
    return path


def _check_not_there(path: Path, overwrite: bool) -> None:
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputError(f"output {shown(path)} already exists; pass --overwrite to replace it or choose another name")


def _remove_stale_partials(output: Path) -> None:
    """Remove the partial files of this output that killed runs left (their process is gone)."""
    pattern = re.compile(re.escape(f".{output.stem}.partial-") + r"([0-9]+)" + re.escape(output.suffix))
    try:
        names = os.listdir(output.parent if str(output.parent) else ".")
    except OSError:
        return
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
            continue
        try:
            (output.parent / name).unlink()
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process, or a number no process has: leave its file alone
    return True


def _check_stats(stats: str, overwrite: bool) -> Path:
    path = Path(stats)
    if not stats.strip():
        raise OutputError("--stats needs a file name (or '-' for stdout)")
    if len(os.fsencode(path.name)) > 255:
        raise OutputError(f"--stats name {path.name[:40]}... is longer than 255 bytes; choose a shorter name")
    try:
        is_dir, exists, is_file, is_link = path.is_dir(), path.exists(), path.is_file(), path.is_symlink()
    except OSError as e:
        raise OutputError(f"cannot write --stats {path}: {e.strerror or e}; choose another path") from None
    if is_dir:
        raise OutputError(f"--stats {path} is a folder; give a file name such as stats.json")
    if exists and not is_file:
        raise OutputError(f"--stats {path} is not a regular file (a device, pipe or socket); give a file name")
    if (exists or is_link) and not overwrite:
        raise OutputError(f"--stats {path} already exists; pass --overwrite to replace it or choose another name")
    try:
        check_writable_folder(path.parent if str(path.parent) else Path("."))
    except OutputError as e:
        raise OutputError(f"cannot write --stats {path}: {e}") from None
    return path


def _model_folder(model_dir: str | None) -> Path | None:
    if model_dir is not None:
        return Path(model_dir)
    try:
        from metasr.models import default_model_dir

        return default_model_dir()
    except Exception:  # noqa: BLE001 - no shipped model: nothing to protect
        return None


def _check_plan(input_: str, kind: SourceKind, output: Path | None, stats: Path | None, model: Path | None) -> None:
    inputs = [("input", Path(input_))] if kind is SourceKind.FILE else []
    outputs = []
    if output is not None:
        outputs += [("--output", output), ("the output's temporary file", partial_path(output))]
    if stats is not None:
        outputs.append(("--stats", stats))
    protected = [("model folder", model)] if model is not None and model.exists() else []
    check_write_plan(outputs, inputs, protected)


def _single_values(args: dict[str, Any]) -> dict[str, Any]:
    """One value per option: a repeated --input/--scale/--output/--stats is refused, never silently dropped."""
    names = {"input_": "--input", "scale": "--scale", "output": "--output", "stats_path": "--stats"}
    for key, flag in names.items():
        values = args[key]
        if len(values) > 1:
            raise click.UsageError(f"{flag} was given {len(values)} times; metasr-stream takes one {flag}")
        args[key] = values[0] if values else None
    return args


# -- the run ---------------------------------------------------------------------------------


def _load_upscaler(model_dir: str | None, spec: DeviceSpec, precision: Precision, gpu_memory: float | None) -> Any:
    from metasr.runtime.upscaler import Upscaler

    return Upscaler(model_dir, device=spec, precision=precision, gpu_memory_mb=gpu_memory)


def _check_server(text: str | None) -> str | None:
    from metasr.runtime.remote import parse_server_address

    return None if text is None else parse_server_address(text)


def _load_remote(server: str) -> Any:
    from metasr.runtime.remote import RemoteUpscaler

    return RemoteUpscaler(server)


def _report(summary: Any, data: dict[str, Any], verbosity: Verbosity) -> None:
    if verbosity is Verbosity.QUIET:
        return
    lat = data["latency_ms"]
    latency = f"latency p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms" if lat["p50"] is not None else "no latency"
    if summary.output:
        w, h = summary.output_size
        _say(f"wrote {summary.output} ({summary.codec}, {summary.output_fps:g} fps, {w}x{h})")
    for warning in summary.warnings:
        _say(f"warning: {warning}")
    _say(
        f"{data['frames_in']} frames in, {data['frames_out']} out, {data['dropped']} dropped, "
        f"{data['corrupt']} corrupt; {data['fps']:.2f} fps; {latency}; {summary.end_detail}"
    )


def _exit_code(summary: Any) -> int:
    if summary.end_reason is EndReason.SOURCE_LOST:
        _say(f"error: source lost: {summary.end_detail}")
        return EXIT_SOURCE_LOST
    if summary.end_reason is EndReason.INTERRUPTED:
        return EXIT_INTERRUPTED
    if summary.end_reason is EndReason.TERMINATED:
        return EXIT_TERMINATED
    return 0


def _describe(up: Any, spec: DeviceSpec) -> str:
    describe = getattr(up, "describe", None)
    text = describe() if describe else f"model on {spec}"
    # One program name per line: the runtime's own description may carry its library prefix.
    return text.removeprefix("metasr: ")


class _Greeting:
    """The model line (and a note): on a terminal (or with -v) once the first frame is out, else with the summary.

    So a run that fails prints its one error line and nothing else when stderr is a log or a
    pipe, and on a terminal only a run that is really under way announces itself.
    """

    def __init__(self, up: Any, spec: DeviceSpec, verbosity: Verbosity, *, counted_only: bool) -> None:
        self.lines = [] if verbosity is Verbosity.QUIET else [_describe(up, spec)]
        if counted_only and self.lines:
            self.lines.append("note: no --output or --display; frames are super-resolved and counted only")
        self.early = progress_enabled(verbosity) or verbosity is Verbosity.VERBOSE

    def __call__(self, _frame: Any) -> None:
        if self.early:
            self.flush()

    def flush(self) -> None:
        for line in self.lines:
            _say(line)
        self.lines = []


def _stream(args: dict[str, Any], verbosity: Verbosity, native: NativeMessages) -> int:
    from metasr.video.run import check_display

    # Cheap checks first, then the source, then the model (which may build TensorRT engines):
    # a typo in any argument fails in a moment, and nothing is read or written before.
    spec, precision = _parse_device(args["device"], args["precision"])
    max_fps = check_rate("--max-fps", args["max_fps"], *MAX_FPS_RANGE, "frames per second")
    lost = check_rate("--lost-timeout", args["lost_timeout"], 0.01, MAX_LOST_TIMEOUT_S, "seconds")
    gpu_memory = check_rate("--gpu-memory", args["gpu_memory"], 1, MAX_GPU_MEMORY_MB, "MiB")
    parse_scale_option(check_scale_text(args["scale"]))  # the one scale parser: 2.3333 is refused, as by metasr-run
    input_ = local_spec(args["input_"])  # a file:// URL is a file: the same checks, read as a file
    kind = classify_spec(input_)
    if kind is SourceKind.FILE:
        check_input_file(input_)
    output = _check_output(args["output"], args["codec"], args["overwrite"]) if args["output"] else None
    stats_path = args["stats_path"]
    stats_file = _check_stats(stats_path, args["overwrite"]) if stats_path not in (None, "-") else None
    _check_plan(input_, kind, output, stats_file, _model_folder(args["model_dir"]))
    if args["display"]:
        check_display()
    if args["server"] is not None and args["model_dir"] is not None:
        raise click.UsageError("--model and --server exclude each other (the server runs its own model)")
    _check_server(args["server"])
    with output_lock(output, "output") if output is not None else nullcontext():
        if output is not None:
            _check_not_there(output, args["overwrite"])  # written by a run that held the lock before
        rates = (max_fps, lost, gpu_memory)
        code = _stream_locked(args, input_, output, stats_file, spec, precision, rates, verbosity, native)
        if output is not None and output.exists():  # finalised: what killed runs left of it can go
            _remove_stale_partials(output)
    return code


def _stream_locked(
    args: dict[str, Any],
    input_: Any,
    output: Path | None,
    stats_file: Path | None,
    spec: DeviceSpec,
    precision: Precision,
    rates: tuple[Any, Any, Any],
    verbosity: Verbosity,
    native: NativeMessages,
) -> int:
    from metasr.video.run import run_stream
    from metasr.video.sources import open_source

    max_fps, lost, gpu_memory = rates
    stats_path = args["stats_path"]
    server = _check_server(args["server"])
    source = open_source(input_)
    try:
        up = _load_remote(server) if server else _load_upscaler(args["model_dir"], spec, precision, gpu_memory)
    except BaseException:
        source.release()
        raise
    printer = _StatusPrinter(verbosity)
    greeting = _Greeting(up, spec, verbosity, counted_only=output is None and not args["display"])
    try:
        summary = run_stream(
            source, up, args["scale"], output=output, codec=args["codec"], display=args["display"],
            batch=args["batch"], max_fps=max_fps, allow_extrapolation=args["allow_extrapolation"],
            on_status=printer, lost_timeout_s=lost, on_frame=greeting,
        )  # fmt: skip
    finally:
        printer.finish()
    greeting.flush()
    data = summary.to_dict()
    _report(summary, data, verbosity)
    if verbosity is Verbosity.VERBOSE and native.count:
        _say(f"note: {native.count} message(s) from FFmpeg/OpenCV, the last: {native.last[-1]}")
    if stats_path == "-":
        click.echo(json.dumps(data, indent=2))
    elif stats_file is not None:
        atomic_write_text(stats_file, json.dumps(data, indent=2) + "\n")
    return _exit_code(summary)


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    help="Super-resolve a video file, an RTSP/HTTP stream or a camera (by index) in real time. "
    "The luminance goes through the model; chroma is resized bicubically; grayscale stays grayscale.",
)
@click.option("--input", "-i", "input_", required=True, multiple=True, metavar="FILE|URL|INDEX",
              help="Video file, rtsp:// or http:// URL, or camera index (0).")  # fmt: skip
@click.option("--scale", "-s", required=True, multiple=True, metavar="SCALE",
              help="Scale factor, e.g. 1.5, 2 or 7/3 (within the model's trained range).")  # fmt: skip
@click.option(
    "--output", "-o", multiple=True, metavar="FILE", help="Video file to write (.mp4, .avi, .mkv, .mov, .m4v)."
)
@click.option("--overwrite", is_flag=True, help="Replace an existing --output or --stats file.")
@click.option("--display", is_flag=True, help="Show the frames in a window ('q' or Esc stops); needs a GUI OpenCV.")
@click.option("--model", "model_dir", metavar="DIR", help="Exported model folder (default: the shipped model).")
@click.option("--device", default="auto", show_default=True, metavar="DEVICE",
              help=f"{', '.join(d.value for d in Device)} (also gpu, trt); a GPU index as in cuda:1.")  # fmt: skip
@click.option("--precision", default="fp32", show_default=True, metavar="NAME",
              help=f"{', '.join(p.value for p in Precision)}: arithmetic on the GPU (fp32 is true fp32, TF32 off; "
                   "the CPU always runs fp32).")  # fmt: skip
@click.option("--server", metavar="HOST:PORT", help="A metasr-serve gRPC endpoint: upscale there instead of here.")
@click.option("--gpu-memory", metavar="MiB",
              help="Cap the GPU memory one inference run may use (default: half the GPU's free memory).")  # fmt: skip
@click.option(
    "--max-fps", type=float, metavar="FPS", help="Cap the rate: files are read no faster; live sources skip frames."
)
@click.option("--batch", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Frames per inference call (of one size).")  # fmt: skip
@click.option(
    "--stats", "stats_path", multiple=True, metavar="FILE|-", help="Write the JSON summary here ('-' for stdout)."
)
@click.option("--codec", metavar="FOURCC", help="FOURCC to use instead of the container's fallback chain (e.g. MJPG).")
@click.option("--allow-extrapolation", is_flag=True, help="Accept a scale outside the model's trained range.")
@click.option("--lost-timeout", type=float, default=5.0, show_default=True, metavar="SECONDS",
              help="Seconds without a frame after which a live source counts as lost (exit 3).")  # fmt: skip
@common_options(PROG)
def _command(verbosity: Verbosity, **args: Any) -> int:
    args = _single_values(args)
    with native_stderr_captured() as native, warnings.catch_warnings(), sigterm_as_interrupt(StreamTerminated):
        warnings.simplefilter("ignore")
        try:
            return _stream(args, verbosity, native)
        except StreamTerminated:
            _say("terminated")
            return EXIT_TERMINATED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``metasr-stream``; returns the exit code."""
    return run_command(_command, argv, PROG)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
