"""The noise-conditioned Meta-SRGAN (``metasrgan-nc``): its noise map, estimator, data, warm start, eval."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_checkpoint, write_smooth_images

from metasr.core.noise import estimate_noise_sigma
from metasr.training import build_model, load_checkpoint, read_checkpoint
from metasr.training.cli import eval_main, train_main
from metasr.training.data import build_index
from metasr.training.degradations import DegradationMix
from metasr.training.models import NOISE_MAP_UNIT, noise_map
from metasr.training.pairs import PatchDataset


def _smooth(size: int = 128, seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    phase = np.random.default_rng(seed).random(2) * 6
    return (0.5 + 0.3 * np.sin(xx / 9 + phase[0]) * np.cos(yy / 13 + phase[1])).astype(np.float32)


@pytest.mark.parametrize("sigma", [0.005, 0.01, 0.02, 0.03])
def test_estimator_recovers_white_noise_on_smooth_anatomy(sigma: float) -> None:
    rng = np.random.default_rng(1)
    noisy = _smooth() + rng.normal(0, sigma, (128, 128)).astype(np.float32)
    assert estimate_noise_sigma(noisy) == pytest.approx(sigma, rel=0.1)


def test_estimator_does_not_take_edges_or_clipping_for_noise() -> None:
    steps = np.zeros((96, 96), np.float32)
    steps[:, 48:] = 0.8
    steps[30:60, 10:40] = 0.4
    assert estimate_noise_sigma(steps) < 1e-3  # a clean image with edges and a clipped background
    assert estimate_noise_sigma(_smooth()) < 1e-3
    for bad in (np.zeros((2, 50)), np.full((20, 20), np.nan), np.zeros((4, 4, 4))):
        assert estimate_noise_sigma(bad) == 0.0


def test_noise_map_appends_the_scaled_sigma_per_image() -> None:
    lr = torch.rand(3, 1, 5, 7)
    x = noise_map(lr, torch.tensor([0.0, 0.01, 0.05]))
    assert x.shape == (3, 2, 5, 7) and torch.equal(x[:, :1], lr)
    assert [float(x[i, 1].unique()) for i in range(3)] == pytest.approx([0.0, 0.01 / NOISE_MAP_UNIT, 1.0])
    torch.testing.assert_close(noise_map(lr, 0.02)[:, 1], torch.full((3, 5, 7), 0.02 / NOISE_MAP_UNIT))


def test_conditioned_model_takes_image_and_map_and_refuses_one_channel() -> None:
    model = build_model("metasrgan-nc").eval()
    with torch.no_grad():
        assert model(noise_map(torch.rand(1, 1, 9, 8), 0.01), "2.3").shape == (1, 1, 20, 18)
        with pytest.raises(ValueError, match="noise map"):
            model(torch.rand(1, 1, 9, 8), 2)


def test_warm_start_from_a_meta_srgan_starts_as_that_model(tmp_path: Path) -> None:
    from metasr.training.warmstart import load_init

    src = make_checkpoint(tmp_path / "m.pt", "metasrgan", features=8, num_blocks=1, wpn_hidden=8)
    plain = load_checkpoint(src, "cpu").eval()
    nc = build_model("metasrgan-nc", features=8, num_blocks=1, wpn_hidden=8).eval()
    load_init(nc, read_checkpoint(src), src, "metasrgan-nc")
    lr = torch.rand(2, 1, 10, 9)
    with torch.no_grad():
        want = plain(lr, "1.7")
        for sigma in (0.0, 0.03):  # the new input starts with zero weight: the noise map changes nothing yet
            torch.testing.assert_close(nc(noise_map(lr, sigma), "1.7"), want, rtol=0, atol=1e-6)


def test_patches_carry_the_sigma_they_were_made_with(tmp_path: Path) -> None:
    data = write_smooth_images(tmp_path / "d", count=2, shape=(48, 48))
    index = build_index([f"folder:{data}"])
    mix = DegradationMix(max_sigma=0.03)
    ds = PatchDataset(index, 24, degradations=mix, noise_map=True)
    maps = []
    for seed in range(40):
        lr, hr = ds[(seed % 2, "2", seed)]
        assert lr.shape == (2, 12, 12) and hr.shape == (1, 24, 24)
        assert lr[1].unique().numel() == 1  # one sigma per patch
        want = mix.sample(np.random.default_rng(seed)).sigma  # the same draw the dataset made first
        assert float(lr[1, 0, 0]) == pytest.approx(want / NOISE_MAP_UNIT, abs=1e-6)
        maps.append(float(lr[1, 0, 0]))
    assert 0.0 in maps and max(maps) > 0.0  # clean and noisy patches both occur
    plain = PatchDataset(index, 24, degradations=mix)
    assert plain[(0, "2", 3)][0].shape == (1, 12, 12)


def test_train_and_evaluate_a_conditioned_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = write_smooth_images(tmp_path / "d", count=4, shape=(40, 48))
    init = make_checkpoint(tmp_path / "init.pt", "metasrgan")
    run = tmp_path / "run"
    argv = ["--arch", "metasrgan-nc", "--data", f"folder:{data}", "--out", str(run), "--steps", "2", "--init"]
    argv += [str(init), "--batch-size", "2", "--patch-size", "16", "--val-every", "2", "--val-images", "2"]
    assert train_main([*argv, "--val-scales", "2", "--no-progress"]) == 0, capsys.readouterr().err
    ckpt = read_checkpoint(run / "best.pt")
    assert ckpt["config"]["arch"] == "metasrgan-nc"
    scores = {}
    for level in ("estimate", "oracle", "0.02", "0"):
        out = tmp_path / f"eval-{level}"
        args = ["--ckpt", f"nc={run / 'best.pt'}", "--data", f"folder:{data}", "--scales", "2", "--out", str(out)]
        rc = eval_main([*args, "--noise", "rician:0.02", "--noise-level", level, "--no-progress"])
        assert rc == 0, capsys.readouterr().err
        with open(out / "table.csv", newline="") as f:
            scores[level] = {r["model"]: float(r["psnr"]) for r in csv.DictReader(f)}["nc"]
    assert scores["oracle"] == pytest.approx(scores["0.02"], abs=1e-9)  # oracle is the --noise sigma
    assert all(np.isfinite(v) for v in scores.values())


@pytest.mark.parametrize("level", ["loud", "-0.1", "nan", "0.9"])
def test_bad_noise_level_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, level: str) -> None:
    data = write_smooth_images(tmp_path / "d", count=1)
    ckpt = make_checkpoint(tmp_path / "m.pt", "metasrgan")
    out = tmp_path / "e"
    rc = eval_main(["--ckpt", str(ckpt), "--data", f"folder:{data}", "--out", str(out), "--noise-level", level])
    err = capsys.readouterr().err
    assert rc == 2 and "--noise-level" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_conditioned_model_is_not_exported_yet(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from metasr.export.cli import main as export_main

    ckpt = make_checkpoint(tmp_path / "nc.pt", "metasrgan-nc")
    rc = export_main(["--ckpt", str(ckpt), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "metasrgan-nc" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
