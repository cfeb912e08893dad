"""Clips: ``--start``, ``--duration``, ``--max-frames`` on the source's frame clock."""

from __future__ import annotations

import math

import cv2

from metasr.core.errors import InputError
from metasr.video.sources import VideoSource

__all__ = ["clip_frames", "parse_time", "seek"]

#: Longest --start or --duration accepted (a week of video).
MAX_SECONDS = 7 * 86_400.0


def parse_time(name: str, text: str | float | None) -> float | None:
    """Seconds from ``SECONDS``, ``MM:SS`` or ``HH:MM:SS`` (fractions allowed: ``1:02.5``), or ``None``.

    Raises:
        InputError: naming ``name``, for anything else, negative or over a week.
    """
    if text is None:
        return None
    fields = str(text).strip().split(":")
    try:
        if len(fields) > 3 or any(not f.strip() for f in fields):
            raise ValueError
        parts = [float(f) for f in fields]
    except ValueError:
        raise InputError(f"{name} must be seconds (90, 1.5) or [HH:]MM:SS(.ms), got {text!r}") from None
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + part
    if not (math.isfinite(seconds) and 0 <= seconds <= MAX_SECONDS) or any(p < 0 for p in parts):
        raise InputError(f"{name} must be from 0 to {MAX_SECONDS:.0f} seconds, got {text!r}")
    return seconds


def seek(source: VideoSource, start_s: float, fps: float) -> int:
    """Move a file source to the frame at ``start_s`` (frame-accurate); return its index.

    Raises:
        InputError: for a live source, a start past the end, or a file OpenCV cannot seek in.
    """
    if source.kind.live:
        raise InputError("--start needs a file input; a live source starts now (use --duration to stop it)")
    index = int(round(start_s * fps))
    if index == 0:
        return 0
    total = int(source.capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    if total > 0 and index >= total:
        raise InputError(
            f"--start {start_s:g} s is past the end of {source.name} ({total / fps:.2f} s, {total} frames)"
        )
    if not source.capture.set(cv2.CAP_PROP_POS_FRAMES, index):
        raise InputError(f"cannot seek in {source.name} to {start_s:g} s; convert it to a seekable file (.mp4, .mkv)")
    return index


def clip_frames(fps: float, duration_s: float | None, max_frames: int | None) -> int | None:
    """Frames a file clip holds: ``duration_s`` at ``fps`` (at least 1), capped by ``max_frames``."""
    limits = [n for n in (max_frames, None if duration_s is None else max(1, int(round(duration_s * fps)))) if n]
    return min(limits) if limits else None
