"""The class kernels of a scale: feeds of the export's upscale graphs and the CPU's dense products.

At a scale ``p/q`` every HR pixel uses one of ``p * p`` predicted 3x3 kernels, picked by its row
and column offset class (``residue = (i * q) % p``). The export's ``kernels.onnx`` computes them
once per scale (:func:`kernel_feeds`); this module

* builds the index inputs of the upscale graphs (:func:`upscale_inputs`): LR source pixel and
  kernel number of every HR row and column (kernel of pixel ``(i, j)`` = ``row_kernel[i] +
  col_kernel[j]``, i.e. ``residue_r * p + residue_c``);
* picks the graph form per scale (:func:`choose_form`): ``classes`` (one MatMul of all kernels,
  ``9C * q*q`` multiply-adds and ``q*q`` floats per HR pixel) while ``q`` is small, ``pixels``
  (one dot product per HR pixel, ``9C`` multiply-adds, ``2 * 9C`` floats) beyond;
* applies the kernels on the CPU with dense matrix products (:func:`apply_kernels`): for each row
  class, the LR rows it reads are gathered (three padded rows stacked on the channel axis) and
  multiplied by that class's kernels for all column classes at once. That is ``9C * q`` multiply-
  adds per HR pixel in BLAS: on a CPU slower than the ``classes`` graph while ``q`` is small, but
  far faster than either graph form for ``q`` of 6 to 10 with few classes (x3.7, x1.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from metasr.core.scale import Scale

__all__ = [
    "FORMS",
    "MAX_CLASSES",
    "MAX_CACHED_CLASSES",
    "MAX_CLASS_DENOMINATOR",
    "axis_classes",
    "Kernels",
    "apply_kernels",
    "choose_form",
    "kernel_feeds",
    "upscale_inputs",
]

#: Graph of each upscale form, by manifest graph name.
FORMS = {"classes": "upscale", "pixels": "upscale_pixels"}
#: Largest numerator ``p`` the CPU's dense products handle; beyond it the ``pixels`` graph is cheaper.
MAX_CLASSES = 48
#: Largest denominator ``q`` run with the ``classes`` form: its MatMul does ``q*q`` times the
#: necessary work, which on an H200 stays below the ``pixels`` form's memory traffic up to about
#: ``q = 5`` (x1.8: 0.7 ms vs 2 ms at 960x540 fp32); bench/bench_gpu.py measures both per scale.
MAX_CLASS_DENOMINATOR = 5
#: Largest ``p`` whose ``p * p`` kernels are computed once per scale and cached (4096 x 9C floats).
MAX_CACHED_CLASSES = 64
_TAPS = 9


def axis_classes(residue: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Offset classes of one axis and each HR pixel's rank among them.

    For ``p <= MAX_CACHED_CLASSES`` these are all ``p`` classes (the kernels are then the same for
    every image at this scale and are cached); beyond, only the residues present (at most one per
    HR pixel), so the kernels of x2.333 (p = 2333) never number p*p.

    Returns:
        ``(classes, rank)``: int64 residues fed to ``kernels.onnx``, int64 rank of every pixel.
    """
    if p <= MAX_CACHED_CLASSES:
        return np.arange(p, dtype=np.int64), residue.astype(np.int64)
    classes, rank = np.unique(residue, return_inverse=True)
    return classes.astype(np.int64), rank.astype(np.int64).reshape(-1)


def kernel_feeds(scale: Scale, row_classes: np.ndarray, col_classes: np.ndarray) -> dict[str, np.ndarray]:
    """Inputs of ``kernels.onnx``: offsets ``residue / p`` of the classes (float64 division then
    float32, exactly as :func:`metasr.core.scale.axis_mapping`)."""
    p = scale.p
    return {
        "inv_scale": np.array([scale.inv], np.float32),
        "row_offset": (row_classes / p).astype(np.float32),
        "col_offset": (col_classes / p).astype(np.float32),
    }


def choose_form(scale: Scale | Fraction) -> str:
    """The upscale graph form for ``scale``: ``classes`` while ``q <= MAX_CLASS_DENOMINATOR``, else ``pixels``."""
    q = scale.q if isinstance(scale, Scale) else scale.denominator
    return "classes" if q <= MAX_CLASS_DENOMINATOR else "pixels"


