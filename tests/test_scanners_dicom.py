"""DICOM reading and derived-image writing (metasr.scanners.dicom)."""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from metasr.scanners import DerivationInfo, ImageFormat, read_image
from metasr.scanners.dicom import DicomScan

INFO = DerivationInfo(scale="2.3", model_id="ab" * 32, software_version="0.1.0", model_name="metasrgan-test")


def _copy(name: str, tmp_path):
    """Copy a pydicom test file into tmp_path (the originals are never written to)."""
    dst = tmp_path / name
    shutil.copyfile(get_testdata_file(name), dst)
    return dst


def _bicubic(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_CUBIC) for f in frames]).clip(0, 1)


def _decoder_available(name: str) -> bool:
    from pydicom.pixels import get_decoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some test files are odd on purpose
        ts = pydicom.dcmread(get_testdata_file(name), stop_before_pixels=True).file_meta.TransferSyntaxUID
    return not ts.is_compressed or get_decoder(ts).is_available


def _make_oblique(tmp_path, rows=37, cols=50, spacing=(0.8, 0.5)):
    """A 37x50 MR image with an oblique orientation and known geometry, cut from MR_small."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    pixels = np.ascontiguousarray(ds.pixel_array[:rows, :cols])
    ds.PixelData = pixels.tobytes()
    ds.Rows, ds.Columns = rows, cols
    ds.PixelSpacing = list(spacing)
    c, s = np.cos(0.3), np.sin(0.3)
    ds.ImageOrientationPatient = [c, s, 0.0, 0.0, 0.0, -1.0]
    ds.ImagePositionPatient = [-12.5, 30.25, 40.0]
    ds.SmallestImagePixelValue = int(pixels.min())
    ds.LargestImagePixelValue = int(pixels.max())
    path = tmp_path / "oblique.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path, pixels


@pytest.mark.parametrize(
    "name",
    [
        "MR_small.dcm",
        "CT_small.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "image_dfl.dcm",
    ],
)
def test_identity_round_trip_gives_same_stored_values(tmp_path, name):
    if not _decoder_available(name):
        pytest.skip(f"no decoder plugin for {name} installed")
    src = _copy(name, tmp_path)
    expected = pydicom.dcmread(src).pixel_array
    scan = read_image(src)
    assert isinstance(scan, DicomScan) and scan.format is ImageFormat.DICOM
    assert scan.frames.dtype == np.float32 and 0 <= scan.frames.min() and scan.frames.max() <= 1
    out = scan.write_derived(scan.frames, tmp_path / "out.dcm", INFO)
    result = pydicom.dcmread(out)
    ts = result.file_meta.TransferSyntaxUID
    assert not ts.is_compressed or ts in (RLELossless, JPEGLSLossless, JPEG2000Lossless), ts  # keep: lossless codec
    np.testing.assert_array_equal(result.pixel_array, expected)
    # Same signedness and width (a big-endian input is written little-endian).
    assert (result.pixel_array.dtype.kind, result.pixel_array.dtype.itemsize) == (
        expected.dtype.kind,
        expected.dtype.itemsize,
    )


def test_signed_ct_keeps_units_and_rescale(tmp_path):
    src = _copy("CT_small.dcm", tmp_path)
    original = pydicom.dcmread(src)
    scan = read_image(src, intensity="data")
    assert scan.intensity.low == original.pixel_array.min() and scan.intensity.high == original.pixel_array.max()
    out = pydicom.dcmread(scan.write_derived(_bicubic(scan.frames, 294, 294), tmp_path / "out.dcm", INFO))
    for keyword in (
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "RescaleSlope",
        "RescaleIntercept",
    ):
        assert out[keyword].value == original[keyword].value, keyword
    pixels = out.pixel_array
    assert pixels.dtype == np.int16 and pixels.shape == (294, 294)
    assert original.pixel_array.min() <= pixels.min() and pixels.max() <= original.pixel_array.max()


def test_monochrome1_is_inverted_for_processing_and_written_back(tmp_path):
    src = _copy("6154", tmp_path)  # a 12-bit MONOCHROME1 CR image from pydicom's test files
    original = pydicom.dcmread(src)
    assert original.PhotometricInterpretation == "MONOCHROME1"
    stored = original.pixel_array
    scan = read_image(src)
    # Lowest stored value is white in MONOCHROME1: it must be the brightest (1.0) frame value.
    assert scan.frames[0][stored == stored.min()].min() == 1.0
    assert scan.frames[0][stored == stored.max()].max() == 0.0
    out = pydicom.dcmread(scan.write_derived(scan.frames, tmp_path / "out.dcm", INFO))
    assert out.PhotometricInterpretation == "MONOCHROME1"
    np.testing.assert_array_equal(out.pixel_array, stored)


def test_geometry_of_a_derived_oblique_image(tmp_path):
    src, _ = _make_oblique(tmp_path)
    scan = read_image(src)
    assert scan.spacing == (0.8, 0.5)
    rows, cols = 85, 115  # floor(37 * 2.3), floor(50 * 2.3)
    out = pydicom.dcmread(scan.write_derived(_bicubic(scan.frames, rows, cols), tmp_path / "out.dcm", INFO))
    assert (out.Rows, out.Columns) == (rows, cols)
    # Hand-computed: spacing between rows 0.8 * 37 / 85, between columns 0.5 * 50 / 115.
    new_row, new_col = 0.8 * 37 / 85, 0.5 * 50 / 115
    np.testing.assert_allclose([float(v) for v in out.PixelSpacing], [new_row, new_col], rtol=1e-9)
    row_dir = np.array([np.cos(0.3), np.sin(0.3), 0.0])
    col_dir = np.array([0.0, 0.0, -1.0])
    old_ipp = np.array([-12.5, 30.25, 40.0])
    corner = old_ipp - 0.5 * 0.5 * row_dir - 0.5 * 0.8 * col_dir  # outer corner of the field of view
    expected_ipp = corner + 0.5 * new_col * row_dir + 0.5 * new_row * col_dir
    ipp = np.array([float(v) for v in out.ImagePositionPatient])
    np.testing.assert_allclose(ipp, expected_ipp, atol=1e-6)
    # The far corner of the field of view is also unchanged.
    far_old = corner + 50 * 0.5 * row_dir + 37 * 0.8 * col_dir
    far_new = (
        ipp - 0.5 * new_col * row_dir - 0.5 * new_row * col_dir + cols * new_col * row_dir + rows * new_row * col_dir
    )
    np.testing.assert_allclose(far_new, far_old, atol=1e-6)
    assert [float(v) for v in out.ImageOrientationPatient] == pytest.approx(list(row_dir) + list(col_dir))


def test_derived_image_provenance(tmp_path):
    src, _ = _make_oblique(tmp_path)
    original = pydicom.dcmread(src)
    scan = read_image(src)
    out = pydicom.dcmread(scan.write_derived(_bicubic(scan.frames, 85, 115), tmp_path / "out.dcm", INFO))
    assert out.SOPInstanceUID != original.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.SeriesInstanceUID != original.SeriesInstanceUID
    for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "FrameOfReferenceUID", "SOPClassUID"):
        if keyword in original:
            assert out[keyword].value == original[keyword].value, keyword
    assert list(out.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert "not for primary diagnosis" in out.SeriesDescription and len(out.SeriesDescription) <= 64
    code = out.DerivationCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == ("113085", "DCM", "Spatial resampling")
    assert INFO.model_id in out.DerivationDescription
    source = out.SourceImageSequence[0]
    assert source.ReferencedSOPInstanceUID == original.SOPInstanceUID
    assert source.ReferencedSOPClassUID == original.SOPClassUID
    equipment = out.ContributingEquipmentSequence[-1]
    assert equipment.Manufacturer == "metasr" and equipment.SoftwareVersions == INFO.software_version
    assert equipment.ManufacturerModelName == INFO.model_name and INFO.model_id in equipment.ContributionDescription
    assert "SmallestImagePixelValue" not in out and "LargestImagePixelValue" not in out
    assert out.WindowCenter == original.WindowCenter and out.WindowWidth == original.WindowWidth


def test_slices_of_one_series_land_in_one_derived_series(tmp_path):
    a = _copy("MR_small.dcm", tmp_path)
    b = tmp_path / "second.dcm"
    ds = pydicom.dcmread(a)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(b, enforce_file_format=True)
    uids = []
    for i, path in enumerate((a, b)):
        scan = read_image(path)
        uids.append(pydicom.dcmread(scan.write_derived(scan.frames, tmp_path / f"o{i}.dcm", INFO)))
    assert uids[0].SeriesInstanceUID == uids[1].SeriesInstanceUID
    assert uids[0].SOPInstanceUID != uids[1].SOPInstanceUID


def test_transfer_syntax_of_output(tmp_path):
    for name, expected in [
        ("MR_small_RLE.dcm", RLELossless),
        ("MR_small_implicit.dcm", ImplicitVRLittleEndian),
        ("MR_small_bigendian.dcm", ExplicitVRLittleEndian),
    ]:
        scan = read_image(_copy(name, tmp_path))
        out = pydicom.dcmread(scan.write_derived(_bicubic(scan.frames, 100, 100), tmp_path / f"o_{name}", INFO))
        assert out.file_meta.TransferSyntaxUID == expected, name
        assert out.pixel_array.shape == (100, 100)


def test_colour_dicom_is_processed_on_luma_and_written_rgb(tmp_path):
    src = _copy("SC_rgb_jpeg_dcmtk.dcm", tmp_path)  # YBR_FULL JPEG baseline
    if not _decoder_available("SC_rgb_jpeg_dcmtk.dcm"):
        pytest.skip("no JPEG decoder plugin installed")
    rgb = pydicom.dcmread(src).pixel_array.astype(np.float64) / 255
    scan = read_image(src)
    np.testing.assert_allclose(scan.frames[0], rgb @ [0.299, 0.587, 0.114], atol=1e-6)
    out = pydicom.dcmread(scan.write_derived(_bicubic(scan.frames, 150, 150), tmp_path / "out.dcm", INFO))
    assert out.PhotometricInterpretation == "RGB" and out.SamplesPerPixel == 3 and out.PlanarConfiguration == 0
    assert out.pixel_array.shape == (150, 150, 3)


def _make_enhanced_multiframe(tmp_path, n_frames=3):
    """A multi-frame MR with shared Pixel Measures/Plane Orientation and per-frame Plane Position."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    base = ds.pixel_array
    frames = np.stack([np.roll(base, 3 * k, axis=1) for k in range(n_frames)])
    ds.PixelData = frames.tobytes()
    ds.NumberOfFrames = n_frames
    shared = Dataset()
    measures, orient = Dataset(), Dataset()
    measures.PixelSpacing = [0.5, 0.25]
    measures.SliceThickness = 2.0
    orient.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orient])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k in range(n_frames):
        group, pos = Dataset(), Dataset()
        pos.ImagePositionPatient = [10.0, 20.0, 2.0 * k]
        group.PlanePositionSequence = Sequence([pos])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    path = tmp_path / "multi.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path, frames


