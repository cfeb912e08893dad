"""Keep native libraries' messages (FFmpeg, OpenCV, codecs) off the user's stderr.

FFmpeg and OpenCV write warnings straight to file descriptor 2 ("Failed to write frame",
"overread", codec chatter), around Python's ``sys.stderr``. :func:`native_stderr_captured`
points descriptor 2 at a pipe for the duration of a command and keeps the last lines (for
``--verbose``); Python's own ``sys.stderr`` keeps writing to the real stderr.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
from collections import deque
from collections.abc import Iterator

__all__ = ["NativeMessages", "native_stderr_captured"]


class NativeMessages:
    """The native messages seen while captured: a count and the last few lines."""

    def __init__(self, keep: int = 20) -> None:
        self.count = 0
        self.last: deque[str] = deque(maxlen=keep)

    def _feed(self, chunk: bytes, partial: bytes) -> bytes:
        data = partial + chunk
        *lines, rest = data.split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace").strip()
            if text:
                self.count += 1
                self.last.append(text)
        return rest[-4096:]


def _drain(fd: int, messages: NativeMessages) -> None:
    partial = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        partial = messages._feed(chunk, partial)
    messages._feed(b"\n", partial)
    os.close(fd)


def _stderr_is_fd2() -> bool:
    try:
        return sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[NativeMessages]:
    """Capture what native code writes to descriptor 2; yield the :class:`NativeMessages` seen.

    Python's ``sys.stderr`` is re-pointed at the real stderr meanwhile when it writes to
    descriptor 2, so the command's own messages still reach the user.
    """
    messages = NativeMessages()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no descriptor 2 to protect
        yield messages
        return
    read_fd, write_fd = os.pipe()
    reader = threading.Thread(target=_drain, args=(read_fd, messages), name="metasr-native-stderr", daemon=True)
    reader.start()
    old_stderr = sys.stderr
    replaced = _stderr_is_fd2()
    if replaced:
        sys.stderr = open(  # noqa: SIM115 - closed below
            os.dup(saved), "w", encoding=getattr(old_stderr, "encoding", None) or "utf-8", errors="backslashreplace",
            buffering=1,
        )  # fmt: skip
    os.dup2(write_fd, 2)
    os.close(write_fd)
    try:
        yield messages
    finally:
        if replaced:
            sys.stderr.flush()
            sys.stderr.close()
            sys.stderr = old_stderr
        os.dup2(saved, 2)
        os.close(saved)
        reader.join(timeout=2.0)
