"""Overlapping tiles whose results equal untiled processing.

An output pixel depends on the LR pixels within ``radius`` of its source pixel (the model's
receptive radius). A tile is a *core* rectangle of LR pixels plus a *halo* of ``radius`` pixels
of context on each side (clipped at the image border, where the network pads exactly as it does
untiled). A tile produces exactly the HR pixels whose source LR pixel lies in its core, found with
the exact index contract of :mod:`metasr.core.scale`:

    index[i] = (i * q) // p  lies in [y0, y1)   <=>   ceil(y0 * p / q) <= i < ceil(y1 * p / q)

so the cores partition the LR image and the HR ranges partition the output, with no seams.

:func:`plan_run` turns an image size, a scale and a memory budget into a :class:`Plan`: frames per
run, the tiles of each axis and, per tile, the upscale blocks with their index arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from metasr.core.scale import Scale, axis_mapping
from metasr.runtime.kernels import axis_classes

__all__ = [
    "AxisPlan",
    "Block",
    "Plan",
    "Span",
    "axis_plan",
    "hr_span",
    "hr_start",
    "plan_run",
    "split_axis",
    "tile_side_for_budget",
]


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


@dataclass(frozen=True)
class Block:
    """An upscale block along one axis: feature crop (relative to its tile's context) and arrays."""

    crop_start: int
    crop_stop: int
    index: np.ndarray  # LR source pixel, relative to the crop
    residue: np.ndarray  # offset class (i * q) % p
    classes: np.ndarray  # offset classes fed to kernels.onnx
    rank: np.ndarray  # rank of each HR pixel's class among ``classes``
    hr_start: int
    hr_stop: int


@dataclass(frozen=True)
class AxisPlan:
    tiles: tuple[Span, ...]
    blocks: tuple[tuple[Block, ...], ...]  # per tile (Meta-Upscale modes); empty for fixed-scale models


@dataclass(frozen=True)
class Plan:
    """How one image size runs at one scale.

    ``mode``: ``"kernels"`` (host dense products on sub-blocks of each tile), ``"classes"`` or
    ``"pixels"`` (one upscale graph run per tile, fed the whole tile's features) or ``"fixed"``.
    """

    group: int  # frames per run
    rows: AxisPlan
    cols: AxisPlan
    mode: str


def axis_plan(n: int, s: Scale, fe_core: int, up_core: int | None, radius: int, meta: bool = True) -> AxisPlan:
    """Tiles of an LR axis of length ``n`` and, for Meta-Upscale, their upscale blocks.

    With ``up_core`` each tile's core is split into blocks of at most ``up_core`` LR pixels that
    read the 3x3 neighbourhood of their own pixels; without it a tile is one block that reads the
    tile's whole context (what the upscale graphs are fed).
    """
    tiles = tuple(split_axis(n, fe_core, radius, s.value))
    if not meta:
        return AxisPlan(tiles, ())
    blocks = []
    for t in tiles:
        per_tile = []
        subs = split_axis(t.stop - t.start, up_core, 0, s.value) if up_core else [None]
        for sub in subs:
            b0, b1 = (t.start + sub.start, t.start + sub.stop) if sub else (t.start, t.stop)
            a, b = hr_span(b0, b1, n, s.value)
            if b <= a:
                continue
            m = axis_mapping(n, s.value, a, b)
            if sub is None:
                c0, c1 = t.ctx_start, t.ctx_stop
            else:  # outside the image the graph pads exactly as untiled
                c0, c1 = max(0, int(m.index[0]) - 1), min(n, int(m.index[-1]) + 2)
            classes, rank = axis_classes(m.residue, s.p)
            index = (m.index - c0).astype(np.int64)
            per_tile.append(Block(c0 - t.ctx_start, c1 - t.ctx_start, index, m.residue, classes, rank, a, b))
        blocks.append(tuple(per_tile))
    return AxisPlan(tiles, tuple(blocks))


def plan_run(
    s: Scale,
    shape: tuple[int, int, int],
    mode: str,
    *,
    budget_bytes: float,
    pixel_bytes: tuple[float, float],
    radius: int,
    tile_size: int | None = None,
    max_side: int | None = None,
    max_group: int | None = None,
) -> Plan:
    """The :class:`Plan` of ``shape`` (N, h, w) at ``s`` within ``budget_bytes`` of working memory.

    Args:
        s: The scale.
        shape: Frames and LR size.
        mode: ``"kernels"``, ``"classes"``, ``"pixels"`` or ``"fixed"`` (see :class:`Plan`).
        budget_bytes: Working memory of one run.
        pixel_bytes: Peak bytes per LR pixel of the feature extractor and of the upscale stage.
        radius: The model's receptive radius (tile halo).
        tile_size: Force the LR tile core side.
        max_side, max_group: Engine limits (TensorRT profiles), if any.
    """
    n, h, w = shape
    fe_px, up_px = pixel_bytes
    # The graph forms take a whole tile's features in one upscale run; the host products run on
    # sub-blocks, so the feature tile and the upscale blocks each get half the budget.
    per_frame = h * w * (max(fe_px, up_px) if mode == "kernels" else fe_px + up_px)
    group = int(max(1, min(n, budget_bytes // max(per_frame, 1.0))))
    if max_group is not None:
        group = min(group, max_group)
    if tile_size is not None:
        fe_core = tile_size
    elif per_frame <= budget_bytes:
        fe_core = max(h, w)
    elif mode == "kernels":
        fe_core = tile_side_for_budget(budget_bytes / 2, fe_px, radius)
    else:
        fe_core = tile_side_for_budget(budget_bytes, fe_px + up_px, radius)
    if max_side is not None:
        fe_core = min(fe_core, max_side - 2 * radius)
    up_core = min(tile_side_for_budget(budget_bytes / 2, up_px, 1), fe_core) if mode == "kernels" else None
    meta = mode != "fixed"
    rows = axis_plan(h, s, fe_core, up_core, radius, meta)
    cols = axis_plan(w, s, fe_core, up_core, radius, meta)
    return Plan(group, rows, cols, mode)
