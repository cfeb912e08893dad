"""metasr-run on good input: files, folders, --size/--spacing, names, and what it prints."""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from test_run_bad_input import _phantom, _write_png, write_dicom

from metasr.core.errors import InputError, ScaleError
from metasr.core.scale import hr_length, scale_for_size, scale_for_spacing
from metasr.runtime import Upscaler
from metasr.runtime.cli import default_output_name, main


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(args: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capfd.readouterr()
    code = main(args)
    out, err = capfd.readouterr()
    return code, out, err


def test_png_default_output_beside_input(
    tmp_path: Path, tiny_export_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import cv2

    src = _write_png(tmp_path / "frame.png", _phantom(24, 20) * 8)
    before = _sha(src)
    code, out, err = _run(["--input", str(src), "--scale", "1.8", "--model", str(tiny_export_dir)], capfd)
    assert code == 0, err
    written = tmp_path / "frame_sr1.8.png"
    assert out.strip() == str(written)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("metasr: model tiny (")
    assert "on CPU (CPUExecutionProvider)" in lines[0]
    result = cv2.imread(str(written), cv2.IMREAD_UNCHANGED)
    assert result.dtype == np.uint16 and result.shape == (hr_length(24, Fraction(9, 5)), hr_length(20, Fraction(9, 5)))
    assert _sha(src) == before
    # the file holds what the library computes (up to 16-bit quantisation of the intensity map)
    from metasr.scanners import DerivationInfo, read_image

    with read_image(src) as scan:
        expected = Upscaler(tiny_export_dir, device="cpu").upscale(scan.frames, "1.8")
        info = DerivationInfo("1.8", "x", "0", "tiny", exact_scale=Fraction(9, 5))
        stored = scan.stored_values(expected, info)[0]  # out-of-window residual added back
    assert np.abs(result.astype(np.float64) - stored).max() <= 1.0


def test_dicom_output_and_geometry(tmp_path: Path, tiny_export_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    import pydicom

    src = write_dicom(tmp_path / "slice.dcm", _phantom(32, 28))
    before = _sha(src)
    code, out, err = _run(["--input", str(src), "--scale", "2.3", "--model", str(tiny_export_dir)], capfd)
    assert code == 0, err
    written = Path(out.strip())
    assert written == tmp_path / "slice_sr2.3.dcm"
    ds = pydicom.dcmread(written)
    assert (ds.Rows, ds.Columns) == (hr_length(32, Fraction(23, 10)), hr_length(28, Fraction(23, 10)))
    assert float(ds.PixelSpacing[0]) == pytest.approx(0.9 / 2.3)  # exactly old / r: geometry follows the pixels
    assert ds.SOPInstanceUID != pydicom.dcmread(src).SOPInstanceUID
    assert _sha(src) == before


def test_size_gives_exact_output(tmp_path: Path, tiny_export_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    import cv2

    src = _write_png(tmp_path / "frame.png", _phantom(24, 20))
    out_path = tmp_path / "big.png"
    code, _out, err = _run(
        ["--input", str(src), "--size", "37x44", "--output", str(out_path), "--model", str(tiny_export_dir)], capfd
    )
    assert code == 0, err
    assert cv2.imread(str(out_path), cv2.IMREAD_UNCHANGED).shape == (44, 37)


def test_spacing_from_nifti(tmp_path: Path, tiny_export_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    import nibabel as nib

    volume = np.random.default_rng(0).random((16, 12, 3)).astype(np.float32)
    src = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.diag([0.9, 0.9, 3.0, 1.0])), str(src))
    code, out, err = _run(
        ["--input", str(src), "--spacing", "0.5", "--axis", "2", "--model", str(tiny_export_dir)], capfd
    )
    assert code == 0, err
    written = Path(out.strip())
    assert written.name == "vol_sr1.8.nii.gz"  # 0.9 mm -> 0.5 mm is 9/5
    result = nib.load(str(written))
    assert result.shape == (hr_length(16, Fraction(9, 5)), hr_length(12, Fraction(9, 5)), 3)


def test_output_folder_for_one_file(tmp_path: Path, tiny_export_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    src = _write_png(tmp_path / "frame.png", _phantom())
    (tmp_path / "out").mkdir()
    code, out, err = _run(
        ["--input", str(src), "--scale", "7/3", "-o", str(tmp_path / "out"), "--model", str(tiny_export_dir)], capfd
    )
    assert code == 0, err
    assert Path(out.strip()) == tmp_path / "out" / "frame_sr7-3.png"


def test_folder_batch(tmp_path: Path, tiny_export_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "series"
    src.mkdir()
    for k in range(3):
        _write_png(src / f"im{k}.png", _phantom(20 + k, 18))
    write_dicom(src / "im3.dcm", _phantom(16, 16))
    code, out, err = _run(
        ["--input", str(src), "--scale", "2", "--output", str(tmp_path / "sr"), "--model", str(tiny_export_dir)], capfd
    )
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "sr").iterdir())
    assert names == [".metasr-run.jsonl", "im0_sr2.png", "im1_sr2.png", "im2_sr2.png", "im3_sr2.dcm"]
    assert len(out.splitlines()) == 4
    # the status line only: no progress bar when stderr is not a terminal
    assert len(err.splitlines()) == 1 and err.startswith("metasr: model") and "\r" not in err


def test_folder_batch_resumes_and_overwrites_on_request(
    tmp_path: Path, tiny_export_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "series"
    src.mkdir()
    for k in range(2):
        _write_png(src / f"im{k}.png", _phantom(20, 18 + k))
    out_dir = tmp_path / "sr"
    args = ["--input", str(src), "--scale", "2", "--output", str(out_dir), "--model", str(tiny_export_dir)]
    assert _run(args, capfd)[0] == 0
    stamp = (out_dir / "im0_sr2.png").stat().st_mtime_ns
    (out_dir / "im1_sr2.png").unlink()  # as if the first run had been interrupted before im1
    code, out, err = _run(args, capfd)
    assert code == 0 and out.splitlines() == [str(out_dir / "im1_sr2.png")]
    assert "kept 1 output(s)" in err and (out_dir / "im0_sr2.png").stat().st_mtime_ns == stamp
    code, out, err = _run(args + ["--overwrite"], capfd)
    assert code == 0 and len(out.splitlines()) == 2


def test_folder_batch_reports_bad_files_and_keeps_going(
    tmp_path: Path, tiny_export_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "series"
    src.mkdir()
    _write_png(src / "a.png", _phantom())
    (src / "b.png").write_bytes(b"not an image")
    _write_png(src / "c.png", _phantom())
    code, _out, err = _run(["--input", str(src), "--scale", "2", "--model", str(tiny_export_dir)], capfd)
    assert code == 2
    default_out = tmp_path / "series_sr2"
    assert sorted(p.name for p in default_out.iterdir()) == [".metasr-run.jsonl", "a_sr2.png", "c_sr2.png"]
    assert f"skipped {src / 'b.png'}: " in err and "1 of 3 files could not be processed" in err
    assert "Traceback" not in err


def test_extrapolation_flag(tmp_path: Path, tiny_export_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    src = _write_png(tmp_path / "frame.png", _phantom(8, 8))
    code, _out, err = _run(
        ["--input", str(src), "--scale", "6", "--allow-extrapolation", "--model", str(tiny_export_dir)], capfd
    )
    assert code == 0, err
    assert (tmp_path / "frame_sr6.png").is_file()


@pytest.mark.parametrize("h, w", [(24, 20), (37, 53), (100, 100), (255, 17)])
@pytest.mark.parametrize("factor", ["1.1", "1.8", "2.3", "3.7"])
def test_scale_for_size_hits_both_sides(h: int, w: int, factor: str) -> None:
    r = Fraction(factor)
    target = (hr_length(h, r), hr_length(w, r))
    s = scale_for_size(h, w, *target)
    assert s.output_size(h, w) == target
    assert s.q <= 1000


def test_scale_for_size_refuses_other_aspect() -> None:
    with pytest.raises(ScaleError, match="no single scale"):
        scale_for_size(100, 100, 200, 300)


def test_scale_for_spacing() -> None:
    assert scale_for_spacing((0.9, 0.9), 0.5).value == Fraction(9, 5)
    with pytest.raises(InputError, match="not square"):
        scale_for_spacing((0.9, 0.7), 0.5)
    with pytest.raises(InputError, match="no pixel spacing"):
        scale_for_spacing(None, 0.5)


def test_default_output_names() -> None:
    assert default_output_name(Path("a/frame.dcm"), "sr1.8", ".dcm") == "frame_sr1.8.dcm"
    assert default_output_name(Path("vol.nii.gz"), "sr7/3", ".nii.gz") == "vol_sr7-3.nii.gz"
    assert default_output_name(Path("IM0001"), "sr2", ".dcm") == "IM0001_sr2.dcm"


@pytest.mark.parametrize(
    ("text", "expected", "index"), [("cuda:0", "cuda", 0), ("GPU:1", "cuda", 1), ("tensorrt:2", "tensorrt", 2)]
)
def test_device_with_a_gpu_index(text: str, expected: str, index: int) -> None:
    from metasr.runtime.jobs import parse_device

    spec = parse_device(text)
    assert (spec.device.value, spec.index) == (expected, index)


def test_threads_cap_follows_the_cpus_this_process_may_use() -> None:
    from metasr.runtime.jobs import available_cpus, parse_threads

    cpus = available_cpus()
    assert parse_threads(cpus) == (cpus, None)
    capped, note = parse_threads(cpus + 1)
    assert capped == cpus and note == f"--threads {cpus + 1} capped at {cpus}, the CPUs this process may use"
