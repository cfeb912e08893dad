"""Capturing what native libraries print straight to file descriptors 1 and 2.

ONNX Runtime's loader, libpng (``libpng error: PNG input buffer is incomplete``), libtiff and
FFmpeg write to the process's stdout/stderr behind Python's back, so their text would come before
(or instead of) a command's one-line error. Every call that can make them talk runs inside
:func:`quiet_native_output`; what they said is kept for a message or a note.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

__all__ = ["quiet_native_output"]

# ORT's logger and the Python-level fallback both write straight to fds 1/2 or sys.stdout; the
# redirection below is process-wide, so one thread at a time.
_QUIET_LOCK = threading.Lock()


@contextlib.contextmanager
def quiet_native_output() -> Iterator[io.StringIO]:
    """Capture everything written to stdout/stderr (Python objects and fds 1/2) inside the block.

    Yields a buffer that holds the captured text once the block exits, so a caller can quote the
    relevant line in an error message.
    """
    captured = io.StringIO()
    with _QUIET_LOCK, tempfile.TemporaryFile(mode="w+b") as sink:
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            with contextlib.suppress(Exception):
                stream.flush()
        saved = []
        for fd in (1, 2):
            try:
                saved.append((fd, os.dup(fd)))
                os.dup2(sink.fileno(), fd)
            except OSError:
                pass  # no such fd (embedded interpreters): nothing to silence
        try:
            with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
                yield captured
        finally:
            for stream in (sys.__stdout__, sys.__stderr__):
                with contextlib.suppress(Exception):
                    stream.flush()
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            captured.write(sink.read().decode("utf-8", "replace"))
