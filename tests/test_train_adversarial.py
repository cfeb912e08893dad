"""Adversarial corpus of metasr-train / metasr-eval: every bad input is exit 2, one stderr line,
nothing written, inputs untouched.

Each case builds its inputs in a fresh folder and returns the arguments; the test snapshots every
file under that folder before and after the run.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_checkpoint, write_dicom, write_smooth_images

from metasr.training.cli import eval_main, train_main

Setup = Callable[[Path], list[str]]


def _data(root: Path) -> Path:
    return write_smooth_images(root / "data", count=3)


def _train(root: Path, *extra: str, data: str | None = None, out: Path | None = None) -> list[str]:
    spec = data if data is not None else f"folder:{_data(root)}"
    base = ["--data", spec, "--out", str(out or root / "run"), "--steps", "1", "--patch-size", "16"]
    return [*base, "--batch-size", "2", "--val-images", "1", "--val-scales", "2", *extra]


def _ckpt(root: Path, mutate: Callable[[dict], None] | None = None, arch: str = "metasrgan") -> Path:
    small = {"wpn_hidden": 8} if arch == "metasrgan" else {}
    path = make_checkpoint(root / f"{arch}.pt", arch, features=8, num_blocks=1, **small)
    if mutate is not None:
        ckpt = torch.load(path, weights_only=True)
        mutate(ckpt)
        torch.save(ckpt, path)
    return path


def _init(root: Path, key: tuple[str, ...], value: object) -> list[str]:
    return _train(root, "--init", str(_ckpt(root, _set(key, value))))


def _eval(root: Path, *extra: str, ckpt: Path | None = None, data: str | None = None) -> list[str]:
    spec = data if data is not None else f"folder:{_data(root)}"
    model = ckpt if ckpt is not None else _ckpt(root)
    return ["--ckpt", str(model), "--data", spec, "--out", str(root / "report"), "--scales", "2", *extra]


def _set(path: tuple[str, ...], value: object) -> Callable[[dict], None]:
    def mutate(ckpt: dict) -> None:
        target = ckpt
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value

    return mutate


def _folder_of(files: dict[str, bytes]) -> Callable[[Path], str]:
    def make(root: Path) -> str:
        folder = root / "odd"
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        return f"folder:{folder}"

    return make


def _truncated_dicom(root: Path) -> str:
    folder = root / "dicoms"
    path = write_dicom(folder / "IM0001", np.full((32, 32), 900, np.uint16))
    path.write_bytes(path.read_bytes()[:-700])
    return f"folder:{folder}"


def _black_images(root: Path) -> str:
    import cv2

    folder = root / "black"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"b{i}.png"), np.zeros((32, 32), np.uint8))
    return f"folder:{folder}"


def _fifo(root: Path) -> str:
    os.mkfifo(root / "pipe")
    return f"folder:{root / 'pipe'}"


def _earlier_run(root: Path) -> list[str]:
    (root / "run").mkdir()
    (root / "run" / "last.pt").write_bytes(b"an earlier run's weights")
    return _train(root)


def _init_is_own_last(root: Path) -> list[str]:
    (root / "run").mkdir()
    last = _ckpt(root)
    last.rename(root / "run" / "last.pt")
    return _train(root, "--init", str(root / "run" / "last.pt"))


def _resume_other_arch(root: Path) -> list[str]:
    (root / "run").mkdir()
    _ckpt(root, arch="srgan").rename(root / "run" / "last.pt")
    return _train(root, "--resume")


def _out_is_file(root: Path) -> list[str]:
    (root / "taken").write_text("not a folder")
    return _train(root, out=root / "taken")


def _out_under_file(root: Path) -> list[str]:
    (root / "taken").write_text("not a folder")
    return _train(root, out=root / "taken" / "run")


def _out_is_data(root: Path) -> list[str]:
    data = _data(root)
    return _train(root, data=f"folder:{data}", out=data)


def _garbage_vgg(root: Path) -> list[str]:
    (root / "vgg.pth").write_bytes(b"\x00" * 64)
    return _train(root, "--stage", "gan", "--vgg-weights", str(root / "vgg.pth"))


def _eval_out_is_data(root: Path) -> list[str]:
    data = _data(root)
    args = _eval(root, data=f"folder:{data}")
    return [*args[: args.index("--out")], "--out", str(data), *args[args.index("--out") + 2 :]]


def _eval_out_is_file(root: Path) -> list[str]:
    (root / "report").write_text("a file")
    return _eval(root)


TRAIN_CASES: dict[str, tuple[Setup, str]] = {
    "spec without kind": (lambda r: _train(r, data=str(_data(r))), "is not KIND:PATH"),
    "spec of unknown kind": (lambda r: _train(r, data=f"imagenet:{_data(r)}"), "unknown kind"),
    "spec with empty path": (lambda r: _train(r, data="folder:"), "is not KIND:PATH"),
    "missing data folder": (lambda r: _train(r, data=f"folder:{r / 'nowhere'}"), "does not exist"),
    "data is a FIFO": (lambda r: _train(r, data=_fifo(r)), "not a regular file or folder"),
    "empty data folder": (lambda r: _train(r, data=_folder_of({})(r)), "no usable images"),
    "only garbage images": (
        lambda r: _train(r, data=_folder_of({"a.png": b"\x89PNG\r\n\x1a\n garbage", "b.dcm": b"DICM?"})(r)),
        "first unreadable",
    ),
    "only an empty file": (lambda r: _train(r, data=_folder_of({"IM0001.dcm": b""})(r)), "no usable images"),
    "only a truncated DICOM": (lambda r: _train(r, data=_truncated_dicom(r)), "no usable images"),
    "only a NIfTI claiming 4 GB": (
        lambda r: _train(r, data=f"folder:{_huge_nifti(r / 'n' / 'huge.nii')}"),
        "huge.nii: NIfTI",
    ),
    "only black images": (lambda r: _train(r, data=_black_images(r)), "0 unreadable files, 2 empty"),
    "lr nan": (lambda r: _train(r, "--lr", "nan"), "--lr must be a finite number"),
    "lr inf": (lambda r: _train(r, "--lr", "inf"), "--lr must be a finite number"),
    "lr above 1": (lambda r: _train(r, "--lr", "5"), "--lr must be a finite number"),
    "lr gamma nan": (lambda r: _train(r, "--lr-gamma", "nan"), "--lr-gamma must be a finite number"),
    "val fraction nan": (lambda r: _train(r, "--val-fraction", "nan"), "--val-fraction must be a finite number"),
    "max minutes nan": (lambda r: _train(r, "--max-minutes", "nan"), "--max-minutes must be a finite number"),
    "max minutes inf": (lambda r: _train(r, "--max-minutes", "inf"), "--max-minutes must be a finite number"),
    "scale with a huge exponent": (lambda r: _train(r, "--scales", "1e999999999"), "is not a scale"),
    "scale nan": (lambda r: _train(r, "--scales", "nan"), "is not a scale"),
    "too many scales": (lambda r: _train(r, "--scales", "1.1:4:0.001"), "at most 1000"),
    "scale below 1": (lambda r: _train(r, "--scales", "0.5"), "greater than 1"),
    "scale above 8": (lambda r: _train(r, "--scales", "2:9:1"), "supported range"),
    "validation scale garbage": (lambda r: _train(r, "--val-scales", "2,x"), "is not a scale"),
    "unknown axis": (lambda r: _train(r, "--axes", "oblique"), "unknown axis"),
    "empty axes": (lambda r: _train(r, "--axes", ","), "no slicing axis"),
    "huge patch": (lambda r: _train(r, "--patch-size", "100000"), "--patch-size"),
    "zero batch": (lambda r: _train(r, "--batch-size", "0"), "--batch-size"),
    "negative seed": (lambda r: _train(r, "--seed", "-1"), "--seed"),
    "absurd threads": (lambda r: _train(r, "--threads", "100000"), "--threads"),
    "unknown device": (lambda r: _train(r, "--device", "tpu"), "unknown device"),
    "missing GPU": (lambda r: _train(r, "--device", "cuda:7"), "cuda"),
    "identity init of srgan": (
        lambda r: _train(r, "--arch", "srgan", "--identity-init"),
        "metasrgan architecture only",
    ),
    "init arch is a list": (lambda r: _init(r, ("config", "arch"), ["metasrgan"]), "architecture ['metasrgan'] is"),
    "init step is a string": (lambda r: _init(r, ("step",), "7"), "step is '7'"),
    "init absurd features": (lambda r: _init(r, ("config", "args", "features"), 10**9), "features is 1000000000"),
    "init nan scale range": (lambda r: _init(r, ("config", "scale_range"), [float("nan"), 4.0]), "is [nan, 4.0]"),
    "init unknown argument": (lambda r: _init(r, ("config", "args", "act"), "os.system"), "argument 'act'"),
    "init model not tensors": (lambda r: _init(r, ("model",), {"w": 1}), "not a dict of named tensors"),
    "init garbage file": (
        lambda r: (r / "g.pt").write_bytes(b"PK\x03\x04 garbage") and _train(r, "--init", str(r / "g.pt")),
        "not a readable checkpoint",
    ),
    "init of another arch": (lambda r: _train(r, "--init", str(_ckpt(r, arch="srgan"))), "holds a 'srgan' model"),
    "init is the run's own last.pt": (_init_is_own_last, "would be overwritten"),
    "earlier run in out": (_earlier_run, "already holds last.pt"),
    "resume without last.pt": (lambda r: _train(r, "--resume"), "does not exist"),
    "resume of another arch": (_resume_other_arch, "is a srgan / l1 run"),
    "out is a file": (_out_is_file, "is a file"),
    "out under a file": (_out_under_file, "is not a folder"),
    "out is the data folder": (_out_is_data, "is the data folder"),
    "garbage vgg weights": (_garbage_vgg, "not a readable VGG19 state dict"),
}

EVAL_CASES: dict[str, tuple[Setup, str]] = {
    "missing checkpoint": (lambda r: _eval(r, ckpt=r / "none.pt"), "does not exist"),
    "garbage checkpoint": (
        lambda r: (r / "g.pt").write_bytes(b"\x80\x04garbage") and _eval(r, ckpt=r / "g.pt"),
        "not a readable checkpoint",
    ),
    "checkpoint arch is a list": (lambda r: _eval(r, ckpt=_ckpt(r, _set(("config", "arch"), ["x"]))), "is unknown"),
    "checkpoint absurd blocks": (
        lambda r: _eval(r, ckpt=_ckpt(r, _set(("config", "args", "num_blocks"), 10**7))),
        "num_blocks is 10000000",
    ),
    "checkpoint nan normalisation": (
        lambda r: _eval(r, ckpt=_ckpt(r, _set(("config", "normalization"), {"mean": float("nan"), "std": 1.0}))),
        "normalization",
    ),
    "scale nan": (lambda r: _eval(r, "--scales", "nan"), "is not a scale"),
    "scale outside the model": (lambda r: _eval(r, "--scales", "2:6:1"), "outside"),
    "crop scales garbage": (lambda r: _eval(r, "--crop-scales", "two"), "is not a scale"),
    "unknown axis": (lambda r: _eval(r, "--axes", "diagonal"), "unknown axis"),
    "only unreadable data": (
        lambda r: _eval(r, data=_folder_of({"x.png": b"nope", "y.nii": b"nope"})(r)),
        "no usable images",
    ),
    "out is a file": (_eval_out_is_file, "is a file"),
    "out is the data folder": (_eval_out_is_data, "is the input"),
    "unknown device": (lambda r: _eval(r, "--device", "quantum"), "unknown device"),
}


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_fifo():
            out[str(p.relative_to(root))] = "fifo"
        elif p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[str(p.relative_to(root))] = "dir"
    return out


def _check(main: Callable[[list[str]], int], setup: Setup, message: str, root: Path, capsys) -> None:
    argv = setup(root)
    capsys.readouterr()
    before = _snapshot(root)
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert message in err, err
    assert "Traceback" not in err
    assert _snapshot(root) == before  # nothing written, nothing changed, no probe or temp file left


@pytest.mark.parametrize("name", list(TRAIN_CASES))
def test_metasr_train_refuses(name: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    setup, message = TRAIN_CASES[name]
    _check(train_main, setup, message, tmp_path, capsys)


@pytest.mark.parametrize("name", list(EVAL_CASES))
def test_metasr_eval_refuses(name: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    setup, message = EVAL_CASES[name]
    _check(eval_main, setup, message, tmp_path, capsys)


def _huge_nifti(path: Path) -> Path:
    """A 608-byte NIfTI-1 whose header claims 16000 x 16000 x 2 float64 voxels (and zero pixdims)."""
    header = bytearray(348)
    header[0:4] = (348).to_bytes(4, "little")
    header[40:56] = np.array([3, 16000, 16000, 2, 1, 1, 1, 1], "<i2").tobytes()
    header[70:72] = (64).to_bytes(2, "little")  # datatype float64
    header[72:74] = (64).to_bytes(2, "little")
    header[108:112] = np.float32(352).tobytes()
    header[344:348] = b"n+1\0"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(header) + b"\0" * 260)
    return path


def _odd_neighbours(folder: Path) -> None:
    """Files a real data folder may hold next to good images; none may stop a run."""
    os.mkfifo(folder / "fifo.png")
    os.symlink(folder / "loop.png", folder / "loop.png")
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "text.dcm").write_text("not dicom")
    (folder / "dir.png").mkdir()
    _huge_nifti(folder / "huge.nii")
    (folder / "IM0099").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x04\x00")  # truncated at once


def test_odd_files_beside_good_images_are_skipped(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _data(tmp_path)
    _odd_neighbours(data)
    before = _snapshot(data)
    rc = train_main(_train(tmp_path, data=f"folder:{data}", out=tmp_path / "run"))
    err = capsys.readouterr().err
    assert rc == 0, err
    lines = err.strip().splitlines()  # no library noise (nibabel logs zero pixdims on stderr)
    assert lines[0] == "metasr-train: 4 unreadable files skipped (-v lists them)" and len(lines) == 3, err
    assert (tmp_path / "run" / "last.pt").is_file() and _snapshot(data) == before
