"""Exact scale arithmetic of the Meta-Upscale contract (torch-free).

A scale ``r`` is held as an exact rational ``p/q``. For an LR axis of length ``n``::

    N         = floor(n * p / q)
    index[i]  = (i * q) // p          # LR source pixel of HR pixel i
    offset[i] = ((i * q) % p) / p     # frac(i / r)

Integer arithmetic only, so 2.3 x 50 gives 115 rows and no HR row lands on the wrong LR row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from numbers import Real

import numpy as np

from metasr.core.errors import ScaleError

__all__ = [
    "DEFAULT_SCALE_RANGE",
    "MAX_DENOMINATOR",
    "Scale",
    "parse_scale",
    "hr_length",
    "axis_mapping",
    "AxisMapping",
]

#: Denominators above this are approximated (``Fraction.limit_denominator``).
MAX_DENOMINATOR = 1000
#: Scales a Meta-SRGAN is trained on unless told otherwise (the paper's 1.1 to 4.0).
DEFAULT_SCALE_RANGE: tuple[float, float] = (1.1, 4.0)


def parse_scale(value: str | Real | Fraction) -> Fraction:
    """Turn a user's scale (``"1.8"``, ``2.3``, ``Fraction(7, 3)``) into an exact positive rational.

    Floats are read through their shortest decimal representation, so ``2.3`` means 23/10.

    Raises:
        ScaleError: if the value is not a finite number greater than zero.
    """
    if isinstance(value, Fraction):
        frac = value
    elif isinstance(value, bool):
        raise ScaleError(f"scale must be a number such as 1.8, got {value!r}")
    elif isinstance(value, (int, np.integer)):
        frac = Fraction(int(value))
    elif isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            raise ScaleError(f"scale must be a finite number such as 1.8, got {value!r}")
        frac = Fraction(repr(float(value)))
    elif isinstance(value, str):
        text = value.strip()
        try:
            frac = Fraction(text)
        except (ValueError, ZeroDivisionError):
            raise ScaleError(f"scale must be a number such as 1.8 or 7/3, got {value!r}") from None
    else:
        raise ScaleError(f"scale must be a number such as 1.8, got {type(value).__name__} {value!r}")
    if frac <= 0:
        raise ScaleError(f"scale must be greater than 0, got {value!r}")
    if frac.denominator > MAX_DENOMINATOR:
        frac = frac.limit_denominator(MAX_DENOMINATOR)
        if frac <= 0:
            raise ScaleError(f"scale {value!r} is too small to represent; use a scale of at least 1")
    return frac


def hr_length(n: int, scale: Fraction) -> int:
    """HR length ``floor(n * p / q)`` of an LR axis of length ``n``."""
    return (int(n) * scale.numerator) // scale.denominator


@dataclass(frozen=True)
class AxisMapping:
    """Where each HR pixel of one axis reads from: LR index and fractional offset."""

    index: np.ndarray  # int64 [N], LR source pixel
    offset: np.ndarray  # float32 [N], in [0, 1)
    residue: np.ndarray  # int64 [N], (i * q) % p: offset class, offset = residue / p


def axis_mapping(n: int, scale: Fraction, start: int = 0, stop: int | None = None) -> AxisMapping:
    """Index/offset arrays of HR pixels ``start..stop`` of an axis whose LR length is ``n``.

    Args:
        n: LR length of the axis.
        scale: Exact scale from :func:`parse_scale`.
        start: First HR pixel (for tiles); default 0.
        stop: One past the last HR pixel; default the full HR length.
    """
    p, q = scale.numerator, scale.denominator
    total = hr_length(n, scale)
    stop = total if stop is None else stop
    if not 0 <= start <= stop <= total:
        raise ScaleError(f"HR range {start}:{stop} is outside 0:{total}")
    i = np.arange(start, stop, dtype=np.int64)
    iq = i * q
    residue = iq % p
    return AxisMapping(index=iq // p, offset=(residue / p).astype(np.float32), residue=residue)


@dataclass(frozen=True)
class Scale:
    """A scale factor as an exact rational, with the values the network is fed."""

    value: Fraction

    @classmethod
    def parse(cls, value: str | Real | Fraction | Scale) -> Scale:
        if isinstance(value, Scale):
            return value
        return cls(parse_scale(value))

    @property
    def p(self) -> int:
        return self.value.numerator

    @property
    def q(self) -> int:
        return self.value.denominator

    @property
    def inv(self) -> float:
        """``1/r`` as fed to the weight-prediction network."""
        return self.q / self.p

    def __float__(self) -> float:
        return self.p / self.q

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return hr_length(height, self.value), hr_length(width, self.value)

    def __str__(self) -> str:
        f = float(self)
        return f"{f:g}" if Fraction(repr(f)) == self.value else f"{self.p}/{self.q}"
