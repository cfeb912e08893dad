"""Exact scale arithmetic of the Meta-Upscale contract (torch-free).

A scale ``r`` is held as an exact rational ``p/q``. For an LR axis of length ``n``::

    N         = floor(n * p / q)
    index[i]  = (i * q) // p          # LR source pixel of HR pixel i
    offset[i] = ((i * q) % p) / p     # frac(i / r)

Integer arithmetic only, so 2.3 x 50 gives 115 rows and no HR row lands on the wrong LR row.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from numbers import Real

import numpy as np

from metasr.core.errors import InputError, ScaleError

__all__ = [
    "DEFAULT_SCALE_RANGE",
    "MAX_OUTPUT_SIDE",
    "MAX_SCALE",
    "MIN_SIDE",
    "SCALE_LIMITS",
    "parse_scale_option",
    "MAX_DENOMINATOR",
    "Scale",
    "parse_scale",
    "hr_length",
    "axis_mapping",
    "AxisMapping",
    "MAX_SCALE_TEXT",
    "parse_scale_exact",
    "scale_for_size",
    "scale_for_spacing",
    "parse_decimal",
]

#: Largest denominator of a scale: :func:`parse_scale` rounds larger ones, :func:`parse_scale_exact` refuses them.
MAX_DENOMINATOR = 1000
#: Smallest image side accepted: the network needs neighbours to infer detail from.
MIN_SIDE = 2
#: Largest scale ever accepted (extrapolation included), by every command.
MAX_SCALE = 8
#: Largest output side (``--size`` included): beyond it the output alone would not fit a device's memory.
MAX_OUTPUT_SIDE = 32768
#: The scales a command accepts at all (the model's trained range is checked when it loads).
SCALE_LIMITS = (Fraction(1), Fraction(MAX_SCALE))
#: Scales a Meta-SRGAN is trained on unless told otherwise (the paper's 1.1 to 4.0).
DEFAULT_SCALE_RANGE: tuple[float, float] = (1.1, 4.0)


def parse_scale(value: str | Real | Fraction) -> Fraction:
    """Turn a user's scale (``"1.8"``, ``2.3``, ``Fraction(7, 3)``) into an exact positive rational.

    Floats are read through their shortest decimal representation, so ``2.3`` means 23/10. Text
    is bounded before it is parsed (at most :data:`MAX_SCALE_TEXT` characters, exponents of at
    most three digits), so ``"1e999999999"`` fails at once instead of building a huge integer.
    Denominators above :data:`MAX_DENOMINATOR` are rounded to the nearest fraction that has one;
    :func:`parse_scale_exact` refuses them instead (what the command line uses).

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
        frac = _fraction_from_text(value, "scale", "1.8 or 7/3")
    else:
        raise ScaleError(f"scale must be a number such as 1.8, got {type(value).__name__} {value!r}")
    if frac <= 0:
        raise ScaleError(f"scale must be greater than 0, got {_shown(value)}")
    if frac.denominator > MAX_DENOMINATOR:
        frac = frac.limit_denominator(MAX_DENOMINATOR)
        if frac <= 0:
            raise ScaleError(f"scale {_shown(value)} is too small to represent; use a scale of at least 1")
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


#: Longest scale or spacing text that is parsed at all (longer text is refused unread).
MAX_SCALE_TEXT = 40

_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")
_RATIO = re.compile(r"[+-]?[0-9]{1,12}/[+-]?[0-9]{1,12}")


def _shown(value: object) -> str:
    """A value as a user typed it: ``7/3`` for a fraction, quoted text for a string."""
    if isinstance(value, Fraction):
        return str(value)
    if isinstance(value, str):
        return repr(value if len(value) <= MAX_SCALE_TEXT else value[:MAX_SCALE_TEXT] + "...")
    return repr(value)


def _fraction_from_text(text: str, what: str, example: str, ratio: bool = True) -> Fraction:
    """Exact rational from decimal (``2.3``, ``1e-3``) or ratio (``7/3``) text, bounded before parsing."""
    stripped = text.strip()
    if len(stripped) > MAX_SCALE_TEXT:
        raise ScaleError(f"{what} must be a number such as {example}, got {_shown(text)} ({len(stripped)} characters)")
    if re.fullmatch(r"[+-]?[0-9.]+[eE][+-]?[0-9]{4,}", stripped):
        raise ScaleError(f"{what} {_shown(text)} has an exponent too large to use; give a number such as {example}")
    if not (_DECIMAL.fullmatch(stripped) or (ratio and _RATIO.fullmatch(stripped))):
        raise ScaleError(f"{what} must be a number such as {example}, got {_shown(text)}")
    try:
        return Fraction(stripped)
    except ZeroDivisionError:
        raise ScaleError(f"{what} must be a number such as {example}, got {_shown(text)} (division by zero)") from None


