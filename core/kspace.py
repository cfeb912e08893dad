"""k-space truncation and zero-filling on the Meta-Upscale contract's grids (numpy only).

How MR relates resolutions: a scan acquired at a lower matrix holds the centre of the k-space of
a finer one, and a scanner shows it on a finer grid by zero-filling. Both directions keep the
contract's geometry (LR pixel ``k`` centred on HR ``(k + 0.5) r - 0.5``), so they pair exactly
with the network's output grid:

- :func:`kspace_downscale`: the centred spectrum cropped to the LR matrix (optionally apodised),
  the image mirrored first so a patch has no edge; exact for band-limited images.
- :func:`kspace_upscale`: zero-filled interpolation, the exact right inverse of the truncation.
- :func:`kspace_project`: data consistency: an output whose truncation is exactly the input,
  keeping the output's own frequencies above the input's band.

Shared by training (degradations, evaluation) and the runtime (``metasr-run --data-consistency``).
"""

from __future__ import annotations

from enum import Enum
from fractions import Fraction
from functools import lru_cache

import numpy as np

from metasr.core.errors import InputError
from metasr.core.scale import hr_length


class Window(str, Enum):
    """Apodisation of the kept spectrum (k-space truncation)."""

    NONE = "none"
    HAMMING = "hamming"
    TUKEY = "tukey"


def _spectral_window(n: int, window: Window) -> np.ndarray:
    """Weights of the kept frequencies ``-n+1 .. n-1`` (FFT order, length ``2n``; the Nyquist bin 0)."""
    nu = np.fft.fftfreq(2 * n, 1.0 / (2 * n))  # signed integer frequencies
    keep = (np.abs(nu) < n).astype(np.float64)
    t = np.abs(nu) / n  # 0 at DC, 1 at the LR Nyquist
    if window is Window.HAMMING:
        keep *= 0.54 + 0.46 * np.cos(np.pi * t)
    elif window is Window.TUKEY:  # flat over the inner half, cosine taper over the outer half
        taper = 0.5 * (1 + np.cos(np.pi * np.clip((t - 0.5) / 0.5, 0.0, 1.0)))
        keep *= taper
    return keep


def _kspace_axis(
    image: np.ndarray, axis: int, n_lr: int, scale: Fraction, window: Window, periodic: bool
) -> np.ndarray:
    """Truncate one axis of length ``n_lr * r`` to ``n_lr`` samples on the contract's LR grid."""
    x = np.moveaxis(image, axis, -1)
    n_hr = x.shape[-1]
    if not periodic:
        x = np.concatenate([x, x[..., ::-1]], axis=-1)  # mirror: no artificial edge
    length = x.shape[-1]
    lr_length = length * n_lr // n_hr
    spectrum = np.fft.fft(x, axis=-1)
    nu = np.fft.fftfreq(length, 1.0 / length)
    shift = (float(scale) - 1.0) / 2.0  # LR pixel k sits at HR k r + (r - 1)/2
    spectrum = spectrum * np.exp(2j * np.pi * nu * shift / length)
    kept = np.zeros(x.shape[:-1] + (lr_length,), dtype=complex)
    half = lr_length // 2
    kept[..., :half] = spectrum[..., :half]
    kept[..., lr_length - half + 1 :] = spectrum[..., length - half + 1 :]
    kept *= _spectral_window(half, window) if lr_length == 2 * half else 1.0
    out = np.fft.ifft(kept, axis=-1).real * (lr_length / length)
    return np.moveaxis(out[..., :n_lr], -1, axis)


