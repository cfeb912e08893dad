"""An adversarial corpus for metasr-run: odd paths and names, special files, collisions, bad
numbers, unwritable and full destinations, signals.

Every case asserts the promise: the expected exit code, exactly one line on stderr (no
traceback, no status line before it), nothing on stdout, no file created or changed anywhere
under the test folder (temporary files included) and the inputs byte-identical.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from test_run_bad_input import _phantom, _tree, _write_png, write_dicom

from metasr.runtime.cli import main

Builder = Callable[[Path], list[str]]
JOURNAL = ".metasr-run.jsonl"


def _png(d: Path, name: str = "frame.png") -> Path:
    return _write_png(d / name, _phantom())


def _dcm(d: Path, name: str = "mr.dcm", spacing: list | None = None) -> Path:
    path = write_dicom(d / name, _phantom(16, 16))
    if spacing is not None:
        import pydicom

        ds = pydicom.dcmread(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about the value this case is made of
            ds.PixelSpacing = spacing
        ds.save_as(path)
    return path


def _folder(d: Path, *names: str) -> Path:
    folder = d / "series"
    folder.mkdir()
    for n in names:
        _write_png(folder / n, _phantom())
    return folder


def _fifo(d: Path, name: str = "pipe.dcm") -> Path:
    os.mkfifo(d / name)
    return d / name


def _socket(d: Path) -> Path:
    path = d / "sock.png"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()
    return path


def _loop(d: Path, name: str = "loop") -> Path:
    (d / name).symlink_to(d / name)
    return d / name


def _hardlink(d: Path, target: Path, name: str) -> Path:
    os.link(target, d / name)
    return d / name


def _symlink(d: Path, target: Path, name: str) -> Path:
    (d / name).symlink_to(target)
    return d / name


def _scale(d: Path, text: str, *extra: str) -> list[str]:
    return ["-i", str(_png(d)), "-s", text, *extra]


def _with(d: Path, *extra: str) -> list[str]:
    return ["-i", str(_png(d)), *extra]


# name -> (builder(tmp_path) -> arguments without --model, expected fragment of the error line)
CASES: dict[str, tuple[Builder, str]] = {
    # odd inputs
    "input is an empty string": (lambda d: ["-i", "", "-s", "2"], "no input given"),
    "input is blanks": (lambda d: ["-i", "  ", "-s", "2"], "no input given"),
    "no input at all": (lambda d: ["-s", "2"], "no input given"),
    "one of several inputs empty": (lambda d: ["-i", str(_png(d)), "-i", "", "-s", "2", "-o", str(d)], "no input"),
    "input is a FIFO": (lambda d: ["-i", str(_fifo(d)), "-s", "2"], "is a FIFO"),
    "input is a socket": (lambda d: ["-i", str(_socket(d)), "-s", "2"], "a socket"),
    "input is /dev/zero": (lambda d: ["-i", "/dev/zero", "-s", "2", "-o", str(d / "x.png")], "is a device"),
    "input is /dev/null": (lambda d: ["-i", "/dev/null", "-s", "2", "-o", str(d / "x.png")], "is a device"),
    "input is a dangling link": (lambda d: ["-i", str(_symlink(d, d / "gone.png", "l.png")), "-s", "2"], "not exist"),
    "input is a symlink loop": (lambda d: ["-i", str(_loop(d, "l.dcm")), "-s", "2"], "cannot read input"),
    "input in a missing folder": (lambda d: ["-i", str(d / "no" / "x.png"), "-s", "2"], "does not exist"),
    "folder with no images": (lambda d: ["-i", str(_folder(d)), "-s", "2"], "holds no supported images"),
    "folder with hidden images only": (lambda d: ["-i", str(_folder(d, ".a.png")), "-s", "2"], "no supported"),
    "folder with a FIFO named .dcm": (
        lambda d: ["-i", str(_fifo(_folder(d), "x.dcm").parent), "-s", "2"],
        "no supported",
    ),
    "several inputs without --output": (lambda d: ["-i", str(_png(d)), "-i", str(_png(d, "b.png")), "-s", "2"], "need"),
    # odd outputs
    "output name over 255 bytes": (lambda d: _scale(d, "2", "-o", str(d / ("x" * 256 + ".png"))), "bytes"),
    "input name makes a too long output": (
        lambda d: ["-i", str(_png(d, "n" * 235 + ".png")), "-s", "2"],
        "names of at most 240 bytes",
    ),
    "output folder is a symlink loop": (lambda d: _scale(d, "2", "-o", str(_loop(d)) + "/"), "symbolic link loop"),
    "folder output is a symlink loop": (
        lambda d: ["-i", str(_folder(d, "a.png")), "-s", "2", "-o", str(_loop(d))],
        "symbolic link loop",
    ),
    "output is an empty string": (lambda d: _scale(d, "2", "-o", ""), "--output is empty"),
    "output is /dev/null": (lambda d: _scale(d, "2", "-o", "/dev/null", "--overwrite"), "is a device"),
    "output is a FIFO": (lambda d: _scale(d, "2", "-o", str(_fifo(d, "o.png")), "--overwrite"), "FIFO"),
    "output is the input through a symlink": (
        lambda d: ["-i", str(_png(d)), "-s", "2", "-o", str(_symlink(d, d / "frame.png", "o.png")), "--overwrite"],
        "is the input file",
    ),
    "output is a hard link of the input": (
        lambda d: ["-i", str(_png(d)), "-s", "2", "-o", str(_hardlink(d, d / "frame.png", "o.png")), "--overwrite"],
        "is the input file",
    ),
    "output exists": (lambda d: _scale(d, "2", "-o", str(_png(d, "old.png"))), "already exists"),
    "output parent is a file": (lambda d: _scale(d, "2", "-o", str(_png(d, "f.png") / "o.png")), "not a folder"),
    "output in a missing folder": (lambda d: _scale(d, "2", "-o", str(d / "no" / "o.png")), "does not exist"),
    "folder output is a file": (
        lambda d: ["-i", str(_folder(d, "a.png")), "-s", "2", "-o", str(_png(d, "o.png"))],
        "is a file",
    ),
    "folder output is the input folder": (
        lambda d: ["-i", str(_folder(d, "a.png")), "-s", "2", "-o", str(d / "series")],
        "is the input folder",
    ),
    "folder output links to the input folder": (
        lambda d: ["-i", str(_folder(d, "a.png")), "-s", "2", "-o", str(_symlink(d, d / "series", "o"))],
        "is the input folder",
    ),
    # reports
    "report with another suffix": (lambda d: _scale(d, "2", "--report", str(d / "r.txt")), ".csv or .json"),
    "report is a folder": (lambda d: _scale(d, "2", "--report", str(_mkdir(d / "r.csv"))), "is a folder"),
    "report in a missing folder": (lambda d: _scale(d, "2", "--report", str(d / "no" / "r.csv")), "does not exist"),
    "report links to the input": (
        lambda d: _scale(d, "2", "--report", str(_symlink(d, d / "frame.png", "r.csv"))),
        "is the input file",
    ),
    "report is a hard link of the input": (
        lambda d: ["-i", str(_png(d)), "-s", "2", "--report", str(_hardlink(d, d / "frame.png", "r.json"))],
        "is the input file",
    ),
    "report is a FIFO": (lambda d: _scale(d, "2", "--report", str(_fifo(d, "r.csv"))), "FIFO"),
    "report is the resume journal": (
        lambda d: ["-i", str(_folder(d, "a.png")), "-s", "2", "-o", str(d / "o"), "--report", str(d / "o" / "j.csv")],
        "does not exist",
    ),
    "resume journal links to an input": (
        lambda d: ["-i", str(_folder(d, "a.png")), "-s", "2", "-o", str(_journal_link(d, d / "series" / "a.png"))],
        "resume journal",
    ),
    "resume journal is a FIFO": (
        lambda d: [
            "-i",
            str(_folder(d, "a.png")),
            "-s",
            "2",
            "-o",
            str(_fifo(_mkdir(d / "o"), ".metasr-run.jsonl").parent),
        ],
        "FIFO",
    ),
    # bad numbers
    "scale 1e999999999": (lambda d: _scale(d, "1e999999999"), "exponent too large"),
    "scale of 5000 digits": (lambda d: _scale(d, "9" * 5000), "characters"),
    "scale 2.0000000001": (lambda d: _scale(d, "2.0000000001"), "use 2 (the nearest"),
    "scale 8.0001": (lambda d: _scale(d, "8.0001", "--allow-extrapolation"), "use 8 (the nearest"),
    "scale 0/1": (lambda d: _scale(d, "0/1"), "greater than 0, got '0/1'"),
    "scale 1/0": (lambda d: _scale(d, "1/0"), "division by zero"),
    "scale 0.5": (lambda d: _scale(d, "0.5"), "between 1 and 8"),
    "scale 1_000": (lambda d: _scale(d, "1_000"), "must be a number"),
    "scale in Arabic digits": (lambda d: _scale(d, "٢"), "must be a number"),
    "memory budget inf": (lambda d: _scale(d, "2", "--memory-budget", "inf"), "--memory-budget"),
    "memory budget nan": (lambda d: _scale(d, "2", "--memory-budget", "nan"), "--memory-budget"),
    "memory budget -1": (lambda d: _scale(d, "2", "--memory-budget", "-1"), "--memory-budget"),
    "memory budget 1e300": (lambda d: _scale(d, "2", "--memory-budget", "1e300"), "--memory-budget"),
    "memory budget and tile": (lambda d: _scale(d, "2", "--memory-budget", "9", "--tile", "64"), "not both"),
    "tile 0": (lambda d: _scale(d, "2", "--tile", "0"), "--tile"),
    "tile 100000": (lambda d: _scale(d, "2", "--tile", "100000"), "--tile"),
    "threads 0": (lambda d: _scale(d, "2", "--threads", "0"), "--threads"),
    "threads -3": (lambda d: _scale(d, "2", "--threads", "-3"), "--threads"),
    "spacing nan": (lambda d: ["-i", str(_dcm(d)), "--spacing", "nan"], "--spacing"),
    "spacing inf": (lambda d: ["-i", str(_dcm(d)), "--spacing", "inf"], "--spacing"),
    "spacing 0": (lambda d: ["-i", str(_dcm(d)), "--spacing", "0"], "positive"),
    "spacing -1": (lambda d: ["-i", str(_dcm(d)), "--spacing", "-1"], "positive"),
    "spacing 1e999": (lambda d: ["-i", str(_dcm(d)), "--spacing", "1e9999"], "exponent"),
    "spacing 5000 mm": (lambda d: ["-i", str(_dcm(d)), "--spacing", "5000"], "at most 1000"),
    "spacing that needs scale 9": (lambda d: ["-i", str(_dcm(d)), "--spacing", "0.1"], "between 1 and 8"),
    "spacing on a NaN PixelSpacing": (
        lambda d: ["-i", str(_dcm(d, spacing=["nan", "nan"])), "--spacing", "0.5"],
        None,
    ),
    "spacing on negative PixelSpacing": (
        lambda d: ["-i", str(_dcm(d, spacing=[-0.9, -0.9])), "--spacing", "0.5"],
        None,
    ),
    "spacing on a PNG": (lambda d: _with(d, "--spacing", "0.5"), "no pixel spacing"),
    "size x": (lambda d: _with(d, "--size", "x"), "--size must look like"),
    "size 0x5": (lambda d: _with(d, "--size", "0x5"), "--size must look like"),
    "size 512x384x2": (lambda d: _with(d, "--size", "512x384x2"), "--size must look like"),
    "size in superscript digits": (lambda d: _with(d, "--size", "²x3"), "--size must look like"),
    "size 99999999x3": (lambda d: _with(d, "--size", "99999999x3"), "--size must look like"),
    "size needing scale over 8": (lambda d: _with(d, "--size", "200x240"), "between 1 and 8"),
    "size with another aspect": (lambda d: _with(d, "--size", "41x30"), "no single scale"),
    "device cuda:1": (lambda d: _scale(d, "2", "--device", "cuda:1"), "cuda"),  # no such GPU here: one line
    "device cpu:0": (lambda d: _scale(d, "2", "--device", "cpu:0"), "only cuda and tensorrt take a GPU index"),
    "device cuda:x": (lambda d: _scale(d, "2", "--device", "cuda:x"), "the GPU index must be a number"),
    "axis 9": (lambda d: _scale(d, "2", "--axis", "9"), "--axis"),
    "intensity bogus": (lambda d: _scale(d, "2", "--intensity", "bogus"), "--intensity"),
    "quiet and verbose": (lambda d: _scale(d, "2", "-q", "-v"), "either --quiet or --verbose"),
}


def _journal_link(d: Path, target: Path) -> Path:
    out = _mkdir(d / "o")
    (out / JOURNAL).symlink_to(target)
    return out


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _check(
    args: list[str],
    workdir: Path,
    capfd: pytest.CaptureFixture[str],
    expect: str | None,
    code: int = 2,
    prefix: str = "metasr-run: error: ",
) -> str:
    before = _tree(workdir)
    special = sorted(p.name for p in workdir.rglob("*") if not p.is_file())
    capfd.readouterr()
    got = main(args)
    out, err = capfd.readouterr()
    lines = err.splitlines()
    assert got == code, (got, err)
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix) and "Traceback" not in err
    assert out == ""
    if expect is not None:
        assert expect in lines[0], lines[0]
    assert _tree(workdir) == before  # nothing written (temporary files included), inputs byte-identical
    assert sorted(p.name for p in workdir.rglob("*") if not p.is_file()) == special  # no new folders either
    return lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_adversarial(case: str, tmp_path: Path, tiny_export_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    build, expect = CASES[case]
    work = tmp_path / "w"
    work.mkdir()
    args = build(work)
    _check(args + ["--model", str(tiny_export_dir)], work, capfd, expect)


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40


def test_disk_full_during_write(
    tmp_path: Path, tiny_export_dir: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from metasr.core import atomic

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    src = _png(tmp_path)
    args = ["-i", str(src), "-s", "2", "-q", "--model", str(tiny_export_dir)]  # -q: no status line before it
    line = _check(args, tmp_path, capfd, "No space left")
    assert "frame_sr2.png" in line


def test_disk_full_in_a_folder_run_fails_each_file_and_leaves_nothing(
    tmp_path: Path, tiny_export_dir: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from metasr.core import atomic

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    src = _folder(tmp_path, "a.png", "b.png")
    before = _tree(tmp_path)
    capfd.readouterr()
    code = main(["-i", str(src), "-s", "2", "--model", str(tiny_export_dir)])
    out, err = capfd.readouterr()
    assert code == 2 and out == ""
    assert err.count("No space left on device") == 2 and "2 of 2 files could not be processed" in err
    assert _tree(tmp_path) == before and not (tmp_path / "series_sr2").exists()


def test_sigterm_during_a_single_file(
    tmp_path: Path, tiny_export_dir: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from metasr.runtime.upscaler import Upscaler

    def upscale_then_term(self, image, scale):
        os.kill(os.getpid(), signal.SIGTERM)
        return np.zeros((1, 2, 2), np.float32)

    monkeypatch.setattr(Upscaler, "upscale", upscale_then_term)
    src = _png(tmp_path)
    _check(
        ["-i", str(src), "-s", "2", "-q", "-o", str(tmp_path / "new") + "/", "--model", str(tiny_export_dir)],
        tmp_path,
        capfd,
        None,
        code=143,
        prefix="metasr-run: terminated",
    )
