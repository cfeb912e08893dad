"""A bounded queue between two pipeline threads that can drop its oldest item instead of blocking."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

__all__ = ["Channel", "ChannelClosed"]


class ChannelClosed(Exception):
    """The channel was closed while waiting."""


class Channel:
    """A bounded FIFO between two threads that can drop its oldest item instead of blocking."""

    def __init__(self, maxsize: int) -> None:
        self._items: deque[Any] = deque()
        self._maxsize = max(1, maxsize)
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item: Any, *, drop_oldest: bool = False) -> int:
        """Add ``item``; block while full, or drop the oldest item. Return how many were dropped."""
        with self._cond:
            dropped = 0
            while len(self._items) >= self._maxsize and not self._closed:
                if drop_oldest:
                    self._items.popleft()
                    dropped += 1
                else:
                    self._cond.wait(0.1)
            if self._closed:
                raise ChannelClosed
            self._items.append(item)
            self._cond.notify_all()
            return dropped

    def put_final(self, item: Any) -> None:
        """Add an end marker regardless of the bound (it must never be dropped or block)."""
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Any:
        """Next item; ``None`` after ``timeout`` seconds with nothing to get."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    raise ChannelClosed
                remaining = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def get_nowait(self) -> Any:
        with self._cond:
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
