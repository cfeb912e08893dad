"""``metasr-stream``: super-resolve a video file, an RTSP/HTTP stream or a camera, live.

Exit codes: 0 when a file was read to its end (or the display was closed), 2 for bad arguments,
an unopenable source or an unwritable output (nothing is read then), 3 when a live source was
lost mid-way (output finalised, summary printed), 130 after Ctrl-C (output finalised).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from metasr.core.atomic import atomic_write_text
from metasr.core.cli import run_command
from metasr.core.errors import OutputError
from metasr.core.scale import Scale

__all__ = ["main", "EXIT_SOURCE_LOST"]

EXIT_SOURCE_LOST = 3
PROG = "metasr-stream"


def _status_line(s: dict[str, Any]) -> str:
    lat = s["latency_ms"]
    latency = f"latency p50 {lat['p50']:.0f} ms p95 {lat['p95']:.0f} ms" if lat["p50"] is not None else "latency -"
    return (
        f"frames in {s['frames_in']} out {s['frames_out']} dropped {s['dropped']} corrupt {s['corrupt']} | "
        f"{s['fps']:.1f} fps | {latency}"
    )


class _StatusPrinter:
    """One status line on stderr: rewritten in place on a terminal, every few seconds otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self._last_plain = 0.0
        self._shown = False

    def __call__(self, snapshot: dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = _status_line(snapshot)
        if self.tty:
            sys.stderr.write("\r\033[K" + line)
            sys.stderr.flush()
            self._shown = True
        elif time.monotonic() - self._last_plain >= 5.0:
            self._last_plain = time.monotonic()
            print(f"{PROG}: {line}", file=sys.stderr)

    def finish(self) -> None:
        if self._shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _check_stats_path(stats: str | None) -> Path | None:
    if stats is None or stats == "-":
        return None
    path = Path(stats)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"--stats {path} is a directory; give a file name such as stats.json")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write --stats {path}: directory {parent} does not exist or is not writable")
    return path


@click.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Super-resolve a video file, an RTSP/HTTP stream or a camera (by index) in real time. "
    "The luminance goes through the model; chroma is resized bicubically; grayscale stays grayscale.",
)
@click.option(
    "--input",
    "input_",
    required=True,
    metavar="FILE|URL|INDEX",
    help="Video file, rtsp:// or http:// URL, or camera index (0).",
)
@click.option(
    "--scale",
    required=True,
    help="Scale factor, e.g. 1.5 or 2 (the model's trained range unless --allow-extrapolation).",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    help="Video file to write (.mp4, .avi, .mkv, .mov); codec chosen from what OpenCV can write.",
)
@click.option(
    "--display", is_flag=True, help="Show the frames in a window ('q' or Esc stops); needs a GUI build of OpenCV."
)
@click.option(
    "--model",
    "model_dir",
    type=click.Path(file_okay=False),
    help="Exported model directory (default: the shipped model).",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda", "tensorrt"], case_sensitive=False),
    default="auto",
    show_default=True,
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16"], case_sensitive=False),
    default="fp32",
    show_default=True,
    help="TensorRT engine precision (other devices run fp32).",
)
@click.option(
    "--max-fps",
    type=click.FloatRange(min=0, min_open=True),
    help="Cap the rate: files are read no faster; live sources skip frames.",
)
@click.option(
    "--batch", type=click.IntRange(1, 64), default=1, show_default=True, help="Frames per inference call (of one size)."
)
@click.option("--stats", "stats_path", help="Write the JSON summary here ('-' for stdout).")
@click.option("--codec", help="FOURCC to use instead of the container's fallback chain (e.g. MJPG).")
@click.option("--allow-extrapolation", is_flag=True, help="Accept a scale outside the model's trained range.")
@click.option(
    "--lost-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds without a frame after which a live source counts as lost (exit 3).",
)
@click.option("--quiet", "-q", is_flag=True, help="No status line.")
def _stream(
    input_: str,
    scale: str,
    output: str | None,
    display: bool,
    model_dir: str | None,
    device: str,
    precision: str,
    max_fps: float | None,
    batch: int,
    stats_path: str | None,
    codec: str | None,
    allow_extrapolation: bool,
    lost_timeout: float,
    quiet: bool,
) -> int:
    from metasr.runtime import stream as streaming
    from metasr.runtime.upscaler import Upscaler

    # Cheap checks first, then the source, then the model (which may build TensorRT engines):
    # a typo in any argument fails in a moment, and nothing is read before everything is checked.
    Scale.parse(scale)
    stats_file = _check_stats_path(stats_path)
    if output is not None:
        streaming.VideoFileWriter.check_path(output, codec)
    source = streaming.open_source(input_)
    try:
        up = Upscaler(model_dir, device=device, precision=precision)
    except BaseException:
        source.release()
        raise
    describe = getattr(up, "describe", None)
    print(f"{PROG}: {describe() if describe else 'model on ' + device}", file=sys.stderr)
    if output is None and not display:
        print(f"{PROG}: note: no --output or --display; frames are super-resolved and counted only", file=sys.stderr)
    printer = _StatusPrinter(enabled=not quiet)
    try:
        summary = streaming.run_stream(
            source,
            up,
            scale,
            output=output,
            codec=codec,
            display=display,
            batch=batch,
            max_fps=max_fps,
            allow_extrapolation=allow_extrapolation,
            on_status=printer,
            lost_timeout_s=lost_timeout,
        )
    finally:
        printer.finish()
    data = summary.to_dict()
    lat = data["latency_ms"]
    latency = f"latency p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms" if lat["p50"] is not None else "no latency"
    if summary.output:
        print(f"{PROG}: wrote {summary.output} ({summary.codec}, {summary.output_fps:g} fps, "
              f"{summary.output_size[1]}x{summary.output_size[0]})", file=sys.stderr)  # fmt: skip
    for warning in summary.warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    print(
        f"{PROG}: {data['frames_in']} frames in, {data['frames_out']} out, {data['dropped']} dropped, "
        f"{data['corrupt']} corrupt; {data['fps']:.2f} fps; {latency}; {summary.end_detail}",
        file=sys.stderr,
    )
    if stats_path == "-":
        click.echo(json.dumps(data, indent=2))
    elif stats_file is not None:
        atomic_write_text(stats_file, json.dumps(data, indent=2) + "\n")
    if summary.end_reason is streaming.EndReason.SOURCE_LOST:
        print(f"{PROG}: error: source lost: {summary.end_detail}", file=sys.stderr)
        return EXIT_SOURCE_LOST
    if summary.end_reason is streaming.EndReason.INTERRUPTED:
        return 130
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``metasr-stream``; returns the exit code."""
    return run_command(_stream, argv, PROG)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
