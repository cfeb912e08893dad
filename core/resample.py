"""Bicubic resampling on the network's pixel grid, for planes that go beside the super-resolved luma.

The network is trained on pairs whose LR pixel ``k`` is centred on HR coordinate
``(k + 0.5) * r - 0.5`` (``metasr.training.pairs.downscale_exact``), so HR pixel ``i`` shows what
lies at LR coordinate ``(i + 0.5) / r - 0.5``. Chroma and alpha planes must be resampled on that
same grid. A resize to the output size would use the size ratio ``floor(n * r) / n`` instead of
``r`` and drift from the luma by up to one HR pixel at the far edge whenever ``n * r`` is not an
integer.
"""

from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np

__all__ = ["resize_on_grid", "resize_on_grid_linear"]


def resize_on_grid(image: np.ndarray, height: int, width: int, scale: Fraction | None = None) -> np.ndarray:
    """Bicubic resize of ``[h, w]`` or ``[h, w, C]`` (C <= 4) to ``height x width``.

    Args:
        image: The plane(s) to resample, any dtype OpenCV interpolates (uint8, uint16, float32).
        height: Output rows.
        width: Output columns.
        scale: The exact scale the luma was made with. With it, output pixel ``i`` samples the input
            at ``(i + 0.5) / scale - 0.5`` on both axes (the network's grid); without it, at the size
            ratio (``cv2.resize``). Edges are replicated.

    Returns:
        The resampled array, same dtype and channel count.
    """
    return _resample_on_grid(image, height, width, scale, cv2.INTER_CUBIC)


def resize_on_grid_linear(image: np.ndarray, height: int, width: int, scale: Fraction | None = None) -> np.ndarray:
    """Bilinear counterpart of :func:`resize_on_grid`: the same grid, no overshoot.

    For planes whose values must stay between their neighbours' (e.g. the part of a pixel value
    beyond an intensity window, added back after super-resolution). float32/float64 keep their dtype.
    """
    return _resample_on_grid(image, height, width, scale, cv2.INTER_LINEAR)


def _resample_on_grid(
    image: np.ndarray, height: int, width: int, scale: Fraction | None, interpolation: int
) -> np.ndarray:
    if image.shape[:2] == (height, width) and (scale is None or scale == 1):
        return image
    r = None if scale is None else Fraction(scale)
    h, w = image.shape[:2]
    if r is None or (height * r.denominator == h * r.numerator and width * r.denominator == w * r.numerator):
        # the size ratio is exactly r on both axes (x2 always; x1.8 at 960x540): cv2.resize samples
        # the same grid, several times faster than the affine warp (equal at integer scales,
        # within one grey level of uint8 data else)
        return cv2.resize(image, (width, height), interpolation=interpolation)
    inv = float(1 / r)
    shift = 0.5 * inv - 0.5
    to_source = np.array([[inv, 0.0, shift], [0.0, inv, shift]], dtype=np.float64)
    return cv2.warpAffine(
        image,
        to_source,
        (width, height),
        flags=interpolation | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
