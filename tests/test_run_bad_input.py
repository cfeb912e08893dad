"""metasr-run on bad input: exit code 2, one line on stderr, no output file, input untouched.

Every case runs ``main([...])`` in-process; stderr is captured at the file-descriptor level so
loader noise from native libraries would be caught too.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from metasr.runtime.cli import main

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
MPEG2 = "1.2.840.10008.1.2.4.100"  # video: no installed plugin decodes it


def write_dicom(
    path: Path,
    pixels: np.ndarray | None = None,
    *,
    sop_class: str = MR_IMAGE,
    syntax: str = EXPLICIT_LE,
    rows: int | None = None,
    cols: int | None = None,
    encapsulated: bytes | None = None,
) -> Path:
    """A small but complete DICOM file (MR image by default) written with pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = UID(syntax)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "Test^Phantom", "PHANTOM", "MR" if sop_class == MR_IMAGE else "SR"
    if pixels is not None or encapsulated is not None:
        shape = pixels.shape if pixels is not None else (rows, cols)
        ds.Rows, ds.Columns = rows or shape[0], cols or shape[1]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelSpacing = [0.9, 0.9]
        ds.ImagePositionPatient = [0.0, 0.0, 0.0]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        if encapsulated is not None:
            ds.PixelData = encapsulate([encapsulated])
            ds["PixelData"].VR = "OB"
        else:
            ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width x height`` 16-bit pixels but carries almost no data."""
    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )
    path.write_bytes(data)
    return path


def _phantom(h: int = 24, w: int = 20) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return (2000 + 1500 * np.sin(x / 3.0) * np.cos(y / 4.0)).astype(np.uint16)


def _write_png(path: Path, pixels: np.ndarray) -> Path:
    import cv2

    assert cv2.imwrite(str(path), pixels)
    return path


def _nifti_with(path: Path, value: float) -> Path:
    import nibabel as nib

    volume = np.random.default_rng(0).random((12, 10, 3)).astype(np.float32)
    volume[3, 4, 1] = value
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(path))
    return path


def _tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _assert_clean_failure(
    args: list[str],
    workdir: Path,
    capfd: pytest.CaptureFixture[str],
    expect: str | None = None,
    watch: tuple[Path, ...] = (),
) -> str:
    """Run metasr-run; check exit 2, one stderr line, no traceback, no new or changed file."""
    folders = (workdir,) + watch
    before = [_tree(f) if f.is_dir() else None for f in folders]
    capfd.readouterr()
    code = main(args)
    out, err = capfd.readouterr()
    lines = err.splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("metasr-run: error: ") and "Traceback" not in err
    assert out == ""
    if expect is not None:
        assert expect in lines[0], lines[0]
    after = [_tree(f) if f.is_dir() else None for f in folders]
    assert after == before  # no output file (not even a temp file), inputs byte-identical
    return lines[0]


@pytest.fixture()
def model(tiny_export_dir: Path) -> str:
    return str(tiny_export_dir)


@pytest.fixture()
def good_png(tmp_path: Path) -> Path:
    return _write_png(tmp_path / "frame.png", _phantom())


# (name, builder(tmp_path) -> input path, expected fragment of the message)
FILE_CASES: dict[str, tuple[Callable[[Path], Path], str | None]] = {
    "missing file": (lambda d: d / "nope.dcm", "does not exist"),
    "zero-byte file": (lambda d: _write_bytes(d / "empty.dcm", b""), "empty"),
    "random bytes": (lambda d: _write_bytes(d / "noise.dcm", np.random.default_rng(1).bytes(4096)), None),
    "random bytes, no suffix": (lambda d: _write_bytes(d / "blob", np.random.default_rng(2).bytes(999)), None),
    "random bytes as .png": (lambda d: _write_bytes(d / "noise.png", np.random.default_rng(3).bytes(999)), None),
    "truncated DICOM": (lambda d: _truncate(write_dicom(d / "cut.dcm", _phantom(64, 64))), None),
    "DICOM without pixel data": (lambda d: write_dicom(d / "nopix.dcm"), None),
    "structured report": (lambda d: write_dicom(d / "report.dcm", sop_class=BASIC_TEXT_SR), None),
    "unsupported compression": (
        lambda d: write_dicom(
            d / "mpeg.dcm", syntax=MPEG2, rows=16, cols=16, encapsulated=b"\x00\x00\x01\xb3" + b"\x11" * 60
        ),
        None,
    ),
    "NaN pixels": (lambda d: _nifti_with(d / "nan.nii.gz", np.nan), "NaN"),
    "Inf pixels": (lambda d: _nifti_with(d / "inf.nii.gz", np.inf), "infinite"),
    "1x1 image": (lambda d: _write_png(d / "dot.png", np.full((1, 1), 900, np.uint16)), None),
    "header claims 65535x65535 (PNG)": (lambda d: write_png_header_only(d / "huge.png", 65535, 65535), None),
    "header claims 65535x65535 (DICOM)": (
        lambda d: write_dicom(d / "huge.dcm", _phantom(8, 8), rows=65535, cols=65535),
        None,
    ),
    # pydicom first warns about the value, then fails on it: still one line
    "IS value '1A' (pydicom warns first)": (lambda d: _copy_testdata("badVR.dcm", d), "header is damaged"),
}


def _copy_testdata(name: str, folder: Path) -> Path:
    from pydicom.data import get_testdata_file

    return Path(shutil.copyfile(get_testdata_file(name), folder / name))


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_bad_input_files(case: str, tmp_path: Path, model: str, capfd: pytest.CaptureFixture[str]) -> None:
    build, expect = FILE_CASES[case]
    source = build(tmp_path)
    _assert_clean_failure(["--input", str(source), "--scale", "2", "--model", model], tmp_path, capfd, expect)


@pytest.mark.parametrize("scale", ["0", "-1", "nan", "inf", "1e9", "-inf", "two", ""])
def test_bad_scales(scale: str, good_png: Path, model: str, capfd: pytest.CaptureFixture[str]) -> None:
    _assert_clean_failure(["--input", str(good_png), "--scale", scale, "--model", model], good_png.parent, capfd)


def test_scale_outside_trained_range_needs_flag(good_png: Path, model: str, capfd: pytest.CaptureFixture[str]) -> None:
    line = _assert_clean_failure(["--input", str(good_png), "--scale", "6", "--model", model], good_png.parent, capfd)
    assert "--allow-extrapolation" in line
    _assert_clean_failure(
        ["--input", str(good_png), "--scale", "9", "--allow-extrapolation", "--model", model],
        good_png.parent,
        capfd,
        "between 1 and 8",
    )


def test_unknown_device(good_png: Path, model: str, capfd: pytest.CaptureFixture[str]) -> None:
    _assert_clean_failure(
        ["--input", str(good_png), "--scale", "2", "--device", "npu", "--model", model],
        good_png.parent,
        capfd,
        "unknown device 'npu'",
    )


def test_output_path_equal_to_input(good_png: Path, model: str, capfd: pytest.CaptureFixture[str]) -> None:
    _assert_clean_failure(
        ["--input", str(good_png), "--scale", "2", "--output", str(good_png), "--model", model],
        good_png.parent,
        capfd,
        "is the input file",
    )
    # the same file through another spelling of the path
    other = good_png.parent / "." / good_png.name
    _assert_clean_failure(
        ["--input", str(good_png), "--scale", "2", "--output", str(other), "--model", model],
        good_png.parent,
        capfd,
        "is the input file",
    )


# (input builder, output name, expected fragment): the output's suffix must name the format written
WRONG_OUTPUT_NAMES: dict[str, tuple[Callable[[Path], Path], str, str]] = {
    "DICOM to .png": (lambda d: write_dicom(d / "mr.dcm", _phantom()), "mr_big.png", "written as DICOM"),
    "DICOM to .nii.gz": (lambda d: write_dicom(d / "mr.dcm", _phantom()), "mr_big.nii.gz", "written as DICOM"),
    "NIfTI to .dcm": (lambda d: _nifti_with(d / "vol.nii.gz", 0.5), "vol_big.dcm", "written as NIFTI"),
    "NIfTI to no suffix": (lambda d: _nifti_with(d / "vol.nii.gz", 0.5), "vol_big", "written as NIFTI"),
    "PNG to .dcm": (lambda d: _write_png(d / "frame.png", _phantom()), "frame_big.dcm", "unknown image suffix"),
    "16-bit PNG to .jpg": (lambda d: _write_png(d / "frame.png", _phantom()), "frame_big.jpg", "cannot hold uint16"),
}


@pytest.mark.parametrize("case", list(WRONG_OUTPUT_NAMES))
def test_output_suffix_must_match_the_format_written(
    case: str, tmp_path: Path, model: str, capfd: pytest.CaptureFixture[str]
) -> None:
    build, name, expect = WRONG_OUTPUT_NAMES[case]
    source = build(tmp_path)
    _assert_clean_failure(
        ["--input", str(source), "--scale", "2", "--output", str(tmp_path / name), "--model", model],
        tmp_path,
        capfd,
        expect,
    )


@pytest.mark.parametrize(
    ("source_name", "out_name"), [("mr.dcm", "IM0001"), ("mr.dcm", "mr_big.DCM"), ("vol.nii.gz", "vol_big.nii")]
)
def test_output_names_that_match_the_format_are_written(
    source_name: str, out_name: str, tmp_path: Path, model: str
) -> None:
    from metasr.scanners import read_image

    source = (
        write_dicom(tmp_path / source_name, _phantom())
        if source_name.endswith(".dcm")
        else _nifti_with(tmp_path / source_name, 0.5)
    )
    out = tmp_path / out_name
    assert main(["--input", str(source), "--scale", "2", "--output", str(out), "--model", model]) == 0
    with read_image(out) as scan, read_image(source) as original:
        assert scan.format is original.format
        assert scan.size == tuple(2 * n for n in original.size)


@pytest.mark.parametrize("where", ["missing folder", "parent is a file", "read-only folder", "system folder"])
def test_unwritable_output(
    where: str, good_png: Path, tmp_path: Path, model: str, capfd: pytest.CaptureFixture[str]
) -> None:
    if where == "missing folder":
        out = tmp_path / "no" / "such" / "out.png"
    elif where == "system folder":
        if not Path("/proc/self").is_dir():
            pytest.skip("no /proc here")
        out = Path("/proc/metasr_out.png")  # unwritable even for root
    elif where == "parent is a file":
        (tmp_path / "plain.txt").write_text("x")
        out = tmp_path / "plain.txt" / "out.png"
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            (locked / "probe").write_bytes(b"")
        except OSError:
            pass
        else:
            (locked / "probe").unlink()
            locked.chmod(0o700)
            pytest.skip("running as root: permission bits do not stop writes here")
        out = locked / "out.png"
    try:
        _assert_clean_failure(
            ["--input", str(good_png), "--scale", "2", "--output", str(out), "--model", model], tmp_path, capfd
        )
    finally:
        if where == "read-only folder":
            (tmp_path / "locked").chmod(0o700)


@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_forced_device_missing(device: str, good_png: Path, model: str, capfd: pytest.CaptureFixture[str]) -> None:
    from metasr.runtime.backends import tensorrt_possible

    if tensorrt_possible():
        pytest.skip("an NVIDIA GPU or TensorRT is present; this covers machines without one")
    _assert_clean_failure(
        ["--input", str(good_png), "--scale", "2", "--device", device, "--model", model],
        good_png.parent,
        capfd,
        f"device {device} was requested",
    )


def test_damaged_model(
    good_png: Path, tiny_export_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    damaged = shutil.copytree(tiny_export_dir, tmp_path / "model")
    data = bytearray((damaged / "upscale.onnx").read_bytes())
    data[100] ^= 0x01
    (damaged / "upscale.onnx").write_bytes(bytes(data))
    _assert_clean_failure(
        ["--input", str(good_png), "--scale", "2", "--model", str(damaged)],
        good_png.parent,
        capfd,
        "upscale.onnx is damaged",
        watch=(damaged,),
    )


def test_missing_model_folder(good_png: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    _assert_clean_failure(
        ["--input", str(good_png), "--scale", "2", "--model", str(tmp_path / "none")],
        good_png.parent,
        capfd,
        "does not exist",
    )


@pytest.mark.parametrize(
    "args, expect",
    [
        ([], "exactly one of --scale, --size or --spacing"),
        (["--scale", "2", "--size", "40x48"], "exactly one"),
        (["--size", "40by48"], "--size must look like"),
        (["--size", "0x0"], "--size must look like"),
        (["--size", "41x30"], "no single scale"),  # 20x24 -> 41x30 changes the aspect ratio
        (["--spacing", "0.5"], "no pixel spacing"),  # PNG has none
        (["--spacing", "-1"], None),
        (["--scale", "2", "--memory-budget", "0"], "--memory-budget"),
        (["--scale", "2", "--bogus"], "No such option"),
    ],
)
def test_bad_arguments(
    args: list[str], expect: str | None, good_png: Path, model: str, capfd: pytest.CaptureFixture[str]
) -> None:
    _assert_clean_failure(["--input", str(good_png), "--model", model] + args, good_png.parent, capfd, expect)
