"""Training and evaluation read every file exactly as deployment does (metasr.scanners.read_image)."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
from conftest import make_checkpoint, write_dicom

from metasr.scanners import read_image
from metasr.training.cli import eval_main, train_main
from metasr.training.data import build_index, load_slice, read_file, read_frames
from metasr.training.specs import Axis


def _ramp(shape=(40, 36), low=100, high=3000) -> np.ndarray:
    y, x = np.mgrid[: shape[0], : shape[1]]
    return (low + (high - low) * (x + y) / (shape[0] + shape[1] - 2)).astype(np.uint16)


def test_monochrome1_is_inverted_as_the_runtime_inverts_it(tmp_path: Path) -> None:
    pixels = _ramp()
    mono1 = write_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1", bits=12)
    mono2 = write_dicom(tmp_path / "m2.dcm", pixels, photometric="MONOCHROME2", bits=12)
    a, b = read_frames(mono1)[0], read_frames(mono2)[0]
    np.testing.assert_array_equal(a, read_image(mono1).frames[0])
    np.testing.assert_allclose(a, 1.0 - b, atol=1e-6)
    assert a[0, 0] > a[-1, -1]  # the lowest stored value is white in MONOCHROME1


def test_multi_frame_files_give_every_frame(tmp_path: Path) -> None:
    frames = np.zeros((3, 40, 36), np.uint16)
    for i in range(3):  # a differently placed block per frame
        frames[i, 4 + 6 * i : 24 + 6 * i, 5:30] = 500 + 800 * i
    path = write_dicom(tmp_path / "multi.dcm", frames)
    index = build_index([f"folder:{tmp_path}"], min_size=8)
    assert [s.name for s in index.slices] == ["multi.dcm:frame0", "multi.dcm:frame1", "multi.dcm:frame2"]
    deployed = read_image(path).frames
    for ref in index.slices:
        top, left, bottom, right = ref.box
        assert (top, bottom) == (4 + 6 * ref.index, 24 + 6 * ref.index)
        np.testing.assert_array_equal(load_slice(ref), deployed[ref.index, top:bottom, left:right])


def test_values_are_the_runtime_values_for_every_format(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write_dicom(tmp_path / "ct.dcm", _ramp(), slope=2.0, intercept=-1024.0)
    img16 = (rng.random((30, 34)) * 20000 + 5000).astype(np.uint16)
    assert cv2.imwrite(str(tmp_path / "deep.png"), img16)
    assert cv2.imwrite(str(tmp_path / "eight.png"), (rng.random((30, 34)) * 200 + 30).astype(np.uint8))
    vol = (rng.random((24, 26, 5)) * 900 + 50).astype(np.int16)
    nib.save(nib.Nifti1Image(vol, np.diag([0.9, 0.9, 3.0, 1.0])), str(tmp_path / "vol.nii.gz"))
    index = build_index([f"folder:{tmp_path}"], min_size=8)
    assert {Path(s.path).name for s in index.slices} == {"ct.dcm", "deep.png", "eight.png", "vol.nii.gz"}
    for ref in index.slices:
        deployed = read_image(ref.path, axis=2 if ref.axis else None).frames  # vol: axial = voxel axis 2
        top, left, bottom, right = ref.box
        np.testing.assert_array_equal(load_slice(ref), deployed[ref.index, top:bottom, left:right])


def test_volumes_are_sliced_along_anatomical_axes_from_the_affine(tmp_path: Path) -> None:
    vol = np.random.default_rng(1).random((10, 12, 14)).astype(np.float32) + 0.5
    # voxel axis 0 runs along world z (superior), axis 2 along world x (right)
    affine = np.array([[0, 0, 1.0, 0], [0, 1.0, 0, 0], [2.0, 0, 0, 0], [0, 0, 0, 1]])
    path = tmp_path / "permuted.nii"
    nib.save(nib.Nifti1Image(vol, affine), str(path))
    decoded = read_file(path)
    assert decoded.voxel_axes == {Axis.AXIAL: 0, Axis.CORONAL: 1, Axis.SAGITTAL: 2}
    for axis, voxel in decoded.voxel_axes.items():
        np.testing.assert_array_equal(decoded.slices(axis), read_image(path, axis=voxel).frames)
    index = build_index([f"folder:{tmp_path}"], axes=("axial", "sagittal"), min_size=4)
    assert sum(s.axis == "axial" for s in index.slices) == 10
    assert sum(s.axis == "sagittal" for s in index.slices) == 14


@pytest.fixture(scope="module")
def im_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scanner-style folder of suffix-less DICOM files ``IM0001`` ... ``IM0004``."""
    root = tmp_path_factory.mktemp("series")
    rng = np.random.default_rng(2)
    for i in range(4):
        a = cv2.GaussianBlur(rng.random((40, 44)).astype(np.float32), (0, 0), 2)
        write_dicom(root / f"IM{i + 1:04d}", (200 + 3000 * (a - a.min()) / (a.max() - a.min())).astype(np.uint16))
    return root


def test_a_folder_of_suffixless_dicom_trains(im_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    index = build_index([f"folder:{im_folder}"], min_size=8)
    assert sorted(Path(s.path).name for s in index.slices) == ["IM0001", "IM0002", "IM0003", "IM0004"]
    out = tmp_path / "run"
    argv = ["--data", f"folder:{im_folder}", "--out", str(out), "--steps", "2", "--patch-size", "16"]
    rc = train_main([*argv, "--batch-size", "2", "--val-scales", "2", "--val-images", "1", "--val-every", "2"])
    assert rc == 0, capsys.readouterr().err
    assert (out / "last.pt").is_file() and (out / "best.pt").is_file()


def test_a_folder_of_suffixless_dicom_evaluates(im_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = make_checkpoint(tmp_path / "m.pt", features=8, num_blocks=1, wpn_hidden=8)
    out = tmp_path / "eval"
    rc = eval_main(
        [
            "--ckpt",
            str(ckpt),
            "--data",
            f"folder:{im_folder}",
            "--scales",
            "2,3",
            "--crop-scales",
            "2",
            "--out",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert {r["image"] for r in rows} == {"IM0001", "IM0002", "IM0003", "IM0004"}


def test_unreadable_files_are_reported_after_the_work(
    im_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import shutil

    data = tmp_path / "mixed"
    shutil.copytree(im_folder, data)
    (data / "IM0009").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 40)  # a DICOM preamble, then nothing
    ckpt = make_checkpoint(tmp_path / "m.pt", features=8, num_blocks=1, wpn_hidden=8)
    argv = ["--ckpt", str(ckpt), "--data", f"folder:{data}", "--scales", "2", "--crop-scales", "2"]
    assert eval_main([*argv, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "metasr-eval: 1 unreadable files skipped (-v lists them)" and len(err) == 2
    assert eval_main([*argv, "--out", str(tmp_path / "b"), "-v"]) == 0
    err = capsys.readouterr().err
    assert f"skipped {data / 'IM0009'}: IM0009" in err