def parse_scale_exact(value: str | Real | Fraction) -> Fraction:
    """Like :func:`parse_scale`, but a scale that needs a denominator over :data:`MAX_DENOMINATOR`
    is refused instead of rounded, so ``2.0000000001`` never runs as x2 and ``8.0001`` never
    passes as 8.

    Raises:
        ScaleError: naming the nearest scale that can be used.
    """
    exact = _fraction_from_text(value, "scale", "1.8 or 7/3") if isinstance(value, str) else None
    frac = parse_scale(value)
    if exact is None and isinstance(value, Fraction):
        exact = value
    if exact is not None and exact != frac:
        raise ScaleError(
            f"scale {_shown(value)} is not a fraction p/q with q up to {MAX_DENOMINATOR}; "
            f"use {Scale(frac)} (the nearest such scale) or another simpler value"
        )
    return frac


def parse_decimal(text: str, what: str, example: str, unit: str = "") -> Fraction:
    """A positive finite decimal (``0.5``, ``1e-1``) from text, as an exact rational.

    Raises:
        ScaleError: the text is not such a number (NaN, infinity, zero, negative, garbage, too long).
    """
    value = _fraction_from_text(text, what, example, ratio=False)
    if value <= 0:
        raise ScaleError(f"{what} must be a positive number{unit} such as {example}, got {_shown(text)}")
    return value


