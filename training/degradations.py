"""How a scanner makes the low-resolution image: the degradations of training and evaluation.

An LR image of ``h x w`` pixels is made from an HR image at exactly ``1/r`` with the geometry of
the Meta-Upscale index contract: LR pixel ``k`` is centred on HR pixel coordinate
``(k + 0.5) * r - 0.5`` (pixel centres at integers), i.e. it covers the HR interval
``[k r, (k + 1) r)`` in pixel-edge coordinates. Three ways to get there:

* ``bicubic``: antialiased bicubic resampling (the classic SR protocol;
  :func:`metasr.training.pairs.downscale_exact`).
* ``gauss``: a Gaussian point-spread function of FWHM ``f * r`` HR pixels (``f`` 0.7-1.5; 1.0
  gives ``sigma = 0.425 r``) followed by exact area sampling over ``[k r, (k + 1) r)``, the HR
  image taken as piecewise constant. The whole operator is computed in closed form (integrals of
  the normal CDF), so it is exact, not a sampled kernel.
* ``kspace``: how MR acquires a lower matrix over the same field of view: the centred spectrum
  is cropped to the LR matrix (optionally apodised by a Hamming or Tukey window), which is
  exact for band-limited images. The image is extended by its mirror image first (so a patch
  has no artificial edge) and sampled at the LR grid above by a phase ramp. It needs an HR
  length that is a whole multiple of ``r`` (``q`` must divide the LR length at ``r = p/q``):
  the LR grid is computed on the next such length and cropped.

Noise is added to the LR, as a scanner adds it to what it measured: ``rician`` (magnitude MR:
``sqrt((x + n1)^2 + n2^2)``, ``n1, n2 ~ N(0, sigma)``; its mean at zero signal is
``sigma * sqrt(pi/2)``) or ``gaussian`` (CT), ``sigma`` a fraction of the [0, 1] range. The LR
is clipped to [0, 1] afterwards, as the runtime's intensity window feeds the network.

:class:`DegradationMix` draws one degradation per training patch (the clean case kept in the mix).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import Enum
from fractions import Fraction

import numpy as np

from metasr.core.errors import InputError
from metasr.core.kspace import Window, kspace_downscale, kspace_upscale
from metasr.core.scale import hr_length

__all__ = [
    "Kind",
    "Window",
    "NoiseKind",
    "Degradation",
    "DegradationMix",
    "parse_degradation",
    "parse_noise",
    "area_gauss_matrix",
    "gauss_downscale",
    "kspace_downscale",
    "kspace_upscale",
    "add_noise",
    "hr_needed",
]

#: Gaussian FWHM = this factor times sigma.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
#: Largest noise sigma accepted (a fraction of the range).
MAX_SIGMA = 0.5


class Kind(str, Enum):
    """How the LR image is formed from the HR image."""

    BICUBIC = "bicubic"
    GAUSS = "gauss"
    KSPACE = "kspace"


class NoiseKind(str, Enum):
    """Noise added to the LR image."""

    NONE = "none"
    RICIAN = "rician"
    GAUSSIAN = "gaussian"


@dataclass(frozen=True)
class Degradation:
    """One way of making an LR image.

    Attributes:
        kind: bicubic, gauss or kspace.
        fwhm: PSF FWHM in units of the scale (``gauss``): FWHM = ``fwhm * r`` HR pixels.
        window: apodisation of the kept spectrum (``kspace``).
        noise: noise model added to the LR.
        sigma: noise standard deviation, a fraction of the [0, 1] range.
    """

    kind: Kind = Kind.BICUBIC
    fwhm: float = 1.0
    window: Window = Window.NONE
    noise: NoiseKind = NoiseKind.NONE
    sigma: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", Kind(self.kind))
        object.__setattr__(self, "window", Window(self.window))
        object.__setattr__(self, "noise", NoiseKind(self.noise))
        if not (math.isfinite(self.fwhm) and 0.1 <= self.fwhm <= 4.0):
            raise InputError(f"PSF FWHM {self.fwhm!r} (in units of the scale) must be between 0.1 and 4")
        if not (math.isfinite(self.sigma) and 0.0 <= self.sigma <= MAX_SIGMA):
            raise InputError(f"noise sigma {self.sigma!r} must be between 0 and {MAX_SIGMA:g} of the range")
        if self.noise is NoiseKind.NONE and self.sigma:
            object.__setattr__(self, "sigma", 0.0)

    @property
    def label(self) -> str:
        """Short text naming it, e.g. ``gauss`` or ``kspace:hamming+rician:0.02``."""
        text = self.kind.value
        if self.kind is Kind.GAUSS and self.fwhm != 1.0:
            text += f":{self.fwhm:g}"
        if self.kind is Kind.KSPACE and self.window is not Window.NONE:
            text += f":{self.window.value}"
        if self.noise is not NoiseKind.NONE and self.sigma > 0:
            text += f"+{self.noise.value}:{self.sigma:g}"
        return text

    def with_noise(self, noise: NoiseKind | str, sigma: float) -> Degradation:
        return replace(self, noise=NoiseKind(noise), sigma=float(sigma))

    def apply(self, hr: np.ndarray, scale: Fraction, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """The LR image ``[h, w]`` (float32 in [0, 1]) of ``hr`` (at least :func:`hr_needed` pixels)."""
        image = np.asarray(hr, dtype=np.float64)
        if self.kind is Kind.BICUBIC:
            from metasr.training.pairs import downscale_exact

            lr = downscale_exact(image.astype(np.float32), scale, size).numpy().astype(np.float64)
        elif self.kind is Kind.GAUSS:
            lr = gauss_downscale(image, scale, size, self.fwhm)
        else:
            lr = kspace_downscale(image, scale, size, self.window)
        lr = add_noise(lr, self.noise, self.sigma, rng)
        return np.clip(lr, 0.0, 1.0).astype(np.float32)


def hr_needed(kind: Kind | str, h: int, scale: Fraction) -> int:
    """HR pixels an axis needs to give ``h`` LR pixels with degradation ``kind``."""
    if Kind(kind) is Kind.KSPACE:
        q = scale.denominator
        return hr_length(-(-h // q) * q, scale)  # the next LR length that is a multiple of q
    return hr_length(h, scale) + 1  # the bicubic/area footprint reaches one pixel past floor(h r)


def parse_degradation(text: str) -> Degradation:
    """``bicubic``, ``gauss`` or ``gauss:FWHM`` (in units of r), ``kspace`` or ``kspace:hamming|tukey``.

    Raises:
        InputError: anything else, naming the accepted forms.
    """
    head, _, arg = str(text).strip().lower().partition(":")
    try:
        kind = Kind(head)
        if kind is Kind.GAUSS:
            return Degradation(kind, fwhm=float(arg) if arg else 1.0)
        if kind is Kind.KSPACE:
            return Degradation(kind, window=Window(arg or "none"))
        if arg:
            raise ValueError(arg)
        return Degradation(kind)
    except ValueError:
        raise InputError(
            f"degradation {text!r} is not understood; use bicubic, gauss, gauss:FWHM (0.1-4, in units of "
            f"the scale), kspace, kspace:hamming or kspace:tukey"
        ) from None


#: The realistic mix's reductions and their weights (``metasr-train --reduction-mix``).
DEFAULT_REDUCTION_MIX = "bicubic=0.3,gauss=0.4,kspace=0.3"


def parse_reduction_mix(text: str) -> tuple[tuple[Kind, float], ...]:
    """``bicubic=W,gauss=W,kspace=W`` (any subset, weights >= 0, not all 0) as normalised pairs.

    Raises:
        InputError: an unknown or repeated reduction, a weight that is not a finite number >= 0,
            or weights that are all 0.
    """
    names = ", ".join(k.value for k in Kind)
    form = f"use NAME=WEIGHT pairs separated by commas, NAME one of {names} (e.g. {DEFAULT_REDUCTION_MIX})"
    pairs: dict[Kind, float] = {}
    for item in str(text).split(","):
        name, eq, weight = item.strip().lower().partition("=")
        try:
            kind, value = Kind(name.strip()), float(weight)
        except ValueError:
            raise InputError(f"reduction mix {text!r}: {item.strip()!r} is not understood; {form}") from None
        if not eq or not math.isfinite(value) or value < 0:
            raise InputError(f"reduction mix {text!r}: the weight of {kind.value} must be a finite number >= 0; {form}")
        if kind in pairs:
            raise InputError(f"reduction mix {text!r} names {kind.value} twice; {form}")
        pairs[kind] = value
    total = sum(pairs.values())
    if total <= 0:
        raise InputError(f"reduction mix {text!r} has no positive weight; {form}")
    return tuple((kind, value / total) for kind, value in pairs.items() if value > 0)


def parse_noise(text: str) -> tuple[NoiseKind, float]:
    """``none``, ``0``, ``rician:SIGMA`` or ``gaussian:SIGMA`` (a fraction of the range, e.g. 0.02).

    Raises:
        InputError: anything else.
    """
    head, _, arg = str(text).strip().lower().partition(":")
    if head in ("none", "0", "0.0") and not arg:
        return NoiseKind.NONE, 0.0
    try:
        kind = NoiseKind(head)
        sigma = float(arg)
        if kind is NoiseKind.NONE or not (math.isfinite(sigma) and 0 <= sigma <= MAX_SIGMA):
            raise ValueError(arg)
        return kind, sigma
    except ValueError:
        raise InputError(
            f"noise {text!r} is not understood; use none, rician:SIGMA or gaussian:SIGMA with SIGMA a "
            f"fraction of the range from 0 to {MAX_SIGMA:g} (e.g. rician:0.02)"
        ) from None


# --------------------------------------------------------------------------------------------
# Gaussian PSF with exact area sampling


def _psi(z: np.ndarray) -> np.ndarray:
    """Antiderivative of the standard normal CDF: ``z Phi(z) + phi(z)``."""
    from scipy.special import ndtr

    return z * ndtr(z) + np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def area_gauss_matrix(n_in: int, h: int, scale: Fraction, fwhm: float = 1.0) -> np.ndarray:
    """``[h, n_in]`` operator: Gaussian PSF (FWHM ``fwhm * r``) then area sampling over ``[k r, (k+1) r)``.

    HR pixel ``j`` is the constant value over ``[j, j + 1)``. Entry ``[k, j]`` is
    ``(1/r) * int_{kr}^{(k+1)r} int_j^{j+1} g(x - y) dy dx``, in closed form. Weights that fall
    outside ``[0, n_in)`` are folded back by mirror reflection, so every row sums to 1.
    """
    r = float(scale)
    sigma = fwhm * r / FWHM_PER_SIGMA
    reach = int(math.ceil(5 * sigma + r)) + 2
    k = np.arange(h, dtype=np.float64)[:, None]
    j = np.arange(-reach, n_in + reach, dtype=np.float64)[None, :]
    x0, x1 = k * r, (k + 1) * r

    def part(x: np.ndarray, a: np.ndarray) -> np.ndarray:
        return _psi((x - a) / sigma)

    weights = sigma / r * (part(x1, j) - part(x0, j) - part(x1, j + 1) + part(x0, j + 1))
    cols = np.arange(-reach, n_in + reach)
    period = 2 * n_in
    folded = np.mod(cols, period)
    folded = np.where(folded >= n_in, period - 1 - folded, folded)  # half-sample symmetric mirror
    out = np.zeros((h, n_in))
    np.add.at(out.T, folded, weights.T)
    return out


def gauss_downscale(hr: np.ndarray, scale: Fraction, size: tuple[int, int], fwhm: float = 1.0) -> np.ndarray:
    """LR ``[h, w]`` by a Gaussian PSF of FWHM ``fwhm * r`` and exact area sampling (float64)."""
    h, w = size
    rows = area_gauss_matrix(hr.shape[0], h, scale, fwhm)
    cols = area_gauss_matrix(hr.shape[1], w, scale, fwhm)
    return rows @ np.asarray(hr, dtype=np.float64) @ cols.T


# --------------------------------------------------------------------------------------------
# k-space truncation


# --------------------------------------------------------------------------------------------
# Noise


def add_noise(lr: np.ndarray, kind: NoiseKind | str, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``lr`` with Rician or Gaussian noise of standard deviation ``sigma`` (not clipped)."""
    kind = NoiseKind(kind)
    if kind is NoiseKind.NONE or sigma <= 0:
        return lr
    if kind is NoiseKind.GAUSSIAN:
        return lr + rng.normal(0.0, sigma, lr.shape)
    real = lr + rng.normal(0.0, sigma, lr.shape)
    imag = rng.normal(0.0, sigma, lr.shape)
    return np.sqrt(real * real + imag * imag)


