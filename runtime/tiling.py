"""Overlapping tiles whose results equal untiled processing.

An output pixel depends on the LR pixels within ``radius`` of its source pixel (the model's
receptive radius). A tile is a *core* rectangle of LR pixels plus a *halo* of ``radius`` pixels
of context on each side (clipped at the image border, where the network pads exactly as it does
untiled). A tile produces exactly the HR pixels whose source LR pixel lies in its core, found with
the exact index contract of :mod:`metasr.core.scale`:

    index[i] = (i * q) // p  lies in [y0, y1)   <=>   ceil(y0 * p / q) <= i < ceil(y1 * p / q)

so the cores partition the LR image and the HR ranges partition the output, with no seams.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

__all__ = ["Span", "hr_span", "hr_start", "split_axis", "tile_side_for_budget"]


@dataclass(frozen=True)
class Span:
    """One tile along one axis: LR core ``[start, stop)`` read with context ``[ctx_start, ctx_stop)``,
    producing HR pixels ``[hr_start, hr_stop)``."""

    start: int
    stop: int
    ctx_start: int
    ctx_stop: int
    hr_start: int
    hr_stop: int

    @property
    def hr_size(self) -> int:
        return self.hr_stop - self.hr_start


def hr_start(lr_pos: int, scale: Fraction) -> int:
    """First HR pixel whose source LR pixel is at or after ``lr_pos``: ``ceil(lr_pos * p / q)``."""
    p, q = scale.numerator, scale.denominator
    return -((-lr_pos * p) // q)


def hr_span(start: int, stop: int, n: int, scale: Fraction) -> tuple[int, int]:
    """HR pixels ``[a, b)`` whose source LR pixel lies in ``[start, stop)`` of an axis of length ``n``."""
    total = (n * scale.numerator) // scale.denominator
    return min(hr_start(start, scale), total), min(hr_start(stop, scale), total)


def split_axis(n: int, core: int, radius: int, scale: Fraction) -> list[Span]:
    """Split an LR axis of length ``n`` into cores of at most ``core`` pixels with ``radius`` of context.

    Cores that produce no HR pixel (possible near the end of an axis when ``floor`` drops the last
    partial pixel) are left out. Sizes are balanced so the last tile is not a sliver.
    """
    if n < 1 or core < 1 or radius < 0:
        raise ValueError(f"bad axis split: n={n}, core={core}, radius={radius}")
    count = -(-n // core)
    base, extra = divmod(n, count)
    spans = []
    start = 0
    for k in range(count):
        stop = start + base + (1 if k < extra else 0)
        a, b = hr_span(start, stop, n, scale)
        if b > a:
            spans.append(Span(start, stop, max(0, start - radius), min(n, stop + radius), a, b))
        start = stop
    return spans


def tile_side_for_budget(budget_bytes: float, bytes_per_pixel: float, radius: int, minimum: int = 16) -> int:
    """Largest square core side whose tile (core plus halo) fits ``budget_bytes``.

    Args:
        budget_bytes: Working memory allowed for one tile.
        bytes_per_pixel: Peak bytes per pixel of the tile, context included.
        radius: Halo on each side.
        minimum: Never go below this core side (tiny budgets still make progress).
    """
    side = int((budget_bytes / max(bytes_per_pixel, 1e-9)) ** 0.5) - 2 * radius
    return max(minimum, side)
