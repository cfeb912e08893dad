"""The pipelined stream: capture, inference and output run concurrently, joined by bounded queues.

::

    capture thread     read a frame, split it into luminance (float32 [0,1]) and chroma
    inference thread   batch up to N frames of one size, upscaler.upscale(luma [N,h,w], scale)
    compose workers    resample the chroma on the luma's grid, merge, quantise to uint8
    consumer           yield the frames in order

ONNX Runtime and OpenCV release the GIL, so decoding, colour conversion and output overlap
inference. Live sources (cameras, URLs) drop the *oldest* waiting frame when inference falls
behind, so latency stays bounded; files never drop a frame (capture blocks instead). Every queue
is bounded, so memory stays flat however long the stream runs.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction
from numbers import Real
from typing import Any, Protocol

import cv2
import numpy as np

from metasr.core.cli import Terminated, one_line
from metasr.core.errors import InputError, ScaleError
from metasr.core.scale import Scale
from metasr.video.channel import Channel, ChannelClosed
from metasr.video.colour import compose_frame, split_frame
from metasr.video.crop import CroppedCapture, CropRegion
from metasr.video.deinterlace import DeinterlacedCapture
from metasr.video.encoders import to_8bit
from metasr.video.sources import VideoSource, open_source
from metasr.video.stats import StreamStats

__all__ = [
    "EndReason",
    "StreamFrame",
    "StreamTerminated",
    "SupportsUpscale",
    "VideoStream",
    "check_rate",
    "check_scale_text",
    "interrupt_reason",
    "validate_scale",
]

#: Slowest and fastest accepted ``max_fps`` (one frame in 100 s .. far beyond any camera).
MAX_FPS_RANGE = (0.01, 10_000.0)
#: Longest scale text parsed (``"1e999999999"`` would make exact rational parsing run for ever).
MAX_SCALE_TEXT = 32


class EndReason(str, Enum):
    """Why a stream stopped."""

    END_OF_FILE = "end_of_file"  # a file source was read to its end
    SOURCE_LOST = "source_lost"  # a live source stopped delivering frames
    STOPPED = "stopped"  # VideoStream.stop() (or 'q' in the display window)
    INTERRUPTED = "interrupted"  # Ctrl-C
    TERMINATED = "terminated"  # SIGTERM (raised as StreamTerminated by the command's handler)
    LIMIT = "limit"  # max_frames or max_seconds reached (a clip)


class StreamTerminated(Terminated):
    """Raised (by a SIGTERM handler) to end a stream the way Ctrl-C does, recorded as ``terminated``."""


def interrupt_reason(error: BaseException) -> tuple[EndReason, str]:
    """The end reason and detail of a ``KeyboardInterrupt`` (Ctrl-C) or :class:`StreamTerminated`."""
    if isinstance(error, StreamTerminated):
        return EndReason.TERMINATED, "terminated (SIGTERM)"
    return EndReason.INTERRUPTED, "interrupted (Ctrl-C)"


class SupportsUpscale(Protocol):
    """What the stream needs from an upscaler (``metasr.runtime.Upscaler`` provides it)."""

    scale_range: tuple[float, float]

    def upscale(self, image: np.ndarray, scale: Any) -> np.ndarray:  # pragma: no cover - protocol
        ...


def check_scale_text(scale: str | Real | Fraction | Scale) -> str | Real | Fraction | Scale:
    """Return ``scale``; refuse scale text too long or with too large an exponent to parse in bounded time."""
    if not isinstance(scale, str):
        return scale
    text = scale.strip()
    exponent = text.lower().partition("e")[2]
    too_big = exponent and not (exponent.lstrip("+-").isdigit() and len(exponent.lstrip("+-")) <= 2)
    if len(text) > MAX_SCALE_TEXT or too_big:
        shown = text if len(text) <= MAX_SCALE_TEXT else text[:MAX_SCALE_TEXT] + "..."
        raise ScaleError(f"scale must be a number such as 1.8 or 7/3, got {shown!r}")
    return scale


def validate_scale(
    upscaler: SupportsUpscale, scale: str | Real | Fraction | Scale, *, allow_extrapolation: bool = False
) -> Scale:
    """Parse ``scale`` and check it against the model's trained range.

    Uses ``upscaler.check_scale`` when the upscaler has one (``metasr.runtime.Upscaler`` does),
    so a stream accepts exactly the scales ``metasr-run`` accepts.

    Raises:
        ScaleError: if the scale is malformed, or outside ``upscaler.scale_range`` and
            ``allow_extrapolation`` is false.
    """
    scale = check_scale_text(scale)
    check = getattr(upscaler, "check_scale", None)
    if check is not None:  # the runtime's own rules (fixed-scale models, 1..MAX_SCALE, trained range)
        return Scale.parse(check(scale, allow_extrapolation=allow_extrapolation))
    parsed = Scale.parse(scale)
    lo, hi = (float(v) for v in getattr(upscaler, "scale_range", (0.0, math.inf)))
    if not allow_extrapolation and not lo <= float(parsed) <= hi:
        raise ScaleError(
            f"scale {parsed} is outside the model's trained range {lo:g}-{hi:g}; "
            "choose a scale in that range or pass --allow-extrapolation to accept untested quality"
        )
    return parsed


def _plain(number: float) -> str:
    # whole numbers in full (1048576, not 1.04858e+06), others as short as they print
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def check_rate(name: str, value: float | None, lo: float, hi: float, unit: str) -> float | None:
    """``value`` as a float if it is ``None`` or a finite number in ``[lo, hi]``.

    Raises:
        InputError: naming ``name``, the range and the value, for NaN, infinities and numbers out of range.
    """
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number from {_plain(lo)} to {_plain(hi)} {unit}, got {value!r}") from None
    if not (math.isfinite(number) and lo <= number <= hi):
        raise InputError(f"{name} must be a number from {_plain(lo)} to {_plain(hi)} {unit}, got {value!r}")
    return number


@dataclass(frozen=True)
class StreamFrame:
    """One super-resolved frame.

    Attributes:
        index: Position among the frames that were super-resolved (0-based).
        image: uint8 ``[H, W]`` while the source has been grayscale so far (one channel, or
            three equal ones; uint16 for a 16-bit grey source), ``[H, W, 3]`` BGR from its
            first colour frame on. With a crop, the cropped region, exactly 0 outside the mask.
        luma: float32 ``[H, W]`` in [0, 1]: the upscaler's output for the luminance.
        input_size: ``(h, w)`` of the source frame.
        captured_at: ``time.perf_counter()`` when the frame was read.
        latency_s: Capture to delivery by the iterator.
    """

    index: int
    image: np.ndarray
    luma: np.ndarray
    input_size: tuple[int, int]
    captured_at: float
    latency_s: float

    @property
    def is_color(self) -> bool:
        return self.image.ndim == 3


@dataclass(frozen=True)
class _Captured:
    luma: np.ndarray  # float32 [h, w] in [0, 1]
    chroma: np.ndarray | None  # uint8 [h, w, 2] (Cr, Cb), None for a grayscale frame
    captured_at: float
    deep: bool = False  # a 16-bit grey frame: output uint16


@dataclass(frozen=True)
class _End:
    reason: EndReason
    detail: str


@dataclass(frozen=True)
class _Failure:
    error: BaseException


def _compose_workers() -> int:
    """Threads for colour composition: up to 4, never more than the CPUs this process may use."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cpus))


