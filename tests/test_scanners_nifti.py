"""NIfTI volumes: slice axis, exact round trips, affine/zooms of derived volumes (metasr.scanners.nifti)."""

from __future__ import annotations

import cv2
import nibabel as nib
import numpy as np
import pytest

from metasr.core.errors import InputError
from metasr.scanners import DerivationInfo, ImageFormat, read_image
from metasr.scanners.nifti import default_slice_axis

INFO = DerivationInfo(scale="2.3", model_id="cd" * 32, software_version="0.1.0", model_name="metasrgan-test")

# An oblique, anisotropic voxel-to-world affine: voxel sizes 0.9 x 1.1 x 4.0 mm.
AFFINE = np.array([[0.0, 0.0, -4.0, 10.0], [0.9, 0.0, 0.0, -20.0], [0.0, 1.1, 0.0, 5.0], [0.0, 0.0, 0.0, 1.0]])


def _bicubic(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_CUBIC) for f in frames]).clip(0, 1)


def _save(path, data, affine=AFFINE, slope_inter=None, cls=nib.Nifti1Image):
    img = cls(data, affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=2)
    if slope_inter is not None:
        img.header.set_slope_inter(*slope_inter)
    nib.save(img, path)
    return path


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_int16_with_scaling_round_trips_exactly(tmp_path, suffix):
    rng = np.random.default_rng(0)
    data = rng.integers(-500, 3000, (37, 50, 6)).astype(np.int16)
    src = _save(tmp_path / f"v{suffix}", data, slope_inter=(0.5, -100.0))
    scan = read_image(src)
    assert scan.format is ImageFormat.NIFTI and scan.default_suffix == suffix
    assert scan.axis == 2 and scan.frames.shape == (6, 37, 50)
    assert scan.spacing == pytest.approx((0.9, 1.1))
    out = nib.load(scan.write_derived(scan.frames, tmp_path / f"o{suffix}", INFO))
    assert out.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(out.dataobj.get_unscaled()), data)
    assert (out.dataobj.slope, out.dataobj.inter) == (0.5, -100.0)
    np.testing.assert_allclose(out.affine, AFFINE, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_other_dtypes_round_trip(tmp_path, dtype):
    rng = np.random.default_rng(1)
    data = (rng.random((12, 14, 3)) * 200).astype(dtype)
    scan = read_image(_save(tmp_path / "v.nii", data))
    out = nib.load(scan.write_derived(scan.frames, tmp_path / "o.nii", INFO))
    assert out.get_data_dtype() == dtype
    np.testing.assert_allclose(np.asarray(out.dataobj), data, atol=1e-4)


def test_default_slice_axis_is_the_largest_voxel_size():
    assert default_slice_axis((1.0, 1.0, 5.0)) == 2
    assert default_slice_axis((3.0, 1.0, 1.0)) == 0
    assert default_slice_axis((1.0, 2.0, 1.0)) == 1
    assert default_slice_axis((1.0, 1.0, 1.0)) == 2  # ties: the last axis


def test_slice_axis_choice(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    affine = np.diag([3.0, 1.0, 1.0, 1.0])  # largest voxel size along axis 0
    src = _save(tmp_path / "v.nii", data, affine=affine)
    scan = read_image(src)
    assert scan.axis == 0 and scan.frames.shape == (4, 5, 6)
    scan1 = read_image(src, axis=1)
    assert scan1.frames.shape == (5, 4, 6)
    np.testing.assert_array_equal(scan1.intensity.from_unit(scan1.frames[2]), data[:, 2, :])
    with pytest.raises(InputError, match="slice axis"):
        read_image(src, axis=3)


def test_geometry_of_derived_volume(tmp_path):
    data = np.random.default_rng(2).integers(0, 1000, (37, 50, 4)).astype(np.int16)
    scan = read_image(_save(tmp_path / "v.nii.gz", data))
    out = nib.load(scan.write_derived(_bicubic(scan.frames, 85, 115), tmp_path / "o.nii.gz", INFO))
    assert out.shape == (85, 115, 4)
    f0, f1 = 37 / 85, 50 / 115
    assert out.header.get_zooms() == pytest.approx((0.9 * f0, 1.1 * f1, 4.0), rel=1e-6)
    # Hand-computed affine: in-plane columns scaled by old/new, origin moved by (f - 1)/2 of each column.
    expected = AFFINE.copy()
    expected[:3, 0] *= f0
    expected[:3, 1] *= f1
    expected[:3, 3] += 0.5 * (f0 - 1) * AFFINE[:3, 0] + 0.5 * (f1 - 1) * AFFINE[:3, 1]
    for affine, _code in (out.header.get_qform(coded=True), out.header.get_sform(coded=True)):
        np.testing.assert_allclose(affine, expected, atol=1e-5)
    assert (int(out.header["qform_code"]), int(out.header["sform_code"])) == (1, 2)
    # World coordinates of the field of view's corners are preserved.
    for old_corner, new_corner in [((-0.5, -0.5, 0), (-0.5, -0.5, 0)), ((36.5, 49.5, 3), (84.5, 114.5, 3))]:
        np.testing.assert_allclose(out.affine @ [*new_corner, 1], AFFINE @ [*old_corner, 1], atol=1e-4)


def test_2d_nifti_is_one_frame(tmp_path):
    data = np.arange(20 * 30, dtype=np.uint16).reshape(20, 30)
    scan = read_image(_save(tmp_path / "s.nii", data, affine=np.diag([0.5, 0.7, 1.0, 1.0])))
    assert scan.frames.shape == (1, 20, 30) and scan.spacing == pytest.approx((0.5, 0.7))
    out = nib.load(scan.write_derived(_bicubic(scan.frames, 40, 60), tmp_path / "o.nii", INFO))
    assert out.shape == (40, 60)
    assert out.header.get_zooms() == pytest.approx((0.25, 0.35))


def test_nifti2_and_singleton_axis(tmp_path):
    data = np.arange(10 * 12, dtype=np.int16).reshape(10, 12, 1)
    scan = read_image(_save(tmp_path / "v.nii", data, cls=nib.Nifti2Image))
    assert scan.axis == 2 and scan.frames.shape == (1, 10, 12)
    out = nib.load(scan.write_derived(_bicubic(scan.frames, 20, 24), tmp_path / "o.nii", INFO))
    assert isinstance(out, nib.Nifti2Image) and out.shape == (20, 24, 1)


def test_trailing_singleton_dimension_is_squeezed_and_kept(tmp_path):
    # FSL/dipy write 3D volumes as X x Y x Z x 1: processed as 3D, written back with the 1
    data = np.arange(8 * 10 * 3, dtype=np.int16).reshape(8, 10, 3, 1)
    img = nib.Nifti1Image(data, AFFINE)
    img.header.set_zooms((0.8, 0.8, 3.0, 1.0))
    nib.save(img, tmp_path / "v.nii")
    scan = read_image(tmp_path / "v.nii")
    assert scan.axis == 2 and scan.frames.shape == (3, 8, 10)
    out = nib.load(scan.write_derived(_bicubic(scan.frames, 16, 20), tmp_path / "o.nii", INFO))
    assert out.shape == (16, 20, 3, 1)
    assert out.header.get_zooms() == pytest.approx((0.4, 0.4, 3.0, 1.0))


def test_4d_series_is_processed_volume_by_volume(tmp_path):
    data = np.stack([np.full((4, 5, 6), 10 * (t + 1), np.int16) for t in range(2)], axis=-1)
    data[0, 0, 0, 1] = 0
    img = nib.Nifti1Image(data, AFFINE)
    img.header.set_zooms((1.0, 1.0, 2.0, 0.0))  # a time step of 0 is common and never resampled
    nib.save(img, tmp_path / "t.nii")
    scan = read_image(tmp_path / "t.nii", axis=2)
    assert scan.frames.shape == (12, 4, 5) and any("2 volumes processed one by one" in n for n in scan.notes)
    out = nib.load(scan.write_derived(_bicubic(scan.frames, 8, 10), tmp_path / "o.nii", INFO))
    assert out.shape == (8, 10, 6, 2)
    values = np.asarray(out.dataobj)
    assert (values[4:, 4:, :, 0] == 10).all() and (values[4:, 4:, :, 1] == 20).all()  # volumes stay apart
