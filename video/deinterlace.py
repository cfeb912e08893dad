"""Deinterlacing for SD sources (interlaced PAL/NTSC endoscopy towers).

An interlaced frame holds two fields taken 1/50 s (1/60 s) apart on alternate lines; anything
moving shows as combs, which the network would sharpen. :func:`deinterlace` keeps the top field
and rebuilds the other's lines by averaging the lines above and below (a "bob" at the frame
rate): no combing, at the cost of half the vertical detail of still parts too; motion-adaptive
methods (yadif, bwdif) keep that detail and are not implemented here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from metasr.video.sources import CaptureWrapper

__all__ = ["DeinterlacedCapture", "deinterlace"]


def deinterlace(frame: np.ndarray) -> np.ndarray:
    """``frame`` (``[H, W]`` or ``[H, W, C]``, uint8 or uint16) with its odd lines rebuilt from the even ones."""
    h = frame.shape[0]
    if h < 3:
        return frame
    wide = np.uint32 if frame.dtype == np.uint16 else np.uint16
    out = frame.copy()
    above = frame[0 : h - 2 : 2]  # even line 2k, for odd line 2k + 1 that has an even line below
    below = frame[2:h:2]
    out[1 : 2 * len(below) : 2] = ((above.astype(wide) + below + 1) >> 1).astype(frame.dtype)
    if h % 2 == 0:  # the last odd line has no even line below it
        out[h - 1] = frame[h - 2]
    return out


class DeinterlacedCapture(CaptureWrapper):
    """A capture (``read``/``get``/``set``/``release``) whose frames are deinterlaced as they are read.

    Wrapped around the source itself, before any crop: the field order is the source's, and
    ``--crop auto`` looks at frames without combs.
    """

    def read(self) -> tuple[bool, Any]:
        ok, frame = self.capture.read()
        if ok and isinstance(frame, np.ndarray) and frame.ndim in (2, 3):
            frame = deinterlace(frame)
        return ok, frame