class VideoStream:
    """Iterate over the super-resolved frames of a source, with capture/inference/output pipelined.

    Iterating starts the capture and inference threads; leaving the loop (end of stream,
    ``break``, an exception, Ctrl-C) stops them and releases the source. One pass only.

    Args:
        source: A :class:`VideoSource` or anything :func:`open_source` accepts.
        upscaler: An ``Upscaler`` (or an object with the same ``upscale``/``scale_range``).
        scale: Scale factor, e.g. ``"1.5"``.
        batch: Frames (of one size) per inference call, at most.
        max_fps: Rate cap. Files are read no faster than this (real-time playback); live sources
            skip frames arriving sooner than ``1/max_fps`` after the last one kept (``throttled``).
        queue_size: Frames waiting for inference. Default: ``batch`` for live sources (fresh
            frames, low latency), ``2 * batch`` for files (the next batch is ready while one runs).
        allow_extrapolation: Accept a scale outside the model's trained range.
        lost_timeout_s: A live source that delivers no frame for this long is lost.
        max_read_failures: Consecutive failed reads of a file before it counts as ended (a
            failed read followed by good frames is a corrupt frame).
        max_frames: End (``limit``) after this many frames read.
        max_seconds: End (``limit``) this long after the first read (wall clock: for live sources).
        crop: A :class:`~metasr.video.crop.CropRegion`, or ``"auto"`` to find the endoscope's field
            of view once; pixels outside its mask are exactly 0 in every output frame.
        deinterlace: Rebuild each frame from its top field (interlaced SD sources).

    Attributes:
        stats: Live :class:`StreamStats`.
        end_reason, end_detail: Why the stream ended (``None`` while running).
    """

    def __init__(
        self,
        source: VideoSource | str | int | os.PathLike[str],
        upscaler: SupportsUpscale,
        scale: str | Real | Fraction | Scale,
        *,
        batch: int = 1,
        max_fps: float | None = None,
        queue_size: int | None = None,
        allow_extrapolation: bool = False,
        lost_timeout_s: float = 5.0,
        max_read_failures: int = 8,
        max_frames: int | None = None,
        max_seconds: float | None = None,
        crop: CropRegion | str | None = None,
        deinterlace: bool = False,
    ) -> None:
        if isinstance(batch, bool) or int(batch) < 1:
            raise InputError(f"batch must be at least 1, got {batch}")
        self.max_fps = check_rate("max_fps", max_fps, *MAX_FPS_RANGE, "frames per second")
        self.lost_timeout_s = check_rate("lost_timeout_s", lost_timeout_s, 0.01, 86_400.0, "seconds")
        self.scale = validate_scale(upscaler, scale, allow_extrapolation=allow_extrapolation)
        self.source = source if isinstance(source, VideoSource) else open_source(source)
        self.upscaler = upscaler
        self.batch = int(batch)
        live = self.source.kind.live
        self.queue_size = int(queue_size) if queue_size else (self.batch if live else 2 * self.batch)
        self.max_read_failures = int(max_read_failures)
        self.max_frames = int(max_frames) if max_frames else None
        self.max_seconds = float(max_seconds) if max_seconds else None
        self.deinterlace = bool(deinterlace)
        if self.deinterlace:  # on the whole frame, before any crop: the source's field order
            self.source.capture = DeinterlacedCapture(self.source.capture)
        self.cropper = CroppedCapture(self.source.capture, crop) if crop is not None else None
        if self.cropper is not None:
            self.source.capture = self.cropper
        self.stats = StreamStats()
        self.end_reason: EndReason | None = None
        self.end_detail = ""
        self._stop = threading.Event()
        self._inbox = Channel(self.queue_size)
        # Colour composition (chroma resampling, merge, quantisation) runs on a few workers in
        # parallel, frames kept in order, so it keeps up with a fast GPU; the queue holds futures.
        self.compose_workers = _compose_workers()
        self._composer = ThreadPoolExecutor(self.compose_workers, thread_name_prefix="metasr-compose")
        self._outbox = Channel(max(2 * self.batch, 2 * self.compose_workers))
        self._threads: list[threading.Thread] = []
        self._started = False
        self._closed = False

    # -- capture thread ------------------------------------------------------------------

    def _capture_loop(self) -> None:
        try:
            end = self._capture_frames()
        except ChannelClosed:
            return
        except cv2.error as e:
            failure = InputError(f"reading {self.source.name} failed in OpenCV: {one_line(str(e))}")
            self._inbox.put_final(_Failure(failure))
            return
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer's thread
            self._inbox.put_final(_Failure(e))
            return
        self._inbox.put_final(end)

    def _capture_frames(self) -> _End:
        """Read until the source ends, is lost or the stream stops; return why it ended."""
        src, stats, live = self.source, self.stats, self.source.kind.live
        interval = 1.0 / self.max_fps if self.max_fps else 0.0
        last_kept = -math.inf
        last_good = time.perf_counter()
        deadline = last_good + self.max_seconds if self.max_seconds else math.inf
        failures = kept = 0
        while not self._stop.is_set():
            if kept == self.max_frames or time.perf_counter() >= deadline:
                return _End(EndReason.LIMIT, f"clip ended after {kept} frames")
            if interval and not live:
                wait = last_kept + interval - time.perf_counter()
                if wait > 0 and self._stop.wait(wait):
                    break
            ok, frame = src.read()
            now = time.perf_counter()
            if not ok:
                failures += 1
                end = self._after_failed_read(failures, now - last_good)
                if end is not None:
                    return end
                continue
            if failures and not live:
                stats.add("corrupt", failures)  # the file went on after failed reads: corrupt frames
            failures, last_good = 0, now
            parts = split_frame(frame)
            if parts is None:
                stats.add("corrupt")
                continue
            if live and interval and now - last_kept < interval:
                stats.add("throttled")
                continue
            last_kept = now
            kept += 1
            stats.add("frames_in")
            deep = parts[1] is None and frame.dtype == np.uint16
            dropped = self._inbox.put(_Captured(parts[0], parts[1], now, deep), drop_oldest=live)
            if dropped:
                stats.add("dropped", dropped)
        return _End(EndReason.STOPPED, "stopped")

    def _after_failed_read(self, failures: int, silent_s: float) -> _End | None:
        """Whether a failed read ends the stream (a file's end, a lost live source)."""
        name = self.source.name
        if not self.source.kind.live:
            return _End(EndReason.END_OF_FILE, f"{name} ended") if failures > self.max_read_failures else None
        self.stats.add("read_failures")
        if silent_s >= self.lost_timeout_s:
            return _End(
                EndReason.SOURCE_LOST, f"{name} delivered no frame for {silent_s:.1f} s ({failures} failed reads)"
            )
        self._stop.wait(0.01)
        return None

    # -- inference thread ----------------------------------------------------------------

    def _next_batch(self, first: _Captured) -> tuple[list[_Captured], Any]:
        """``first`` and up to ``batch - 1`` waiting frames of its size; also the item that ended the batch."""
        batch = [first]
        while len(batch) < self.batch:
            nxt = self._inbox.get_nowait()
            if nxt is None:
                return batch, None
            if isinstance(nxt, (_End, _Failure)) or nxt.luma.shape != first.luma.shape:
                return batch, nxt  # another size (or the end) starts the next call
            batch.append(nxt)
        return batch, None

    def _inference_loop(self) -> None:
        pending: Any = None
        try:
            while True:
                item = pending if pending is not None else self._inbox.get()
                pending = None
                if item is None:
                    continue
                if isinstance(item, (_End, _Failure)):
                    self._outbox.put_final(item)
                    return
                batch, pending = self._next_batch(item)
                scale = self.scale.value
                if len(batch) == 1:
                    sr = [np.asarray(self.upscaler.upscale(item.luma, scale))]
                else:
                    sr = list(np.asarray(self.upscaler.upscale(np.stack([b.luma for b in batch]), scale)))
                for captured, luma in zip(batch, sr, strict=True):
                    job = self._composer.submit(self._compose, luma, captured, scale)
                    self._outbox.put((captured, luma, job))
        except ChannelClosed:
            return
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer's thread
            self._outbox.put_final(_Failure(e))

    def _compose(self, luma: np.ndarray, captured: _Captured, scale: Fraction) -> np.ndarray:
        image = compose_frame(luma, captured.chroma, scale, deep=captured.deep)
        return self.cropper.apply_output_mask(image) if self.cropper is not None else image

    # -- consumer ------------------------------------------------------------------------

    def _start(self) -> None:
        if self._started:
            raise RuntimeError("a VideoStream can be iterated once")
        self._started = True
        self.stats.started_at = time.perf_counter()
        self._threads = [
            threading.Thread(target=self._capture_loop, name="metasr-capture", daemon=True),
            threading.Thread(target=self._inference_loop, name="metasr-inference", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def __iter__(self) -> Iterator[StreamFrame]:
        self._start()
        index = 0
        last_size: tuple[int, int] | None = None
        color = False
        try:
            while True:
                item = self._outbox.get(timeout=0.1)
                if item is None:
                    if self._stop.is_set():
                        self._finish(EndReason.STOPPED, "stopped")
                        return
                    continue
                if isinstance(item, _End):
                    self._finish(item.reason, item.detail)
                    return
                if isinstance(item, _Failure):
                    raise item.error
                captured, sr, job = item
                size = (int(captured.luma.shape[0]), int(captured.luma.shape[1]))
                if last_size is not None and size != last_size:
                    self.stats.add("size_changes")
                last_size = size
                image = job.result()
                if image.ndim == 3:
                    color = True
                elif color:  # once the source has shown colour, keep the frame layout stable
                    image = cv2.cvtColor(to_8bit(image), cv2.COLOR_GRAY2BGR)
                now = time.perf_counter()
                latency = now - captured.captured_at
                self.stats.record_output(latency, now)
                yield StreamFrame(index, image, sr, size, captured.captured_at, latency)
                index += 1
        except KeyboardInterrupt as e:
            self._finish(*interrupt_reason(e))
            raise
        finally:
            self.close()

    def _finish(self, reason: EndReason, detail: str) -> None:
        if self.end_reason is None:
            self.end_reason, self.end_detail = reason, detail

    def stop(self) -> None:
        """Ask the stream to end after the frame being delivered (thread-safe)."""
        self._stop.set()

    def close(self) -> None:
        """Stop the threads and release the source (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._inbox.close()
        self._outbox.close()
        self._composer.shutdown(wait=False, cancel_futures=True)
        capture = self._threads[0] if self._threads else None
        inference = self._threads[1] if self._threads else None
        # An inference call in flight (seconds on a CPU) finishes on its own and its result is
        # discarded: Ctrl-C need not wait for it. The threads are daemons, so neither a call in
        # flight nor a live read that hangs can keep the process alive.
        if inference is not None:
            inference.join(timeout=0.2)
        if capture is not None:
            capture.join(timeout=10.0)
        if capture is None or not capture.is_alive():
            # Never release a capture while a read on it is in progress (FFmpeg is not re-entrant).
            self.source.release()
        if self.end_reason is None:
            self._finish(EndReason.STOPPED, "stopped")

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the stream's threads to end (after :meth:`close`); return whether they did.

        :meth:`close` does not wait for an inference call in flight; call this before the
        process exits so no model call is still running while the interpreter shuts down.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def __enter__(self) -> VideoStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
