"""One intensity mapping per series, robust to a few extreme pixels, values beyond it kept."""

from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np
import pydicom
import pytest
from _scanners_data import ct_phantom, write_ct
from pydicom.uid import generate_uid

from metasr.core.errors import InputError
from metasr.scanners import DerivationInfo, IntensityWindow, SeriesGroup, group_series, read_image
from metasr.scanners.intensity import IntensityMap, measure_window

INFO = DerivationInfo("2", "ab" * 32, "0.1.0", "metasrgan-test", exact_scale=Fraction(2))


def _upscale(frames: np.ndarray) -> np.ndarray:
    from metasr.runtime import Upscaler

    return Upscaler("models/metasrgan-mri", device="cpu", threads=1).upscale(frames, "2")


def _hu(path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def _sr_hu(tmp_path, hu: np.ndarray, name: str, **read) -> np.ndarray:
    src = write_ct(tmp_path / f"{name}.dcm", hu)
    with read_image(src, **read) as scan:
        return _hu(scan.write_derived(_upscale(scan.frames), tmp_path / f"{name}_sr.dcm", INFO))


def test_one_extreme_pixel_does_not_change_pixels_far_from_it(tmp_path):
    clean = ct_phantom(64)
    marked = clean.copy()
    marked[0, 0] = 4000  # metal or a marker in the corner
    a, b = _sr_hu(tmp_path, clean, "clean"), _sr_hu(tmp_path, marked, "marked")
    far = np.ones(a.shape, bool)
    far[:40, :40] = False  # HR pixels whose LR source is fewer than 20 LR pixels from the corner
    # identical up to the rounding of a stored value: at most one level (1 HU), almost never
    diff = np.abs(a - b)[far]
    assert diff.max() <= 1.0 and diff.mean() < 0.01
    assert b[:2, :2].max() > 3000  # the extreme value itself is kept, not flattened to the window
    assert b.max() <= 4000 and b.min() >= clean.min()


def test_min_max_window_is_what_the_robust_one_fixes(tmp_path):
    """The same comparison with the min..max window fails: the test above can fail."""
    clean = ct_phantom(64)
    marked = clean.copy()
    marked[0, 0] = 4000
    a = _sr_hu(tmp_path, clean, "clean", intensity="data")
    b = _sr_hu(tmp_path, marked, "marked", intensity="data")
    assert np.abs(a - b)[40:, 40:].mean() > 0.5


def test_identity_round_trip_keeps_values_beyond_the_window(tmp_path):
    hu = ct_phantom(48)
    hu[5, 7], hu[30, 2] = 3000, -1024
    src = write_ct(tmp_path / "a.dcm", hu)
    with read_image(src) as scan:
        assert scan.residual is not None and scan.intensity.high < 3000 + 1024
        out = scan.write_derived(scan.frames, tmp_path / "b.dcm", INFO)
    np.testing.assert_array_equal(pydicom.dcmread(out).pixel_array, pydicom.dcmread(src).pixel_array)


def test_colour_output_stays_inside_the_input_range(tmp_path):
    rng = np.random.default_rng(1)
    bgr = cv2.GaussianBlur(rng.integers(30, 221, (40, 52, 3)).astype(np.uint8), (0, 0), 1.5)
    bgr[10:20, 10:20] = (220, 220, 220)
    bgr[25:30, 30:35] = (30, 30, 30)
    cv2.imwrite(str(tmp_path / "us.png"), bgr)
    with read_image(tmp_path / "us.png") as scan:
        sr = np.stack([cv2.resize(f, (104, 80), interpolation=cv2.INTER_CUBIC) for f in scan.frames]) * 1.2
        out = cv2.imread(str(scan.write_derived(sr.clip(0, 1), tmp_path / "o.png", INFO)), cv2.IMREAD_UNCHANGED)
    assert out.max() <= bgr.max() and out.min() >= bgr.min()


def _series(tmp_path, n: int, *, outlier: bool = False, name: str = "s"):
    series = generate_uid()
    paths = []
    for k in range(n):
        hu = ct_phantom(40, seed=k) + 30 * k  # slices differ in range
        if outlier and k == 1:
            hu[0, 0] = 4000
        paths.append(write_ct(tmp_path / f"{name}{k}.dcm", hu, series_uid=series))
    return series, paths


def test_group_series_shares_one_window_and_keeps_order(tmp_path):
    series, slices = _series(tmp_path, 3)
    _, other = _series(tmp_path, 2, name="t")
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\x00" * 200)
    png = tmp_path / "p.png"
    cv2.imwrite(str(png), np.full((8, 8), 7, np.uint8))
    order = [slices[2], other[0], bad, slices[0], png, other[1], slices[1]]
    groups = group_series(order)
    assert all(isinstance(g, SeriesGroup) for g in groups)
    assert [g.paths for g in groups] == [[slices[2], slices[0], slices[1]], [other[0], other[1]], [bad], [png]]
    assert groups[0].key == f"dicom:{series}" and groups[2].window is None and groups[3].window is None
    window = groups[0].window
    assert isinstance(window, IntensityWindow)
    maps = []
    for path in groups[0].paths:
        with read_image(path, window=window) as scan:
            maps.append((scan.intensity.low, scan.intensity.high))
    assert len(set(maps)) == 1 and maps[0] == (window.low, window.high)
    with pytest.raises(InputError):
        read_image(bad, window=groups[2].window)


def test_series_window_ignores_one_extreme_pixel(tmp_path):
    _, plain = _series(tmp_path, 3, name="a")
    _, marked = _series(tmp_path, 3, outlier=True, name="b")
    assert group_series(plain)[0].window == group_series(marked)[0].window


def test_group_series_bounds_its_sample(tmp_path, monkeypatch):
    import metasr.scanners.series as series_module

    _, paths = _series(tmp_path, 4)
    whole = group_series(paths)[0].window
    seen = []
    real = series_module.measure_window
    monkeypatch.setattr(series_module, "SAMPLE_VALUES", 3200)
    monkeypatch.setattr(
        series_module, "measure_window", lambda sample, *a, **k: seen.append(sample.size) or real(sample, *a, **k)
    )
    sampled = group_series(paths)[0].window
    assert seen == [4 * 800]  # 40x40 slices, at most 3200 / 4 values each: every other value
    step = (whole.high - whole.low) / 32
    assert abs(sampled.low - whole.low) <= step and abs(sampled.high - whole.high) <= step


def test_group_series_turns_an_unreadable_member_into_its_own_group(tmp_path):
    series, paths = _series(tmp_path, 3)
    ds = pydicom.dcmread(paths[1])
    ds.PixelData = ds.PixelData[:100]  # same series, pixels cut short
    ds.save_as(paths[1], enforce_file_format=True)
    groups = group_series(paths)
    assert [g.paths for g in groups] == [[paths[0], paths[2]], [paths[1]]]
    assert groups[0].window is not None and groups[1].window is None


@pytest.mark.parametrize(
    "policy, expected",
    [("full", (-32768, 32767)), ("data", (-3, 4000)), ("robust", None), ("auto", None)],
)
def test_policies(policy, expected):
    values = np.concatenate([np.arange(0, 1000), [-3, 4000]]).astype(np.int16)
    m = IntensityMap.for_data(values, policy=policy)
    if expected is not None:
        assert (m.low, m.high) == expected
    else:  # robust: the bulk of the values, not the two extremes
        assert -3 < m.low <= 8 and 990 <= m.high < 1100


def test_window_arguments_are_checked():
    with pytest.raises(InputError, match="invalid"):
        IntensityWindow(5.0, 5.0)
    with pytest.raises(InputError, match="not one of"):
        read_image("x.png", intensity="window")
    w = measure_window(np.array([1.0, 2.0]), 1.0, 2.0, policy="robust", dtype=np.float32)
    assert (w.low, w.high) == (1.0, 2.0)