def test_multiframe_round_trip_and_functional_groups(tmp_path):
    src, frames = _make_enhanced_multiframe(tmp_path)
    scan = read_image(src)
    assert scan.frames.shape == (3, 64, 64)
    same = pydicom.dcmread(scan.write_derived(scan.frames, tmp_path / "same.dcm", INFO))
    np.testing.assert_array_equal(same.pixel_array, frames)
    out = pydicom.dcmread(scan.write_derived(_bicubic(scan.frames, 128, 160), tmp_path / "out.dcm", INFO))
    assert out.pixel_array.shape == (3, 128, 160) and int(out.NumberOfFrames) == 3
    spacing = [float(v) for v in out.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing]
    assert spacing == pytest.approx([0.5 * 64 / 128, 0.25 * 64 / 160])
    for k, group in enumerate(out.PerFrameFunctionalGroupsSequence):
        ipp = [float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient]
        # x moves along the row direction by half the column-spacing change, y by half the row-spacing change.
        expected = [10.0 + 0.5 * (0.25 * 64 / 160 - 0.25), 20.0 + 0.5 * (0.5 * 64 / 128 - 0.5), 2.0 * k]
        assert ipp == pytest.approx(expected)


def _error_lines(path) -> set[str]:
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    # Drop element values/paths that legitimately differ between input and output.
    return {re.sub(r"\s+", " ", line).strip() for line in lines if line.startswith("Error")}


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian package dicom3tools) is not installed")
@pytest.mark.parametrize(
    "name, size",
    [
        ("MR_small.dcm", (147, 147)),
        ("CT_small.dcm", (294, 294)),
        ("MR_small_RLE.dcm", (147, 147)),
        ("SC_rgb_rle_2frame.dcm", (180, 180)),  # multi-frame colour (RT Dose grids are refused)
        ("6154", (36, 36)),
        ("SC_rgb_jpeg_dcmtk.dcm", (150, 150)),
    ],
)
def test_dciodvfy_reports_no_new_errors(tmp_path, name, size):
    src = _copy(name, tmp_path)
    scan = read_image(src)
    out = scan.write_derived(_bicubic(scan.frames, *size), tmp_path / "out.dcm", INFO)
    new = _error_lines(out) - _error_lines(src)
    assert not new, f"dciodvfy errors introduced by the derived image: {sorted(new)}"


