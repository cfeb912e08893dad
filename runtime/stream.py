"""Pipelined super-resolution of video streams (files, RTSP/HTTP URLs, cameras) through OpenCV.

Three stages run concurrently, joined by small bounded queues::

    capture thread     read a frame, split it into luminance (float32 [0,1]) and chroma
    inference thread   batch up to N frames of one size, Upscaler.upscale(luma [N,h,w], scale)
    consumer           resample the chroma bicubically on the luma's grid, merge, quantise to uint8,
                       then yield the frame (the caller writes it, shows it, or passes it on)

ONNX Runtime and OpenCV release the GIL, so capture, inference and output overlap and the stream
runs close to the speed of inference alone. Live sources (cameras, URLs) drop the *oldest*
waiting frame when inference falls behind, so latency stays bounded; files never drop a frame
(capture blocks instead).

Library use::

    from metasr.runtime import Upscaler
    from metasr.runtime.stream import VideoStream, open_source

    up = Upscaler()
    with VideoStream(open_source("endoscopy.avi"), up, "1.5", batch=2) as stream:
        for frame in stream:             # StreamFrame: .image uint8 BGR or gray, .luma float32
            consume(frame.image)
    print(stream.stats.snapshot())

:func:`run_stream` adds the file writer, an optional display window and a status callback; it is
what ``metasr-stream`` runs. The capture is injectable: :class:`VideoSource` wraps any object
with ``read() -> (ok, frame)`` and ``release()`` (``cv2.VideoCapture`` or a test double).
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from fractions import Fraction
from numbers import Real
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from metasr.core.errors import InputError, OutputError, ScaleError
from metasr.core.resample import resize_on_grid
from metasr.core.scale import Scale

__all__ = [
    "SourceKind",
    "EndReason",
    "SupportsUpscale",
    "VideoSource",
    "open_source",
    "VideoFileWriter",
    "StreamFrame",
    "StreamStats",
    "StreamSummary",
    "VideoStream",
    "run_stream",
    "validate_scale",
    "CODECS_BY_EXTENSION",
]

#: FOURCC codes tried in order for each container; the first one the installed OpenCV opens wins.
CODECS_BY_EXTENSION: dict[str, tuple[str, ...]] = {
    ".mp4": ("mp4v", "avc1", "MJPG"),
    ".m4v": ("mp4v", "avc1"),
    ".mov": ("mp4v", "MJPG", "avc1"),
    ".avi": ("MJPG", "XVID", "FFV1", "mp4v"),
    ".mkv": ("FFV1", "MJPG", "mp4v", "XVID"),
}

#: Frame rate assumed when the source does not report a usable one (many webcams, some URLs).
DEFAULT_FPS = 30.0


class SourceKind(str, Enum):
    """Where frames come from. Files are never dropped from; live sources are."""

    FILE = "file"
    URL = "url"
    CAMERA = "camera"

    @property
    def live(self) -> bool:
        return self is not SourceKind.FILE


class EndReason(str, Enum):
    """Why a stream stopped."""

    END_OF_FILE = "end_of_file"  # a file source was read to its end
    SOURCE_LOST = "source_lost"  # a live source stopped delivering frames
    STOPPED = "stopped"  # VideoStream.stop() (or 'q' in the display window)
    INTERRUPTED = "interrupted"  # Ctrl-C


class SupportsUpscale(Protocol):
    """What the stream needs from an upscaler (``metasr.runtime.Upscaler`` provides it)."""

    scale_range: tuple[float, float]

    def upscale(self, image: np.ndarray, scale: Any) -> np.ndarray:  # pragma: no cover - protocol
        ...


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


# --------------------------------------------------------------------------------------------
# Sources


def _redact(spec: str) -> str:
    """Hide credentials in URLs (``rtsp://user:pass@host`` -> ``rtsp://***@host``) for messages."""
    return re.sub(r"(://)[^/@]*@", r"\1***@", spec)


@dataclass
class VideoSource:
    """A frame source: any capture object with ``read() -> (ok, frame)`` and ``release()``.

    Attributes:
        capture: ``cv2.VideoCapture`` or a test double.
        kind: File (never dropped from) or a live source (camera, URL).
        name: For messages and the summary (credentials already removed).
        fps: Frame rate reported by the source, or ``None`` when it reports none.
        frame_size: ``(height, width)`` reported before the first read, or ``None``.
    """

    capture: Any
    kind: SourceKind = SourceKind.FILE
    name: str = "<capture>"
    fps: float | None = None
    frame_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self.kind = SourceKind(self.kind)
        get = getattr(self.capture, "get", None)
        if self.fps is None and get is not None:
            fps = float(get(cv2.CAP_PROP_FPS) or 0.0)
            self.fps = fps if math.isfinite(fps) and 0.5 <= fps <= 1000.0 else None
        if self.frame_size is None and get is not None:
            h, w = int(get(cv2.CAP_PROP_FRAME_HEIGHT) or 0), int(get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
            self.frame_size = (h, w) if h > 0 and w > 0 else None

    def read(self) -> tuple[bool, np.ndarray | None]:
        return self.capture.read()

    def release(self) -> None:
        release = getattr(self.capture, "release", None)
        if release is not None:
            release()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def open_source(
    spec: str | int | os.PathLike[str], *, open_timeout_s: float = 10.0, read_timeout_s: float = 5.0
) -> VideoSource:
    """Open a video file, an RTSP/HTTP URL or a camera (by index) with OpenCV.

    Args:
        spec: A path, a URL containing ``://``, or a camera index (``0`` or ``"0"``).
        open_timeout_s: How long a URL may take to open (FFmpeg backend).
        read_timeout_s: How long one read from a URL may block.

    Raises:
        InputError: if the source does not exist or OpenCV cannot open it.
    """
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        index = int(spec)
        cap = cv2.VideoCapture(index)
        if not cap.isOpened():
            cap.release()
            raise InputError(
                f"cannot open camera {index}: no such device, or it is busy or not permitted; "
                "check /dev/video* (v4l2-ctl --list-devices) and that no other program holds it"
            )
        # Best effort: a driver-side queue of several frames would add latency before ours.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return VideoSource(cap, SourceKind.CAMERA, f"camera {index}")
    text = os.fspath(spec)
    if "://" in text:
        name = _redact(text)
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000),
        ]  # fmt: skip
        cap = cv2.VideoCapture(text, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise InputError(
                f"cannot open stream {name}: it did not answer within {open_timeout_s:g} s or is not a video "
                "stream OpenCV/FFmpeg can read; check the address, credentials and network"
            )
        return VideoSource(cap, SourceKind.URL, name)
    path = Path(text)
    if not path.exists():
        raise InputError(f"input video {path} does not exist; give a video file, a URL or a camera index")
    if path.is_dir():
        raise InputError(f"input {path} is a directory; give a video file, a URL or a camera index")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise InputError(
            f"cannot open {path} as a video: OpenCV/FFmpeg cannot decode it; "
            "check that it is a complete video file (e.g. .mp4, .avi, .mkv)"
        )
    return VideoSource(cap, SourceKind.FILE, str(path))


# --------------------------------------------------------------------------------------------
# Writer


class VideoFileWriter:
    """An OpenCV video writer with a codec fallback chain, checked before any frame is read.

    The constructor probes the codecs of the path's container until one opens (so an unwritable
    path or a missing codec fails up front); the real writer opens on the first frame, with that
    frame's size and colour mode. Frames go to a temporary file next to ``path`` that
    :meth:`close` renames into place, so an interrupted run never leaves a half-named file.

    Frames are stored as 3-channel BGR; a grayscale frame is stored with B = G = R, so a
    grayscale source stays grayscale in the file (up to the codec's chroma rounding).

    OpenCV's FFmpeg writer stores even frame sizes only; an odd SR height or width loses its last
    row or column in the file (``cropped_to_even``). Frames of another size than the first (a
    source that changed resolution mid-stream) are resized to the file's size, bicubically, and
    counted in ``resized_frames``: a video file has one frame size.

    Args:
        path: Output file; its extension picks the container (.mp4, .avi, .mkv, .mov, .m4v).
        fps: Frame rate written into the file.
        frame_size: Expected ``(height, width)`` of the frames, if known, for the probe.
        codec: A FOURCC to use instead of the fallback chain.

    Raises:
        OutputError: if the path cannot be written or no codec of the chain opens.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float,
        *,
        frame_size: tuple[int, int] | None = None,
        codec: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.fps = float(fps)
        chain = self.check_path(self.path, codec)
        parent = self.path.parent
        # Same directory, same extension (FFmpeg picks the container from it), then os.replace.
        self._tmp = parent / f".{self.path.stem}.partial-{os.getpid()}{self.path.suffix}"
        self._chain = chain
        self._writer: Any = None
        self.codec: str | None = None
        self.frame_size: tuple[int, int] | None = None  # (height, width) as stored
        self.frames_written = 0
        self.resized_frames = 0
        self.cropped_to_even = False
        probe_h, probe_w = frame_size if frame_size else (64, 64)
        self._chain = self._open_chain(self._chain, (max(2, probe_h), max(2, probe_w)), True, probe=True)

    @staticmethod
    def check_path(path: str | os.PathLike[str], codec: str | None = None) -> tuple[str, ...]:
        """Check, without writing, that ``path`` can take a video; return the codecs to try.

        Raises:
            OutputError: unknown container, a directory, a missing or read-only directory.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if codec is not None:
            if len(codec) != 4:
                raise OutputError(f"codec must be a 4-character FOURCC such as mp4v or MJPG, got {codec!r}")
            chain: tuple[str, ...] = (codec,)
        elif suffix in CODECS_BY_EXTENSION:
            chain = CODECS_BY_EXTENSION[suffix]
        else:
            raise OutputError(
                f"cannot write video {path}: unknown container {suffix or '(no extension)'}; "
                f"use one of {', '.join(sorted(CODECS_BY_EXTENSION))}"
            )
        if path.is_dir():
            raise OutputError(f"output {path} is a directory; give a file name such as out.mp4")
        parent = path.parent
        if not parent.is_dir():
            raise OutputError(f"cannot write {path}: directory {parent} does not exist; create it first")
        if not os.access(parent, os.W_OK):
            raise OutputError(f"cannot write {path}: directory {parent} is not writable")
        return chain

    def _open_chain(
        self, chain: tuple[str, ...], size: tuple[int, int], is_color: bool, *, probe: bool
    ) -> tuple[str, ...]:
        """Open the first codec of ``chain`` that works; return the chain from that codec on."""
        h, w = size
        for i, fourcc in enumerate(chain):
            writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*fourcc), self.fps, (w, h), is_color)
            if writer.isOpened():
                if probe:
                    writer.release()
                    self._tmp.unlink(missing_ok=True)
                else:
                    self._writer = writer
                self.codec = fourcc
                return chain[i:]
            writer.release()
        self._tmp.unlink(missing_ok=True)
        raise OutputError(
            f"cannot write video {self.path}: OpenCV could open none of the codecs {', '.join(chain)} "
            f"for {w}x{h} frames; try another container (.avi with MJPG is the most widely available)"
        )

    def write(self, image: np.ndarray) -> None:
        """Append one uint8 frame (``[H, W]`` gray or ``[H, W, 3]`` BGR)."""
        if self._writer is None:
            h, w = image.shape[:2]
            eh, ew = h - h % 2, w - w % 2
            if eh < 2 or ew < 2:
                raise OutputError(f"cannot write {w}x{h} frames to a video file; the output must be at least 2x2")
            self.cropped_to_even = (eh, ew) != (h, w)
            self._open_chain(self._chain, (eh, ew), True, probe=False)
            self.frame_size = (eh, ew)
        assert self.frame_size is not None
        eh, ew = self.frame_size
        h, w = image.shape[:2]
        if (h - h % 2, w - w % 2) != (eh, ew):
            image = cv2.resize(image, (ew, eh), interpolation=cv2.INTER_CUBIC)
            self.resized_frames += 1
        elif (h, w) != (eh, ew):
            image = image[:eh, :ew]
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        self._writer.write(np.ascontiguousarray(image))
        self.frames_written += 1

    def close(self) -> bool:
        """Finalise the file and move it into place; return whether a file was written.

        With no frame written there is nothing playable, so no file is left behind.
        """
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self.frames_written and self._tmp.exists():
            os.replace(self._tmp, self.path)
            return True
        self._tmp.unlink(missing_ok=True)
        return False

    def abort(self) -> None:
        """Release the writer and delete the partial file."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        self._tmp.unlink(missing_ok=True)
        self.frames_written = 0


# --------------------------------------------------------------------------------------------
# Statistics


@dataclass(frozen=True)
class StreamFrame:
    """One super-resolved frame.

    Attributes:
        index: Position among the frames that were super-resolved (0-based).
        image: uint8 ``[H, W]`` while the source has been grayscale so far (one channel, or
            three equal ones), ``[H, W, 3]`` BGR from its first colour frame on.
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


