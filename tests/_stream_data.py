"""Test data for the video tests: short synthetic videos, a resize "upscaler", a capture double."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from metasr.core.scale import Scale

__all__ = [
    "FakeCapture",
    "ResizeUpscaler",
    "index_of",
    "luminance",
    "moving_shapes",
    "read_video",
    "tagged",
    "write_video",
]


def moving_shapes(n: int, h: int, w: int, *, color: bool, seed: int = 0) -> list[np.ndarray]:
    """``n`` uint8 frames of a disc and a bar moving over a noisy background."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        f = rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
        cv2.circle(f, (3 + (2 * i) % max(w - 6, 1), h // 2), max(2, h // 6), (230, 120, 40), -1)
        cv2.rectangle(
            f, (w // 3, (3 * i) % max(h - 4, 1)), (w // 3 + 5, (3 * i) % max(h - 4, 1) + 3), (30, 200, 250), -1
        )
        if not color:
            f = cv2.cvtColor(f, cv2.COLOR_BGR2GRAY)
        frames.append(f)
    return frames


def write_video(path: Path, frames: list[np.ndarray], fps: float = 12.0, fourcc: str = "MJPG") -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h), frames[0].ndim == 3)
    assert writer.isOpened(), f"this OpenCV cannot write {fourcc} test videos"
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames, fps


def luminance(frame: np.ndarray) -> np.ndarray:
    """Y of a decoded frame in [0, 1] (YCrCb; gray frames as they are)."""
    if frame.ndim == 2:
        return frame.astype(np.float32) / 255
    return cv2.cvtColor(frame, cv2.COLOR_BGR2YCrCb)[:, :, 0].astype(np.float32) / 255


class ResizeUpscaler:
    """Same API as ``Upscaler`` (upscale [h,w] or [N,h,w], scale_range), bicubic inside."""

    scale_range = (1.1, 4.0)
    providers = ["FakeExecutionProvider"]
    model_id = "fake"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls: list[tuple[int, ...]] = []

    def upscale(self, image: np.ndarray, scale) -> np.ndarray:
        s = Scale.parse(scale)
        x = np.asarray(image, dtype=np.float32)
        self.calls.append(x.shape)
        if self.delay_s:
            time.sleep(self.delay_s)
        batch = x[None] if x.ndim == 2 else x
        big_h, big_w = s.output_size(*batch.shape[1:])
        out = np.stack([cv2.resize(b, (big_w, big_h), interpolation=cv2.INTER_CUBIC) for b in batch])
        out = np.clip(out, 0, 1)
        return out[0] if x.ndim == 2 else out


class FakeCapture:
    """A capture double: yields the given items ((ok, frame) pairs or frames), then EOF.

    ``after_end``: what ``read`` returns once the items are used up (EOF by default).
    ``raise_at``: raise this exception on read number ``raise_at[0]``.
    """

    def __init__(self, items, *, delay_s: float = 0.0, fps: float = 25.0, raise_at=None) -> None:
        self.items = list(items)
        self.delay_s = delay_s
        self.fps = fps
        self.reads = 0
        self.raise_at = raise_at
        self.released = False

    def read(self):
        self.reads += 1
        if self.raise_at is not None and self.reads == self.raise_at[0]:
            raise self.raise_at[1]
        if self.delay_s:
            time.sleep(self.delay_s)
        if not self.items:
            return False, None
        item = self.items.pop(0)
        return item if isinstance(item, tuple) else (True, item)

    def get(self, prop):
        return self.fps if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self):
        self.released = True


def tagged(i: int, h: int = 20, w: int = 24) -> np.ndarray:
    """A gray frame whose value encodes its index (survives bicubic resizing of a flat image)."""
    return np.full((h, w), i, dtype=np.uint8)


def index_of(frame) -> int:
    return int(round(float(np.median(frame.image))))
