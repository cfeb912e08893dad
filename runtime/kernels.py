"""Meta-Upscale by its predicted kernels: the same result as the upscale graph, far less work on CPU.

The Meta-Upscale output is linear in the features, with weights that depend only on the scale
and on the HR pixel's offsets: ``SR(i, j) = <K(off_r[i], off_c[j]), patch3x3(F)[index_r[i], index_c[j]]> + b``.
At a scale ``p/q`` an offset takes only ``p`` values (``residue / p``), so there are only ``p * p``
distinct kernels (4 at x2, 81 at x1.8) - the fact design.md points out. This module

1. *probes* the kernels once per scale through the export's own ``upscale.onnx``: it feeds
   one-hot 3x3 feature patches (plus a zero patch for the bias) with one HR pixel per offset class,
   so the kernels are whatever the exported graph computes, not a re-implementation of it;
2. *applies* them with dense matrix products: for each row class, the LR rows it reads are
   gathered (three padded rows stacked on the channel axis) and multiplied by that class's
   kernels for all column classes at once, then every HR pixel picks its column and class.

That is ``576 * q`` multiply-adds per HR pixel in BLAS instead of a 256-channel gather, product
and reduction per HR pixel (plus a 256-channel 3x3 convolution at LR) in the graph. Results match
the graph to float32 rounding (~1e-6; tests hold them to 1e-5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from metasr.core.scale import Scale

__all__ = ["MAX_CLASSES", "Kernels", "apply_kernels", "probe_kernels"]

#: Largest numerator ``p`` handled by kernels; beyond it probing costs more than it saves.
MAX_CLASSES = 48
# One-hot amplitude of the probes: a power of two (exact scaling) large enough that the kernel
# term dominates the bias in the probe's float32 output, so subtracting the bias loses nothing.
_AMPLITUDE = 64.0
_PROBE_BATCH = 64
# The graph holds a few [N, hidden, p, p] intermediates while probing: keep them near this size.
_PROBE_BYTES = 256 * 2**20
_PROBE_BYTES_PER_PIXEL = 3 * 256 * 4


@dataclass(frozen=True)
class Kernels:
    """The ``p * p`` kernels of one scale, laid out for one matrix product per row class.

    Attributes:
        weights: float32 ``[p, 3*C, 3*p]``: for row class ``a``, row ``dy*C + c`` and column
            ``dx*p + b`` hold the weight of feature channel ``c`` at tap ``(dy, dx)`` for column
            class ``b``.
        bias: float32 ``[p, p]``: the output for all-zero features, per (row, column) class.
    """

    weights: np.ndarray
    bias: np.ndarray

    @property
    def classes(self) -> int:
        return int(self.bias.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.weights.nbytes + self.bias.nbytes)


def probe_kernels(
    run_upscale: Callable[[dict[str, np.ndarray]], np.ndarray], scale: Scale, channels: int, index_dtype: type
) -> Kernels:
    """Read the kernels of ``scale`` out of an upscale graph.

    Args:
        run_upscale: Runs the upscale graph on a feed dict and returns ``sr`` ``[N, 1, H, W]``.
        scale: The scale; its numerator ``p`` is the number of offset classes per axis.
        channels: Feature channels ``C`` of the graph.
        index_dtype: Dtype of the graph's index inputs.
    """
    p = scale.p
    taps = channels * 9
    basis = np.zeros((taps + 1, channels, 3, 3), np.float32)
    basis.reshape(taps + 1, taps)[np.arange(taps), np.arange(taps)] = _AMPLITUDE  # last patch stays zero
    # one HR pixel per offset class, all reading the centre of the 3x3 patch; offsets exactly as
    # metasr.core.scale.axis_mapping computes them (residue / p in float64, then float32)
    offsets = (np.arange(p) / p).astype(np.float32)
    index = np.ones(p, dtype=index_dtype)
    feeds = {
        "inv_scale": np.array([scale.inv], np.float32),
        "row_index": index,
        "row_offset": offsets,
        "col_index": index,
        "col_offset": offsets,
    }
    batch = max(1, min(_PROBE_BATCH, _PROBE_BYTES // (p * p * _PROBE_BYTES_PER_PIXEL)))
    out = np.concatenate(
        [run_upscale({"features": basis[e : e + batch], **feeds})[:, 0] for e in range(0, taps + 1, batch)]
    ).astype(np.float64)  # [taps+1, p, p]
    bias = out[taps]
    k = (out[:taps] - bias) / _AMPLITUDE  # [C*9, a, b], tap order c*9 + dy*3 + dx (F.unfold order)
    weights = k.reshape(channels, 3, 3, p, p).transpose(3, 1, 0, 2, 4).reshape(p, 3 * channels, 3 * p)
    return Kernels(np.ascontiguousarray(weights, dtype=np.float32), bias.astype(np.float32))


def apply_kernels(
    kernels: Kernels,
    features: np.ndarray,
    row_index: np.ndarray,
    row_residue: np.ndarray,
    col_index: np.ndarray,
    col_residue: np.ndarray,
) -> np.ndarray:
    """The upscale graph's output for these features and index/residue arrays, via the kernels.

    Args:
        kernels: From :func:`probe_kernels` for the scale of the residues.
        features: float32 ``[N, C, h, w]`` (zero-padded by one pixel, as the graph does).
        row_index, col_index: LR source pixel of each HR row/column, in ``features`` coordinates.
        row_residue, col_residue: Offset class ``(i * q) % p`` of each HR row/column.

    Returns:
        float32 ``[N, H, W]`` (not clipped).
    """
    n, c, h, w = features.shape
    p = kernels.classes
    out = np.empty((n, len(row_index), len(col_index)), np.float32)
    classes = [(a, np.flatnonzero(row_residue == a)) for a in range(p)]
    col_bias = kernels.bias[:, col_residue]  # [p, W]
    for f in range(n):
        padded = np.zeros((h + 2, w + 2, c), np.float32)
        padded[1:-1, 1:-1] = features[f].transpose(1, 2, 0)
        # row y of `stacked` holds padded rows y, y+1, y+2 (LR rows y-1..y+1) side by side on channels
        stacked = np.concatenate([padded[0:h], padded[1 : h + 1], padded[2 : h + 2]], axis=2)  # [h, w+2, 3C]
        for a, rows in classes:
            if rows.size == 0:
                continue
            gathered = stacked[row_index[rows]]  # [m, w+2, 3C]
            y = (gathered.reshape(-1, 3 * c) @ kernels.weights[a]).reshape(rows.size, w + 2, 3, p)
            t = y[:, 0:w, 0] + y[:, 1 : w + 1, 1] + y[:, 2 : w + 2, 2]  # [m, w, p]: all column classes
            out[f, rows] = t[:, col_index, col_residue] + col_bias[a]
    return out