def test_bare_dataset_without_preamble_or_file_meta(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small_implicit.dcm"))
    expected = ds.pixel_array
    del ds.file_meta
    ds.preamble = None
    bare = tmp_path / "IM0001"
    pydicom.dcmwrite(bare, ds, implicit_vr=True, little_endian=True)
    assert bare.read_bytes()[128:132] != b"DICM"
    scan = read_image(bare)
    out = scan.write_derived(scan.frames, tmp_path / "out.dcm", INFO)
    assert out.read_bytes()[128:132] == b"DICM"  # the output is a proper DICOM file
    result = pydicom.dcmread(out)
    assert result.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    np.testing.assert_array_equal(result.pixel_array, expected)


def test_ultrasound_regions_follow_the_new_pixel_grid(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    region = Dataset()
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 10, 4
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = 49, 59
    region.ReferencePixelX0, region.ReferencePixelY0 = 20, 0
    region.PhysicalDeltaX, region.PhysicalDeltaY = 0.05, 0.04
    ds.SequenceOfUltrasoundRegions = Sequence([region])
    ds.save_as(tmp_path / "us.dcm", enforce_file_format=True)
    scan = read_image(tmp_path / "us.dcm")
    out = pydicom.dcmread(scan.write_derived(_bicubic(scan.frames, 96, 128), tmp_path / "o.dcm", INFO))
    r = out.SequenceOfUltrasoundRegions[0]
    gx, gy = 128 / 64, 96 / 64  # new/old per axis
    # Region edges: left/top edge at index*g, right/bottom edge at (index+1)*g.
    assert (r.RegionLocationMinX0, r.RegionLocationMaxX1) == (20, 99)
    assert (r.RegionLocationMinY0, r.RegionLocationMaxY1) == (6, 89)
    # Reference pixel centre (10 + 20 + 0.5) * 2 - 0.5 = 60.5 absolute -> 40 or 41 relative to the new origin 20.
    assert r.ReferencePixelX0 in (40, 41) and r.ReferencePixelY0 in (0, 1)
    assert (r.PhysicalDeltaX, r.PhysicalDeltaY) == pytest.approx((0.05 / gx, 0.04 / gy))


def _odd_but_readable(tmp_path):
    """MR_small with 128 bytes of excess pixel padding and a UID that breaks its VR (leading zero)."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.PixelData = ds.PixelData + b"\0" * 128
    path = tmp_path / "odd.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.0123"
        ds.save_as(path, enforce_file_format=True)
    return path


def test_library_warnings_become_notes_not_stderr_noise(tmp_path, monkeypatch):
    encode = DicomScan._encode_derived

    def encode_and_complain(self, *args):  # pydicom warns on write when it converts an odd value
        warnings.warn("Invalid value for VR UI: '1.2.0123'.\nSee the standard.", UserWarning, stacklevel=1)
        return encode(self, *args)

    monkeypatch.setattr(DicomScan, "_encode_derived", encode_and_complain)
    path = _odd_but_readable(tmp_path)
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        with read_image(path) as scan:
            assert any(n.startswith("odd.dcm:") and "excess padding" in n for n in scan.notes), scan.notes
            scan.write_derived(_bicubic(scan.frames, 80, 80), tmp_path / "odd_x.dcm", INFO)
            assert any(n.startswith("writing odd_x.dcm:") and "VR UI" in n for n in scan.notes), scan.notes
            assert all("\n" not in n for n in scan.notes)
    assert not escaped, [str(w.message) for w in escaped]
    assert pydicom.dcmread(tmp_path / "odd_x.dcm").Rows == 80


def test_metasr_run_prints_notes_one_line_each(tmp_path, tiny_export_dir, capfd):
    from metasr.runtime.cli import main

    path = _odd_but_readable(tmp_path)
    capfd.readouterr()
    assert main(["--input", str(path), "--scale", "2", "--model", str(tiny_export_dir)]) == 0
    out, err = capfd.readouterr()
    lines = err.splitlines()
    assert lines[0].startswith("metasr: model ") and len(lines) == 3, err
    assert lines[1].startswith("metasr-run: note: odd.dcm: ") and "excess padding" in lines[1]
    # the input's malformed UID is carried into the derived file: the user is told
    assert lines[2].startswith("metasr-run: note: writing odd_sr2.dcm: Invalid value for VR UI"), err
    assert "UserWarning" not in err and "warn_and_log" not in err
    assert out.strip() == str(tmp_path / "odd_sr2.dcm")


@pytest.mark.skipif(not _decoder_available("SC_rgb_jpeg.dcm"), reason="no JPEG decoder (pip install 'metasr[jpeg]')")
def test_implicit_body_under_an_explicit_syntax_is_written_back(tmp_path):
    """SC_rgb_jpeg.dcm declares JPEG Baseline (explicit VR) but its body is implicit VR.

    pydicom reads it (with a warning, kept as a note); the derived file used to fail in the
    writer with a TypeError on elements that had no VR.
    """
    path = _copy("SC_rgb_jpeg.dcm", tmp_path)
    with read_image(path) as scan:
        assert any("implicit VR" in n for n in scan.notes), scan.notes
        h, w = scan.size
        out = scan.write_derived(_bicubic(scan.frames, 2 * h, 2 * w), tmp_path / "sc_x2.dcm", INFO)
    back = pydicom.dcmread(out)
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert (back.Rows, back.Columns) == (2 * h, 2 * w) and back["ContentDate"].VR == "DA"
    assert back.pixel_array.shape == (2 * h, 2 * w, 3)