@dataclass
class StreamStats:
    """Counters of a running stream (updated by its threads; read a consistent copy with :meth:`snapshot`)."""

    frames_in: int = 0  # frames read and queued for inference
    frames_out: int = 0  # frames super-resolved and delivered
    dropped: int = 0  # live sources: oldest waiting frames dropped because inference fell behind
    throttled: int = 0  # live sources: frames skipped to respect max_fps
    corrupt: int = 0  # empty/undecodable frames skipped
    read_failures: int = 0  # failed reads of a live source (before it recovered or was declared lost)
    size_changes: int = 0  # times the frame size changed mid-stream
    started_at: float = field(default_factory=time.perf_counter)
    first_out_at: float | None = None
    last_out_at: float | None = None
    _latencies: deque = field(default_factory=lambda: deque(maxlen=100_000), repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def record_output(self, latency_s: float, now: float) -> None:
        with self._lock:
            self.frames_out += 1
            self._latencies.append(latency_s)
            if self.first_out_at is None:
                self.first_out_at = now
            self.last_out_at = now

    def snapshot(self) -> dict[str, Any]:
        """Counters, throughput and latency percentiles (milliseconds) as a plain dict."""
        with self._lock:
            lat = np.asarray(self._latencies, dtype=np.float64)
            end = self.last_out_at if self.last_out_at is not None else time.perf_counter()
            elapsed = max(end - self.started_at, 1e-9)
            out = {
                "frames_in": self.frames_in,
                "frames_out": self.frames_out,
                "dropped": self.dropped,
                "throttled": self.throttled,
                "corrupt": self.corrupt,
                "read_failures": self.read_failures,
                "size_changes": self.size_changes,
                "elapsed_s": round(elapsed, 4),
                "fps": round(self.frames_out / elapsed, 3),
            }
        if lat.size:
            out["latency_ms"] = {
                "p50": round(float(np.percentile(lat, 50)) * 1e3, 2),
                "p95": round(float(np.percentile(lat, 95)) * 1e3, 2),
                "max": round(float(lat.max()) * 1e3, 2),
            }
        else:
            out["latency_ms"] = {"p50": None, "p95": None, "max": None}
        return out


# --------------------------------------------------------------------------------------------
# The pipeline


@dataclass(frozen=True)
class _Captured:
    luma: np.ndarray  # float32 [h, w] in [0, 1]
    chroma: np.ndarray | None  # uint8 [h, w, 2] (Cr, Cb), None for a grayscale frame
    captured_at: float


@dataclass(frozen=True)
class _End:
    reason: EndReason
    detail: str


@dataclass(frozen=True)
class _Failure:
    error: BaseException


class _Closed(Exception):
    """The channel was closed while waiting."""


class _Channel:
    """A bounded FIFO between two threads that can drop its oldest item instead of blocking."""

    def __init__(self, maxsize: int) -> None:
        self._items: deque[Any] = deque()
        self._maxsize = max(1, maxsize)
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: Any, *, drop_oldest: bool = False) -> int:
        """Add ``item``; block while full, or drop the oldest item. Return how many were dropped."""
        with self._cond:
            dropped = 0
            while len(self._items) >= self._maxsize and not self._closed:
                if drop_oldest:
                    self._items.popleft()
                    dropped += 1
                else:
                    self._cond.wait(0.1)
            if self._closed:
                raise _Closed
            self._items.append(item)
            self._cond.notify_all()
            return dropped

    def put_final(self, item: Any) -> None:
        """Add an end marker regardless of the bound (it must never be dropped or block)."""
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Any:
        """Next item; ``None`` after ``timeout`` seconds with nothing to get."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    raise _Closed
                remaining = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def get_nowait(self) -> Any:
        with self._cond:
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def _split_frame(frame: Any) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Luminance (float32 [0,1]) and chroma (uint8 Cr,Cb) of a decoded frame; None if unusable.

    Single-channel frames and 3-channel frames whose channels are all equal are grayscale (no
    chroma), so a grayscale video stays grayscale however the decoder delivered it.
    """
    if not isinstance(frame, np.ndarray) or frame.size == 0 or frame.ndim not in (2, 3):
        return None
    if frame.dtype == np.uint16:
        if frame.ndim == 2 or frame.shape[2] == 1:
            return frame.reshape(frame.shape[:2]).astype(np.float32) * np.float32(1 / 65535), None
        frame = (frame.astype(np.float32) * (255 / 65535) + 0.5).astype(np.uint8)
    elif frame.dtype != np.uint8:
        return None
    if frame.ndim == 3:
        channels = frame.shape[2]
        if channels == 1:
            frame = frame[:, :, 0]
        elif channels == 4:
            frame = frame[:, :, :3]
        elif channels != 3:
            return None
    if frame.ndim == 2:
        return frame.astype(np.float32) * np.float32(1 / 255), None
    if np.array_equal(frame[:, :, 0], frame[:, :, 1]) and np.array_equal(frame[:, :, 1], frame[:, :, 2]):
        return frame[:, :, 0].astype(np.float32) * np.float32(1 / 255), None
    ycrcb = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_BGR2YCrCb)
    return ycrcb[:, :, 0].astype(np.float32) * np.float32(1 / 255), np.ascontiguousarray(ycrcb[:, :, 1:])


