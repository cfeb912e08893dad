"""What the Triton model does with a list of requests, without Triton (testable on its own).

Triton's Python backend hands ``execute`` a list of requests (several when the dynamic batcher
merged them). :class:`RequestHandler` checks each one on its own (a bad request gets its own
error and never fails its neighbours), groups the good ones by (scale, image size), runs each
group as one batch through one :class:`~metasr.runtime.Upscaler` call, and splits the results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from metasr.core.errors import InputError, MetaSRError, ScaleError
from metasr.core.scale import Scale, parse_scale_exact
from metasr.runtime.upscaler import check_image
from metasr.serve.protocol import MAX_INPUT_SIDE, MAX_OUTPUT_PIXELS

__all__ = ["RequestHandler", "check_request"]


def _scale_text(value: Any) -> str:
    """The one scale text of a request's ``[N, 1]`` BYTES tensor (all rows must agree)."""
    texts = np.asarray(value, dtype=object).reshape(-1)
    if texts.size == 0:
        raise InputError("the scale tensor is empty; send the scale as text, e.g. '1.8', once per image")
    decoded = set()
    for t in texts:
        raw = bytes(t) if isinstance(t, (bytes, bytearray, np.bytes_)) else str(t).encode()
        if len(raw) > 64:
            raise InputError(f"scale text of {len(raw)} bytes is too long; send a number such as 1.8 or 7/3")
        try:
            decoded.add(raw.decode("ascii"))
        except UnicodeDecodeError:
            raise InputError("scale text is not ASCII; send a number such as 1.8 or 7/3") from None
    if len(decoded) != 1:
        raise InputError(f"a request has one scale, got {sorted(decoded)}; send other scales as separate requests")
    return decoded.pop()


def check_request(image: Any, scale: Any) -> tuple[np.ndarray, Scale]:
    """Validate one request; returns the float32 ``[N, h, w]`` batch and the exact scale.

    Sizes are checked before the pixels are read and before any output is allocated.

    Raises:
        InputError: wrong dtype, rank or size, non-finite or out-of-range pixels, bad scale text.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.float32:
        found = getattr(image, "dtype", type(image).__name__)
        raise InputError(f"image must be FP32 [N, h, w] with values in [0, 1], got {found}")
    if image.ndim != 3:
        raise InputError(f"image must be [N, h, w] (a batch of same-size images), got shape {list(image.shape)}")
    text = _scale_text(scale)
    s = Scale(parse_scale_exact(text))
    if not 1 <= s.value <= 8:
        raise ScaleError(f"scale must be between 1 and 8, got {text.strip()}")
    n, h, w = image.shape
    if max(h, w) > MAX_INPUT_SIDE:
        raise InputError(f"image of {w}x{h} pixels is larger than {MAX_INPUT_SIDE} per side; crop or tile it first")
    big_h, big_w = s.output_size(h, w)
    if n * big_h * big_w > MAX_OUTPUT_PIXELS:
        raise InputError(
            f"the output would be {n}x{big_w}x{big_h} pixels, more than {MAX_OUTPUT_PIXELS} in one request; "
            f"send fewer or smaller images"
        )
    return check_image(image), s


@dataclass
class RequestHandler:
    """Serve requests with one upscaler (an :class:`~metasr.runtime.Upscaler` per model instance).

    Args:
        upscaler: What runs the pixels (``upscale(batch, scale)``).
    """

    upscaler: Any

    def handle(self, requests: Sequence[tuple[Any, Any]]) -> list[np.ndarray | MetaSRError]:
        """``(image, scale)`` per request -> the SR batch, or the error, per request (same order)."""
        results: list[np.ndarray | MetaSRError | None] = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, np.ndarray]]] = {}
        for i, (image, scale) in enumerate(requests):
            try:
                batch, s = check_request(image, scale)
            except MetaSRError as e:
                results[i] = e
                continue
            groups.setdefault((s.value, batch.shape[1:]), []).append((i, batch))
        for (value, _size), members in groups.items():
            try:
                batch = members[0][1] if len(members) == 1 else np.concatenate([b for _, b in members])
                sr = self.upscaler.upscale(batch, value)
            except Exception as e:  # noqa: BLE001 - a failed batch answers its requests; the server lives on
                error = e if isinstance(e, MetaSRError) else MetaSRError(f"inference failed: {type(e).__name__}: {e}")
                for i, _ in members:
                    results[i] = error
                continue
            start = 0
            for i, b in members:
                results[i] = sr[start : start + len(b)]
                start += len(b)
        return results  # type: ignore[return-value]