def _simplest_fraction_in(lo: Fraction, hi: Fraction) -> Fraction:
    """The fraction with the smallest denominator in ``[lo, hi)``, by trying denominators upward."""
    if lo.denominator == 1:
        return lo
    for q in range(1, MAX_DENOMINATOR + 1):
        p = -((-lo.numerator * q) // lo.denominator)  # ceil(lo * q)
        if Fraction(p, q) < hi:
            return Fraction(p, q)
    raise ScaleError(f"no scale with a denominator up to {MAX_DENOMINATOR} lies in [{lo}, {hi})")


def _size_window(n: int, out: int) -> tuple[Fraction, Fraction]:
    """Scales ``r`` with ``floor(n * r) == out``: the half-open interval ``[out/n, (out+1)/n)``."""
    return Fraction(out, n), Fraction(out + 1, n)


def _size_hint(height: int, width: int, out_h: int, out_w: int, scale_range: tuple[Fraction, Fraction]) -> str:
    """A size with the input's aspect ratio near the one asked for that one scale in range gives."""
    lo_r, hi_r = scale_range
    for side, n in ((out_w, width), (out_h, height)):
        lo, hi = _size_window(n, side)
        lo, hi = max(lo, lo_r), min(hi, hi_r + Fraction(1, 10**9))
        if lo < hi:
            try:
                s = Scale(_simplest_fraction_in(lo, hi))
            except ScaleError:
                continue
            if lo_r <= s.value <= hi_r:
                h, w = s.output_size(height, width)
                return f"e.g. {w}x{h} (scale {s})"
    lo_h, lo_w = Scale(lo_r).output_size(height, width)
    hi_h, hi_w = Scale(hi_r).output_size(height, width)
    return f"sizes from {lo_w}x{lo_h} to {hi_w}x{hi_h} keep the aspect ratio"


def scale_for_size(
    height: int, width: int, out_h: int, out_w: int, *, scale_range: tuple[Fraction, Fraction] | None = None
) -> Scale:
    """The scale giving exactly ``out_h x out_w`` from ``height x width``: ``floor(n*r)`` must hit both.

    One scale serves both axes (the contract has one ``r``), so the target must keep the aspect
    ratio within a pixel. Among the scales that work, the simplest fraction is chosen.

    Args:
        height, width: The input's size.
        out_h, out_w: The size asked for.
        scale_range: Inclusive ``(lowest, highest)`` scale allowed; the hint in an error only
            suggests sizes inside it.

    Raises:
        ScaleError: if no single scale (in range) gives both sizes.
    """
    rng = (Fraction(1), Fraction(10**6)) if scale_range is None else tuple(Fraction(v) for v in scale_range)
    lo_h, hi_h = _size_window(height, out_h)
    lo_w, hi_w = _size_window(width, out_w)
    lo, hi = max(lo_h, lo_w), min(hi_h, hi_w)
    if lo >= hi:
        hint = _size_hint(height, width, out_h, out_w, rng)
        raise ScaleError(
            f"no single scale turns {width}x{height} into {out_w}x{out_h} (the aspect ratio differs); one scale "
            f"serves both axes, so give a size with the input's aspect ratio, {hint}"
        )
    r = _simplest_fraction_in(lo, hi)
    if not rng[0] <= r <= rng[1]:
        raise ScaleError(
            f"{out_w}x{out_h} needs scale {Scale(r)} from {width}x{height}; the scale must be between "
            f"{Scale(rng[0])} and {Scale(rng[1])}: {_size_hint(height, width, out_h, out_w, rng)}"
        )
    s = Scale(r)
    if s.output_size(height, width) != (out_h, out_w):  # pragma: no cover - guarded by the window arithmetic
        raise ScaleError(f"scale {s} does not give {out_w}x{out_h} from {width}x{height}")
    return s


def scale_for_spacing(spacing: tuple[float, float] | None, target_mm: str | float | Fraction) -> Scale:
    """The scale that turns pixels of ``spacing`` mm into pixels of ``target_mm`` mm.

    The output spacing is ``old / r`` exactly, so ``r = old / target`` as an exact rational
    (spacings are read through their decimal text: 0.9 mm is 9/10). When that ratio needs a
    denominator over :data:`MAX_DENOMINATOR`, the nearest scale that has one is used and the
    spacing comes out as ``old / r`` (the caller can report it). Pixels that are not square are
    refused: one scale serves both axes, so no scale gives ``target_mm`` on both.

    Raises:
        InputError: no spacing in the file, a spacing that is not a positive finite number, or
            non-square pixels.
        ScaleError: a target that is not a positive finite number.
    """
    if isinstance(target_mm, str):
        target = parse_decimal(target_mm, "--spacing", "0.5", " of millimetres")
    else:
        if isinstance(target_mm, bool) or not isinstance(target_mm, (Real, Fraction)):
            raise ScaleError(f"--spacing must be a positive number of millimetres, got {target_mm!r}")
        if not (math.isfinite(float(target_mm)) and target_mm > 0):
            raise ScaleError(f"--spacing must be a positive number of millimetres, got {_shown(target_mm)}")
        target = target_mm if isinstance(target_mm, Fraction) else Fraction(repr(float(target_mm)))
    if spacing is None:
        raise InputError("the input has no pixel spacing (only DICOM and NIfTI carry one); use --scale or --size")
    row, col = (float(v) for v in spacing)
    if not all(math.isfinite(v) and v > 0 for v in (row, col)):
        raise InputError(
            f"the input's pixel spacing ({row:g} x {col:g} mm) is not a positive finite number; fix the header "
            f"or use --scale or --size"
        )
    if abs(row - col) > 1e-6 * max(row, col):
        raise InputError(
            f"the input's pixels are not square ({row:g} x {col:g} mm) and one scale serves both axes, so no scale "
            f"gives {_shown(target)} mm on both; use --scale or --size"
        )
    ratio = Fraction(repr(row)) / target
    return Scale(ratio if ratio.denominator <= MAX_DENOMINATOR else ratio.limit_denominator(MAX_DENOMINATOR))


def parse_scale_option(text: str | Real | Fraction, flag: str = "--scale") -> Scale:
    """The one parser of a scale option (``metasr-run``, ``metasr-stream``): exact, 1 to :data:`MAX_SCALE`.

    ``2.3333`` is refused (it needs a denominator over :data:`MAX_DENOMINATOR`; the message names
    7/3), never silently run as 7/3.

    Raises:
        ScaleError: not a number, not exact, or outside 1..MAX_SCALE.
    """
    s = Scale(parse_scale_exact(text))
    if not SCALE_LIMITS[0] <= s.value <= SCALE_LIMITS[1]:
        shown = text.strip() if isinstance(text, str) else _shown(text)
        raise ScaleError(f"{flag} must be between 1 and {MAX_SCALE}, got {shown}")
    return s
