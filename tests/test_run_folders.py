"""metasr-run on folders as scanners write them: trees, content-detected DICOM, several inputs,
collisions, resume only of provable outputs, per-file verdicts, reports, signals, CLI habits."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from test_run_bad_input import _phantom, _write_png, write_dicom

from metasr.runtime import batch as batch_module
from metasr.runtime.cli import main


def _run(args: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capfd.readouterr()
    code = main(args)
    out, err = capfd.readouterr()
    return code, out, err


def _files(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


@pytest.fixture()
def model(tiny_export_dir: Path) -> str:
    return str(tiny_export_dir)


def _study(root: Path) -> Path:
    """A study folder: two series subfolders of suffix-less DICOM files, a DICOMDIR, a stray text file."""
    for series in ("S1", "S2"):
        (root / "study" / series).mkdir(parents=True)
        for k in range(2):
            write_dicom(root / "study" / series / f"IM{k:04d}", _phantom(16, 12 + k))
    (root / "study" / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)  # an index, not an image
    (root / "study" / "notes.txt").write_text("not an image")
    return root / "study"


def test_study_tree_is_recursed_and_kept(tmp_path: Path, model: str, capfd: pytest.CaptureFixture[str]) -> None:
    study = _study(tmp_path)
    before = _files(study)
    code, out, err = _run(["-i", str(study), "-s", "2", "-o", str(tmp_path / "out"), "--model", model], capfd)
    assert code == 0, err
    assert sorted(_files(tmp_path / "out")) == [
        "S1/IM0000_sr2.dcm",
        "S1/IM0001_sr2.dcm",
        "S2/IM0000_sr2.dcm",
        "S2/IM0001_sr2.dcm",
    ]
    assert len(out.splitlines()) == 4 and _files(study) == before


def test_colliding_names_get_unique_outputs(tmp_path: Path, model: str, capfd: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for k, name in enumerate(("a.dcm", "a.DCM", "a", "a.ima")):
        write_dicom(src / name, _phantom(16, 12 + k))
    for k, name in enumerate(("p.jpg", "p.JPG")):
        _write_png(src / name, (_phantom(16, 14 + k) // 16).astype(np.uint8))
    out_dir = tmp_path / "out"
    code, out, err = _run(["-i", str(src), "-s", "2", "-o", str(out_dir), "--model", model], capfd)
    assert code == 0, err
    names = sorted(_files(out_dir))
    assert names == sorted(["a_sr2.dcm", "a-2_sr2.dcm", "a-3_sr2.dcm", "a-4_sr2.dcm", "p_sr2.jpg", "p-2_sr2.jpg"])
    # each output came from its own input: widths 2*12, 2*13, ... in sorted input-name order (a, a.DCM, a.dcm, a.ima)
    import pydicom

    widths = [pydicom.dcmread(out_dir / n).Columns for n in ("a_sr2.dcm", "a-2_sr2.dcm", "a-3_sr2.dcm", "a-4_sr2.dcm")]
    assert widths == [2 * 14, 2 * 13, 2 * 12, 2 * 15]
    assert "kept" not in err
    assert "note: 4 input(s) would share an output name with another input and are numbered" in err


def test_numbered_names_skip_names_inputs_already_have(tmp_path: Path) -> None:
    from metasr.runtime.folders import plan_items

    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "a.tif", "a-2.png"):
        (src / name).write_bytes(b"x")
    stems = {i.source.name: i.stem for i in plan_items([src], tmp_path / "out")}
    assert stems == {"a.png": "a", "a.tif": "a-3", "a-2.png": "a-2"}


def test_several_inputs(tmp_path: Path, model: str, capfd: pytest.CaptureFixture[str]) -> None:
    a = write_dicom(tmp_path / "a.dcm", _phantom(16, 16))
    b = write_dicom(tmp_path / "b.dcm", _phantom(16, 16))
    study = _study(tmp_path)
    out_dir = tmp_path / "out"
    args = ["-i", str(a), "-i", str(b), "-i", str(study), "-i", str(a), "-s", "2", "-o", str(out_dir)]
    code, out, err = _run(args + ["--model", model], capfd)
    assert code == 0, err
    assert sorted(_files(out_dir)) == [
        "a_sr2.dcm",
        "b_sr2.dcm",
        "study/S1/IM0000_sr2.dcm",
        "study/S1/IM0001_sr2.dcm",
        "study/S2/IM0000_sr2.dcm",
        "study/S2/IM0001_sr2.dcm",
    ]
    assert len(out.splitlines()) == 6  # a.dcm named twice is processed once


def test_resume_keeps_only_provable_outputs(tmp_path: Path, model: str, capfd: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for k in range(3):
        _write_png(src / f"im{k}.png", _phantom(20, 16 + k))
    out_dir = tmp_path / "out"
    args = ["-i", str(src), "-s", "2", "-o", str(out_dir), "--model", model]
    assert _run(args, capfd)[0] == 0
    clean = _files(out_dir)
    # tamper with one output, change one input: neither may be kept
    (out_dir / "im0_sr2.png").write_bytes(b"tampered")
    _write_png(src / "im1.png", _phantom(20, 17) + 7)
    code, out, err = _run(args, capfd)
    assert code == 2
    assert "skipped" in err and "im0.png" in err and "im1.png" in err and "does not provably come" in err
    assert "kept 1 output(s)" in err
    assert out == ""
    code, out, err = _run(args + ["--overwrite"], capfd)
    assert code == 0 and len(out.splitlines()) == 3
    _write_png(src / "im1.png", _phantom(20, 17))
    assert _run(args + ["--overwrite"], capfd)[0] == 0
    assert _files(out_dir) == clean  # redone byte-identically


def test_fresh_run_into_foreign_outputs_is_refused(
    tmp_path: Path, model: str, capfd: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    _write_png(src / "im0.png", _phantom())
    _write_png(src / "im1.png", _phantom())
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "im0_sr2.png").write_bytes(b"someone else's file")
    code, out, err = _run(["-i", str(src), "-s", "2", "-o", str(out_dir), "--model", model], capfd)
    assert code == 2 and "kept" not in err
    assert (out_dir / "im0_sr2.png").read_bytes() == b"someone else's file"
    assert out.splitlines() == [str(out_dir / "im1_sr2.png")]
    assert "1 of 2 files could not be processed" in err


def test_settings_change_is_not_resumed(tmp_path: Path, model: str, capfd: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in"
    src.mkdir()
    _write_png(src / "im0.png", _phantom())
    out_dir = tmp_path / "out"
    base = ["-i", str(src), "-s", "2", "-o", str(out_dir), "--model", model]
    assert _run(base, capfd)[0] == 0
    code, _out, err = _run(base + ["--intensity", "full"], capfd)
    assert code == 2 and "does not provably come" in err


def test_one_bad_file_of_any_kind_never_stops_the_rest(
    tmp_path: Path, model: str, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for k in range(4):
        _write_png(src / f"im{k}.png", _phantom())
    (src / "im1.png").write_bytes(b"broken")
    real = batch_module.write_one

    def flaky(up, scan, scale, tag, out, **kw):
        if scan.path.name == "im2.png":
            raise RuntimeError("simulated bug\nwith two lines")
        return real(up, scan, scale, tag, out, **kw)

    monkeypatch.setattr(batch_module, "write_one", flaky)
    report = tmp_path / "report.json"
    code, out, err = _run(["-i", str(src), "-s", "2", "--report", str(report), "--model", model], capfd)
    assert code == 2
    assert len(out.splitlines()) == 2
    skipped = [line for line in err.splitlines() if "skipped" in line]
    assert len(skipped) == 2 and "unexpected RuntimeError: simulated bug with two lines" in skipped[1]
    assert err.splitlines()[-1].startswith("metasr-run: error: 2 of 4 files could not be processed")
    rows = json.loads(report.read_text())["files"]
    assert [r["status"] for r in rows] == ["written", "failed", "failed", "written"]
    assert all(set(r) == {"input", "output", "status", "reason", "seconds"} for r in rows)
    assert json.loads(report.read_text())["counts"] == {"written": 2, "failed": 2}


def test_csv_report(tmp_path: Path, model: str, capfd: pytest.CaptureFixture[str]) -> None:
    src = _write_png(tmp_path / "one.png", _phantom())
    report = tmp_path / "r.csv"
    code, _out, err = _run(["-i", str(src), "-s", "2", "--report", str(report), "--model", model], capfd)
    assert code == 0, err
    rows = list(csv.DictReader(report.open()))
    assert len(rows) == 1 and float(rows[0].pop("seconds")) > 0
    assert rows == [{"input": str(src), "output": str(tmp_path / "one_sr2.png"), "status": "written", "reason": ""}]


@pytest.mark.parametrize(
    ("signum", "code", "word"), [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")]
)
def test_signal_leaves_complete_outputs_and_resumes_identically(
    signum: int,
    code: int,
    word: str,
    tmp_path: Path,
    model: str,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for k in range(4):
        _write_png(src / f"im{k}.png", _phantom(20, 16 + k))
    args = ["-i", str(src), "-s", "1.5", "-o", str(tmp_path / "out"), "--model", model]
    assert _run(args + ["-o", str(tmp_path / "ref")], capfd)[0] == 0
    reference = _files(tmp_path / "ref")
    from metasr.runtime.folders import Journal

    real = Journal.record

    def record_then_signal(self, out, source, *args, **kw):
        if source.name == "im1.png":
            os.kill(os.getpid(), signum)  # arrives while the output is being written and recorded
        real(self, out, source, *args, **kw)

    monkeypatch.setattr(Journal, "record", record_then_signal)
    got, out, err = _run(args + ["--report", str(tmp_path / "r.csv")], capfd)
    assert got == code
    assert f"{word} after 2 of 4 files" in err
    assert sorted(_files(tmp_path / "out")) == ["im0_sr1.5.png", "im1_sr1.5.png"]
    assert [r["status"] for r in csv.DictReader((tmp_path / "r.csv").open())] == [
        "written",
        "written",
        "not run",
        "not run",
    ]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".part")]
    monkeypatch.setattr(Journal, "record", real)
    code, out, err = _run(args, capfd)
    assert code == 0 and len(out.splitlines()) == 2 and "kept 2 output(s)" in err
    assert _files(tmp_path / "out") == reference


def test_output_folder_with_trailing_slash_is_created(
    tmp_path: Path, model: str, capfd: pytest.CaptureFixture[str]
) -> None:
    src = _write_png(tmp_path / "one.png", _phantom())
    code, out, err = _run(["-i", str(src), "-s", "2", "-o", str(tmp_path / "new") + "/", "--model", model], capfd)
    assert code == 0, err
    assert out.strip() == str(tmp_path / "new" / "one_sr2.png") and (tmp_path / "new").is_dir()


def test_current_folder_as_input(
    tmp_path: Path, model: str, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    _write_png(work / "one.png", _phantom())
    monkeypatch.chdir(work)
    code, _out, err = _run(["-i", ".", "-s", "2", "--model", model], capfd)
    assert code == 0, err
    assert (tmp_path / "work_sr2" / "one_sr2.png").is_file()


def test_output_folder_inside_the_input_is_not_read_back(
    tmp_path: Path, model: str, capfd: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    _write_png(src / "one.png", _phantom())
    args = ["-i", str(src), "-s", "2", "-o", str(src / "sr"), "--model", model]
    assert _run(args, capfd)[0] == 0
    code, out, err = _run(args, capfd)
    assert code == 0 and out == "" and "kept 1 output(s)" in err
    assert sorted(_files(src)) == ["one.png", "sr/one_sr2.png"]


def test_existing_single_output_needs_overwrite(tmp_path: Path, model: str, capfd: pytest.CaptureFixture[str]) -> None:
    src = _write_png(tmp_path / "one.png", _phantom())
    args = ["-i", str(src), "-s", "2", "--model", model]
    assert _run(args, capfd)[0] == 0
    stamp = (tmp_path / "one_sr2.png").stat().st_mtime_ns
    code, _out, err = _run(args, capfd)
    assert code == 2 and "already exists; pass --overwrite" in err and len(err.splitlines()) == 1
    assert (tmp_path / "one_sr2.png").stat().st_mtime_ns == stamp
    assert _run(args + ["--overwrite"], capfd)[0] == 0


def test_quiet_verbose_version(tmp_path: Path, model: str, capfd: pytest.CaptureFixture[str]) -> None:
    src = _write_png(tmp_path / "one.png", _phantom())
    code, out, err = _run(["-i", str(src), "-s", "2", "-q", "--model", model], capfd)
    assert code == 0 and err == "" and out.strip() == str(tmp_path / "one_sr2.png")
    code, out, err = _run(["-i", str(tmp_path), "-s", "2", "-v", "--model", model], capfd)
    assert code == 0 and "metasr-run: wrote" in err
    code, out, _err = _run(["--version"], capfd)
    assert code == 0 and out.startswith("metasr-run ")


def test_size_prints_the_resulting_spacing(tmp_path: Path, model: str, capfd: pytest.CaptureFixture[str]) -> None:
    src = write_dicom(tmp_path / "mr.dcm", _phantom(20, 20))  # 0.9 mm pixels
    code, _out, err = _run(["-i", str(src), "--size", "36x36", "--model", model], capfd)
    assert code == 0, err
    assert "scale 1.8 gives 0.5 x 0.5 mm pixels" in err


def test_threads_are_capped_with_a_note(tmp_path: Path, model: str, capfd: pytest.CaptureFixture[str]) -> None:
    src = _write_png(tmp_path / "one.png", _phantom())
    code, _out, err = _run(["-i", str(src), "-s", "2", "--threads", "100000", "--model", model], capfd)
    assert code == 0, err
    assert "--threads 100000 capped at" in err


@pytest.mark.parametrize("extra", [["--tile", "16"], ["--device", "cuda:0"], ["--intensity", "data"]])
def test_options_that_run(extra: list[str], tmp_path: Path, model: str, capfd: pytest.CaptureFixture[str]) -> None:
    from metasr.runtime.backends import tensorrt_possible

    if "cuda:0" in extra and not tensorrt_possible():
        pytest.skip("no NVIDIA GPU here: --device cuda:0 is covered by the bad-input corpus")
    src = _write_png(tmp_path / "one.png", _phantom(40, 40))
    code, _out, err = _run(["-i", str(src), "-s", "2", "--model", model] + extra, capfd)
    assert code == 0, err


def test_tile_gives_the_same_result(tmp_path: Path, model: str, capfd: pytest.CaptureFixture[str]) -> None:
    src = _write_png(tmp_path / "one.png", _phantom(40, 40))
    assert _run(["-i", str(src), "-s", "2", "-o", str(tmp_path / "a.png"), "--model", model], capfd)[0] == 0
    args = ["-i", str(src), "-s", "2", "-o", str(tmp_path / "b.png"), "--tile", "16", "--model", model]
    assert _run(args, capfd)[0] == 0
    import cv2

    a, b = (cv2.imread(str(tmp_path / n), cv2.IMREAD_UNCHANGED).astype(np.int64) for n in ("a.png", "b.png"))
    assert a.shape == b.shape == (80, 80)
    assert np.abs(a - b).max() <= 1  # tiles change float rounding only, never the picture


def test_reading_goes_through_one_function_with_a_window(
    tmp_path: Path, model: str, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from metasr.runtime import jobs

    seen: list[object] = []
    real = jobs.read_input

    def spy(path, job, window=None):
        seen.append(window)
        return real(path, job, window)

    monkeypatch.setattr(batch_module, "read_input", spy)
    src = tmp_path / "in"
    src.mkdir()
    _write_png(src / "one.png", _phantom())
    assert _run(["-i", str(src), "-s", "2", "--model", model], capfd)[0] == 0
    assert seen == [None]


def test_resume_after_a_kill_between_write_and_move(
    tmp_path: Path, model: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """A killed run leaves either a recorded output not yet moved (gone) or a hidden partial file: both are redone."""
    src = tmp_path / "in"
    src.mkdir()
    for k in range(3):
        _write_png(src / f"im{k}.png", _phantom(20, 16 + k))
    out_dir = tmp_path / "out"
    args = ["-i", str(src), "-s", "2", "-o", str(out_dir), "--model", model]
    assert _run(args, capfd)[0] == 0
    reference = _files(out_dir)
    (out_dir / "im0_sr2.png").unlink()  # recorded, killed before the move
    (out_dir / "im1_sr2.png").rename(out_dir / ".im1_sr2.partial.png")  # killed before the record
    code, out, err = _run(args, capfd)
    assert code == 0, err
    assert sorted(Path(line).name for line in out.splitlines()) == ["im0_sr2.png", "im1_sr2.png"]
    assert _files(out_dir) == reference
    assert sorted(p.name for p in out_dir.iterdir()) == [".metasr-run.jsonl", *sorted(reference)]
