"""Derived DICOM a PACS accepts twice (issue 18): identity per content, file meta, lossy history,
Enhanced IODs, padding, lossless compression, palette and 4:2:2 colour. No model: frames are
resized with OpenCV, so each test takes milliseconds."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from _scanners_data import ct_phantom, write_ct
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from metasr.core.errors import OutputError
from metasr.scanners import DerivationInfo, IntensityWindow, read_image
from metasr.scanners.dicom_encoding import IMPLEMENTATION_CLASS_UID

INFO = DerivationInfo("2", "ab" * 32, "0.1.0", "metasrgan-test", exact_scale=Fraction(2))
DATA_STORE = Path(pydicom.__file__).parent.parent / "data_store" / "data"  # the pydicom-data package


def _resize(frames: np.ndarray, scale: Fraction) -> np.ndarray:
    h, w = frames.shape[1:]
    size = (int(w * scale), int(h * scale))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_CUBIC) for f in frames]).clip(0, 1)


def _derive(src, out, info=INFO, **read):
    with read_image(src, **read) as scan:
        path = scan.write_derived(_resize(scan.frames, info.exact_scale or Fraction(1)), out, info)
        return pydicom.dcmread(path), scan.notes


def _real(name: str) -> Path:
    found = DATA_STORE / name
    if found.is_file():
        return found
    return Path(get_testdata_file(name))


# ---- identity ------------------------------------------------------------------------------


def test_every_pixel_setting_gives_its_own_uids_and_series_number(tmp_path):
    src = write_ct(tmp_path / "a.dcm", ct_phantom(24), SeriesNumber=3)
    base, _ = _derive(src, tmp_path / "base.dcm")
    variants = {
        "window": _derive(src, tmp_path / "w.dcm", window=IntensityWindow(-50.0, 2000.0))[0],
        "intensity": _derive(src, tmp_path / "i.dcm", intensity="full")[0],
        "precision": _derive(
            src, tmp_path / "p.dcm", DerivationInfo(**{**INFO.__dict__, "pixel_settings": (("precision", "fp16"),)})
        )[0],
        "noise": _derive(
            src, tmp_path / "n.dcm", DerivationInfo(**{**INFO.__dict__, "pixel_settings": (("noise", "0.02"),)})
        )[0],
        "grid": _derive(src, tmp_path / "g.dcm", DerivationInfo(**{**INFO.__dict__, "grid": "center"}))[0],
        "scale": _derive(
            src, tmp_path / "s.dcm", DerivationInfo(**{**INFO.__dict__, "scale": "1.8", "exact_scale": Fraction(9, 5)})
        )[0],
        "model": _derive(src, tmp_path / "m.dcm", DerivationInfo(**{**INFO.__dict__, "model_id": "cd" * 32}))[0],
    }
    for what, ds in variants.items():
        assert ds.SOPInstanceUID != base.SOPInstanceUID, what
        assert ds.SeriesInstanceUID != base.SeriesInstanceUID, what
    numbers = {int(ds.SeriesNumber) for ds in [base, *variants.values()]}
    assert len(numbers) == len(variants) + 1 and all(n % 1000 == 3 for n in numbers)
    # what does not change pixels keeps them: the same derivation again, another compression, another day
    again, _ = _derive(src, tmp_path / "again.dcm", DerivationInfo(**{**INFO.__dict__, "compress": "rle"}))
    assert (again.SOPInstanceUID, again.SeriesInstanceUID, again.SeriesNumber) == (
        base.SOPInstanceUID,
        base.SeriesInstanceUID,
        base.SeriesNumber,
    )


def test_file_meta_is_metasrs_own_and_dates_are_the_derivations(tmp_path):
    src = write_ct(tmp_path / "a.dcm", ct_phantom(16), SeriesDate="20010101", SeriesTime="120000")
    ds = pydicom.dcmread(src)
    ds.file_meta.ImplementationVersionName = "GDCM 2.8.4"
    ds.file_meta.SourceApplicationEntityTitle = "CLUNIE1"
    ds.save_as(src, enforce_file_format=True)
    created = dt.datetime(2026, 12, 6, 21, 30, 5)
    out, _ = _derive(src, tmp_path / "o.dcm", DerivationInfo(**{**INFO.__dict__, "created": created}))
    meta = out.file_meta
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationVersionName == "METASR_0.1.0"
    assert "SourceApplicationEntityTitle" not in meta
    assert (out.SeriesDate, out.SeriesTime, out.ContentDate, out.ContentTime) == (
        "20261206",
        "213005",
        "20261206",
        "213005",
    )
    assert out.ContributingEquipmentSequence[-1].ContributionDateTime == "20261206213005"
    assert out.StudyDate == ds.StudyDate  # the study's own dates stay


# ---- lossy history -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, method",
    [
        ("SC_rgb_jpeg_dcmtk.dcm", "ISO_10918_1"),  # JPEG baseline
        ("JPEGLSNearLossless_08.dcm", "ISO_14495_1"),  # JPEG-LS NEAR > 0
        ("693_J2KI.dcm", "ISO_15444_1"),  # JPEG 2000 irreversible
    ],
)
def test_lossy_source_syntax_is_recorded(tmp_path, name, method):
    src = tmp_path / name
    ds = pydicom.dcmread(_real(name))
    for keyword in ("LossyImageCompression", "LossyImageCompressionMethod", "LossyImageCompressionRatio"):
        if keyword in ds:
            delattr(ds, keyword)  # the header does not say it: the transfer syntax does
    ds.save_as(src, enforce_file_format=True)
    out, _ = _derive(src, tmp_path / "o.dcm")
    assert out.LossyImageCompression == "01"
    methods = out.LossyImageCompressionMethod
    assert method in ([methods] if isinstance(methods, str) else list(methods))
    assert float(out.LossyImageCompressionRatio if "LossyImageCompressionRatio" in out else 2) > 1


@pytest.mark.parametrize("name", ["MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm"])
def test_lossless_source_is_not_called_lossy(tmp_path, name):
    out, _ = _derive(_real(name), tmp_path / "o.dcm")
    assert out.get("LossyImageCompression", "00") == "00"


def test_reversible_j2k_said_lossless_under_the_lossy_or_lossless_syntax_is_not_lossy(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small_jp2klossless.dcm"))  # reversible 5-3 wavelet
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.91"
    ds.LossyImageCompression = "00"
    src = tmp_path / "j2k_rev.dcm"
    ds.save_as(src, enforce_file_format=True)
    out, _ = _derive(src, tmp_path / "o.dcm")
    assert out.get("LossyImageCompression", "00") == "00"


# ---- padding -------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [None, -1990])
def test_pixel_padding_stays_exactly_padding(tmp_path, limit):
    hu = ct_phantom(40)
    yy, xx = np.mgrid[:40, :40]
    outside = (yy - 19.5) ** 2 + (xx - 19.5) ** 2 > 19**2  # outside the circular field of view
    stored_pad = -2000
    hu[outside] = stored_pad - 1024 + (np.arange(outside.sum()) % 5 if limit else 0)
    src = write_ct(tmp_path / "pad.dcm", hu)
    ds = pydicom.dcmread(src)
    ds.add_new("PixelPaddingValue", "SS", stored_pad)
    if limit is not None:
        ds.add_new("PixelPaddingRangeLimit", "SS", limit)
    ds.save_as(src, enforce_file_format=True)
    out, _ = _derive(
        src, tmp_path / "o.dcm", DerivationInfo(**{**INFO.__dict__, "scale": "2.5", "exact_scale": Fraction(5, 2)})
    )
    pixels = out.pixel_array.astype(np.int64)
    low, high = (stored_pad, stored_pad) if limit is None else (stored_pad, limit)
    in_range = (pixels >= low) & (pixels <= high)
    assert set(np.unique(pixels[in_range])) == {stored_pad}  # padding is only ever the value itself
    # the mask is the input's, enlarged by nearest neighbour on the network's grid
    rows = np.minimum(((2 * np.arange(pixels.shape[0]) + 1) * 2) // 10, 39)
    expected = outside[rows][:, rows]
    np.testing.assert_array_equal(pixels == stored_pad, expected)
    assert int(pixels[~expected].min()) >= -1024 - 1024  # no smear of -2000 into the image


# ---- Enhanced IODs and the dciodvfy sweep ----------------------------------------------------


def _dciodvfy_errors(path) -> set[str] | None:
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    text = run.stdout + run.stderr
    if "Dicom dataset read failed" in text:
        return None  # dciodvfy cannot read this source (e.g. deflated): nothing to compare with
    return {re.sub(r"\s+", " ", line).strip() for line in text.splitlines() if line.startswith("Error")}


def test_enhanced_mr_frames_carry_their_derivation(tmp_path):
    src = _real("emri_small_RLE.dcm") if (DATA_STORE / "emri_small_RLE.dcm").is_file() else None
    ct = DATA_STORE / "eCT_Supplemental.dcm"
    if src is None or not ct.is_file():
        pytest.skip("pydicom-data is not installed (pip install pydicom-data)")
    out, _ = _derive(
        ct, tmp_path / "ct.dcm", DerivationInfo(**{**INFO.__dict__, "scale": "1.5", "exact_scale": Fraction(3, 2)})
    )
    assert list(out.ImageType)[:2] == ["DERIVED", "PRIMARY"]
    for number, group in enumerate(out.PerFrameFunctionalGroupsSequence, start=1):
        item = group.DerivationImageSequence[0]
        assert item.DerivationCodeSequence[-1].CodeValue == "113085"
        assert item.SourceImageSequence[0].ReferencedFrameNumber == number
    frame_types = [
        g.CTImageFrameTypeSequence[0].FrameType
        for g in [*out.PerFrameFunctionalGroupsSequence, *out.SharedFunctionalGroupsSequence]
        if "CTImageFrameTypeSequence" in g
    ]
    assert frame_types and all(list(t)[:2] == ["DERIVED", "PRIMARY"] for t in frame_types)
    assert "SourceImageSequence" not in out and "DerivationDescription" not in out


def _sweep_files() -> list[Path]:
    """One real file per (SOP class, photometric, transfer syntax), small enough to be quick."""
    roots = [Path(get_testdata_file("MR_small.dcm")).parent, DATA_STORE]
    chosen: dict[tuple, Path] = {}
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in ("", ".dcm")):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                key = (
                    str(ds.SOPClassUID),
                    str(ds.get("PhotometricInterpretation")),
                    str(ds.file_meta.TransferSyntaxUID),
                )
                small = int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames", 1) or 1) <= 2**18
            except Exception:
                continue
            if small and key not in chosen:
                chosen[key] = path
    return sorted(chosen.values())


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian package dicom3tools) is not installed")
def test_dciodvfy_sweep_over_real_files_finds_no_new_errors(tmp_path):
    from metasr.core.errors import InputError

    checked, new_errors = 0, {}
    for src in _sweep_files():
        try:
            out, _ = _derive(
                src,
                tmp_path / "o.dcm",
                DerivationInfo(**{**INFO.__dict__, "scale": "1.5", "exact_scale": Fraction(3, 2)}),
            )
        except InputError:
            continue  # refused with a reason (not an image, 1-bit, damaged): covered elsewhere
        before = _dciodvfy_errors(src)
        if before is None:
            continue
        new = _dciodvfy_errors(tmp_path / "o.dcm") - before
        checked += 1
        if new:
            new_errors[src.name] = sorted(new)[:3]
    assert checked >= 20, checked
    assert not new_errors, new_errors


# ---- compression ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "compress, syntax", [("rle", RLELossless), ("jpeg-ls", JPEGLSLossless), ("j2k", JPEG2000Lossless)]
)
@pytest.mark.parametrize("name", ["CT_small.dcm", "SC_rgb.dcm"])
def test_lossless_compression_gives_the_same_pixels(tmp_path, compress, syntax, name):
    plain, _ = _derive(
        get_testdata_file(name), tmp_path / "plain.dcm", DerivationInfo(**{**INFO.__dict__, "compress": "none"})
    )
    packed, _ = _derive(
        get_testdata_file(name), tmp_path / "packed.dcm", DerivationInfo(**{**INFO.__dict__, "compress": compress})
    )
    assert packed.file_meta.TransferSyntaxUID == syntax
    assert plain.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    np.testing.assert_array_equal(packed.pixel_array, plain.pixel_array)
    assert (tmp_path / "packed.dcm").stat().st_size < (tmp_path / "plain.dcm").stat().st_size


def test_keep_writes_the_sources_lossless_codec(tmp_path):
    for name, syntax in [
        ("MR_small_jpeg_ls_lossless.dcm", JPEGLSLossless),
        ("MR_small_jp2klossless.dcm", JPEG2000Lossless),
        ("JPEGLSNearLossless_08.dcm", JPEGLSLossless),
        ("SC_rgb_jpeg_dcmtk.dcm", "1.2.840.10008.1.2.1"),
    ]:
        out, _ = _derive(get_testdata_file(name), tmp_path / f"{name}.dcm")
        assert out.file_meta.TransferSyntaxUID == syntax, name


def test_a_codec_asked_for_by_name_that_cannot_hold_the_image_is_an_error(tmp_path):
    with pytest.raises(OutputError, match="--compress none"):
        _derive(
            get_testdata_file("SC_rgb_32bit.dcm"),
            tmp_path / "o.dcm",
            DerivationInfo(**{**INFO.__dict__, "compress": "rle"}),
        )


# ---- colour --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["examples_palette.dcm", "SC_ybr_full_422_uncompressed.dcm"])
def test_palette_and_422_colour_are_decoded_to_rgb(tmp_path, name):
    src = get_testdata_file(name)
    expected = pydicom.dcmread(src)
    out, notes = _derive(
        src, tmp_path / "o.dcm", DerivationInfo(**{**INFO.__dict__, "scale": "1", "exact_scale": Fraction(1)})
    )
    assert out.PhotometricInterpretation == "RGB" and out.SamplesPerPixel == 3
    assert "RedPaletteColorLookupTableData" not in out
    assert any("decoded to RGB" in n for n in notes)
    if name.startswith("examples_palette"):
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(expected.pixel_array, expected)
        reference = np.rint(rgb / 257.0) if rgb.dtype == np.uint16 else rgb
        assert out.BitsAllocated == 8  # ultrasound IODs hold 8-bit colour
        assert np.abs(out.pixel_array.astype(int) - reference.astype(int)).max() <= 2


def test_j2k_on_a_tiny_image_says_why(tmp_path):
    src = write_ct(tmp_path / "tiny.dcm", ct_phantom(12))
    with pytest.raises(OutputError, match="at least 32 per side"):
        _derive(src, tmp_path / "o.dcm", DerivationInfo(**{**INFO.__dict__, "compress": "j2k"}))
    # keep: a source whose codec cannot hold the output (RLE of 32-bit RGB) is written uncompressed, with a note
    out, notes = _derive(get_testdata_file("SC_rgb_rle_32bit.dcm"), tmp_path / "k.dcm")
    assert out.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1" and any("written uncompressed" in n for n in notes)
