"""Noise level of an image, estimated from the image alone (numpy only; the runtime may use it).

:func:`estimate_noise_sigma` is Immerkær's estimator (a 3x3 mask that cancels first and second
derivatives, so smooth anatomy contributes almost nothing) restricted to the flattest pixels
(Sobel gradient below the 90th percentile), so edges are not taken for noise. Pixels at the
ends of the window (0 or 1: clipped background, saturation) are left out: clipping removes noise
there.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["estimate_noise_sigma"]

#: Fraction of pixels, the steepest by Sobel gradient, left out as structure.
EDGE_FRACTION = 0.10


def estimate_noise_sigma(image: np.ndarray) -> float:
    """Standard deviation of additive white noise in ``image`` (same units), 0.0 when it cannot tell.

    Args:
        image: 2D array, typically float32 in [0, 1].
    """
    x = np.asarray(image, dtype=np.float64)
    if x.ndim != 2 or min(x.shape) < 3 or not np.isfinite(x).all():
        return 0.0
    c = x[1:-1, 1:-1]
    n, s, w, e = x[:-2, 1:-1], x[2:, 1:-1], x[1:-1, :-2], x[1:-1, 2:]
    nw, ne, sw, se = x[:-2, :-2], x[:-2, 2:], x[2:, :-2], x[2:, 2:]
    lap = 4 * c - 2 * (n + s + w + e) + (nw + ne + sw + se)
    gx = (ne + 2 * e + se) - (nw + 2 * w + sw)
    gy = (sw + 2 * s + se) - (nw + 2 * n + ne)
    grad = np.hypot(gx, gy)
    inside = (c > 0.0) & (c < 1.0)
    if inside.sum() < 16:
        return 0.0
    keep = inside & (grad <= np.quantile(grad[inside], 1.0 - EDGE_FRACTION))
    if not keep.any():
        return 0.0
    # E|lap| = sqrt(2/pi) * sigma * sqrt(36) for white Gaussian noise (the mask's L2 norm is 6)
    return float(math.sqrt(math.pi / 2.0) * np.abs(lap[keep]).mean() / 6.0)
