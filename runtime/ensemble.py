"""Geometric self-ensemble, exact on the Meta-Upscale grid (torch-free).

The image is super-resolved in the 8 orientations of the square (identity, the two flips, their
composition, and each of these transposed); each result is turned back and the 8 are averaged
(the "x8 self-ensemble" of EDSR+). It costs 8 runs of the model and lowers the error a little:
on the held-out real scans of the model cards, by 0.02-0.21 dB with the default model (0.03-0.36
with the default before it, whose ensemble it was distilled from) and in every cell measured (a
network's errors depend on the orientation of what it sees; they average out).

Exactness. HR pixel ``i`` of an axis covers LR coordinates ``[i q/p, (i + 1) q/p)``. Flipping an
LR axis of length ``n`` maps that interval onto an HR pixel of the flipped image's grid only when
``n p / q`` is an integer, i.e. when ``q`` divides ``n`` (``p`` and ``q`` have no common factor).
So each flipped axis is first extended at its far end to a multiple of ``q`` by mirroring, and the
result is cropped back: every one of the 8 runs then gives each HR pixel for exactly the area it
covers in the original image, and the ensemble has exactly the single run's shape. A transpose
needs nothing (both axes share one scale). Scales with a large denominator (``2.333`` is
2333/1000) would need large extensions; :func:`check_ensemble` refuses those whose extended image
has more than :data:`MAX_ENSEMBLE_GROWTH` times the pixels, and says which scale to give instead.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import numpy as np

from metasr.core.errors import ScaleError
from metasr.core.scale import hr_length

__all__ = ["ENSEMBLE_SIZE", "MAX_ENSEMBLE_GROWTH", "check_ensemble", "ensemble_extension", "self_ensemble"]

#: Runs of the model per image.
ENSEMBLE_SIZE = 8
#: Largest ratio of extended to original pixels the ensemble accepts.
MAX_ENSEMBLE_GROWTH = 2.0


def ensemble_extension(h: int, w: int, scale: Fraction) -> tuple[int, int]:
    """Rows and columns added at the far ends so that both sides are multiples of the denominator."""
    q = scale.denominator
    return (-h) % q, (-w) % q


def check_ensemble(h: int, w: int, scale: Fraction) -> None:
    """Refuse an ensemble whose exact grid needs an image much larger than ``h x w``.

    Raises:
        ScaleError: the extended image would have more than :data:`MAX_ENSEMBLE_GROWTH` times the pixels.
    """
    eh, ew = ensemble_extension(h, w, scale)
    growth = (h + eh) * (w + ew) / (h * w)
    if growth > MAX_ENSEMBLE_GROWTH:
        # a denominator of at most a side / 8 extends each side by at most 1/8: within the limit
        nearest = scale.limit_denominator(max(1, min(h, w) // 8))
        advice = (
            f"give the scale with a small denominator (e.g. {_shown(nearest)}) or leave out the ensemble"
            if nearest > 1
            else "leave out the ensemble for an image this small"
        )
        raise ScaleError(
            f"the self-ensemble at scale {_shown(scale)} must extend the {h}x{w} image to {h + eh}x{w + ew}"
            f" ({growth:.1f}x the pixels) to stay exact; {advice}"
        )


def _shown(scale: Fraction) -> str:
    return str(scale.numerator) if scale.denominator == 1 else f"{scale.numerator}/{scale.denominator}"


def _orient(x: np.ndarray, t: int) -> np.ndarray:
    """Orientation ``t`` (bit 0: flip rows, bit 1: flip columns, bit 2: transpose) of the last two axes."""
    if t & 1:
        x = x[..., ::-1, :]
    if t & 2:
        x = x[..., :, ::-1]
    if t & 4:
        x = np.swapaxes(x, -1, -2)
    return x


def _unorient(y: np.ndarray, t: int) -> np.ndarray:
    """The inverse of :func:`_orient`: the same steps, in reverse order (each is its own inverse)."""
    if t & 4:
        y = np.swapaxes(y, -1, -2)
    if t & 2:
        y = y[..., :, ::-1]
    if t & 1:
        y = y[..., ::-1, :]
    return y


def self_ensemble(run: Callable[[np.ndarray], np.ndarray], image: np.ndarray, scale: Fraction) -> np.ndarray:
    """The mean of ``run`` over the 8 orientations of ``image``, each turned back, on the exact grid.

    Args:
        run: The single-run super-resolution of an array shaped like ``image`` (``[..., h, w]``)
            at ``scale``; it must return ``[..., floor(h r), floor(w r)]``.
        image: ``[..., h, w]``; the last two axes are the image.
        scale: The exact scale ``run`` applies.

    Returns:
        float32 ``[..., floor(h r), floor(w r)]``, the same shape as one run.

    Raises:
        ScaleError: see :func:`check_ensemble`.
    """
    h, w = image.shape[-2:]
    check_ensemble(h, w, scale)
    big_h, big_w = hr_length(h, scale), hr_length(w, scale)
    eh, ew = ensemble_extension(h, w, scale)
    pad = [(0, 0)] * (image.ndim - 2) + [(0, eh), (0, ew)]
    # mirror about the last row/column, as the image would continue; only flipped runs see it
    extended = np.pad(image, pad, mode="symmetric") if (eh or ew) else image
    total = np.asarray(run(image), dtype=np.float32).copy()
    if total.shape[-2:] != (big_h, big_w):
        raise ValueError(f"run returned {total.shape[-2:]}, expected {(big_h, big_w)}")
    for t in range(1, ENSEMBLE_SIZE):
        source = image if not t & 3 else extended  # only a flip needs the exact extension
        out = _unorient(np.asarray(run(np.ascontiguousarray(_orient(source, t))), dtype=np.float32), t)
        total += out[..., :big_h, :big_w]
    total /= ENSEMBLE_SIZE
    return total
