"""Explicit, lossless-in-range mapping of pixel values to [0, 1] and back, and RGB <-> luminance.

The network works on float intensities in [0, 1]. :class:`IntensityMap` maps stored pixel values
``v`` linearly, ``u = (v - low) / (high - low)``, and back with ``v = low + u * (high - low)``,
rounded and clipped for integer data. The window ``[low, high]`` is chosen by
:class:`IntensityRange`:

* ``full``: the whole range the container can hold (0..255 for 8-bit, the ``BitsStored`` range
  for DICOM, the dtype range otherwise);
* ``data``: the data's own minimum and maximum over all frames (and channels) of the file;
* ``robust``: the 0.5th..99.5th percentiles of the values, widened outward to a coarse grid
  (a power of two near 1/64 of the span) so a few extreme pixels (metal, a marker, one corrupt
  pixel) neither stretch the window nor move it;
* ``auto`` (default): ``full`` for unsigned data of at most 8 bits (what the model was trained
  on: 8-bit images divided by 255), ``robust`` for everything wider (12/16-bit, signed, float),
  so a 12-bit MR slice that uses 0..900 of a 16-bit container is not fed to the network as a
  nearly black image, and one bright pixel does not change the mapping of the others.

The window is a property of a series: :class:`IntensityWindow` measured once over all slices of
a series (:func:`metasr.scanners.series.group_series`) is passed to every slice's reader, so all
of them share one mapping. Values beyond the window are not lost: their excess over the window
(the *residual*, :meth:`IntensityMap.residual`) is resampled beside the network's output and
added back when writing. Outputs are clipped to the input file's own min..max, so they never
leave the input's range and bit depth.

The unit values are float32; for integer data whose window spans at most 2**24 values (every
8/12/16-bit image) reading and writing back the same values gives exactly the same integers
(32-bit integers and float64 data, and any data with a residual, are mapped in float64).

Colour images are processed on luminance: :func:`split_luma` gives BT.601 luma
``Y = 0.299 R + 0.587 G + 0.114 B`` plus the chroma differences ``(B - Y, R - Y)``;
:func:`merge_luma` resizes the chroma (and any alpha) bicubically to the super-resolved size, on
the network's pixel grid when the scale is known, and inverts the transform exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from fractions import Fraction

import numpy as np

from metasr.core.errors import InputError
from metasr.core.resample import resize_on_grid

__all__ = [
    "IntensityRange",
    "IntensityWindow",
    "IntensityMap",
    "ROBUST_PERCENTILES",
    "measure_window",
    "split_luma",
    "merge_luma",
    "check_finite",
]

_KR, _KG, _KB = 0.299, 0.587, 0.114


class IntensityRange(str, Enum):
    """How the window mapped to [0, 1] is chosen (see the module docstring)."""

    AUTO = "auto"
    FULL = "full"
    DATA = "data"
    ROBUST = "robust"


#: Percentiles bounding the ``robust`` window.
ROBUST_PERCENTILES = (0.5, 99.5)
#: Most values one file's percentiles are computed from (a regular stride through larger files).
PERCENTILE_SAMPLE = 2**22


@dataclass(frozen=True)
class IntensityWindow:
    """The stored values mapped to 0 and 1, shared by every file of one series.

    Attributes:
        low: Stored value mapped to 0.
        high: Stored value mapped to 1 (``> low``).
    """

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.low) and np.isfinite(self.high) and self.high > self.low):
            raise InputError(f"intensity window {self.low}..{self.high} is invalid; expected finite low < high")


def _container_range(dtype: np.dtype, bits: int | None, signed: bool | None) -> tuple[float, float, int, bool]:
    """``(low, high, bits, signed)`` an integer container of ``bits`` significant bits can hold."""
    bits = int(bits or dtype.itemsize * 8)
    signed = np.issubdtype(dtype, np.signedinteger) if signed is None else bool(signed)
    rep_low = -(2 ** (bits - 1)) if signed else 0
    rep_high = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    info = np.iinfo(dtype)  # the container dtype may be wider than `bits`; never write what it cannot hold
    return float(max(rep_low, int(info.min))), float(min(rep_high, int(info.max))), bits, signed


def _robust_bounds(sample: np.ndarray, vmin: float, vmax: float, integer: bool) -> tuple[float, float]:
    """Percentile window (values that occur) widened outward to a coarse grid."""
    lo_p = float(np.percentile(sample, ROBUST_PERCENTILES[0], method="lower"))  # values that occur
    hi_p = float(np.percentile(sample, ROBUST_PERCENTILES[1], method="higher"))
    span = hi_p - lo_p
    if not span > 0 or not np.isfinite(span):
        return vmin, vmax
    step = 2.0 ** np.floor(np.log2(span / 64.0))
    if integer:
        step = max(step, 1.0)
    # Not clipped to vmin..vmax: an extreme pixel would then move the window through that clip.
    return float(np.floor(lo_p / step) * step), float(np.ceil(hi_p / step) * step)


def measure_window(
    sample: np.ndarray,
    vmin: float,
    vmax: float,
    *,
    policy: IntensityRange | str,
    dtype: np.dtype,
    bits: int | None = None,
    signed: bool | None = None,
) -> IntensityWindow:
    """The window a policy gives for data of ``dtype`` with the range ``vmin..vmax``.

    Args:
        sample: The values (or a deterministic subsample of them) used for percentiles.
        vmin: Exact smallest value of the data.
        vmax: Exact largest value of the data.
        policy: ``auto``, ``full``, ``data`` or ``robust``.
        dtype: The stored dtype.
        bits: Significant bits of integer data (DICOM ``BitsStored``); default the dtype's.
        signed: Integer data is two's complement; default from the dtype.
    """
    policy = IntensityRange(policy)
    dtype = np.dtype(dtype)
    integer = bool(np.issubdtype(dtype, np.integer))
    if integer:
        rep_low, rep_high, bits, signed = _container_range(dtype, bits, signed)
        if policy is IntensityRange.AUTO:
            policy = IntensityRange.FULL if (not signed and bits <= 8) else IntensityRange.ROBUST
        if policy is IntensityRange.FULL:
            return IntensityWindow(rep_low, rep_high)
    elif policy is IntensityRange.AUTO:
        policy = IntensityRange.ROBUST
    elif policy is IntensityRange.FULL:
        return IntensityWindow(0.0, 1.0)  # floats have no container range; [0, 1] is the meaningful one
    low, high = float(vmin), float(vmax)
    if policy is IntensityRange.ROBUST and sample.size:
        low, high = _robust_bounds(sample, low, high, integer)
    if not high > low:  # a constant image: any window containing it round-trips
        high = low + 1.0
    return IntensityWindow(low, high)


def check_finite(values: np.ndarray, source: str) -> None:
    """Raise :class:`InputError` if float ``values`` hold NaN or infinity."""
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        raise InputError(
            f"{source}: {bad} pixel value(s) are NaN or infinite; replace them (e.g. with 0) before super-resolving"
        )


@dataclass(frozen=True)
class IntensityMap:
    """A linear map between stored pixel values and [0, 1].

    Attributes:
        low: Stored value mapped to 0.
        high: Stored value mapped to 1 (``> low``).
        dtype: dtype of the stored values written back.
        clip_low: Smallest value the output may hold (the representable range).
        clip_high: Largest value the output may hold.
        invert: Map ``low`` to 1 and ``high`` to 0 (DICOM MONOCHROME1, where low values are white).
        data_low: Smallest value in the input file (outputs never go below it); ``None``: no bound.
        data_high: Largest value in the input file (outputs never go above it); ``None``: no bound.
        inner_low: Smallest value of the file inside the window (``None``: ``data_low``).
        inner_high: Largest value of the file inside the window (``None``: ``data_high``). The
            network's part of an output is kept within ``inner_low..inner_high`` before the
            residual is added, so an extreme pixel elsewhere does not widen what the rest may reach.
    """

    low: float
    high: float
    dtype: np.dtype
    clip_low: float
    clip_high: float
    invert: bool = False
    data_low: float | None = None
    data_high: float | None = None
    inner_low: float | None = None
    inner_high: float | None = None

    @property
    def is_integer(self) -> bool:
        return np.issubdtype(self.dtype, np.integer)

    @property
    def window(self) -> IntensityWindow:
        return IntensityWindow(self.low, self.high)

    @classmethod
    def for_data(
        cls,
        values: np.ndarray,
        *,
        policy: IntensityRange | str = IntensityRange.AUTO,
        bits: int | None = None,
        signed: bool | None = None,
        invert: bool = False,
        source: str = "input",
        window: IntensityWindow | None = None,
    ) -> IntensityMap:
        """Choose the window for ``values`` (all frames/channels of one file).

        Args:
            values: The stored pixel values.
            policy: ``auto``, ``full``, ``data`` or ``robust``.
            bits: Significant bits of integer data (DICOM ``BitsStored``); default the dtype's.
            signed: Integer data is two's complement; default from the dtype.
            invert: See :attr:`invert`.
            source: Name used in error messages.
            window: The series' window (measured by :func:`~metasr.scanners.series.group_series`);
                ``None`` measures it from ``values`` with ``policy``.

        Raises:
            InputError: on NaN/Inf values, a range float64 cannot span, or an unsupported dtype.
        """
        dtype = np.dtype(values.dtype)
        if np.issubdtype(dtype, np.integer):
            rep_low, rep_high, bits, signed = _container_range(dtype, bits, signed)
        elif np.issubdtype(dtype, np.floating):
            check_finite(values, source)
            finfo = np.finfo(dtype)
            rep_low, rep_high = float(finfo.min), float(finfo.max)
        else:
            raise InputError(f"{source}: pixel type {dtype} is not supported; expected integer or float pixels")
        vmin, vmax = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        if not np.isfinite(vmax - vmin):
            raise InputError(
                f"{source}: pixel values span {vmin:.3g}..{vmax:.3g}, wider than float64 arithmetic can map;"
                " rescale the image to a smaller range first"
            )
        if window is None:
            flat = values.reshape(-1)
            sample = flat[:: -(-flat.size // PERCENTILE_SAMPLE)] if flat.size else flat  # bounded, deterministic
            window = measure_window(sample, vmin, vmax, policy=policy, dtype=dtype, bits=bits, signed=signed)
        inner_low, inner_high = vmin, vmax
        if values.size and (vmin < window.low or vmax > window.high):
            inside = (values >= window.low) & (values <= window.high)
            if inside.any():  # reductions with where=: no copy of the selected values
                inner_low = float(np.min(values, where=inside, initial=vmax))
                inner_high = float(np.max(values, where=inside, initial=vmin))
            else:
                inner_low, inner_high = window.low, window.high
        return cls(window.low, window.high, dtype, rep_low, rep_high, invert, vmin, vmax, inner_low, inner_high)

    @property
    def _work_dtype(self) -> type:
        # float32 arithmetic is exact enough when every stored value and the window span are
        # integers below 2**24 (all 8/12/16-bit data): the round trip error stays < 0.02 of a
        # level, far from the 0.5 that would change a rounded value. It halves the memory of
        # the float64 path, which is kept for 32-bit integers and float64 data.
        small_ints = self.is_integer and max(abs(self.low), abs(self.high), self.high - self.low) <= 2**24
        return np.float32 if small_ints or self.dtype == np.float32 else np.float64

    def to_unit(self, values: np.ndarray) -> np.ndarray:
        """Stored values -> float32 in [0, 1] (values outside the window are clipped; see :meth:`residual`)."""
        work = self._work_dtype
        unit = np.array(values, dtype=work, copy=True)
        unit -= work(self.low)
        unit /= work(self.high - self.low)
        np.clip(unit, 0.0, 1.0, out=unit)
        if self.invert:
            np.subtract(1.0, unit, out=unit)
        return unit.astype(np.float32, copy=False)

    def residual(self, values: np.ndarray) -> np.ndarray | None:
        """What :meth:`to_unit` clips away: ``values - clip(values, low, high)``, or ``None`` if nothing.

        Resampled to the output grid and passed to :meth:`from_unit`, it keeps values beyond the
        window (bone beside soft tissue, a marker) instead of flattening them to the window's edge.
        """
        values = np.asarray(values)
        if values.size == 0 or (values.min() >= self.low and values.max() <= self.high):
            return None
        v = values.astype(self._work_dtype)  # exact for 8/16-bit integers in float32
        inside = np.clip(v, self.low, self.high)
        v -= inside
        return v

    def from_unit(self, unit: np.ndarray, residual: np.ndarray | None = None) -> np.ndarray:
        """Float values in [0, 1] -> stored values of :attr:`dtype`.

        Args:
            unit: Values in [0, 1] (clipped to it).
            residual: Optional out-of-window excess in stored units, same shape (see :meth:`residual`).

        Returns:
            Rounded (integer data) values clipped to the input's data range and the representable range.
        """
        work = np.float64 if residual is not None else self._work_dtype
        values = np.clip(np.asarray(unit, dtype=work), 0.0, 1.0)
        if self.invert:
            np.subtract(1.0, values, out=values)
        values *= work(self.high - self.low)
        values += work(self.low)
        lo = self.clip_low if self.data_low is None else max(self.data_low, self.clip_low)
        hi = self.clip_high if self.data_high is None else min(self.data_high, self.clip_high)
        inner_lo = max(lo, self.low) if self.inner_low is None else max(lo, self.inner_low)
        inner_hi = min(hi, self.high) if self.inner_high is None else min(hi, self.inner_high)
        if residual is not None:
            residual = np.asarray(residual, dtype=work)
            # Where an extreme value contributes, the window's edge plus the residual rebuilds it.
            if inner_lo <= inner_hi:
                values = np.where(residual != 0, values, np.clip(values, inner_lo, inner_hi))
            values += residual
        elif inner_lo <= inner_hi:
            np.clip(values, inner_lo, inner_hi, out=values)
        if self.is_integer:
            np.rint(values, out=values)
        np.clip(values, lo, hi, out=values)
        return values.astype(self.dtype)


def split_luma(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split RGB in [0, 1] (``[..., h, w, 3]``) into luma ``[..., h, w]`` and chroma ``[..., h, w, 2]``.

    The chroma planes are the differences ``(B - Y, R - Y)``; :func:`merge_luma` inverts exactly.
    """
    rgb = np.asarray(rgb, dtype=np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = _KR * r + _KG * g + _KB * b
    return y.astype(np.float32), np.stack([b - y, r - y], axis=-1).astype(np.float32)


def _resize_planes(planes: np.ndarray, height: int, width: int, scale: Fraction | None) -> np.ndarray:
    """Bicubic resize of ``[F, h, w, C]`` float planes to ``[F, height, width, C]`` on the luma's grid."""
    if planes.shape[1:3] == (height, width):
        return planes
    out = np.empty((planes.shape[0], height, width, planes.shape[3]), dtype=np.float32)
    for f in range(planes.shape[0]):
        resized = resize_on_grid(planes[f], height, width, scale)
        out[f] = resized.reshape(height, width, planes.shape[3])
    return out


def merge_luma(
    luma: np.ndarray, chroma: np.ndarray, extra: np.ndarray | None = None, scale: Fraction | None = None
) -> np.ndarray:
    """Recombine super-resolved luma with chroma resized bicubically.

    Args:
        luma: ``[F, H, W]`` in [0, 1].
        chroma: ``[F, h, w, 2]`` from :func:`split_luma` (any ``h, w``).
        extra: Optional ``[F, h, w, C]`` planes in [0, 1] (e.g. alpha), resized the same way and
            appended after the RGB channels.
        scale: The exact scale the luma was made with: the chroma is then resampled on the
            network's pixel grid (:func:`~metasr.core.resample.resize_on_grid`), so colour stays
            on the luma to the far edge; ``None`` resizes by the size ratio.

    Returns:
        ``[F, H, W, 3 + C]`` float32 in [0, 1].
    """
    f, height, width = luma.shape
    c = _resize_planes(np.asarray(chroma, dtype=np.float32), height, width, scale)
    y = luma.astype(np.float32)
    b = y + c[..., 0]
    r = y + c[..., 1]
    g = (y - _KR * r - _KB * b) / _KG
    channels = [r, g, b]
    if extra is not None:
        e = _resize_planes(np.asarray(extra, dtype=np.float32), height, width, scale)
        channels += [e[..., k] for k in range(e.shape[-1])]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)
