"""Video file output: an OpenCV writer with a codec fallback chain, atomic close and a read-back check."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from metasr.core.atomic import check_writable_folder
from metasr.core.errors import OutputError

__all__ = ["CODECS_BY_EXTENSION", "VideoFileWriter", "partial_path"]

#: FOURCC codes tried in order for each container; the first one the installed OpenCV opens wins.
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
    """An OpenCV video writer with a codec fallback chain, checked before any frame is read.

    The constructor probes the codecs of the path's container until one opens (so an unwritable
    path or a missing codec fails up front); the real writer opens on the first frame, with that
    frame's size. Frames go to :func:`partial_path` beside ``path``; :meth:`close` reads the file
    back (it must hold every frame written: OpenCV's writers do not report a failed write, for
    example a full disk) and only then renames it into place. A failed check deletes it.

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
        self._tmp = partial_path(self.path)
        self._writer: Any = None
        self.codec: str | None = None
        self.frame_size: tuple[int, int] | None = None  # (height, width) as stored
        self.frames_written = 0
        self.resized_frames = 0
        self.cropped_to_even = False
        probe_h, probe_w = frame_size if frame_size else (64, 64)
        self._chain = self._open_chain(chain, (max(2, probe_h), max(2, probe_w)), probe=True)

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
        if codec is not None:
            if len(codec) != 4 or not codec.isascii() or not codec.isprintable():
                raise OutputError(f"codec must be a 4-character FOURCC such as mp4v or MJPG, got {codec!r}")
            chain: tuple[str, ...] = (codec,)
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
            self._open_chain(self._chain, (eh, ew), probe=False)
            self.frame_size = (eh, ew)
        eh, ew = self.frame_size or (0, 0)
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
        self._tmp.unlink(missing_ok=True)
        self.frames_written = 0
