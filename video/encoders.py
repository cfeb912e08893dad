"""Encoders FFmpeg provides through PyAV: H.264 (plays anywhere), lossless H.264 and FFV1 (archives).

OpenCV stays the capture path; for output, OpenCV's writer offers only MPEG-4 Part 2 (mp4v) in
``.mp4`` on pip wheels, which browsers and many hospital players cannot play. PyAV bundles
FFmpeg with libx264, so H.264 is reachable wherever the ``av`` wheel installs.

Colour frames are converted to YUV 4:2:0 with OpenCV's BT.601 limited-range conversion
(rounded; FFmpeg's default swscale path truncates and shifts grey levels by about -0.5 before
the codec) and tagged BT.601 / limited range, so players convert them back with the same matrix.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from metasr.core.choices import ChoiceEnum
from metasr.core.errors import OutputError

__all__ = [
    "DEFAULT_CODEC_BY_EXTENSION",
    "H264_CRF",
    "Codec",
    "PyAVWriter",
    "check_container",
    "pyav_version",
    "to_8bit",
]

#: Constant rate factor of the default H.264: 18 is visually lossless for most content.
H264_CRF = 18
#: libx264 preset: fast enough for 1080p on a few cores, little bigger than "medium".
H264_PRESET = "veryfast"

_BT601_TAGS = {"colorspace": "smpte170m", "color_primaries": "smpte170m", "color_trc": "smpte170m"}


class Codec(ChoiceEnum):
    """Encoders run through PyAV (FFmpeg). A FOURCC (``MJPG``, ``mp4v``) selects OpenCV's writer instead."""

    H264 = "h264"
    H264_LOSSLESS = "h264-lossless"
    FFV1 = "ffv1"

    @classmethod
    def aliases(cls) -> dict[str, str]:
        return {"avc1": "h264", "avc": "h264", "x264": "h264", "libx264": "h264", "h264-qp0": "h264-lossless"}

    @classmethod
    def choice_name(cls) -> str:
        return "codec"

    @classmethod
    def lookup(cls, text: str | None) -> Codec | None:
        """The codec ``text`` names, or ``None`` for anything else (a FOURCC for OpenCV)."""
        if text is None:
            return None
        try:
            return cls(text)
        except ValueError:
            return None

    @property
    def containers(self) -> tuple[str, ...]:
        """File extensions whose container takes this codec."""
        return {
            Codec.H264: (".mp4", ".m4v", ".mov", ".mkv"),
            Codec.H264_LOSSLESS: (".mp4", ".mov", ".mkv"),
            Codec.FFV1: (".mkv", ".avi"),
        }[self]


#: What a container gets without ``--codec`` when PyAV is installed (others use OpenCV's chain).
DEFAULT_CODEC_BY_EXTENSION: dict[str, Codec] = {
    ".mp4": Codec.H264,
    ".m4v": Codec.H264,
    ".mov": Codec.H264,
    ".mkv": Codec.FFV1,
}


def _av() -> Any | None:
    try:
        import av
    except ImportError:
        return None
    return av


def pyav_version() -> str | None:
    """``"PyAV 18.1.0, FFmpeg 8.1.2"``, or ``None`` when PyAV is not installed."""
    av = _av()
    if av is None:
        return None
    ffmpeg = getattr(av, "ffmpeg_version_info", "?")
    return f"PyAV {av.__version__}, FFmpeg {ffmpeg}"


def check_container(path: Path, codec: Codec) -> None:
    """Refuse a container that cannot take ``codec``, or a missing PyAV.

    Raises:
        OutputError: naming the containers that work, or how to install PyAV.
    """
    suffix = path.suffix.lower()
    if suffix not in codec.containers:
        raise OutputError(
            f"cannot write {codec.value} into {suffix or '(no extension)'} ({path.name}); "
            f"use {' or '.join(codec.containers)}"
        )
    if _av() is None:
        raise OutputError(f"--codec {codec.value} needs PyAV (FFmpeg), which is not installed; run: pip install av")


def _rate(fps: float) -> Fraction:
    # 29.97 -> 30000/1001; whole rates stay whole.
    return Fraction(fps).limit_denominator(1001)


