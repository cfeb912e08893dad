"""Counters, throughput and latency of a running stream."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["StreamStats"]

#: Latencies kept for the percentiles (a bounded window: memory stays flat over long runs).
LATENCY_WINDOW = 100_000


@dataclass
class StreamStats:
    """Counters of a running stream (updated by its threads; read a consistent copy with :meth:`snapshot`)."""

    frames_in: int = 0  # frames read and queued for inference
    frames_out: int = 0  # frames super-resolved and delivered
    dropped: int = 0  # live sources: oldest waiting frames dropped because inference fell behind
    throttled: int = 0  # live sources: frames skipped to respect max_fps
    corrupt: int = 0  # empty/undecodable frames skipped
    read_failures: int = 0  # failed reads of a live source (before it recovered or was declared lost)
    size_changes: int = 0  # times the frame size changed mid-stream
    started_at: float = field(default_factory=time.perf_counter)
    first_out_at: float | None = None
    last_out_at: float | None = None
    _latencies: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW), repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def record_output(self, latency_s: float, now: float) -> None:
        with self._lock:
            self.frames_out += 1
            self._latencies.append(latency_s)
            if self.first_out_at is None:
                self.first_out_at = now
            self.last_out_at = now

    def snapshot(self) -> dict[str, Any]:
        """Counters, throughput and latency percentiles (milliseconds) as a plain dict."""
        with self._lock:
            lat = np.asarray(self._latencies, dtype=np.float64)
            end = self.last_out_at if self.last_out_at is not None else time.perf_counter()
            elapsed = max(end - self.started_at, 1e-9)
            out = {
                "frames_in": self.frames_in,
                "frames_out": self.frames_out,
                "dropped": self.dropped,
                "throttled": self.throttled,
                "corrupt": self.corrupt,
                "read_failures": self.read_failures,
                "size_changes": self.size_changes,
                "elapsed_s": round(elapsed, 4),
                "fps": round(self.frames_out / elapsed, 3),
            }
        if lat.size:
            out["latency_ms"] = {
                "p50": round(float(np.percentile(lat, 50)) * 1e3, 2),
                "p95": round(float(np.percentile(lat, 95)) * 1e3, 2),
                "p99": round(float(np.percentile(lat, 99)) * 1e3, 2),
                "max": round(float(lat.max()) * 1e3, 2),
            }
        else:
            out["latency_ms"] = {"p50": None, "p95": None, "p99": None, "max": None}
        return out
