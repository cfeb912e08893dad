"""Geometry follows the pixels: structures at a known physical position land there in the output.

The "network" is the exact grid the model samples on (output pixel i shows input coordinate
(i + 0.5) / r - 0.5: ``resize_on_grid``), and once the shipped model itself. Positions are
measured as blob centroids in the output and mapped through the output's own header.
"""

from __future__ import annotations

from fractions import Fraction

import nibabel as nib
import numpy as np
import pydicom
import pytest
from _scanners_data import blob, centroid, physical, write_ct
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from metasr.core.resample import resize_on_grid
from metasr.core.scale import hr_length
from metasr.scanners import DerivationInfo, read_image

R = Fraction(9, 5)
INFO = DerivationInfo("1.8", "cd" * 32, "0.1.0", "metasrgan-test", exact_scale=R)


def _on_grid(frames: np.ndarray, r: Fraction = R) -> np.ndarray:
    h, w = frames.shape[1:]
    return np.stack([resize_on_grid(f, hr_length(h, r), hr_length(w, r), r) for f in frames]).clip(0, 1)


def _shipped(frames: np.ndarray, r: Fraction = R) -> np.ndarray:
    from metasr.runtime import Upscaler

    return Upscaler("models/metasrgan-mri", device="cpu", threads=1).upscale(frames, r)


def _blob_hu(shape, row, col) -> np.ndarray:
    return -1000 + 1400 * blob(shape, row, col)


@pytest.mark.parametrize("network", [_on_grid, _shipped], ids=["grid", "shipped-model"])
def test_dicom_blob_lands_at_its_physical_position(tmp_path, network):
    c, s = np.cos(0.3), np.sin(0.3)
    shape, spot = (37, 51), (31.4, 44.6)  # far corner: 37 * 1.8 and 51 * 1.8 are not integers
    src = write_ct(
        tmp_path / "in.dcm",
        _blob_hu(shape, *spot),
        spacing=(0.8, 0.55),
        orientation=(c, s, 0.0, 0.0, 0.0, -1.0),
        position=(-12.5, 30.25, 40.0),
    )
    scan = read_image(src)
    out = pydicom.dcmread(scan.write_derived(network(scan.frames), tmp_path / "out.dcm", INFO))
    assert (out.Rows, out.Columns) == (66, 91)
    assert [float(v) for v in out.PixelSpacing] == pytest.approx([0.8 / 1.8, 0.55 / 1.8], rel=1e-12)
    found = physical(out, *centroid(out.pixel_array.astype(np.float64) - out.pixel_array.min()))
    wanted = physical(pydicom.dcmread(src), *spot)
    assert np.linalg.norm(found - wanted) < 0.05 * 0.55  # a small fraction of an input pixel


def test_dicom_outer_corner_is_kept_and_spacing_is_exact(tmp_path):
    src = write_ct(tmp_path / "in.dcm", _blob_hu((37, 51), 10, 10), spacing=(0.9, 0.9), ImagerPixelSpacing=[1.2, 1.2])
    scan = read_image(src)
    r = Fraction(9, 5)  # 0.9 mm -> exactly 0.5 mm
    out = pydicom.dcmread(scan.write_derived(_on_grid(scan.frames, r), tmp_path / "o.dcm", INFO))
    assert [str(v) for v in out.PixelSpacing] == ["0.5", "0.5"]
    assert [float(v) for v in out.ImagerPixelSpacing] == pytest.approx([1.2 / 1.8] * 2, rel=1e-12)
    src_ds = pydicom.dcmread(src)
    np.testing.assert_allclose(physical(out, -0.5, -0.5), physical(src_ds, -0.5, -0.5), atol=1e-9)


def _enhanced(tmp_path, frames_hu: np.ndarray):
    path = write_ct(tmp_path / "mf.dcm", frames_hu)
    ds = pydicom.dcmread(path)
    for keyword in ("PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient"):
        delattr(ds, keyword)
    shared = Dataset()
    measures, orient = Dataset(), Dataset()
    measures.PixelSpacing = [0.6, 0.75]
    orient.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orient])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k in range(frames_hu.shape[0]):
        group, position = Dataset(), Dataset()
        position.ImagePositionPatient = [10.0 * k, -20.0, 35.5]
        group.PlanePositionSequence = Sequence([position])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.save_as(path, enforce_file_format=True)
    return path


def _plane(group_ds, shared_ds) -> Dataset:
    plane = Dataset()
    plane.ImagePositionPatient = group_ds.PlanePositionSequence[0].ImagePositionPatient
    plane.ImageOrientationPatient = shared_ds.PlaneOrientationSequence[0].ImageOrientationPatient
    plane.PixelSpacing = shared_ds.PixelMeasuresSequence[0].PixelSpacing
    return plane