def kspace_downscale(
    hr: np.ndarray, scale: Fraction, size: tuple[int, int], window: Window | str = Window.NONE, periodic: bool = False
) -> np.ndarray:
    """LR ``[h, w]`` by cropping the centred spectrum (float64).

    Per axis the LR grid is computed for the next length ``h'`` that is a multiple of ``q``
    (``h' * r`` HR pixels, read from ``hr``) and cropped to ``h``. ``periodic=True`` treats the
    image as one period (a whole field of view; exact for band-limited periodic images);
    otherwise it is mirrored first.
    """
    window = Window(window)
    out = np.asarray(hr, dtype=np.float64)
    for axis, n in enumerate(size):
        q = scale.denominator
        n_lr = -(-n // q) * q
        n_hr = hr_length(n_lr, scale)
        if out.shape[axis] < n_hr:
            raise InputError(f"k-space truncation to {n} pixels at x{float(scale):g} needs {n_hr} HR pixels")
        out = np.take(out, np.arange(n_hr), axis=axis)
        out = np.take(_kspace_axis(out, axis, n_lr, scale, window, periodic), np.arange(n), axis=axis)
    return out


@lru_cache(maxsize=8)
def _zero_fill_matrix(n: int, scale: Fraction) -> np.ndarray:
    """``[floor(n r), n]``: the band-limited interpolant of ``n`` mirrored samples at the contract's HR pixels.

    The mirrored line is a cosine series (DCT-II, every frequency below the line's Nyquist); HR
    pixel ``j`` reads it at LR coordinate ``(j + 0.5) / r - 0.5``. Cached (read-only): every frame
    of a series and both axes of a square image share it.
    """
    k = np.arange(n)
    analysis = np.cos(np.pi * np.outer(k, 2 * np.arange(n) + 1) / (2 * n))  # [k, i]
    t = (np.arange(hr_length(n, scale)) + 0.5) / float(scale) - 0.5
    weights = np.where(k == 0, 1.0 / n, 2.0 / n)
    synthesis = np.cos(np.pi * np.outer(2 * t + 1, k) / (2 * n)) * weights  # [j, k]
    matrix = synthesis @ analysis
    matrix.flags.writeable = False
    return matrix


def kspace_upscale(lr: np.ndarray, scale: Fraction) -> np.ndarray:
    """``lr`` ``[h, w]`` zero-filled by ``scale``: how an MR scanner interpolates, float64 ``[floor(h r), floor(w r)]``.

    The image is mirrored (no artificial edge), its spectrum padded with zeros and read on the
    Meta-Upscale contract's HR grid, so it is the ideal interpolator of band-limited data and the
    exact right inverse of :func:`kspace_downscale` (``kspace_downscale(kspace_upscale(x, r), r,
    x.shape)`` is ``x`` where the LR sides are multiples of ``r``'s denominator). Not clipped.
    """
    lr = np.asarray(lr, dtype=np.float64)
    return _zero_fill_matrix(lr.shape[0], scale) @ lr @ _zero_fill_matrix(lr.shape[1], scale).T


def kspace_project(sr: np.ndarray, lr: np.ndarray, scale: Fraction) -> np.ndarray:
    """``sr`` ``[floor(h r), floor(w r)]`` made consistent with ``lr`` ``[h, w]``: its k-space truncation is ``lr``.

    The part of ``sr`` that the truncation to ``lr``'s matrix keeps is replaced by ``lr``'s
    zero-filled spectrum (``sr + kspace_upscale(lr - kspace_downscale(sr))``); the frequencies
    above it are ``sr``'s own. Where a side of ``lr`` is not a multiple of ``r``'s denominator,
    both are mirrored to the next multiple (and its HR length) first and the result cropped back.
    float64, not clipped.
    """
    sr = np.asarray(sr, dtype=np.float64)
    lr = np.asarray(lr, dtype=np.float64)
    q = scale.denominator
    lr_full = [-(-n // q) * q for n in lr.shape]
    hr_full = [hr_length(n, scale) for n in lr_full]
    lr_ext = np.pad(lr, [(0, k - n) for k, n in zip(lr_full, lr.shape)], mode="symmetric")
    sr_ext = np.pad(sr, [(0, max(0, k - n)) for k, n in zip(hr_full, sr.shape)], mode="symmetric")
    out = sr_ext + kspace_upscale(lr_ext - kspace_downscale(sr_ext, scale, lr_ext.shape), scale)
    return out[: sr.shape[0], : sr.shape[1]]