# --------------------------------------------------------------------------------------------
# Training mix


@dataclass(frozen=True)
class DegradationMix:
    """The distribution a training patch's degradation is drawn from.

    Attributes:
        kinds: ``(kind, probability)`` pairs.
        fwhm: range of the Gaussian PSF's FWHM in units of the scale.
        clean: probability of no noise.
        max_sigma: noise sigma drawn uniformly from (0, max_sigma] otherwise.
        rician: probability that the noise is Rician (else Gaussian).
        hr_noise: probability that the HR patch itself carries acquisition noise (sigma and kind
            drawn as the LR's), added before the LR is made, so the target keeps it: the share of
            the LR's noise that comes from the HR is signal to reconstruct, noise added to the LR
            is not (:meth:`sample_hr_noise`).
    """

    kinds: tuple[tuple[Kind, float], ...] = parse_reduction_mix(DEFAULT_REDUCTION_MIX)
    fwhm: tuple[float, float] = (0.7, 1.5)
    clean: float = 0.35
    max_sigma: float = 0.03
    rician: float = 0.6
    windows: tuple[Window, ...] = field(default=(Window.NONE, Window.HAMMING, Window.TUKEY))
    hr_noise: float = 0.0

    @classmethod
    def bicubic_only(cls) -> DegradationMix:
        """The classic protocol: antialiased bicubic, no noise."""
        return cls(kinds=((Kind.BICUBIC, 1.0),), clean=1.0, max_sigma=0.0)

    @property
    def needs_kspace(self) -> bool:
        return any(k is Kind.KSPACE and p > 0 for k, p in self.kinds)

    def sample(self, rng: np.random.Generator) -> Degradation:
        names = [k for k, _ in self.kinds]
        probs = np.array([p for _, p in self.kinds], dtype=np.float64)
        kind = names[int(rng.choice(len(names), p=probs / probs.sum()))]
        deg = Degradation(kind)
        if kind is Kind.GAUSS:
            deg = replace(deg, fwhm=float(rng.uniform(*self.fwhm)))
        elif kind is Kind.KSPACE:
            deg = replace(deg, window=self.windows[int(rng.integers(0, len(self.windows)))])
        if self.max_sigma > 0 and rng.random() >= self.clean:
            deg = deg.with_noise(*self._draw_noise(rng))
        return deg

    def _draw_noise(self, rng: np.random.Generator) -> tuple[NoiseKind, float]:
        """A noise kind (Rician with probability ``rician``) and a sigma uniform in (0, max_sigma]."""
        kind = NoiseKind.RICIAN if rng.random() < self.rician else NoiseKind.GAUSSIAN
        return kind, float(rng.uniform(0.0, self.max_sigma)) or self.max_sigma

    def sample_hr_noise(self, rng: np.random.Generator) -> tuple[NoiseKind, float]:
        """The acquisition noise of one HR patch: ``(NONE, 0.0)`` for a share ``1 - hr_noise``.

        Draws nothing from ``rng`` when ``hr_noise`` is 0, so runs without it are unchanged.
        """
        if self.hr_noise <= 0 or self.max_sigma <= 0 or rng.random() >= self.hr_noise:
            return NoiseKind.NONE, 0.0
        return self._draw_noise(rng)

    def describe(self) -> dict:
        """JSON-friendly record of the mix (written into the run's config)."""
        return {
            "kinds": {k.value: p for k, p in self.kinds},
            "fwhm": list(self.fwhm),
            "clean": self.clean,
            "max_sigma": self.max_sigma,
            "rician": self.rician,
            "windows": [w.value for w in self.windows],
            "hr_noise": self.hr_noise,
        }
