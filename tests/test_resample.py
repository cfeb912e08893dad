"""Chroma and alpha are resampled on the network's pixel grid, not by the size ratio."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from metasr.core.resample import resize_on_grid
from metasr.runtime.cli import main

# warpAffine interpolates at 1/32-pixel resolution (INTER_BITS = 5): positions are within 1/64
POSITION_TOLERANCE = 1 / 64 + 1 / 1024


def _keys(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """OpenCV's bicubic kernel (Keys, a = -0.75)."""
    t = np.abs(t)
    return np.where(
        t <= 1, (a + 2) * t**3 - (a + 3) * t**2 + 1, np.where(t < 2, a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a, 0.0)
    )


def _bicubic_at(row: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Reference 1-D bicubic interpolation of ``row`` at positions ``where`` (edges replicated)."""
    base = np.floor(where).astype(int)
    out = np.zeros(where.shape)
    for k in range(-1, 3):
        out += _keys(where - (base + k)) * row[np.clip(base + k, 0, row.size - 1)]
    return out


@pytest.mark.parametrize(
    ("scale", "w"), [(Fraction(23, 10), 50), (Fraction(9, 5), 37), (Fraction(37, 10), 41), (Fraction(11, 10), 64)]
)
def test_output_pixel_i_samples_input_at_i_plus_half_over_r_minus_half(scale: Fraction, w: int) -> None:
    # columns of a smooth profile with slope <= 1 per pixel, so value errors bound position errors
    row = (w / 4) * np.sin(np.arange(w) / (w / 4)).astype(np.float32)
    plane = np.tile(row, (8, 1))
    width = (w * scale.numerator) // scale.denominator
    out = resize_on_grid(plane, 8, width, scale)
    where = (np.arange(width) + 0.5) / float(scale) - 0.5
    want = _bicubic_at(row.astype(np.float64), where)
    assert np.abs(out[4] - want).max() <= POSITION_TOLERANCE
    # the size ratio puts pixels elsewhere when w * r is not an integer: the far edge is off
    resized = cv2.resize(plane, (width, 8), interpolation=cv2.INTER_CUBIC)
    if w * scale != width:
        assert np.abs(resized[4] - want).max() > 4 * POSITION_TOLERANCE


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("channels", [None, 2, 3])
def test_integer_output_sizes_match_a_plain_resize(dtype: type, channels: int | None) -> None:
    rng = np.random.default_rng(0)
    shape = (20, 30) if channels is None else (20, 30, channels)
    top = 1.0 if dtype is np.float32 else np.iinfo(dtype).max
    image = (cv2.GaussianBlur(rng.random(shape).astype(np.float32), (5, 5), 1.5) * top).astype(dtype)
    out = resize_on_grid(image, 40, 60, Fraction(2))
    plain = cv2.resize(image, (60, 40), interpolation=cv2.INTER_CUBIC)
    assert out.dtype == image.dtype and out.shape == plain.shape
    assert np.abs(out.astype(np.float64) - plain).max() <= (1e-5 * top if dtype is np.float32 else 1)


def test_no_scale_means_the_size_ratio() -> None:
    image = np.random.default_rng(1).random((10, 13)).astype(np.float32)
    np.testing.assert_array_equal(
        resize_on_grid(image, 23, 29), cv2.resize(image, (29, 23), interpolation=cv2.INTER_CUBIC)
    )


def test_metasr_run_keeps_colour_on_the_luma_grid(tmp_path: Path, tiny_export_dir: Path) -> None:
    """An RGB PNG at x2.3: the written chroma is the input's chroma resampled at exactly 2.3."""
    h, w = 31, 47  # 71.3 x 108.1 at x2.3: the output size is not the scale times the input size
    ramp = np.arange(w, dtype=np.float32) / (w - 1)
    rgb = np.zeros((h, w, 3), np.float32)
    rgb[..., 0] = 0.3 + 0.5 * ramp  # red rises left to right, blue falls: strong chroma gradient
    rgb[..., 2] = 0.8 - 0.5 * ramp
    rgb[..., 1] = 0.4
    bgr = np.rint(rgb[..., ::-1] * 65535).astype(np.uint16)
    source = tmp_path / "colour.png"
    assert cv2.imwrite(str(source), bgr)
    out = tmp_path / "colour_big.png"
    assert main(["--input", str(source), "--scale", "2.3", "--output", str(out), "--model", str(tiny_export_dir)]) == 0
    back = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)[..., ::-1].astype(np.float64) / 65535
    assert back.shape == (71, 108, 3)

    def chroma(image: np.ndarray) -> np.ndarray:  # (R - Y) of BT.601
        return image[..., 0] - image @ np.array([0.299, 0.587, 0.114])

    stored = bgr[..., ::-1].astype(np.float32) / 65535
    want = resize_on_grid(chroma(stored).astype(np.float32), 71, 108, Fraction(23, 10))
    by_size = cv2.resize(chroma(stored).astype(np.float32), (108, 71), interpolation=cv2.INTER_CUBIC)
    got = chroma(back)
    # outputs are clipped to the input's value window (0.3..0.8 here); where the (tiny, untrained)
    # model's luma pushed a channel onto it, the clip changes the chroma
    lo, hi = stored.min(), stored.max()
    unclipped = ((back > lo + 2 / 65535) & (back < hi - 2 / 65535)).all(axis=-1)
    assert unclipped.mean() > 0.5
    error = np.abs(got - want)[unclipped].max()
    assert error < 2e-4  # 16-bit rounding
    assert np.abs(by_size - want)[unclipped].max() > 10 * error
