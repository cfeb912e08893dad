"""Whole runs: a stream into a video file and/or a window, with a summary (what ``metasr-stream`` does)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from numbers import Real
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from metasr.core.cli import one_line
from metasr.core.errors import InputError, OutputError
from metasr.core.jsonio import jsonable
from metasr.core.scale import Scale
from metasr.video.channel import Channel, ChannelClosed
from metasr.video.clip import clip_frames, seek
from metasr.video.display import check_display_reachable
from metasr.video.media import probe_media
from metasr.video.paths import check_write_plan
from metasr.video.pipeline import (
    EndReason,
    StreamFrame,
    SupportsUpscale,
    VideoStream,
    interrupt_reason,
    validate_scale,
)
from metasr.video.sources import DEFAULT_FPS, SourceKind, VideoSource, open_source
from metasr.video.writer import VideoFileWriter

__all__ = ["StreamSummary", "check_display", "run_stream"]

WINDOW = "metasr-stream"


@dataclass
class StreamSummary:
    """What a :func:`run_stream` run did; :meth:`to_dict` is the ``--stats`` JSON.

    ``output_size`` is ``(width, height)`` of the frames stored in the file, the order video
    tools print (``1920x1080``).
    """

    source: str
    source_kind: SourceKind
    scale: str
    batch: int
    source_fps: float | None
    output: str | None
    codec: str | None
    encoder: str | None
    output_fps: float | None
    output_size: tuple[int, int] | None
    end_reason: EndReason
    end_detail: str
    stats: dict[str, Any]
    writer: dict[str, Any] = field(default_factory=dict)
    upscaler: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    crop: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return jsonable(
            {
                "source": self.source,
                "source_kind": self.source_kind,
                "scale": self.scale,
                "batch": self.batch,
                "source_fps": self.source_fps,
                "output": self.output,
                "codec": self.codec,
                "encoder": self.encoder,
                "output_fps": self.output_fps,
                "output_size": self.output_size,
                "end_reason": self.end_reason,
                "end_detail": self.end_detail,
                **self.stats,
                "writer": self.writer,
                "upscaler": self.upscaler,
                "warnings": self.warnings,
                "crop": self.crop,
            }
        )


def check_display() -> None:
    """Check that OpenCV can open a window.

    Raises:
        OutputError: for a headless OpenCV build or no display (checked before OpenCV is asked:
            a GUI toolkit without a display aborts the process).
    """
    check_display_reachable()
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error as e:
        raise OutputError(
            "--display needs an OpenCV build with a GUI (pip install opencv-python, not "
            "opencv-python-headless) and a display; write to --output instead"
        ) from e


class _WriterThread:
    """Encodes frames on a thread of its own, so encoding overlaps inference and colour work."""

    def __init__(self, writer: VideoFileWriter, depth: int = 4) -> None:
        self.writer = writer
        self._queue = Channel(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="metasr-encode", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        try:
            while True:
                image = self._queue.get()
                if image is None:
                    continue
                if isinstance(image, str):  # the end marker
                    return
                self.writer.write(image)
        except ChannelClosed:
            return
        except cv2.error as e:
            self._error = OutputError(f"encoding {self.writer.path} failed in OpenCV: {one_line(str(e))}")
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            self._error = e

    def put(self, image: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(image)

    def finish(self) -> None:
        """Write what is queued and stop; re-raise an encoding error."""
        self._queue.put_final("end")
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        self._queue.close()
        self._thread.join(timeout=10.0)
        self.writer.abort()


@dataclass
class _Run:
    """What :func:`run_stream` set up before the first frame."""

    source: VideoSource
    scale: Scale
    stream: VideoStream
    writer: VideoFileWriter | None
    out_fps: float
    warnings: list[str]
    crop: Any = None


def _prepare(source: Any, upscaler: SupportsUpscale, scale: Any, output: Any, options: dict[str, Any]) -> _Run:
    try:
        parsed = validate_scale(upscaler, scale, allow_extrapolation=options["allow_extrapolation"])
        if output is not None:
            VideoFileWriter.check_path(output, options["codec"])
        if options["display"]:
            check_display()
    except BaseException:
        if isinstance(source, VideoSource):  # a source handed in is released on every failure
            source.release()
        raise
    src = source if isinstance(source, VideoSource) else open_source(source)
    try:
        return _open_run(src, upscaler, parsed, output, options)
    except BaseException:
        src.release()
        raise


def _open_run(src: VideoSource, upscaler: SupportsUpscale, parsed: Scale, output: Any, options: dict[str, Any]) -> _Run:
    warnings: list[str] = []
    out_fps = src.fps or DEFAULT_FPS
    if not src.fps:
        warnings.append(f"source reports no frame rate; the output is written at {DEFAULT_FPS:g} fps")
    max_fps = options["max_fps"]
    if src.kind.live and max_fps:
        out_fps = min(out_fps, max_fps)  # frames beyond max_fps are skipped, so play at that rate
    start_frame = seek(src, options["start_s"], out_fps) if options["start_s"] else 0
    live_seconds = options["duration_s"] if src.kind.live else None
    max_frames = (
        options["max_frames"] if src.kind.live else clip_frames(out_fps, options["duration_s"], options["max_frames"])
    )
    writer = None
    if output is not None:
        inputs = [("input", src.path)] if src.path is not None else []
        check_write_plan([("output", Path(output))], inputs)
        expected = parsed.output_size(*src.frame_size) if src.frame_size else None
        writer = VideoFileWriter(output, out_fps, frame_size=expected, codec=options["codec"])
        info = probe_media(src.path) if options["audio"] and src.path is not None else None
        if info is not None and info.audio:
            writer.copy_audio_from(src.path, info.video_start_s + start_frame / out_fps)
    stream = VideoStream(
        src,
        upscaler,
        parsed,
        batch=options["batch"],
        max_fps=max_fps,
        allow_extrapolation=True,
        lost_timeout_s=options["lost_timeout_s"],
        max_frames=max_frames,
        max_seconds=live_seconds,
        crop=options["crop"],
        deinterlace=options["deinterlace"],
    )
    return _Run(src, parsed, stream, writer, out_fps, warnings)


def _pump(run: _Run, frames: Iterator[StreamFrame], encoder: _WriterThread | None, options: dict[str, Any]) -> None:
    """Deliver every frame to the encoder, the window and the callbacks."""
    stream, on_status, on_frame = run.stream, options["on_status"], options["on_frame"]
    last_status = 0.0
    for frame in frames:
        if encoder is not None:
            encoder.put(frame.image)
        if options["display"]:
            cv2.imshow(WINDOW, frame.image)
            if (cv2.waitKey(1) & 0xFF) in (ord("q"), 27):
                stream.stop()
        if on_frame is not None:
            on_frame(frame)
        now = time.perf_counter()
        if on_status is not None and now - last_status >= options["status_interval_s"]:
            last_status = now
            encoder_name = run.writer.encoder if run.writer is not None else None
            on_status({**stream.stats.snapshot(), "encoder": encoder_name})


def _finalise_output(run: _Run, encoder: _WriterThread | None) -> tuple[bool, dict[str, Any]]:
    """Close the file (checked), or delete it when the stream had no frame; return (written, info)."""
    writer, stream = run.writer, run.stream
    stats = stream.stats.snapshot()
    if stats["frames_out"] == 0 and stream.end_reason is EndReason.END_OF_FILE:
        if encoder is not None:
            encoder.abort()
        raise InputError(
            f"{run.source.name} contains no decodable video frame; check that the file is a complete video"
        )
    if writer is None or encoder is None:
        return False, {}
    try:
        encoder.finish()
        written = writer.close()
    except BaseException:
        encoder.abort()
        raise
    if writer.resized_frames:
        run.warnings.append(
            f"{writer.resized_frames} frames had another size than the first and were resized to the file's size"
        )
    if writer.cropped_to_even:
        run.warnings.append(
            "the SR frame size is odd; the video file stores it cropped to even (OpenCV/FFmpeg writers)"
        )
    if writer.audio_warning:
        run.warnings.append(writer.audio_warning)
    info = {
        "frames_written": writer.frames_written,
        "resized_frames": writer.resized_frames,
        "cropped_to_even": writer.cropped_to_even,
        "audio": writer.audio,
    }
    return written, info


def run_stream(
    source: VideoSource | str | int | os.PathLike[str],
    upscaler: SupportsUpscale,
    scale: str | Real | Fraction | Scale,
    *,
    output: str | os.PathLike[str] | None = None,
    codec: str | None = None,
    display: bool = False,
    batch: int = 1,
    max_fps: float | None = None,
    allow_extrapolation: bool = False,
    on_status: Callable[[dict[str, Any]], None] | None = None,
    status_interval_s: float = 0.5,
    lost_timeout_s: float = 5.0,
    on_frame: Callable[[StreamFrame], None] | None = None,
    audio: bool = True,
    start_s: float | None = None,
    duration_s: float | None = None,
    max_frames: int | None = None,
    crop: Any = None,
    deinterlace: bool = False,
) -> StreamSummary:
    """Super-resolve a whole stream into a video file and/or a window; return the summary.

    Everything that can be checked before the first frame is read is checked first: the scale,
    the output path and codec, the display, the source, the output against the source file.
    Ctrl-C (``KeyboardInterrupt``) or :class:`~metasr.video.pipeline.StreamTerminated` end the
    run cleanly: the output is finalised (playable) and the summary says ``interrupted`` or
    ``terminated``. A live source that stops delivering frames ends the run with ``source_lost``,
    output finalised. Frames are encoded on a thread of their own.

    Args:
        source: A :class:`VideoSource` or anything :func:`open_source` accepts.
        upscaler: An ``Upscaler`` (or compatible object).
        scale: Scale factor.
        output: Video file to write (container from the extension), or ``None``.
        codec: FOURCC overriding the container's fallback chain.
        display: Show frames in an OpenCV window ('q' or Esc stops).
        batch, max_fps, allow_extrapolation, lost_timeout_s: As for :class:`VideoStream`.
        on_status: Called with ``stats.snapshot()`` at most every ``status_interval_s``.
        on_frame: Called with every frame once it is queued for writing (for embedding and tests).
        audio: Copy the audio of a file source into the output (packets, no re-encoding), cut
            to the clip; a container that cannot hold it leaves a warning.
        start_s: Start this far into a file (frame-accurate seek).
        duration_s: Length of the clip: frames at the source's rate for a file, wall-clock
            seconds for a live source.
        max_frames: At most this many frames.
        crop, deinterlace: As for :class:`VideoStream` (``"auto"`` or a ``CropRegion``).

    Raises:
        ScaleError, InputError, OutputError: before any frame is read, for a bad scale, source,
            output or display; ``InputError`` also for a file with no decodable frame;
            ``OutputError`` when the file does not hold every frame (a full disk), deleted then.
    """
    options = dict(
        codec=codec, display=display, batch=batch, max_fps=max_fps, allow_extrapolation=allow_extrapolation,
        on_status=on_status, status_interval_s=status_interval_s, lost_timeout_s=lost_timeout_s, on_frame=on_frame,
        audio=audio, start_s=start_s, duration_s=duration_s, max_frames=max_frames, crop=crop, deinterlace=deinterlace,
    )  # fmt: skip
    run = _prepare(source, upscaler, scale, output, options)
    encoder = _WriterThread(run.writer) if run.writer is not None else None
    # Hold the generator: one created inside _pump would be closed while an exception unwinds,
    # before the handler below could record that Ctrl-C, not a stop, ended the stream.
    frames = iter(run.stream)
    try:
        _pump(run, frames, encoder, options)
    except KeyboardInterrupt as e:
        run.stream._finish(*interrupt_reason(e))
    except BaseException:
        run.stream.close()
        if encoder is not None:
            encoder.abort()
        run.stream.join(timeout=60.0)
        raise
    finally:
        run.stream.close()
        if display:
            cv2.destroyAllWindows()
    try:
        written, writer_info = _finalise_output(run, encoder)
    finally:
        run.stream.join(timeout=60.0)  # let an inference call in flight end before returning
    return _summary(run, upscaler, output if written else None, writer_info)


def _summary(run: _Run, upscaler: Any, output: Any, writer_info: dict[str, Any]) -> StreamSummary:
    writer = run.writer
    size = writer.frame_size if writer is not None else None
    upscaler_info = {k: getattr(upscaler, k) for k in ("providers", "device", "model_id") if hasattr(upscaler, k)}
    cropper = run.stream.cropper
    if cropper is not None and cropper.auto and cropper.region is None:
        run.warnings.append("--crop auto found no black border around the picture; frames were not cropped")
    return StreamSummary(
        source=run.source.name,
        source_kind=run.source.kind,
        scale=str(run.scale),
        batch=run.stream.batch,
        source_fps=run.source.fps,
        output=str(output) if output is not None else None,
        codec=writer.codec if writer is not None else None,
        encoder=writer.encoder if writer is not None else None,
        output_fps=run.out_fps if writer is not None else None,
        output_size=(size[1], size[0]) if size else None,
        end_reason=run.stream.end_reason or EndReason.STOPPED,
        end_detail=run.stream.end_detail,
        stats=run.stream.stats.snapshot(),
        writer=writer_info,
        upscaler=jsonable(upscaler_info),
        warnings=run.warnings,
        crop=cropper.region.describe() if cropper is not None and cropper.region is not None else None,
    )