def _compose(sr_luma: np.ndarray, chroma: np.ndarray | None, scale: Fraction) -> np.ndarray:
    """uint8 output frame: quantised SR luminance, plus chroma resampled on the luma's grid for colour."""
    y = np.clip(np.rint(sr_luma * np.float32(255)), 0, 255).astype(np.uint8)
    if chroma is None:
        return y
    h, w = y.shape
    crcb = resize_on_grid(chroma, h, w, scale)
    return cv2.cvtColor(np.dstack([y, crcb]), cv2.COLOR_YCrCb2BGR)


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
            frames, low latency), ``batch + 1`` for files (the next batch is ready while one runs).
        allow_extrapolation: Accept a scale outside the model's trained range.
        lost_timeout_s: A live source that delivers no frame for this long is lost.
        max_read_failures: Consecutive failed reads of a file before it counts as ended (a
            failed read followed by good frames is a corrupt frame).

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
    ) -> None:
        if int(batch) < 1:
            raise InputError(f"batch must be at least 1, got {batch}")
        if max_fps is not None and not (math.isfinite(max_fps) and max_fps > 0):
            raise InputError(f"max_fps must be a positive number, got {max_fps}")
        self.scale = validate_scale(upscaler, scale, allow_extrapolation=allow_extrapolation)
        self.source = source if isinstance(source, VideoSource) else open_source(source)
        self.upscaler = upscaler
        self.batch = int(batch)
        self.max_fps = max_fps
        live = self.source.kind.live
        # Files: the next batch waits ready while one runs (throughput), and no more (latency).
        self.queue_size = int(queue_size) if queue_size else (self.batch if live else self.batch + 1)
        self.lost_timeout_s = float(lost_timeout_s)
        self.max_read_failures = int(max_read_failures)
        self.stats = StreamStats()
        self.end_reason: EndReason | None = None
        self.end_detail = ""
        self._stop = threading.Event()
        self._inbox = _Channel(self.queue_size)
        self._outbox = _Channel(2 * self.batch)
        self._threads: list[threading.Thread] = []
        self._started = False
        self._closed = False

    # -- threads -------------------------------------------------------------------------

    def _capture_loop(self) -> None:
        src, stats, live = self.source, self.stats, self.source.kind.live
        interval = 1.0 / self.max_fps if self.max_fps else 0.0
        last_kept = -math.inf
        last_good = time.perf_counter()
        failures = 0
        end = _End(EndReason.STOPPED, "stopped")
        try:
            while not self._stop.is_set():
                if interval and not live:
                    wait = last_kept + interval - time.perf_counter()
                    if wait > 0 and self._stop.wait(wait):
                        break
                ok, frame = src.read()
                now = time.perf_counter()
                if not ok:
                    failures += 1
                    if live:
                        stats.add("read_failures")
                        if now - last_good >= self.lost_timeout_s:
                            end = _End(
                                EndReason.SOURCE_LOST,
                                f"{src.name} delivered no frame for {now - last_good:.1f} s ({failures} failed reads)",
                            )
                            break
                        self._stop.wait(0.01)
                        continue
                    if failures > self.max_read_failures:
                        end = _End(EndReason.END_OF_FILE, f"{src.name} ended")
                        break
                    continue
                if failures and not live:
                    # The file went on after failed reads: those were corrupt frames, not its end.
                    stats.add("corrupt", failures)
                failures = 0
                last_good = now
                parts = _split_frame(frame)
                if parts is None:
                    stats.add("corrupt")
                    continue
                if live and interval and now - last_kept < interval:
                    stats.add("throttled")
                    continue
                last_kept = now
                stats.add("frames_in")
                dropped = self._inbox.put(_Captured(parts[0], parts[1], now), drop_oldest=live)
                if dropped:
                    stats.add("dropped", dropped)
        except _Closed:
            return
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer's thread
            self._inbox.put_final(_Failure(e))
            return
        self._inbox.put_final(end)

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
                batch = [item]
                while len(batch) < self.batch:
                    nxt = self._inbox.get_nowait()
                    if nxt is None:
                        break
                    if isinstance(nxt, (_End, _Failure)) or nxt.luma.shape != item.luma.shape:
                        pending = nxt  # another size (or the end) starts the next call
                        break
                    batch.append(nxt)
                if len(batch) == 1:
                    sr = [np.asarray(self.upscaler.upscale(item.luma, self.scale.value))]
                else:
                    sr = list(np.asarray(self.upscaler.upscale(np.stack([b.luma for b in batch]), self.scale.value)))
                for captured, luma in zip(batch, sr, strict=True):
                    self._outbox.put((captured, luma))
        except _Closed:
            return
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer's thread
            self._outbox.put_final(_Failure(e))

    # -- consumer ------------------------------------------------------------------------

    def __iter__(self) -> Iterator[StreamFrame]:
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
                captured, sr = item
                size = captured.luma.shape
                if last_size is not None and size != last_size:
                    self.stats.add("size_changes")
                last_size = size
                image = _compose(sr, captured.chroma, self.scale.value)
                if image.ndim == 3:
                    color = True
                elif color:
                    # Once the source has shown colour, keep the frame layout stable for the caller.
                    image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
                now = time.perf_counter()
                latency = now - captured.captured_at
                self.stats.record_output(latency, now)
                yield StreamFrame(index, image, sr, (int(size[0]), int(size[1])), captured.captured_at, latency)
                index += 1
        except KeyboardInterrupt:
            self._finish(EndReason.INTERRUPTED, "interrupted (Ctrl-C)")
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


