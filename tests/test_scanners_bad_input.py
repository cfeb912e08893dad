"""File-level bad input for metasr.scanners: one-line errors, inputs untouched, no output left behind."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import tracemalloc
import zlib
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG2MPML

from metasr.core.errors import InputError, OutputError
from metasr.scanners import MAX_SIDE, MIN_SIDE, DerivationInfo, read_image

INFO = DerivationInfo(scale="2", model_id="ef" * 32, software_version="0.1.0", model_name="metasrgan-test")


def _digest(folder: Path) -> dict[str, str]:
    """Name -> sha256 of every file in ``folder``: inputs byte-identical, nothing added."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_input_error(path: Path, match: str, **kwargs) -> str:
    before = _digest(path.parent) if path.parent.exists() else {}
    with pytest.raises(InputError, match=match) as info:
        read_image(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message and len(message) < 400
    if path.parent.exists():
        assert _digest(path.parent) == before
    return message


def _copy(name: str, tmp_path: Path) -> Path:
    dst = tmp_path / Path(name).name
    shutil.copyfile(get_testdata_file(name), dst)
    return dst


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


# ---- missing, empty, garbage ----------------------------------------------------------------


def test_missing_file(tmp_path):
    _assert_input_error(tmp_path / "nope.dcm", "does not exist")


def test_folder_instead_of_file(tmp_path):
    _assert_input_error(tmp_path, "is a folder")


@pytest.mark.parametrize("name", ["a.png", "a.dcm", "a.nii", "a.nii.gz", "IM0001", "a.tif"])
def test_zero_byte_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    _assert_input_error(tmp_path / name, "empty")


@pytest.mark.parametrize("name", ["a.png", "a.jpg", "a.tif", "a.dcm", "IM0001", "a.nii", "a.nii.gz", "a.bin"])
def test_random_bytes(tmp_path, name):
    (tmp_path / name).write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _assert_input_error(tmp_path / name, r"not a|damaged|truncated|no pixel data")


# ---- DICOM --------------------------------------------------------------------------------


def test_truncated_dicom_pixel_data(tmp_path):
    _assert_input_error(_copy("MR_truncated.dcm", tmp_path), "truncated")


@pytest.mark.parametrize("keep", [0.6, 0.05])
def test_dicom_cut_short(tmp_path, keep):
    data = Path(get_testdata_file("MR_small.dcm")).read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: int(len(data) * keep)])
    _assert_input_error(path, r"truncated|damaged")


@pytest.mark.parametrize("name", ["test-SR.dcm", "waveform_ecg.dcm", "rtplan.dcm"])
def test_dicom_without_pixel_data(tmp_path, name):
    message = _assert_input_error(_copy(name, tmp_path), "has no pixel data")
    assert "needs an image" in message


def test_unsupported_compression(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 64])  # an MPEG-2 style fragment
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    path = tmp_path / "mpeg2.dcm"
    ds.save_as(path, enforce_file_format=True)
    message = _assert_input_error(path, "cannot decode")
    assert "MPEG2" in message and "uncompressed" in message


def test_missing_decoder_plugin_names_the_install(tmp_path, monkeypatch):
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLSLossless

    decoder = get_decoder(JPEGLSLossless)
    monkeypatch.setattr(type(decoder), "is_available", property(lambda self: False))
    message = _assert_input_error(_copy("MR_small_jpeg_ls_lossless.dcm", tmp_path), "no installed plugin")
    assert "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg" in message


@pytest.mark.parametrize("name, match", [("liver_1frame.dcm", "1-bit")])
def test_unsupported_pixel_layouts(tmp_path, name, match):
    _assert_input_error(_copy(name, tmp_path), match)


# ---- non-finite pixels --------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_tiff(tmp_path, bad):
    pixels = np.ones((8, 9), np.float32)
    pixels[3, 4] = bad
    assert cv2.imwrite(str(tmp_path / "f.tif"), pixels)
    _assert_input_error(tmp_path / "f.tif", "NaN or infinite")


def test_non_finite_nifti(tmp_path):
    data = np.ones((6, 7, 3), np.float32)
    data[1, 2, 0] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "v.nii.gz")
    _assert_input_error(tmp_path / "v.nii.gz", "NaN or infinite")


# ---- sizes -------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (1, 40), (40, 1)])
def test_too_small_png(tmp_path, shape):
    assert cv2.imwrite(str(tmp_path / "t.png"), np.zeros(shape, np.uint8))
    message = _assert_input_error(tmp_path / "t.png", "at least")
    assert f"{MIN_SIDE}x{MIN_SIDE}" in message


def test_too_small_dicom_and_nifti(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.PixelData = np.array([[7]], np.int16).tobytes()
    ds.Rows = ds.Columns = 1
    ds.save_as(tmp_path / "one.dcm", enforce_file_format=True)
    _assert_input_error(tmp_path / "one.dcm", "at least")
    nib.save(nib.Nifti1Image(np.ones((1, 1, 5), np.int16), np.eye(4)), tmp_path / "one.nii")
    _assert_input_error(tmp_path / "one.nii", "at least")


def _huge_png() -> bytes:
    ihdr = struct.pack(">IIBBBBB", 65535, 65535, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 100)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _huge_jpeg() -> bytes:
    ok, buf = cv2.imencode(".jpg", np.zeros((16, 16), np.uint8))
    data = bytearray(buf.tobytes())
    i = data.index(b"\xff\xc0")  # baseline frame header: FF C0 len(2) precision(1) height(2) width(2)
    data[i + 5 : i + 9] = struct.pack(">HH", 65535, 65535)
    return bytes(data)


def _huge_tiff() -> bytes:
    entries = [(256, 4, 1, 65535), (257, 4, 1, 65535), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1)]
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        ifd += struct.pack("<HHII", tag, typ, count, value)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)


