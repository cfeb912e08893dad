"""PNG/TIFF/JPEG reading and writing, intensity maps and luminance processing (metasr.scanners)."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from metasr.core.errors import OutputError
from metasr.scanners import DerivationInfo, ImageFormat, IntensityMap, IntensityRange, iter_images, read_image
from metasr.scanners.intensity import merge_luma, split_luma

INFO = DerivationInfo(scale="2.3", model_id="0" * 64, software_version="0.1.0", model_name="test-model")


def _bicubic(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_CUBIC) for f in frames]).clip(0, 1)


def _write(path, array) -> None:
    assert cv2.imwrite(str(path), array)


@pytest.mark.parametrize(
    "name, dtype, high",
    [
        ("g8.png", np.uint8, 255),
        ("g16.png", np.uint16, 65535),
        ("g12.png", np.uint16, 4095),
        ("g8.tif", np.uint8, 255),
        ("g16.tif", np.uint16, 65535),
    ],
)
def test_gray_identity_round_trip_is_exact(tmp_path, name, dtype, high):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, high + 1, (37, 50)).astype(dtype)
    _write(tmp_path / name, pixels)
    scan = read_image(tmp_path / name)
    assert scan.frames.shape == (1, 37, 50) and scan.frames.dtype == np.float32
    assert 0.0 <= scan.frames.min() and scan.frames.max() <= 1.0
    out = scan.write_derived(scan.frames, tmp_path / f"out_{name}", INFO)
    back = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert back.dtype == pixels.dtype
    np.testing.assert_array_equal(back, pixels)


def test_16bit_is_not_crushed_to_8bit(tmp_path):
    # 1000 distinct 12-bit levels must stay 1000 distinct frame values (8 bits would leave <= 256).
    pixels = np.arange(1000, 2000, dtype=np.uint16).reshape(20, 50)
    _write(tmp_path / "a.png", pixels)
    scan = read_image(tmp_path / "a.png")
    assert len(np.unique(scan.frames)) == 1000
    # The window hugs the data (robust percentiles on a coarse grid): the frames use almost all of [0, 1].
    assert scan.frames.max() - scan.frames.min() > 0.98
    assert 1000 - 16 <= scan.intensity.low <= 1000 and 1999 <= scan.intensity.high <= 1999 + 16
    data = read_image(tmp_path / "a.png", intensity="data")
    assert (data.intensity.low, data.intensity.high) == (1000, 1999)
    assert data.frames.min() == 0.0 and data.frames.max() == 1.0


def test_upscaled_output_keeps_bit_depth_and_range(tmp_path):
    rng = np.random.default_rng(1)
    pixels = rng.integers(300, 3000, (37, 50)).astype(np.uint16)
    _write(tmp_path / "a.tif", pixels)
    scan = read_image(tmp_path / "a.tif")
    out = scan.write_derived(_bicubic(scan.frames, 85, 115), tmp_path / "b.tif", INFO)
    back = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert back.shape == (85, 115) and back.dtype == np.uint16
    assert back.min() >= pixels.min() and back.max() <= pixels.max()


def test_float_tiff_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    pixels = (rng.random((20, 30)) * 7 - 3).astype(np.float32)
    _write(tmp_path / "f.tif", pixels)
    scan = read_image(tmp_path / "f.tif")
    back = cv2.imread(str(scan.write_derived(scan.frames, tmp_path / "g.tif", INFO)), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, pixels, atol=1e-5)


@pytest.mark.parametrize("channels", [3, 4])
def test_colour_identity_round_trip_and_luma(tmp_path, channels):
    rng = np.random.default_rng(3)
    bgr = rng.integers(0, 256, (24, 31, channels)).astype(np.uint8)
    _write(tmp_path / "c.png", bgr)
    scan = read_image(tmp_path / "c.png")
    assert scan.format is ImageFormat.PNG and scan.is_color
    b, g, r = (bgr[..., k].astype(np.float64) / 255 for k in range(3))
    np.testing.assert_allclose(scan.frames[0], 0.299 * r + 0.587 * g + 0.114 * b, atol=1e-6)
    back = cv2.imread(str(scan.write_derived(scan.frames, tmp_path / "d.png", INFO)), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(back, bgr)


def test_colour_upscale_resizes_chroma_bicubically(tmp_path):
    rng = np.random.default_rng(4)
    bgr = cv2.GaussianBlur(rng.integers(0, 256, (20, 30, 3)).astype(np.uint8), (5, 5), 2)
    _write(tmp_path / "c.png", bgr)
    scan = read_image(tmp_path / "c.png")
    luma = _bicubic(scan.frames, 46, 69)
    back = cv2.imread(str(scan.write_derived(luma, tmp_path / "d.png", INFO)), cv2.IMREAD_UNCHANGED)
    assert back.shape == (46, 69, 3)
    # Recompute the expected colours independently: bicubic chroma differences + the new luma.
    rgb = bgr[..., ::-1].astype(np.float32) / 255
    y = rgb @ np.float32([0.299, 0.587, 0.114])
    diff = np.stack([rgb[..., 2] - y, rgb[..., 0] - y], -1)
    d = cv2.resize(diff, (69, 46), interpolation=cv2.INTER_CUBIC)
    bb, rr = luma[0] + d[..., 0], luma[0] + d[..., 1]
    gg = (luma[0] - 0.299 * rr - 0.114 * bb) / 0.587
    # Outputs stay inside the input's own range.
    expected = np.clip(np.rint(np.clip(np.stack([bb, gg, rr], -1), 0, 1) * 255), bgr.min(), bgr.max())
    assert np.abs(back.astype(np.float64) - expected).max() <= 1


def test_jpeg_reads_and_writes_8bit(tmp_path):
    rng = np.random.default_rng(5)
    pixels = cv2.GaussianBlur(rng.integers(0, 256, (32, 40)).astype(np.uint8), (5, 5), 2)
    assert cv2.imwrite(str(tmp_path / "a.jpg"), pixels)
    scan = read_image(tmp_path / "a.jpg")
    assert scan.format is ImageFormat.JPEG and scan.default_suffix == ".jpg"
    back = cv2.imread(
        str(scan.write_derived(_bicubic(scan.frames, 64, 80), tmp_path / "b.jpg", INFO)), cv2.IMREAD_UNCHANGED
    )
    assert back.shape == (64, 80) and back.dtype == np.uint8


def test_16bit_input_refuses_jpeg_and_unknown_suffix(tmp_path):
    _write(tmp_path / "a.png", np.arange(600, dtype=np.uint16).reshape(20, 30) * 50)
    scan = read_image(tmp_path / "a.png")
    with pytest.raises(OutputError, match="JPEG cannot hold"):
        scan.write_derived(scan.frames, tmp_path / "b.jpg", INFO)
    with pytest.raises(OutputError, match="unknown image suffix"):
        scan.write_derived(scan.frames, tmp_path / "b.xyz", INFO)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_context_manager_releases_frames(tmp_path):
    _write(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    with read_image(tmp_path / "a.png") as scan:
        assert scan.frames.shape == (1, 8, 8)
    assert scan.frames.size == 0


def test_iter_images_lists_supported_files(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    for name in ["b.png", "a.TIF", "c.jpeg", "d.nii.gz", "e.txt", ".hidden.png"]:
        (tmp_path / name).write_bytes(b"x")
    pydicom.dcmread(get_testdata_file("MR_small.dcm")).save_as(tmp_path / "IM0001")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f.png").write_bytes(b"x")
    assert [p.name for p in iter_images(tmp_path)] == ["IM0001", "a.TIF", "b.png", "c.jpeg", "d.nii.gz"]
    assert "f.png" in [p.name for p in iter_images(tmp_path, recursive=True)]


def test_iter_images_finds_dicom_by_content(tmp_path):
    from pydicom.data import get_testdata_file

    data = open(get_testdata_file("MR_small.dcm"), "rb").read()
    (tmp_path / "IM0001").write_bytes(data)
    (tmp_path / "IM0002").write_bytes(data[132:])  # no preamble: explicit VR from group 0x0002
    (tmp_path / "IM0003").write_bytes(open(get_testdata_file("MR_small_implicit.dcm"), "rb").read()[132:])
    (tmp_path / "notes").write_bytes(b"patient list, not an image" * 4)
    os.mkfifo(tmp_path / "pipe")
    assert [p.name for p in iter_images(tmp_path)] == ["IM0001", "IM0002", "IM0003"]


# ---- intensity maps -------------------------------------------------------------------------


def test_intensity_auto_policy():
    u8 = np.array([[10, 20]], np.uint8)
    assert (IntensityMap.for_data(u8).low, IntensityMap.for_data(u8).high) == (0, 255)
    s16 = np.array([[-100, 900]], np.int16)
    m = IntensityMap.for_data(s16, bits=12)  # robust: the percentiles on a grid of 1/64 of the span
    assert (m.low, m.high, m.clip_low, m.clip_high) == (-104, 904, -2048, 2047)
    full = IntensityMap.for_data(s16, bits=12, policy=IntensityRange.FULL)
    assert (full.low, full.high) == (-2048, 2047)
    with pytest.raises(ValueError):
        IntensityRange("window")


def test_intensity_invert_and_clipping():
    values = np.array([0, 1000, 4095], np.uint16)
    m = IntensityMap.for_data(values, bits=12, invert=True, policy="full")
    np.testing.assert_allclose(m.to_unit(values), [1.0, 1 - 1000 / 4095, 0.0], atol=1e-7)
    np.testing.assert_array_equal(m.from_unit(m.to_unit(values)), values)
    np.testing.assert_array_equal(m.from_unit(np.array([-0.5, 1.5])), [4095, 0])  # clipped into range


def test_intensity_round_trip_every_16bit_value():
    values = np.arange(-32768, 32768, dtype=np.int16)
    m = IntensityMap.for_data(values)
    np.testing.assert_array_equal(m.from_unit(m.to_unit(values)), values)


def test_luma_split_merge_is_exact_inverse():
    rng = np.random.default_rng(6)
    rgb = rng.random((2, 9, 11, 3)).astype(np.float32)
    y, chroma = split_luma(rgb)
    np.testing.assert_allclose(merge_luma(y, chroma), rgb, atol=2e-6)


def test_scanners_never_import_torch(tmp_path):
    import subprocess
    import sys

    assert cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8), np.uint8))
    code = (
        "import sys; from metasr.scanners import read_image, DerivationInfo; "
        "import metasr.scanners.dicom, metasr.scanners.nifti; "
        f"s = read_image({str(tmp_path / 'a.png')!r}); "
        f"s.write_derived(s.frames, {str(tmp_path / 'b.png')!r}, DerivationInfo('1', 'm', '0', 'n')); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
