"""Data pipeline: spec loaders on tiny synthetic layouts, crops, patch/scale geometry, sampling."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import torch

from metasr.core.errors import InputError, ScaleError
from metasr.training import build_model
from metasr.training.data import (
    build_index,
    foreground_box,
    load_slice,
    max_information_crop,
    read_frames,
    split_index,
)
from metasr.training.pairs import PatchDataset, ScaleBatchSampler, downscale_exact, make_pair, patch_geometry
from metasr.training.specs import parse_scales, parse_spec

ODD_SCALES = ["1.1", "2.3", "2.7", "3.7"]


def _blob_volume(shape=(40, 36, 8), empty_ends: int = 2, seed: int = 0) -> np.ndarray:
    """A volume whose axial slices hold a bright blob, except ``empty_ends`` black slices at each end."""
    rng = np.random.default_rng(seed)
    vol = np.zeros(shape, np.float32)
    vol[6:34, 5:31, empty_ends : shape[2] - empty_ends] = 100 + 50 * rng.random((28, 26, shape[2] - 2 * empty_ends))
    return vol


def _write_nifti(path: Path, vol: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))
    return path


def _write_png(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


@pytest.fixture
def brats_root(tmp_path: Path) -> Path:
    root = tmp_path / "brats"
    for i in range(4):
        case = f"BraTS2021_{i:05d}"
        _write_nifti(root / case / f"{case}_t1ce.nii.gz", _blob_volume(seed=i))
        _write_nifti(root / case / f"{case}_flair.nii.gz", np.ones((40, 36, 8), np.float32))  # ignored modality
    return root


def test_brats_nifti_axial_slices_skip_empty_and_split_by_case(brats_root: Path) -> None:
    index = build_index([f"brats:{brats_root}"], min_size=8)
    # 8 axial slices per case, 2 black ones at each end are skipped.
    assert len(index) == 4 * 4
    assert index.skipped_slices == 4 * 4
    assert all(s.axis == "axial" and "t1ce" in s.path for s in index.slices)
    assert len(index.groups) == 4
    train, val = split_index(index, 0.25, seed=0)
    train_cases = {s.group for s in train.slices}
    val_cases = {s.group for s in val.slices}
    assert len(val_cases) == 1 and not (train_cases & val_cases)
    assert len(train) + len(val) == len(index)


def test_brats_2d_slice_folders(tmp_path: Path) -> None:
    root = tmp_path / "brats2d"
    rng = np.random.default_rng(1)
    for c in range(3):
        for z in range(2):
            img = np.zeros((30, 30), np.uint8)
            img[5:25, 8:22] = rng.integers(50, 255, (20, 14))
            _write_png(root / f"case{c}" / f"slice{z:03d}.png", img)
        _write_png(root / f"case{c}" / "slice_empty.png", np.zeros((30, 30), np.uint8))
    index = build_index([f"brats:{root}"], min_size=8)
    assert len(index) == 6 and index.skipped_slices == 3
    assert len(index.groups) == 3
    assert {(s.height, s.width) for s in index.slices} == {(20, 14)}


def test_div2k_rgb_is_converted_to_luminance(tmp_path: Path) -> None:
    rgb = np.zeros((24, 20, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    path = _write_png(tmp_path / "div2k" / "0001.png", rgb[..., ::-1])  # cv2 writes BGR
    y = read_frames(path)[0]
    assert y.shape == (24, 20)
    np.testing.assert_allclose(y, (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255, atol=1e-6)
    index = build_index([f"div2k:{tmp_path / 'div2k'}"], min_size=8)
    assert len(index) == 1 and index.slices[0].axis is None


def test_folder_volumes_sliced_along_requested_axes(tmp_path: Path) -> None:
    vol = np.zeros((20, 24, 16), np.float32)
    vol[6:20, 5:24, :] = 1 + np.random.default_rng(0).random((14, 19, 16))  # x 6..19, y 5..23, every z
    _write_nifti(tmp_path / "f" / "vol.nii.gz", vol)
    _write_png(tmp_path / "f" / "sub" / "image.png", np.full((12, 14), 128, np.uint8))
    index = build_index([f"folder:{tmp_path / 'f'}"], axes=("axial", "coronal", "sagittal"), min_size=4)
    axes = [s.axis for s in index.slices]
    assert axes.count(None) == 1  # the PNG
    assert axes.count("axial") == 16
    assert axes.count("coronal") == 19  # y slices 5..23 hold the blob, 0..4 are empty
    assert axes.count("sagittal") == 14  # x slices 6..19
    coronal = next(s for s in index.slices if s.axis == "coronal")
    assert load_slice(coronal).shape == (coronal.height, coronal.width)


def test_corrupt_files_are_skipped_with_their_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write_png(tmp_path / "good.png", np.full((16, 16), 200, np.uint8))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "bad.nii.gz").write_bytes(b"garbage")
    with caplog.at_level(logging.DEBUG):
        index = build_index([f"folder:{tmp_path}"], min_size=8)
    assert len(index) == 1
    assert sorted(Path(p).name for p in index.skipped_files) == ["bad.nii.gz", "bad.png"]
    assert all(reason.startswith(Path(p).name) for p, reason in index.skipped.items())  # the scanners' one line
    assert caplog.text == ""  # the library only records; the commands decide what to print


def test_empty_dataset_is_a_clear_error(tmp_path: Path) -> None:
    _write_png(tmp_path / "black.png", np.zeros((32, 32), np.uint8))
    with pytest.raises(InputError, match="no usable images"):
        build_index([f"folder:{tmp_path}"])
    with pytest.raises(InputError, match="does not exist"):
        parse_spec(f"folder:{tmp_path / 'missing'}")
    with pytest.raises(InputError, match="unknown kind"):
        parse_spec(f"imagenet:{tmp_path}")


def test_max_information_crop_is_the_foreground_bounding_box() -> None:
    img = np.zeros((50, 40), np.float32)
    img[7:31, 12:29] = 0.8
    img[3, 3] = 0.01  # below the foreground threshold: background noise
    assert foreground_box(img) == (7, 12, 31, 29)
    crop = max_information_crop(img)
    assert crop.shape == (24, 17) and crop.min() == pytest.approx(0.8)
    assert max_information_crop(np.zeros((5, 5), np.float32)) is None


@pytest.mark.parametrize("scale", ODD_SCALES)
@pytest.mark.parametrize("patch", [48, 50, 96])
def test_patch_geometry_follows_the_index_contract(scale: str, patch: int) -> None:
    r = Fraction(scale)
    h, big = patch_geometry(patch, r)
    assert h == (patch * r.denominator) // r.numerator  # floor(P / r), exactly
    assert big == (h * r.numerator) // r.denominator <= patch  # floor(h * r)
    assert h * r - 1 < big <= h * r


@pytest.mark.parametrize("scale", ODD_SCALES)
def test_patches_and_eval_pairs_fit_the_model_output(scale: str) -> None:
    r = Fraction(scale)
    index = build_index_from_array(np.random.default_rng(0).random((70, 60)).astype(np.float32) * 0.9 + 0.1)
    ds = PatchDataset(index, patch_size=40)
    lr, hr = ds[(0, str(r), 123)]
    model = build_model("metasrgan", features=8, num_blocks=1, wpn_hidden=8).eval()
    with torch.no_grad():
        assert model(lr[None], r).shape[-2:] == hr.shape[-2:]
    lr2, hr2 = ds[(0, str(r), 123)]
    assert torch.equal(lr, lr2) and torch.equal(hr, hr2)  # the seed fixes the crop and augmentation
    assert 0 <= float(lr.min()) and float(lr.max()) <= 1
    image = load_slice(index.slices[0])
    lr3, hr3 = make_pair(image, r)
    assert lr3.shape == ((70 * r.denominator) // r.numerator, (60 * r.denominator) // r.numerator)
    with torch.no_grad():
        assert model(lr3[None, None], r).shape[-2:] == hr3.shape


def build_index_from_array(arr: np.ndarray):
    import tempfile

    d = Path(tempfile.mkdtemp())
    _write_png(d / "img.png", (arr * 65535).astype(np.uint16))
    return build_index([f"folder:{d}"], min_size=8)


def test_downscale_is_antialiased() -> None:
    # A pixel-level checkerboard averages out instead of aliasing.
    checker = (np.indices((40, 40)).sum(0) % 2).astype(np.float32)
    lr = downscale_exact(checker, Fraction(4), (10, 10))
    assert lr.shape == (10, 10) and float(lr.std()) < 0.05 and float(lr.mean()) == pytest.approx(0.5, abs=0.05)


def test_parse_scales() -> None:
    grid = parse_scales("1.1:4.0:0.1")
    assert len(grid) == 30 and grid[0] == Fraction(11, 10) and grid[-1] == 4 and grid[12] == Fraction(23, 10)
    assert parse_scales("2,3.7") == [2, Fraction(37, 10)]
    with pytest.raises(ScaleError):
        parse_scales("0.5:2")
    with pytest.raises(ScaleError, match="outside"):
        parse_scales("2:5", 1.1, 4.0)
    with pytest.raises(ScaleError, match="at most 1000"):
        parse_scales("1.1:4:0.001")
    for bad in ("1e999999999", "nan", "inf", "2,x", ""):
        with pytest.raises(ScaleError):
            parse_scales(bad)


def test_sampler_one_scale_per_batch_uniform_and_rank_shards() -> None:
    scales = parse_scales("1.1:4.0:0.1")
    one = ScaleBatchSampler(10, 8, scales, seed=5, patches_per_image=4)
    seen = set()
    for step in range(600):
        batch = one.batch(step)
        assert len({s for _, s, _ in batch}) == 1
        seen.add(batch[0][1])
    assert len(seen) == 30  # every scale of the grid is drawn
    # One epoch (10 slices x 4 patches = 40 slots) visits every slice exactly 4 times.
    slots = [i for step in range(5) for i, _, _ in one.batch(step)]
    assert sorted(slots) == sorted(list(range(10)) * 4)
    r0 = ScaleBatchSampler(10, 8, scales, seed=5, patches_per_image=4, rank=0, world_size=2)
    r1 = ScaleBatchSampler(10, 8, scales, seed=5, patches_per_image=4, rank=1, world_size=2)
    for step in (0, 7, 31):
        assert r0.batch(step) + r1.batch(step) == one.batch(step)
    with pytest.raises(InputError):
        ScaleBatchSampler(10, 7, scales, world_size=2)


@pytest.mark.parametrize("scale", ["1.1", "1.7", "2.3", "3.7"])
def test_lr_is_resampled_at_exactly_the_scale(scale: str) -> None:
    """An edge at HR position x must sit at LR position (x + 0.5) / r - 0.5 across the whole image.

    Resizing the floor(h*r) crop to h pixels would put it at the size ratio instead, drifting by
    up to one LR pixel at the far side (0.7 px here at x1.1), which the index contract cannot undo.
    """
    from metasr.training.models import Bicubic

    r = Fraction(scale)
    big = 175
    for edge in (40, 150):  # near and far from the origin
        image = np.zeros((40, big), np.float32)
        image[:, edge:] = 1.0  # edge between pixels edge-1 and edge: continuous position edge - 0.5
        lr, hr = make_pair(image, r)
        step = np.diff(lr[2].numpy().astype(np.float64))  # step[k] sits at LR position k + 0.5
        crossing = float((step * (np.arange(step.size) + 0.5)).sum() / step.sum())  # the kernel is symmetric
        assert crossing == pytest.approx(edge / float(r) - 0.5, abs=0.05), (edge, crossing)
        assert hr.shape[1] == (lr.shape[1] * r.numerator) // r.denominator
        # the bicubic baseline resamples back at exactly r: the edge returns to its HR position
        up = Bicubic()(lr[None, None], r)[0, 0]
        assert up.shape == hr.shape
        step_hr = np.diff(up[2].numpy().astype(np.float64))
        back = float((step_hr * (np.arange(step_hr.size) + 0.5)).sum() / step_hr.sum())
        assert back == pytest.approx(edge - 0.5, abs=0.1), (edge, back)
    with pytest.raises(ScaleError):
        downscale_exact(np.zeros((10, 10), np.float32), r, (20, 20))


def test_brats_layouts_of_every_release(tmp_path: Path) -> None:
    """2018 (HGG/LGG folders), 2021 (``_t1ce``), 2023 (``-t1c``) and loose 2D slices at the top."""
    root = tmp_path / "brats"
    _write_nifti(root / "HGG" / "Brats18_A_1" / "Brats18_A_1_t1ce.nii.gz", _blob_volume(seed=1))
    _write_nifti(root / "LGG" / "Brats18_B_1" / "Brats18_B_1_t1ce.nii.gz", _blob_volume(seed=2))
    _write_nifti(root / "LGG" / "Brats18_B_1" / "Brats18_B_1_t1.nii.gz", _blob_volume(seed=3))  # not t1ce
    _write_nifti(root / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t1c.nii.gz", _blob_volume(seed=4))
    _write_nifti(root / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t2f.nii.gz", _blob_volume(seed=5))
    slice_img = np.zeros((30, 30), np.uint8)
    slice_img[5:25, 5:25] = 180
    _write_png(root / "case9_070.png", slice_img)
    index = build_index([f"brats:{root}"], min_size=8)
    per_group = {g: sum(s.group == g for s in index.slices) for g in index.groups}
    assert per_group == {
        "brats:Brats18_A_1": 4,
        "brats:Brats18_B_1": 4,
        "brats:BraTS-GLI-00001-000": 4,
        "brats:case9": 1,
    }
    assert not any("_t1." in s.path or "t2f" in s.path for s in index.slices)
