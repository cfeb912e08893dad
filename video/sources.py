"""Frame sources: video files, RTSP/HTTP URLs and cameras, opened through OpenCV."""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from metasr.core.errors import InputError
from metasr.core.inputs import special_kind, stat_input
from metasr.core.paths import check_no_sequence_pattern, file_url_path, shown
from metasr.video.media import probe_media

__all__ = [
    "DEFAULT_FPS",
    "CaptureWrapper",
    "SourceKind",
    "VideoSource",
    "check_input_file",
    "classify_spec",
    "local_spec",
    "open_source",
]

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


def _redact(spec: str) -> str:
    """Hide credentials in URLs (``rtsp://user:pass@host`` -> ``rtsp://***@host``) for messages."""
    return re.sub(r"(://)[^/@]*@", r"\1***@", spec)


def classify_spec(spec: str | int | os.PathLike[str]) -> SourceKind:
    """What kind of source ``spec`` names: a camera index, a URL (contains ``://``) or a file.

    Raises:
        InputError: for an empty string.
    """
    if isinstance(spec, int) and not isinstance(spec, bool):
        return SourceKind.CAMERA
    text = os.fspath(spec)
    if not text.strip():
        raise InputError("no input given; pass a video file, an rtsp:// or http:// URL, or a camera index")
    if text.strip().isascii() and text.strip().isdigit():  # not "²" or "①", which int() refuses
        return SourceKind.CAMERA
    if file_url_path(text) is not None:  # a file:// URL is a file: the same checks, read as a file
        return SourceKind.FILE
    return SourceKind.URL if "://" in text else SourceKind.FILE


def local_spec(spec: str | int | os.PathLike[str]) -> str | int | os.PathLike[str]:
    """``spec`` with a ``file://`` URL turned into the path it names (anything else unchanged).

    Raises:
        InputError: a ``file://`` URL of another host, or naming no path.
    """
    if isinstance(spec, int):
        return spec
    path = file_url_path(os.fspath(spec))
    return spec if path is None else str(path)


def check_input_file(path: str | os.PathLike[str]) -> Path:
    """Check that ``path`` is an existing regular file (a symlink to one is fine).

    FIFOs, sockets and device files are refused: reading them can block forever or never end.

    Raises:
        InputError: if the path is missing, a folder, or not a regular file.
    """
    path = Path(local_spec(path))
    check_no_sequence_pattern(path, "input")
    info = stat_input(path, "input video", "give a video file, a URL or a camera index")
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"input {path} is a folder; give a video file, a URL or a camera index")
    kind = special_kind(info)
    if kind is not None:
        raise InputError(
            f"input {path} is {kind}, not a regular file; save the video to a file, or give a URL or a camera index"
        )
    if info.st_size == 0:
        raise InputError(f"input video {path} is empty (0 bytes); give a complete video file")
    if not os.access(path, os.R_OK):
        raise InputError(f"input video {path} is not readable; check its permissions")
    return path


class CaptureWrapper:
    """Base of the captures that wrap another (``read``/``get``/``set``/``release``) and change its frames.

    Subclasses override :meth:`read` (and :meth:`get` where they change what it reports); the rest
    passes through to the wrapped capture, which may lack ``get`` or ``release`` (test doubles).
    """

    def __init__(self, capture: Any) -> None:
        self.capture = capture

    def read(self) -> tuple[bool, Any]:
        return self.capture.read()

    def get(self, prop: int) -> float:
        get = getattr(self.capture, "get", None)
        return float(get(prop) or 0.0) if get is not None else 0.0

    def set(self, prop: int, value: float) -> bool:
        return bool(self.capture.set(prop, value))

    def release(self) -> None:
        release = getattr(self.capture, "release", None)
        if release is not None:
            release()


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

    @property
    def path(self) -> Path | None:
        """The file behind a file source (``None`` for live sources and test doubles)."""
        if self.kind is not SourceKind.FILE or self.name.startswith("<"):
            return None
        return Path(self.name)

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


#: Highest camera index accepted (V4L2 numbers devices from 0; larger values are typing errors).
MAX_CAMERA_INDEX = 9999


def _open_camera(index: int) -> VideoSource:
    if not 0 <= index <= MAX_CAMERA_INDEX:
        raise InputError(f"camera index must be from 0 to {MAX_CAMERA_INDEX}, got {shown(str(index))[:40]}")
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


def _open_url(text: str, open_timeout_s: float, read_timeout_s: float) -> VideoSource:
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


def open_source(
    spec: str | int | os.PathLike[str], *, open_timeout_s: float = 10.0, read_timeout_s: float = 5.0
) -> VideoSource:
    """Open a video file, an RTSP/HTTP URL or a camera (by index) with OpenCV.

    Args:
        spec: A path, a URL containing ``://``, or a camera index (``0`` or ``"0"``).
        open_timeout_s: How long a URL may take to open (FFmpeg backend).
        read_timeout_s: How long one read from a URL may block.

    Raises:
        InputError: if the source does not exist, is not a regular file, or OpenCV cannot open it.
    """
    kind = classify_spec(spec)
    if kind is SourceKind.CAMERA:
        text = str(spec).strip()
        if len(text) > len(str(MAX_CAMERA_INDEX)):  # int() of thousands of digits is refused or slow
            raise InputError(f"camera index must be from 0 to {MAX_CAMERA_INDEX}, got {text[:20]}...")
        return _open_camera(int(text))
    text = os.fspath(local_spec(spec))
    if kind is SourceKind.URL:
        return _open_url(text, open_timeout_s, read_timeout_s)
    path = check_input_file(text)
    # One grey plane (8 or 16 bits) is handed over as it is: 16-bit grey stays 16-bit.
    info = probe_media(path)
    raw = [cv2.CAP_PROP_CONVERT_RGB, 0] if info is not None and info.raw_grey else []
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, raw) if raw else cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise InputError(
            f"cannot open {path} as a video: OpenCV/FFmpeg cannot decode it; "
            "check that it is a complete video file (e.g. .mp4, .avi, .mkv)"
        )
    return VideoSource(cap, SourceKind.FILE, str(path))
