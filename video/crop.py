"""Endoscope field of view: crop the black border before the network, keep the mask black after it.

Endoscope video shows a circular (or octagonal, or truncated-circle) field of view on black.
``--crop auto`` finds it once, from the brightest value of each pixel over the first frames (so
a dark lumen or a dark first frame does not cut it short), as the convex hull of the largest
bright region; the network and the encoder then see only its bounding box, and every output
pixel outside the (upscaled) hull is set to exactly 0, so no ringing halo leaks into the black.
``--crop X,Y,W,H`` crops a fixed box without a mask.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from metasr.core.errors import InputError
from metasr.video.sources import CaptureWrapper

__all__ = ["AUTO", "CropRegion", "CroppedCapture", "detect_field_of_view", "parse_crop"]

AUTO = "auto"
#: Frames looked at by ``--crop auto`` (the brightest value per pixel over them).
DETECT_FRAMES = 8
#: Grey level (0-255) above which a pixel belongs to the field of view; scope borders are 0-10.
BLACK_LEVEL = 24
#: A field of view covering more of the frame than this leaves nothing worth cropping.
MAX_COVER = 0.98


@dataclass(frozen=True)
class CropRegion:
    """A box of the source frame, and optionally the field of view inside it.

    Attributes:
        x, y, width, height: The box, in source pixels.
        mask: ``uint8 [height, width]``, 255 inside the field of view, 0 outside; ``None``: the whole box.
    """

    x: int
    y: int
    width: int
    height: int
    mask: np.ndarray | None = None

    def crop(self, frame: np.ndarray) -> np.ndarray:
        """The box of ``frame`` (contiguous), zero outside the mask."""
        box = np.ascontiguousarray(frame[self.y : self.y + self.height, self.x : self.x + self.width])
        if self.mask is not None:
            box = cv2.bitwise_and(box, box, mask=self.mask)
        return box

    def describe(self) -> str:
        shape = "field of view masked" if self.mask is not None else "no mask"
        return f"{self.width}x{self.height}+{self.x}+{self.y} ({shape})"


def parse_crop(text: str | None) -> CropRegion | str | None:
    """``None``, ``"auto"`` or a :class:`CropRegion` from ``X,Y,W,H``.

    Raises:
        InputError: for anything else (negative numbers, a zero size).
    """
    if text is None:
        return None
    if text.strip().lower() == AUTO:
        return AUTO
    parts = text.split(",")
    try:
        x, y, w, h = (int(p) for p in parts)
    except ValueError:
        raise InputError(f"--crop must be 'auto' or X,Y,W,H in pixels (e.g. 120,0,720,576), got {text!r}") from None
    if x < 0 or y < 0 or w < 2 or h < 2:
        raise InputError(f"--crop X,Y,W,H needs X, Y >= 0 and W, H >= 2, got {text!r}")
    return CropRegion(x, y, w, h)


def _grey(frame: np.ndarray) -> np.ndarray:
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)
    if frame.ndim == 3:
        return cv2.cvtColor(np.ascontiguousarray(frame[:, :, :3]), cv2.COLOR_BGR2GRAY)
    return frame


def detect_field_of_view(frames: list[np.ndarray], black_level: int = BLACK_LEVEL) -> CropRegion | None:
    """The field of view of ``frames`` (of one size), or ``None`` when there is no black border to crop.

    The brightest value of each pixel over the frames, thresholded at ``black_level`` and opened
    (3x3) against noise; the convex hull of the largest region is the mask, its bounding box the crop.
    """
    if not frames:
        return None
    brightest = _grey(frames[0])
    for f in frames[1:]:
        if f.shape[:2] == brightest.shape:
            brightest = np.maximum(brightest, _grey(f))
    # A vertical closing joins the lines of an interlaced (combed) edge; an opening then removes specks
    # of noise and keeps the convex outline to the pixel (a median would erode it).
    fov = cv2.morphologyEx((brightest > black_level).astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 1), np.uint8))
    fov = cv2.morphologyEx(fov, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(fov, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    hull = cv2.convexHull(max(contours, key=cv2.contourArea))
    h, w = brightest.shape
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [hull], 255)
    if cv2.countNonZero(mask) > MAX_COVER * h * w:
        return None
    x, y, bw, bh = cv2.boundingRect(hull)
    if bw < 2 or bh < 2:
        return None
    return CropRegion(x, y, bw, bh, np.ascontiguousarray(mask[y : y + bh, x : x + bw]))


class CroppedCapture(CaptureWrapper):
    """A capture (``read``/``get``/``release``) whose frames are cropped to a region, found once for ``auto``.

    For ``auto``, the first read takes up to :data:`DETECT_FRAMES` frames, finds the field of
    view, and then hands those frames out (cropped) before reading on: one region for the clip.

    Attributes:
        region: The region in use (``None`` before the first read in ``auto`` mode, or when
            ``auto`` found no border: frames then pass unchanged).
    """

    def __init__(self, capture: Any, crop: CropRegion | str) -> None:
        super().__init__(capture)
        self.auto = crop == AUTO
        self.region: CropRegion | None = None if self.auto else crop  # type: ignore[assignment]
        self._pending: deque[tuple[bool, Any]] | None = None
        self._output_masks: dict[tuple[int, int], np.ndarray] = {}

    def _detect(self) -> None:
        self._pending = deque()
        while len(self._pending) < DETECT_FRAMES:
            item = self.capture.read()
            self._pending.append(item)
            if not item[0]:
                break
        frames = [f for ok, f in self._pending if ok and isinstance(f, np.ndarray) and f.ndim in (2, 3)]
        frames = [f for f in frames if f.shape[:2] == frames[0].shape[:2]]
        self.region = detect_field_of_view(frames)

    def read(self) -> tuple[bool, Any]:
        if self.auto and self._pending is None:
            self._detect()
        ok, frame = self._pending.popleft() if self._pending else self.capture.read()
        if ok and self.region is not None and isinstance(frame, np.ndarray) and frame.ndim in (2, 3):
            r = self.region
            if frame.shape[0] < r.y + r.height or frame.shape[1] < r.x + r.width:
                raise InputError(
                    f"--crop {r.width}x{r.height}+{r.x}+{r.y} reaches outside the {frame.shape[1]}x{frame.shape[0]} "
                    "frame; give a box inside it"
                )
            frame = r.crop(frame)
        return ok, frame

    def output_mask(self, height: int, width: int) -> np.ndarray | None:
        """The mask on an output frame of ``height x width`` (255 inside), or ``None`` when there is none."""
        if self.region is None or self.region.mask is None:
            return None
        key = (height, width)
        if key not in self._output_masks:
            big = cv2.resize(self.region.mask, (width, height), interpolation=cv2.INTER_LINEAR)
            self._output_masks[key] = np.where(big >= 128, 255, 0).astype(np.uint8)
        return self._output_masks[key]

    def apply_output_mask(self, image: np.ndarray) -> np.ndarray:
        """``image`` with every pixel outside the field of view exactly 0."""
        mask = self.output_mask(*image.shape[:2])
        return image if mask is None else cv2.bitwise_and(image, image, mask=mask)

    def get(self, prop: int) -> float:
        value = super().get(prop)
        if self.region is not None and prop == cv2.CAP_PROP_FRAME_WIDTH:
            return float(self.region.width)
        if self.region is not None and prop == cv2.CAP_PROP_FRAME_HEIGHT:
            return float(self.region.height)
        return value