# --------------------------------------------------------------------------------------------
# Whole runs (what metasr-stream does)


@dataclass
class StreamSummary:
    """What a :func:`run_stream` run did; :meth:`to_dict` is the ``--stats`` JSON."""

    source: str
    source_kind: SourceKind
    scale: str
    batch: int
    source_fps: float | None
    output: str | None
    codec: str | None
    output_fps: float | None
    output_size: tuple[int, int] | None
    end_reason: EndReason
    end_detail: str
    stats: dict[str, Any]
    writer: dict[str, Any] = field(default_factory=dict)
    upscaler: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "source_kind": self.source_kind.value,
            "scale": self.scale,
            "batch": self.batch,
            "source_fps": self.source_fps,
            "output": self.output,
            "codec": self.codec,
            "output_fps": self.output_fps,
            "output_size": list(self.output_size) if self.output_size else None,
            "end_reason": self.end_reason.value,
            "end_detail": self.end_detail,
            **self.stats,
            "writer": self.writer,
            "upscaler": self.upscaler,
            "warnings": self.warnings,
        }


def _check_display() -> None:
    try:
        cv2.namedWindow("metasr-stream", cv2.WINDOW_NORMAL)
    except cv2.error as e:
        raise OutputError(
            "--display needs an OpenCV build with a GUI (pip install opencv-python, not "
            "opencv-python-headless) and a display; write to --output instead"
        ) from e


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
) -> StreamSummary:
    """Super-resolve a whole stream into a video file and/or a window; return the summary.

    Everything that can be checked before the first frame is read is checked first: the scale,
    the source, the output path and codec, the display. Ctrl-C (``KeyboardInterrupt``) ends the
    run cleanly: the output is finalised (playable) and the summary says ``interrupted``. A live
    source that stops delivering frames ends the run with ``source_lost``, output finalised.

    Args:
        source: A :class:`VideoSource` or anything :func:`open_source` accepts.
        upscaler: An ``Upscaler`` (or compatible object).
        scale: Scale factor.
        output: Video file to write (container from the extension), or ``None``.
        codec: FOURCC overriding the container's fallback chain.
        display: Show frames in an OpenCV window ('q' or Esc stops).
        batch, max_fps, allow_extrapolation, lost_timeout_s: As for :class:`VideoStream`.
        on_status: Called with ``stats.snapshot()`` at most every ``status_interval_s``.
        on_frame: Called with every frame after it was written (for embedding and tests).

    Raises:
        ScaleError, InputError, OutputError: before any frame is read, for a bad scale, source,
            output or display; ``InputError`` also for a file with no decodable frame.
    """
    parsed = validate_scale(upscaler, scale, allow_extrapolation=allow_extrapolation)
    src = source if isinstance(source, VideoSource) else open_source(source)
    writer: VideoFileWriter | None = None
    warnings: list[str] = []
    try:
        src_fps = src.fps
        out_fps = src_fps if src_fps else DEFAULT_FPS
        if not src_fps:
            warnings.append(f"source reports no frame rate; the output is written at {DEFAULT_FPS:g} fps")
        if src.kind.live and max_fps:
            out_fps = min(out_fps, max_fps)  # frames beyond max_fps are skipped, so play at that rate
        if output is not None:
            if src.kind is SourceKind.FILE and Path(output).resolve() == Path(src.name).resolve():
                raise OutputError(f"output {output} is the input file; choose another name")
            expected = parsed.output_size(*src.frame_size) if src.frame_size else None
            writer = VideoFileWriter(output, out_fps, frame_size=expected, codec=codec)
        if display:
            _check_display()
        stream = VideoStream(
            src, upscaler, parsed, batch=batch, max_fps=max_fps, allow_extrapolation=True, lost_timeout_s=lost_timeout_s
        )
    except BaseException:
        src.release()
        raise

    last_status = 0.0
    # Hold the generator: a for-loop would drop (and close) it while an exception unwinds, before
    # the handler below could record that Ctrl-C, not a stop, ended the stream.
    frames = iter(stream)
    try:
        for frame in frames:
            if writer is not None:
                writer.write(frame.image)
            if display:
                cv2.imshow("metasr-stream", frame.image)
                if (cv2.waitKey(1) & 0xFF) in (ord("q"), 27):
                    stream.stop()
            if on_frame is not None:
                on_frame(frame)
            now = time.perf_counter()
            if on_status is not None and now - last_status >= status_interval_s:
                last_status = now
                on_status(stream.stats.snapshot())
    except KeyboardInterrupt:
        stream._finish(EndReason.INTERRUPTED, "interrupted (Ctrl-C)")
    except BaseException:
        stream.close()
        if writer is not None:
            writer.abort()
        stream.join(timeout=60.0)
        raise
    finally:
        stream.close()
        if display:
            cv2.destroyAllWindows()

    stats = stream.stats.snapshot()
    if stats["frames_out"] == 0 and stream.end_reason is EndReason.END_OF_FILE:
        if writer is not None:
            writer.abort()
        raise InputError(f"{src.name} contains no decodable video frame; check that the file is a complete video")
    writer_info: dict[str, Any] = {}
    written = False
    if writer is not None:
        written = writer.close()
        writer_info = {
            "frames_written": writer.frames_written,
            "resized_frames": writer.resized_frames,
            "cropped_to_even": writer.cropped_to_even,
        }
        if writer.resized_frames:
            warnings.append(
                f"{writer.resized_frames} frames had another size than the first and were resized to the file's size"
            )
        if writer.cropped_to_even:
            warnings.append(
                "the SR frame size is odd; the video file stores it cropped to even (OpenCV/FFmpeg writers)"
            )
    stream.join(timeout=60.0)  # the output is final already; let an inference call in flight end
    upscaler_info = {
        k: _jsonable(getattr(upscaler, k)) for k in ("providers", "device", "model_id") if hasattr(upscaler, k)
    }
    return StreamSummary(
        source=src.name,
        source_kind=src.kind,
        scale=str(parsed),
        batch=stream.batch,
        source_fps=src_fps,
        output=str(output) if written else None,
        codec=writer.codec if writer is not None else None,
        output_fps=out_fps if writer is not None else None,
        output_size=writer.frame_size if writer is not None else None,
        end_reason=stream.end_reason or EndReason.STOPPED,
        end_detail=stream.end_detail,
        stats=stats,
        writer=writer_info,
        upscaler=upscaler_info,
        warnings=warnings,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