def _huge_dicom() -> bytes:
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.Rows = ds.Columns = 65535
    import io

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _huge_nifti() -> bytes:
    header = nib.Nifti2Header()  # NIfTI-1 dims are int16 (at most 32767); NIfTI-2 holds 65535
    header.set_data_shape((65535, 65535, 1))
    header.set_data_dtype(np.int16)
    return header.binaryblock + b"\x00" * 4 + b"\x00" * 64


@pytest.mark.parametrize(
    "name, build",
    [
        ("h.png", _huge_png),
        ("h.jpg", _huge_jpeg),
        ("h.tif", _huge_tiff),
        ("h.dcm", _huge_dicom),
        ("h.nii", _huge_nifti),
    ],
)
def test_header_claiming_65535_squared_is_refused_before_allocating(tmp_path, name, build):
    (tmp_path / name).write_bytes(build())
    tracemalloc.start()
    try:
        message = _assert_input_error(tmp_path / name, "65535x65535")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(MAX_SIDE) in message
    assert peak < 32 * 2**20, f"{peak / 2**20:.0f} MiB allocated before refusing"


# ---- outputs -----------------------------------------------------------------------------


@pytest.fixture
def scan_and_input(tmp_path):
    src = tmp_path / "in" / "a.png"
    src.parent.mkdir()
    assert cv2.imwrite(str(src), np.arange(64, dtype=np.uint8).reshape(8, 8))
    return read_image(src), src


def _assert_output_error(scan, out, match, folder):
    before = _digest(folder)
    with pytest.raises(OutputError, match=match) as info:
        scan.write_derived(np.zeros((1, 16, 16), np.float32), out, INFO)
    assert "\n" not in str(info.value)
    assert _digest(folder) == before


def test_output_equal_to_input(scan_and_input, tmp_path):
    scan, src = scan_and_input
    _assert_output_error(scan, src, "is the input", tmp_path)
    os.symlink(src, tmp_path / "link.png")
    _assert_output_error(scan, tmp_path / "link.png", "is the input", tmp_path)
    _assert_output_error(scan, src.parent / ".." / "in" / "a.png", "is the input", tmp_path)


def test_output_folder_missing_or_not_a_folder(scan_and_input, tmp_path):
    scan, _ = scan_and_input
    _assert_output_error(scan, tmp_path / "missing" / "b.png", "does not exist", tmp_path)
    (tmp_path / "file.txt").write_bytes(b"x")
    _assert_output_error(scan, tmp_path / "file.txt" / "b.png", "not a folder", tmp_path)
    _assert_output_error(scan, tmp_path / "in", "is a folder", tmp_path)


def test_unwritable_output_folder(scan_and_input, tmp_path):
    scan, _ = scan_and_input
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions: use a folder no one can create files in
            target = Path("/proc") / "metasr-out.png"
        else:
            target = locked / "b.png"
        with pytest.raises(OutputError, match="writ"):
            scan.write_derived(np.zeros((1, 16, 16), np.float32), target, INFO)
        assert not target.exists()
    finally:
        locked.chmod(0o700)


def test_failed_replace_leaves_nothing_behind(scan_and_input, tmp_path, monkeypatch):
    scan, _ = scan_and_input

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    _assert_output_error(scan, tmp_path / "b.png", "No space left", tmp_path)


def test_wrong_frame_count_is_refused(scan_and_input, tmp_path):
    scan, _ = scan_and_input
    with pytest.raises(InputError, match="expected"):
        scan.write_derived(np.zeros((2, 16, 16), np.float32), tmp_path / "b.png", INFO)
    with pytest.raises(InputError, match="finite"):
        scan.write_derived(np.full((1, 16, 16), np.nan, np.float32), tmp_path / "b.png", INFO)
    assert not (tmp_path / "b.png").exists()


def test_truncated_and_inflating_nifti_gz(tmp_path):
    import gzip

    data = np.arange(6 * 7 * 3, dtype=np.int16).reshape(6, 7, 3)
    full = nib.Nifti1Image(data, np.eye(4)).to_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(gzip.compress(full[: len(full) - 20]))
    _assert_input_error(tmp_path / "cut.nii.gz", "truncated")
    (tmp_path / "cut.nii").write_bytes(full[: len(full) - 20])
    _assert_input_error(tmp_path / "cut.nii", "truncated")
    # Trailing data beyond what the header describes is never inflated or read.
    (tmp_path / "long.nii.gz").write_bytes(gzip.compress(full + b"\x00" * 50_000_000))
    tracemalloc.start()
    try:
        scan = read_image(tmp_path / "long.nii.gz")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert scan.frames.shape == (3, 6, 7) and peak < 16 * 2**20


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
def test_truncated_raster(tmp_path, suffix, capfd):
    pixels = np.random.default_rng(0).integers(0, 256, (40, 50), dtype=np.uint8)
    ok, buf = cv2.imencode(suffix, pixels)
    data = buf.tobytes()
    for keep in (20, len(data) // 2):
        path = tmp_path / f"cut{keep}{suffix}"
        path.write_bytes(data[:keep])
        _assert_input_error(path, r"damaged|truncated|cannot be decoded")
    out, err = capfd.readouterr()
    assert out == "" and err == "", "decoder noise on stdout/stderr; the error must be the only line"
