"""What OpenCV's capture does not say about a file (pixel format, audio), and the audio copy, through PyAV.

OpenCV decodes the video; it neither reports the source's pixel format (a 16-bit grey FFV1 file
arrives as 8-bit BGR unless asked) nor reads audio. PyAV opens the same file once to tell, and
remuxes the finished video with the source's audio packets: copied, never re-encoded, cut to the
clip and shifted so that the clip's first frame and its sound start together.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from metasr.core.errors import OutputError

__all__ = ["MediaInfo", "copy_audio", "probe_media"]

#: Pixel formats OpenCV delivers as they are (``CAP_PROP_CONVERT_RGB`` off): one grey plane.
RAW_GREY_FORMATS = ("gray", "gray16le")


@dataclass(frozen=True)
class MediaInfo:
    """A file's first video stream and its audio streams, as FFmpeg sees them.

    Attributes:
        pix_fmt: Pixel format of the first video stream (``"yuv420p"``, ``"gray16le"``), or ``None``.
        video_start_s: Timestamp of the first video frame (seconds); the audio is aligned to it.
        audio: Codec names of the audio streams (``["aac"]``).
    """

    pix_fmt: str | None
    video_start_s: float = 0.0
    audio: list[str] = field(default_factory=list)

    @property
    def raw_grey(self) -> bool:
        """Whether the video is one grey plane (8 or 16 bits) that OpenCV can hand over unconverted."""
        return self.pix_fmt in RAW_GREY_FORMATS


def _av() -> Any | None:
    try:
        import av
    except ImportError:
        return None
    return av


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    return None if value is None or time_base is None else float(value * time_base)


def probe_media(path: str | os.PathLike[str]) -> MediaInfo | None:
    """Probe ``path`` with PyAV; ``None`` when PyAV is absent or FFmpeg cannot open it (OpenCV then decides)."""
    av = _av()
    if av is None:
        return None
    try:
        with av.open(os.fspath(path)) as container:
            video = container.streams.video[0] if container.streams.video else None
            pix_fmt = video.codec_context.pix_fmt if video is not None else None
            start = _seconds(video.start_time, video.time_base) if video is not None else None
            audio = [s.codec_context.name for s in container.streams.audio]
    except (av.FFmpegError, OSError, ValueError):
        return None
    return MediaInfo(pix_fmt, start or 0.0, audio)


def _packets(container: Any, streams: dict[Any, Any], window: tuple[float, float] | None) -> Iterator[tuple]:
    """(time in seconds, sequence, packet) of ``streams`` (input -> output), re-pointed; cut to ``window``."""
    for i, packet in enumerate(container.demux(*streams)):
        if packet.dts is None and packet.pts is None:
            continue  # the demuxer's flush packet
        # Decoding order (dts): with B-frames, presentation times are not monotonic.
        t = _seconds(packet.dts if packet.dts is not None else packet.pts, packet.time_base) or 0.0
        if window is not None:
            start, end = window
            if t < start - 1e-6 or t >= end:
                continue
            shift = int(round(start / packet.time_base))
            packet.pts = None if packet.pts is None else packet.pts - shift
            packet.dts = None if packet.dts is None else packet.dts - shift
            t -= start
        packet.stream = streams[packet.stream]
        yield t, i, packet


def copy_audio(video: Path, source: Path, dest: Path, *, start_s: float, duration_s: float) -> list[str]:
    """Write ``dest``: the video of ``video`` and the audio of ``source`` from ``start_s`` for ``duration_s``.

    Packets are copied (no re-encoding) and interleaved by time. ``start_s`` is on the source's
    clock (its first video frame's timestamp plus the clip's start); audio packets are kept from
    there (to the packet: about 21 ms for AAC) and shifted to start with the first frame. Returns
    the audio codecs copied; an empty list (and no ``dest``) when the source has no audio.

    Raises:
        OutputError: when the container of ``dest`` cannot hold the audio codec (e.g. PCM in
            .mp4) or FFmpeg fails; ``dest`` is deleted then.
    """
    import av

    codecs: list[str] = []
    try:
        with av.open(str(source)) as src, av.open(str(video)) as vid:
            codecs = [s.codec_context.name for s in src.streams.audio]
            if not codecs:
                return []
            with av.open(str(dest), "w") as out:
                video_map = {vid.streams.video[0]: out.add_stream_from_template(vid.streams.video[0])}
                audio_map = {a: out.add_stream_from_template(a) for a in src.streams.audio}
                merged = heapq.merge(
                    _packets(vid, video_map, None),
                    _packets(src, audio_map, (start_s, start_s + duration_s)),
                    key=lambda item: item[0],
                )
                for _t, _i, packet in merged:
                    out.mux(packet)
    except (av.FFmpegError, ValueError, OSError) as e:
        dest.unlink(missing_ok=True)
        raise OutputError(
            f"cannot copy the audio ({', '.join(codecs) or '?'}) into a {dest.suffix} file: {e}"
        ) from None
    return codecs