class PyAVWriter:
    """One video stream written by FFmpeg through PyAV.

    Args:
        path: The file to fill (container from the extension).
        codec: Which encoder.
        fps: Frame rate (constant; frame ``i`` has timestamp ``i / fps``).
        size: ``(height, width)``, even for H.264.
        layout: ``"bgr"``, ``"gray"`` or ``"gray16"``: what the frames are. FFV1 stores grey as
            grey (8 or 16 bits); H.264 stores grey in 4:2:0 with neutral chroma (B = G = R on
            decoding), 16-bit frames rounded to 8 bits; lossless H.264 stores BGR (RGB profile).

    Raises:
        OutputError: if FFmpeg cannot open the file or the encoder.
    """

    def __init__(self, path: Path, codec: Codec, fps: float, size: tuple[int, int], layout: str) -> None:
        import av

        self.path, self.codec, self.layout = Path(path), codec, layout
        self.height, self.width = size
        self._index = 0
        try:
            # Index first in MP4/MOV: playable while still downloading.
            faststart = self.path.suffix.lower() in (".mp4", ".m4v", ".mov")
            self._container = av.open(
                str(self.path), "w", container_options={"movflags": "+faststart"} if faststart else None
            )
        except (av.FFmpegError, OSError) as e:
            raise OutputError(f"cannot write {self.path}: {e}") from None
        try:
            self._stream = self._add_stream(fps)
            self._container.start_encoding()
        except (av.FFmpegError, ValueError) as e:
            self._container.close()
            raise OutputError(f"FFmpeg cannot write {codec.value} to {self.path.name}: {e}") from None
        self._frame_format = {"bgr": "bgr24", "gray": "gray", "gray16": "gray16le"}[self.layout]
        if self.pix_fmt == "yuv420p":
            self._frame_format = "yuv420p"
        elif self.pix_fmt == "bgr24" and self.layout != "bgr":
            self._frame_format = "bgr24"

    def _add_stream(self, fps: float) -> Any:
        options: dict[str, str]
        if self.codec is Codec.H264:
            name, pix_fmt = "libx264", "yuv420p"
            options = {"crf": str(H264_CRF), "preset": H264_PRESET, "color_range": "tv", **_BT601_TAGS}
        elif self.codec is Codec.H264_LOSSLESS:
            # Lossless: the preset only trades size for speed; ultrafast encodes 1080p 2.4x faster than veryfast.
            name, pix_fmt, options = "libx264rgb", "bgr24", {"qp": "0", "preset": "ultrafast"}
        else:
            name = "ffv1"
            pix_fmt = {"bgr": "bgr0", "gray": "gray", "gray16": "gray16le"}[self.layout]
            options = {"level": "3", "slicecrc": "1", "g": "1"}
        stream = self._container.add_stream(name, rate=_rate(fps), options=options)
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, pix_fmt
        self.pix_fmt = pix_fmt
        return stream

    def describe(self) -> str:
        """The encoder as the status line and the summary name it."""
        if self.codec is Codec.H264:
            detail = f"libx264 crf {H264_CRF} {H264_PRESET}, {self.pix_fmt}"
        elif self.codec is Codec.H264_LOSSLESS:
            detail = "libx264rgb qp 0 ultrafast, lossless"
        else:
            detail = f"lossless, {self.pix_fmt}"
        return f"{self.codec.value} ({detail}; PyAV/FFmpeg)"

    def _frame(self, image: np.ndarray) -> Any:
        import av

        if self._frame_format == "yuv420p":
            return av.VideoFrame.from_ndarray(_to_i420(image), format="yuv420p")
        if self._frame_format == "bgr24":
            if image.ndim == 2:
                image = cv2.cvtColor(to_8bit(image), cv2.COLOR_GRAY2BGR)
            return av.VideoFrame.from_ndarray(np.ascontiguousarray(to_8bit(image)), format="bgr24")
        if image.ndim == 3:  # a colour frame in a grey file (the source turned colour mid-way)
            image = cv2.cvtColor(to_8bit(image), cv2.COLOR_BGR2GRAY)
        if self._frame_format == "gray16le":
            image = image.astype(np.uint16) * 257 if image.dtype == np.uint8 else image
            return av.VideoFrame.from_ndarray(np.ascontiguousarray(image, dtype=np.uint16), format="gray16le")
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(to_8bit(image)), format="gray")

    def write(self, image: np.ndarray) -> None:
        """Encode one frame (``[H, W]`` grey, uint8 or uint16, or ``[H, W, 3]`` BGR) of the writer's size."""
        frame = self._frame(image)
        frame.pts = self._index
        self._index += 1
        self._mux(self._stream.encode(frame))

    def _mux(self, packets: Any) -> None:
        import av

        try:
            self._container.mux(packets)
        except (av.FFmpegError, OSError) as e:
            raise OutputError(f"writing {self.path} failed: {e}") from None

    def close(self) -> None:
        """Flush the encoder and finalise the file."""
        if self._container is None:
            return
        try:
            self._mux(self._stream.encode(None))
        finally:
            container, self._container = self._container, None
            container.close()

    def abort(self) -> None:
        if self._container is not None:
            container, self._container = self._container, None
            try:
                container.close()
            except Exception:  # noqa: BLE001 - the file is deleted anyway
                pass


_GRAY_TO_Y = np.round(16 + np.arange(256) * (219 / 255)).astype(np.uint8)


def to_8bit(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint16:  # rounded: 65535 -> 255, 32896 -> 128
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return image


def _to_i420(image: np.ndarray) -> np.ndarray:
    """BT.601 limited-range YUV 4:2:0 planes, stacked ``[3H/2, W]`` (rounded, as OpenCV converts)."""
    image = to_8bit(image)
    if image.ndim == 3:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2YUV_I420)
    h, w = image.shape
    planes = np.full((h * 3 // 2, w), 128, dtype=np.uint8)
    planes[:h] = cv2.LUT(image, _GRAY_TO_Y)
    return planes
