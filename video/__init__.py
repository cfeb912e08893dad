"""metasr.video: pipelined super-resolution of video files, RTSP/HTTP streams and cameras.

Torch-free; depends on the runtime only through :class:`SupportsUpscale` (``metasr.runtime.Upscaler``
provides it). Library use::

    from metasr.runtime import Upscaler
    from metasr.video import VideoStream, open_source

    up = Upscaler()
    with VideoStream(open_source("endoscopy.avi"), up, "1.5", batch=2) as stream:
        for frame in stream:             # StreamFrame: .image uint8 BGR or gray, .luma float32
            consume(frame.image)
    print(stream.stats.snapshot())

:func:`run_stream` adds the file writer, an optional display window and a status callback; it is
what ``metasr-stream`` runs.
"""

from metasr.video.crop import CropRegion
from metasr.video.encoders import Codec
from metasr.video.pipeline import (
    EndReason,
    StreamFrame,
    StreamTerminated,
    SupportsUpscale,
    VideoStream,
    validate_scale,
)
from metasr.video.run import StreamSummary, run_stream
from metasr.video.sources import DEFAULT_FPS, SourceKind, VideoSource, open_source
from metasr.video.stats import StreamStats
from metasr.video.writer import CODECS_BY_EXTENSION, VideoFileWriter

__all__ = [
    "CODECS_BY_EXTENSION",
    "Codec",
    "CropRegion",
    "DEFAULT_FPS",
    "EndReason",
    "SourceKind",
    "StreamFrame",
    "StreamStats",
    "StreamSummary",
    "StreamTerminated",
    "SupportsUpscale",
    "VideoFileWriter",
    "VideoSource",
    "VideoStream",
    "open_source",
    "run_stream",
    "validate_scale",
]
