"""Colour handling: the luminance goes through the model, the chroma is resampled on its grid."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import cv2
import numpy as np

from metasr.core.resample import resize_on_grid

__all__ = ["compose_frame", "resample_chroma", "split_frame"]


def split_frame(frame: Any) -> tuple[np.ndarray, np.ndarray | None] | None:
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
    if _is_gray(frame):
        return frame[:, :, 0].astype(np.float32) * np.float32(1 / 255), None
    # cv2.split/merge copy planes several times faster than numpy's strided slicing.
    y, cr, cb = cv2.split(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_BGR2YCrCb))
    return y.astype(np.float32) * np.float32(1 / 255), cv2.merge([cr, cb])


def _is_gray(frame: np.ndarray) -> bool:
    """Whether the three channels of ``frame`` are equal (a sparse sample first: colour frames fail fast)."""
    sample = frame[::16, ::16]
    if not (np.array_equal(sample[:, :, 0], sample[:, :, 1]) and np.array_equal(sample[:, :, 1], sample[:, :, 2])):
        return False
    return np.array_equal(frame[:, :, 0], frame[:, :, 1]) and np.array_equal(frame[:, :, 1], frame[:, :, 2])


def compose_frame(sr_luma: np.ndarray, chroma: np.ndarray | None, scale: Fraction, *, deep: bool = False) -> np.ndarray:
    """uint8 output frame: quantised SR luminance, plus chroma resampled on the luma's grid for colour.

    ``deep``: a 16-bit grey source; its frame is quantised to uint16 (0-65535) instead.
    """
    if deep and chroma is None:
        return cv2.multiply(np.ascontiguousarray(sr_luma), 65535.0, dtype=cv2.CV_16U)
    # x 255, rounded, saturated to 0..255 in one OpenCV pass (several times faster than numpy's).
    y = cv2.multiply(np.ascontiguousarray(sr_luma), 255.0, dtype=cv2.CV_8U)
    if chroma is None:
        return y
    h, w = y.shape
    cr, cb = cv2.split(resample_chroma(chroma, h, w, scale))
    return cv2.cvtColor(cv2.merge([y, cr, cb]), cv2.COLOR_YCrCb2BGR)


def resample_chroma(chroma: np.ndarray, height: int, width: int, scale: Fraction) -> np.ndarray:
    """Chroma resampled bicubically on the network's grid (output pixel ``i`` at input ``(i + 0.5)/r - 0.5``)."""
    return resize_on_grid(chroma, height, width, scale)