def test_enhanced_multiframe_functional_groups_follow_the_pixels(tmp_path):
    spots = [(5.3, 40.2), (30.8, 7.6)]
    hu = np.stack([_blob_hu((35, 47), *spot) for spot in spots])
    src = _enhanced(tmp_path, hu)
    scan = read_image(src)
    assert scan.spacing == (0.6, 0.75)
    out = pydicom.dcmread(scan.write_derived(_on_grid(scan.frames), tmp_path / "o.dcm", INFO))
    before = pydicom.dcmread(src)
    pixels = out.pixel_array.astype(np.float64)
    for k, spot in enumerate(spots):
        wanted = physical(
            _plane(before.PerFrameFunctionalGroupsSequence[k], before.SharedFunctionalGroupsSequence[0]), *spot
        )
        new_plane = _plane(out.PerFrameFunctionalGroupsSequence[k], out.SharedFunctionalGroupsSequence[0])
        found = physical(new_plane, *centroid(pixels[k] - pixels[k].min()))
        assert np.linalg.norm(found - wanted) < 0.05 * 0.6


def _us_x(region, col: float) -> float:
    return (col - region.RegionLocationMinX0 - region.ReferencePixelX0) * region.PhysicalDeltaX + float(
        region.ReferencePixelPhysicalValueX
    )


def _us_y(region, row: float) -> float:
    return (row - region.RegionLocationMinY0 - region.ReferencePixelY0) * region.PhysicalDeltaY + float(
        region.ReferencePixelPhysicalValueY
    )


def test_ultrasound_region_calibration_follows_the_pixels(tmp_path):
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    shape, spot = (41, 53), (29.3, 37.7)
    pixels = np.rint(10 + 200 * blob(shape, *spot)).astype(np.uint8)
    ds.Rows, ds.Columns = shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    region = Dataset()
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 3, 2
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = 50, 39
    region.ReferencePixelX0, region.ReferencePixelY0 = 7, 5
    region.ReferencePixelPhysicalValueX, region.ReferencePixelPhysicalValueY = 1.5, 0.0
    region.PhysicalDeltaX, region.PhysicalDeltaY = 0.031, 0.027
    region.PhysicalUnitsXDirection, region.PhysicalUnitsYDirection = 3, 3
    ds.SequenceOfUltrasoundRegions = Sequence([region])
    src = tmp_path / "us.dcm"
    ds.save_as(src, enforce_file_format=True)
    scan = read_image(src)
    out = pydicom.dcmread(scan.write_derived(_on_grid(scan.frames), tmp_path / "o.dcm", INFO))
    new = out.SequenceOfUltrasoundRegions[0]
    row, col = centroid(out.pixel_array.astype(np.float64) - out.pixel_array.min())
    assert abs(_us_x(new, col) - _us_x(region, spot[1])) < 0.05 * 0.031
    assert abs(_us_y(new, row) - _us_y(region, spot[0])) < 0.05 * 0.027
    assert new.PhysicalDeltaX == pytest.approx(0.031 / 1.8, rel=1e-9)
    # The region still covers the same part of the field of view (within one new pixel) and fits the image.
    assert abs(_us_x(new, new.RegionLocationMinX0 - 0.5) - _us_x(region, 2.5)) <= new.PhysicalDeltaX
    assert abs(_us_x(new, new.RegionLocationMaxX1 + 0.5) - _us_x(region, 50.5)) <= new.PhysicalDeltaX
    assert new.RegionLocationMaxY1 < out.Rows and new.RegionLocationMaxX1 < out.Columns


@pytest.mark.parametrize("which", ["qform", "sform"])
def test_nifti_blob_lands_at_its_world_position(tmp_path, which):
    shape, spot, k = (37, 41, 3), (30.2, 12.7), 1
    volume = np.zeros(shape, np.float32)
    volume[..., k] = 1000 * blob(shape[:2], *spot)
    c, s = np.cos(0.4), np.sin(0.4)
    affine = np.array([[0.8 * c, -1.1 * s, 0, -20.0], [0.8 * s, 1.1 * c, 0, 14.0], [0, 0, 3.0, -7.5], [0, 0, 0, 1]])
    image = nib.Nifti1Image(volume, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=2)
    src = tmp_path / "v.nii"
    nib.save(image, src)
    scan = read_image(src, axis=2)
    out = nib.load(scan.write_derived(_on_grid(scan.frames), tmp_path / "o.nii", INFO))
    new_affine = out.get_qform() if which == "qform" else out.get_sform()
    data = np.asarray(out.dataobj)[..., k]
    i, j = centroid(data - data.min())
    found = new_affine @ [i, j, k, 1.0]
    wanted = affine @ [spot[0], spot[1], k, 1.0]
    assert np.linalg.norm(found[:3] - wanted[:3]) < 0.05 * 0.8
    assert out.header.get_zooms()[:2] == pytest.approx((0.8 / 1.8, 1.1 / 1.8), rel=1e-6)


def test_without_an_exact_scale_the_field_of_view_is_kept(tmp_path):
    """Frames resized by other means (no exact scale): spacing follows the size ratio."""
    src = write_ct(tmp_path / "in.dcm", _blob_hu((37, 51), 10, 10), spacing=(0.9, 0.9))
    scan = read_image(src)
    info = DerivationInfo("x", "cd" * 32, "0.1.0", "m")
    out = pydicom.dcmread(scan.write_derived(_on_grid(scan.frames), tmp_path / "o.dcm", info))
    assert [float(v) for v in out.PixelSpacing] == pytest.approx([0.9 * 37 / 66, 0.9 * 51 / 91])