def upscale_inputs(
    index: np.ndarray, rank: np.ndarray, col_classes: int, axis: str, start: int = 0
) -> dict[str, np.ndarray]:
    """``<axis>_index`` (LR source pixel minus ``start``) and ``<axis>_kernel`` of one axis.

    Args:
        index: LR source pixel of each HR pixel of the axis.
        rank: Class rank of each HR pixel (:func:`axis_classes`).
        col_classes: Number of column classes fed to ``kernels.onnx`` (row ranks are scaled by it).
        axis: ``"row"`` or ``"col"``.
        start: First LR pixel of the features fed to the graph (a tile's context start).
    """
    kernel = rank * col_classes if axis == "row" else rank
    return {f"{axis}_index": (index - start).astype(np.int64), f"{axis}_kernel": kernel.astype(np.int64)}


@dataclass(frozen=True)
class Kernels:
    """The ``p * p`` kernels of one scale, as ``kernels.onnx`` returns them.

    Attributes:
        matrix: float32 ``[p*p, 9*C]``; row ``a*p + b`` is row class ``a``, column class ``b``;
            column ``(dy*3 + dx)*C + c``.
        mean: The output bias (the model's normalisation mean).
    """

    matrix: np.ndarray
    mean: float
    _stacked: list = field(default_factory=list, repr=False, compare=False)

    @property
    def classes(self) -> int:
        return int(round(self.matrix.shape[0] ** 0.5))

    @property
    def channels(self) -> int:
        return self.matrix.shape[1] // _TAPS

    @property
    def nbytes(self) -> int:
        return int(self.matrix.nbytes + sum(a.nbytes for a in self._stacked))

    def stacked(self) -> np.ndarray:
        """float32 ``[p, 3*C, 3*p]`` for :func:`apply_kernels`: for row class ``a``, row ``dy*C + c``
        and column ``dx*p + b`` weigh channel ``c`` at tap ``(dy, dx)`` for column class ``b``."""
        if not self._stacked:  # computed once; a benign race only computes it twice
            p, c = self.classes, self.channels
            grid = self.matrix.reshape(p, p, 3, 3, c)  # [a, b, dy, dx, c]
            self._stacked.append(np.ascontiguousarray(grid.transpose(0, 2, 4, 3, 1).reshape(p, 3 * c, 3 * p)))
        return self._stacked[0]


def apply_kernels(
    kernels: Kernels,
    features: np.ndarray,
    row_index: np.ndarray,
    row_residue: np.ndarray,
    col_index: np.ndarray,
    col_residue: np.ndarray,
) -> np.ndarray:
    """The upscale graphs' output for these features and index/residue arrays, on the CPU.

    Args:
        kernels: The scale's kernels (``p`` classes per axis).
        features: float32 ``[N, C, h, w]`` (zero-padded by one pixel, as the graphs do).
        row_index, col_index: LR source pixel of each HR row/column, in ``features`` coordinates.
        row_residue, col_residue: Offset class ``(i * q) % p`` of each HR row/column.

    Returns:
        float32 ``[N, H, W]`` (not clipped).
    """
    n, c, h, w = features.shape
    p = kernels.classes
    weights = kernels.stacked()
    out = np.empty((n, len(row_index), len(col_index)), np.float32)
    classes = [(a, np.flatnonzero(row_residue == a)) for a in range(p)]
    for f in range(n):
        padded = np.zeros((h + 2, w + 2, c), np.float32)
        padded[1:-1, 1:-1] = features[f].transpose(1, 2, 0)
        # row y of `stacked` holds padded rows y, y+1, y+2 (LR rows y-1..y+1) side by side on channels
        stacked = np.concatenate([padded[0:h], padded[1 : h + 1], padded[2 : h + 2]], axis=2)  # [h, w+2, 3C]
        for a, rows in classes:
            if rows.size == 0:
                continue
            gathered = stacked[row_index[rows]]  # [m, w+2, 3C]
            y = (gathered.reshape(-1, 3 * c) @ weights[a]).reshape(rows.size, w + 2, 3, p)
            t = y[:, 0:w, 0] + y[:, 1 : w + 1, 1] + y[:, 2 : w + 2, 2]  # [m, w, p]: all column classes
            out[f, rows] = t[:, col_index, col_residue] + np.float32(kernels.mean)
    return out
