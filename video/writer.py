"""Video file output: H.264/FFV1 through PyAV or an OpenCV codec chain; atomic close and a read-back check."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from metasr.core.atomic import check_writable_folder
from metasr.core.errors import OutputError
from metasr.video.encoders import DEFAULT_CODEC_BY_EXTENSION, Codec, PyAVWriter, check_container, pyav_version, to_8bit
from metasr.video.media import copy_audio

__all__ = ["CODECS_BY_EXTENSION", "VideoFileWriter", "partial_path"]

#: FOURCC codes tried in order for each container when PyAV is absent (or for .avi); the first one
#: the installed OpenCV opens wins. With PyAV, .mp4/.m4v/.mov get H.264 and .mkv FFV1 instead.
CODECS_BY_EXTENSION: dict[str, tuple[str, ...]] = {
    ".mp4": ("mp4v", "avc1", "MJPG"),
    ".m4v": ("mp4v", "avc1"),
    ".mov": ("mp4v", "MJPG", "avc1"),
    ".avi": ("MJPG", "XVID", "FFV1", "mp4v"),
    ".mkv": ("FFV1", "MJPG", "mp4v", "XVID"),
}


def partial_path(path: str | os.PathLike[str]) -> Path:
    """The temporary file a :class:`VideoFileWriter` fills before moving it onto ``path``.

    Same folder and extension (FFmpeg picks the container from it), hidden, tagged with the pid.
    """
    path = Path(path)
    return path.parent / f".{path.stem}.partial-{os.getpid()}{path.suffix}"


class VideoFileWriter:
    """A video writer (PyAV/FFmpeg, or OpenCV with a codec fallback chain), checked before any frame is read.

    With PyAV installed, ``.mp4``/``.m4v``/``.mov`` get H.264 (``encoders.Codec.H264``) and ``.mkv``
    FFV1 (lossless); ``codec`` may name ``h264``, ``h264-lossless`` or ``ffv1``, or give a FOURCC
    for OpenCV's writer (``.avi`` uses OpenCV's MJPG chain by default). ``encoder`` says which ran.

    The constructor probes the codecs of the path's container until one opens (so an unwritable
    path or a missing codec fails up front); the real writer opens on the first frame, with that
    frame's size. Frames go to :func:`partial_path` beside ``path``; :meth:`close` reads the file
    back (it must hold every frame written: OpenCV's writers do not report a failed write, for
    example a full disk) and only then renames it into place. A failed check deletes it.

    OpenCV stores frames as 3-channel BGR (a grayscale frame with B = G = R). Through PyAV a
    stream whose first frame is grey is stored as grey: FFV1 ``gray`` (``gray16le`` for uint16
    frames), H.264 4:2:0 with neutral chroma; 16-bit frames are rounded to 8 bits elsewhere.

    OpenCV's FFmpeg writer stores even frame sizes only; an odd SR height or width loses its last
    row or column in the file (``cropped_to_even``). Frames of another size than the first (a
    source that changed resolution mid-stream) are resized to the file's size, bicubically, and
    counted in ``resized_frames``: a video file has one frame size.

    Args:
        path: Output file; its extension picks the container (.mp4, .avi, .mkv, .mov, .m4v).
        fps: Frame rate written into the file.
        frame_size: Expected ``(height, width)`` of the frames, if known, for the probe.
        codec: ``h264``, ``h264-lossless``, ``ffv1`` (PyAV), or a FOURCC for OpenCV's writer.

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
        self._tmp = partial_path(self.path)
        self._writer: Any = None
        self._pyav: PyAVWriter | None = None
        self.codec: str | None = None
        self.encoder: str | None = None  # what the status line and the summary name
        self.frame_size: tuple[int, int] | None = None  # (height, width) as stored
        self.frames_written = 0
        self.resized_frames = 0
        self.cropped_to_even = False
        self._audio_from: tuple[Path, float] | None = None
        self.audio: list[str] = []  # audio codecs copied from the source
        self.audio_warning: str | None = None
        probe_h, probe_w = frame_size if frame_size else (64, 64)
        probe = (max(2, probe_h - probe_h % 2), max(2, probe_w - probe_w % 2))
        named = Codec.lookup(chain[0]) if len(chain) == 1 else None
        if named is not None:
            self._codec = named
            self._open_pyav(probe, "bgr", probe=True)
            self._chain = chain
        else:
            self._codec = None
            self._chain = self._open_chain(chain, probe, probe=True)

    @property
    def partial(self) -> Path:
        """The temporary file being filled."""
        return self._tmp

    @staticmethod
    def check_path(path: str | os.PathLike[str], codec: str | None = None) -> tuple[str, ...]:
        """Check that ``path`` can take a video (the folder is probed by creating a file); return the codecs.

        Raises:
            OutputError: unknown container, a folder, a special file, a missing or read-only folder.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        named = Codec.lookup(codec)
        if codec is None and suffix in DEFAULT_CODEC_BY_EXTENSION and pyav_version() is not None:
            named = DEFAULT_CODEC_BY_EXTENSION[suffix]
        if named is not None:
            check_container(path, named)
            chain: tuple[str, ...] = (named.value,)
        elif codec is not None:
            if len(codec) != 4 or not codec.isascii() or not codec.isprintable():
                raise OutputError(
                    f"codec must be h264, h264-lossless, ffv1 or a 4-character FOURCC such as MJPG, got {codec!r}"
                )
            chain = (codec,)
        elif suffix in CODECS_BY_EXTENSION:
            chain = CODECS_BY_EXTENSION[suffix]
        else:
            raise OutputError(
                f"cannot write video {path}: unknown container {suffix or '(no extension)'}; "
                f"use one of {', '.join(sorted(CODECS_BY_EXTENSION))}"
            )
        if len(os.fsencode(path.name)) > 255:
            raise OutputError(f"output name {path.name[:40]}... is longer than 255 bytes; choose a shorter name")
        try:
            is_dir, exists, is_file = path.is_dir(), path.exists(), path.is_file()
        except OSError as e:
            raise OutputError(f"cannot write {path}: {e.strerror or e}; choose another output path") from None
        if is_dir:
            raise OutputError(f"output {path} is a folder; give a file name such as out.mp4")
        if exists and not is_file:
            raise OutputError(f"output {path} is not a regular file (a device, pipe or socket); choose a file name")
        try:
            check_writable_folder(path.parent if str(path.parent) else Path("."))
        except OutputError as e:
            raise OutputError(f"cannot write {path}: {e}") from None
        return chain

    def _open_chain(self, chain: tuple[str, ...], size: tuple[int, int], *, probe: bool) -> tuple[str, ...]:
        """Open the first codec of ``chain`` that works; return the chain from that codec on."""
        h, w = size
        for i, fourcc in enumerate(chain):
            writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*fourcc), self.fps, (w, h), True)
            if writer.isOpened():
                if probe:
                    writer.release()
                    self._tmp.unlink(missing_ok=True)
                else:
                    self._writer = writer
                self.codec = fourcc
                self.encoder = f"{fourcc} (OpenCV)"
                return chain[i:]
            writer.release()
        self._tmp.unlink(missing_ok=True)
        raise OutputError(
            f"cannot write video {self.path}: OpenCV could open none of the codecs {', '.join(chain)} "
            f"for {w}x{h} frames; try another container (.avi with MJPG is the most widely available)"
        )

    def copy_audio_from(self, source: str | os.PathLike[str], start_s: float = 0.0) -> None:
        """At :meth:`close`, copy the audio of ``source`` (packets, no re-encoding), from ``start_s`` on its clock.

        The audio is cut to the video's length (frames written / fps). A container that cannot
        hold the codec (PCM in .mp4) leaves the video without audio and sets ``audio_warning``.
        """
        self._audio_from = (Path(source), float(start_s))

    def _add_audio(self) -> None:
        if self._audio_from is None:
            return
        source, start_s = self._audio_from
        muxed = self._tmp.parent / f"{self._tmp.stem}-audio{self._tmp.suffix}"
        try:
            self.audio = copy_audio(
                self._tmp, source, muxed, start_s=start_s, duration_s=self.frames_written / self.fps
            )
        except OutputError as e:
            self.audio_warning = f"audio not copied ({e}); choose .mkv to keep it, or pass --no-audio"
            return
        if self.audio:
            os.replace(muxed, self._tmp)

    def _open_pyav(self, size: tuple[int, int], layout: str, *, probe: bool) -> None:
        assert self._codec is not None
        writer = PyAVWriter(self._tmp, self._codec, self.fps, size, layout)
        self.codec, self.encoder = self._codec.value, writer.describe()
        if probe:
            writer.abort()
            self._tmp.unlink(missing_ok=True)
        else:
            self._pyav = writer

    def write(self, image: np.ndarray) -> None:
        """Append one frame (``[H, W]`` gray, uint8 or uint16, or ``[H, W, 3]`` BGR uint8)."""
        if self._writer is None and self._pyav is None:
            h, w = image.shape[:2]
            eh, ew = h - h % 2, w - w % 2
            if eh < 2 or ew < 2:
                raise OutputError(f"cannot write {w}x{h} frames to a video file; the output must be at least 2x2")
            self.cropped_to_even = (eh, ew) != (h, w)
            if self._codec is not None:
                layout = "bgr" if image.ndim == 3 else ("gray16" if image.dtype == np.uint16 else "gray")
                self._open_pyav((eh, ew), layout, probe=False)
            else:
                self._open_chain(self._chain, (eh, ew), probe=False)
            self.frame_size = (eh, ew)
        eh, ew = self.frame_size or (0, 0)
        h, w = image.shape[:2]
        if (h - h % 2, w - w % 2) != (eh, ew):
            image = cv2.resize(image, (ew, eh), interpolation=cv2.INTER_CUBIC)
            self.resized_frames += 1
        elif (h, w) != (eh, ew):
            image = image[:eh, :ew]
        if self._pyav is not None:
            self._pyav.write(image)
            self.frames_written += 1
            return
        image = to_8bit(image)
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        self._writer.write(np.ascontiguousarray(image))
        self.frames_written += 1

    def frames_in_file(self) -> int:
        """Frames the partial file really holds (-1 if it cannot be opened).

        The frames are demuxed one by one (``grab``, no decoding): the container's own frame count
        is written at close into space already allocated, so on a full disk it can claim every
        frame while the data of most of them never reached the file.
        """
        cap = cv2.VideoCapture(str(self._tmp))
        try:
            if not cap.isOpened():
                return -1
            found = 0
            while found < self.frames_written and cap.grab():
                found += 1
            return found
        finally:
            cap.release()

    def close(self) -> bool:
        """Finalise the file, check it holds every frame, move it into place; return whether a file was written.

        With no frame written there is nothing playable, so no file is left behind.

        Raises:
            OutputError: if the file does not hold every frame written (disk full, a file size
                limit, a vanished folder) or cannot be moved into place; the partial file is deleted.
        """
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._pyav is not None:
            pyav, self._pyav = self._pyav, None
            try:
                pyav.close()
            except OutputError:
                self.abort()
                raise
        if not self.frames_written:
            self._tmp.unlink(missing_ok=True)
            return False
        found = self.frames_in_file() if self._tmp.exists() else -1
        if found < self.frames_written:
            held = "no readable video" if found < 0 else f"only {found} of {self.frames_written} frames"
            self.abort()
            raise OutputError(
                f"writing {self.path} failed: the file holds {held} (disk full or a file size limit?); "
                "the partial file was deleted; free space or choose another output folder"
            )
        try:
            self._add_audio()
            os.replace(self._tmp, self.path)
        except OSError as e:
            self.abort()
            raise OutputError(f"cannot move the finished video onto {self.path}: {e.strerror or e}") from None
        return True

    def abort(self) -> None:
        """Release the writer and delete the partial file."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._pyav is not None:
            self._pyav.abort()
            self._pyav = None
        self._tmp.unlink(missing_ok=True)
        self.frames_written = 0
