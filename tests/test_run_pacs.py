"""metasr-run on real studies (issue 18): non-images skipped, --select, a grown series, UIDs per
setting, --compress, --axis notes, ultrasound --spacing, the model's own name. Images are 24x24."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
from conftest import write_dicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from metasr.core.scale import Scale
from metasr.runtime.cli import main
from metasr.runtime.derivation import derivation_info, model_name

SIZE = 24


def _image(seed: int = 0, bright: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    img = 200 + 800 * (0.5 + 0.5 * np.sin(xx / 3.0) * np.cos(yy / 4.0)) + rng.normal(0, 5, (SIZE, SIZE))
    img[:3, :3] += bright
    return np.rint(img).astype(np.uint16)


def _run(*args: str) -> int:
    return main([*args, "-q", "--device", "cpu"])


def test_non_images_in_a_study_are_skipped_and_the_run_succeeds(tmp_path, capsys):
    study = tmp_path / "study"
    write_dicom(study / "ct" / "a.dcm", _image())
    (study / "other").mkdir(parents=True)
    for name in ("rtplan.dcm", "reportsi.dcm", "test-SR.dcm", "rtdose_1frame.dcm"):
        shutil.copy(get_testdata_file(name), study / "other" / name)
    report = tmp_path / "run.json"
    assert (
        main(["-i", str(study), "-s", "2", "-o", str(tmp_path / "out"), "--device", "cpu", "--report", str(report)])
        == 0
    )
    rows = json.loads(report.read_text())
    assert rows["counts"] == {"written": 1, "skipped": 4}
    reasons = {Path(r["input"]).name: r["reason"] for r in rows["files"] if r["status"] == "skipped"}
    assert "no pixel data" in reasons["rtplan.dcm"] and "RT Dose" in reasons["rtdose_1frame.dcm"]
    assert "skipped 4 file(s) that are not images" in capsys.readouterr().err


def test_select_filters_series_by_attribute(tmp_path):
    study = tmp_path / "study"
    write_dicom(study / "s1" / "a.dcm", _image())
    write_dicom(study / "s2" / "b.dcm", _image(1))
    for path, modality, image_type in (
        (study / "s1" / "a.dcm", "CT", "ORIGINAL\\PRIMARY\\AXIAL"),
        (study / "s2" / "b.dcm", "CT", "ORIGINAL\\PRIMARY\\LOCALIZER"),
    ):
        ds = pydicom.dcmread(path)
        ds.Modality, ds.ImageType = modality, image_type.split("\\")
        ds.save_as(path, enforce_file_format=True)
    write_dicom(study / "s3" / "c.dcm", _image(2))  # Modality OT
    report = tmp_path / "run.csv"
    out = tmp_path / "out"
    args = ["-i", str(study), "-s", "2", "-o", str(out), "--report", str(report)]
    assert _run(*args, "--select", "Modality=CT", "--select", "ImageType!=LOCALIZER") == 0
    assert [p.name for p in out.rglob("*.dcm")] == ["a_sr2.dcm"]
    text = report.read_text()
    assert "not selected by --select ImageType!=LOCALIZER" in text and "not selected by --select Modality=CT" in text


def test_a_bad_select_rule_stops_before_anything_runs(tmp_path, capsys):
    write_dicom(tmp_path / "s" / "a.dcm", _image())
    assert _run("-i", str(tmp_path / "s"), "-s", "2", "--select", "Modalty=CT") == 2
    assert "Modalty is not a DICOM keyword" in capsys.readouterr().err
    assert not (tmp_path / "s_sr2").exists()


def test_a_grown_series_is_refused_or_reprocessed_whole(tmp_path, capsys):
    series = tmp_path / "series"
    write_dicom(series / "a.dcm", _image())
    write_dicom(series / "b.dcm", _image(1))
    out = tmp_path / "out"
    assert _run("-i", str(series), "-s", "2", "-o", str(out)) == 0
    first = {p.name: p.read_bytes() for p in out.glob("*.dcm")}
    write_dicom(series / "c.dcm", _image(2, bright=3000))  # a new slice widens the series' window
    assert _run("-i", str(series), "-s", "2", "-o", str(out)) == 2
    err = capsys.readouterr().err
    assert (
        "slices were added, removed or changed" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    )
    assert {p.name: p.read_bytes() for p in out.glob("*.dcm")} == first  # nothing touched
    assert _run("-i", str(series), "-s", "2", "-o", str(out), "--overwrite") == 0
    derived = [pydicom.dcmread(p) for p in sorted(out.glob("*.dcm"))]
    assert len(derived) == 3 and len({d.SeriesInstanceUID for d in derived}) == 1  # one series, one way
    assert derived[0].SeriesInstanceUID != pydicom.dcmread(io_bytes(first["a_sr2.dcm"])).SeriesInstanceUID


def io_bytes(data: bytes):
    import io

    return io.BytesIO(data)


def test_intensity_settings_give_their_own_instances(tmp_path):
    src = write_dicom(tmp_path / "a.dcm", _image(bright=30000))
    uids = set()
    for policy in ("robust", "data", "full"):
        out = tmp_path / f"{policy}.dcm"
        assert _run("-i", str(src), "-s", "2", "-o", str(out), "--intensity", policy) == 0
        ds = pydicom.dcmread(out)
        uids |= {ds.SOPInstanceUID, ds.SeriesInstanceUID}
    assert len(uids) == 6
    again = tmp_path / "again.dcm"
    assert (
        _run("-i", str(src), "-s", "2", "-o", str(again), "--intensity", "full", "--tile", "16", "--threads", "1") == 0
    )
    assert pydicom.dcmread(again).SOPInstanceUID == pydicom.dcmread(tmp_path / "full.dcm").SOPInstanceUID


def test_compress_option_writes_lossless_codecs(tmp_path):
    src = write_dicom(tmp_path / "a.dcm", _image())
    pixels = {}
    for compress, syntax in (
        ("none", "1.2.840.10008.1.2.1"),
        ("rle", "1.2.840.10008.1.2.5"),
        ("jpeg-ls", "1.2.840.10008.1.2.4.80"),
        ("j2k", "1.2.840.10008.1.2.4.90"),
    ):
        out = tmp_path / f"{compress}.dcm"
        assert _run("-i", str(src), "-s", "2", "-o", str(out), "--compress", compress) == 0
        ds = pydicom.dcmread(out)
        assert ds.file_meta.TransferSyntaxUID == syntax
        pixels[compress] = ds.pixel_array
    for compress in ("rle", "jpeg-ls", "j2k"):
        np.testing.assert_array_equal(pixels[compress], pixels["none"])


def test_axis_on_a_2d_image_is_noted(tmp_path, capsys):
    src = write_dicom(tmp_path / "a.dcm", _image())
    assert main(["-i", str(src), "-s", "2", "--axis", "1", "--device", "cpu"]) == 0
    assert "--axis 1 is ignored" in capsys.readouterr().err


def test_spacing_on_a_calibrated_ultrasound(tmp_path):
    src = write_dicom(tmp_path / "us.dcm", _image())
    ds = pydicom.dcmread(src)
    del ds.PixelSpacing
    region = Dataset()
    region.RegionSpatialFormat, region.PhysicalUnitsXDirection, region.PhysicalUnitsYDirection = 1, 3, 3
    region.RegionLocationMinX0, region.RegionLocationMinY0, region.RegionLocationMaxX1, region.RegionLocationMaxY1 = (
        0,
        0,
        23,
        23,
    )
    region.PhysicalDeltaX, region.PhysicalDeltaY = 0.02, 0.02  # 0.2 mm pixels
    ds.SequenceOfUltrasoundRegions = Sequence([region])
    ds.save_as(src, enforce_file_format=True)
    assert _run("-i", str(src), "--spacing", "0.1") == 0
    out = pydicom.dcmread(tmp_path / "us_sr2.dcm")
    assert out.Rows == 48 and float(out.SequenceOfUltrasoundRegions[0].PhysicalDeltaX) == pytest.approx(0.01)


def test_the_model_name_comes_from_the_manifest():
    up = SimpleNamespace(manifest={"name": "metasrgan-mri"}, model_name="export_v3", model_id="ab" * 32, precision=None)
    assert model_name(up) == "metasrgan-mri"
    assert model_name(SimpleNamespace(manifest={}, model_name="export_v3")) == "export_v3"
    info = derivation_info(up, Scale(Fraction(2)), "sr2")
    assert info.model_name == "metasrgan-mri" and ("precision", "fp32") in info.pixel_settings


@pytest.mark.parametrize("grid", ["corner", "center"])
def test_grid_center_keeps_the_first_pixel_centre_and_the_blob_in_place(tmp_path, grid):
    from _scanners_data import blob, centroid, physical, write_ct

    n = 32
    hu = -1000 + 1400 * blob((n, n), 11.3, 20.6, sigma=1.8)
    src = write_ct(tmp_path / "a.dcm", hu, spacing=(0.9, 0.9), position=(-10.0, 5.0, 1.0))
    out_path = tmp_path / f"{grid}.dcm"
    assert _run("-i", str(src), "-s", "1.5", "-o", str(out_path), "--grid", grid, "--intensity", "data") == 0
    before, after = pydicom.dcmread(src), pydicom.dcmread(out_path)
    big = int(after.Rows)
    assert big == 48
    if grid == "center":
        assert [float(v) for v in after.ImagePositionPatient] == pytest.approx([-10.0, 5.0, 1.0])
        assert float(after.PixelSpacing[0]) == pytest.approx(0.9 * (n - 1) / (big - 1))
    else:
        assert float(after.PixelSpacing[0]) == pytest.approx(0.6)
    found = physical(after, *centroid(after.pixel_array.astype(float) - after.pixel_array.min(), 0.3))
    wanted = physical(before, *centroid(before.pixel_array.astype(float) - before.pixel_array.min(), 0.3))
    assert np.abs(found - wanted).max() < 0.1  # within 0.11 input pixels: pixels and geometry agree on either grid


def test_grid_center_on_nifti_keeps_the_first_voxel_centre(tmp_path):
    import nibabel as nib

    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    affine[:3, 3] = [-5.0, 3.0, 1.0]
    nib.save(nib.Nifti1Image(np.arange(16 * 16 * 2, dtype=np.int16).reshape(16, 16, 2), affine), tmp_path / "v.nii")
    assert _run("-i", str(tmp_path / "v.nii"), "-s", "2", "--grid", "center") == 0
    out = nib.load(tmp_path / "v_sr2.nii")
    assert out.shape == (32, 32, 2)
    np.testing.assert_allclose(out.affine[:3, 3], [-5.0, 3.0, 1.0])
    np.testing.assert_allclose(np.diag(out.affine)[:2], [0.8 * 15 / 31] * 2)


def test_select_on_a_single_file(tmp_path, capsys):
    src = write_dicom(tmp_path / "a.dcm", _image())  # Modality OT
    assert main(["-i", str(src), "-s", "2", "--select", "Modality=CT", "--device", "cpu"]) == 0
    assert "not selected by --select Modality=CT (Modality is OT)" in capsys.readouterr().err
    assert not (tmp_path / "a_sr2.dcm").exists()
    assert _run("-i", str(src), "-s", "2", "--select", "Modality=OT,CT") == 0
    assert (tmp_path / "a_sr2.dcm").is_file()


def test_device_enters_the_uids_only_below_fp32():
    from metasr.runtime.derivation import pixel_settings

    def up(precision, device):
        return SimpleNamespace(pixel_settings=lambda: {"precision": precision, "device": device})

    assert pixel_settings(up("fp32", "cpu")) == pixel_settings(up("fp32", "cuda")) == (("precision", "fp32"),)
    assert pixel_settings(up("fp16", "cuda")) != pixel_settings(up("fp16", "tensorrt"))
