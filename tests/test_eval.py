"""metasr-eval: the protocol, metrics against scikit-image, fixed-scale baselines, outputs, bad input."""

from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import make_checkpoint, write_smooth_images

from metasr.training.cli import eval_main
from metasr.training.evaluate import Predictor, bicubic_predictor, evaluate, load_predictor
from metasr.training.pairs import make_pair


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three smooth 36x44 PNGs in a black frame (the maximal-information crop removes it)."""
    return write_smooth_images(tmp_path_factory.mktemp("evaldata"), count=3, shape=(36, 44), seed=1, border=6)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    small = {"metasrgan": {"wpn_hidden": 8}, "srgan": {}}
    return {
        arch: make_checkpoint(root / f"{arch}.pt", arch, features=8, num_blocks=1, **args)
        for arch, args in small.items()
    }


def test_metrics_match_scikit_image_on_the_protocol_pairs() -> None:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    rng = np.random.default_rng(0)
    images = [cv2.GaussianBlur(rng.random((40, 37)).astype(np.float32), (0, 0), 1.0) for _ in range(2)]
    scales = [Fraction(23, 10), Fraction(2)]
    report = evaluate([bicubic_predictor()], images, scales)
    for s in scales:
        expect = []
        for img in images:
            lr, hr = make_pair(img, s)
            # bicubic at exactly r (the baseline's geometry), cropped to the HR size
            padded = torch.nn.functional.pad(lr[None, None], (0, 1, 0, 1), mode="replicate")
            sr = torch.nn.functional.interpolate(
                padded, scale_factor=float(s), mode="bicubic", align_corners=False, recompute_scale_factor=False
            )
            sr = sr[0, 0, : hr.shape[0], : hr.shape[1]].clamp(0, 1).double().numpy()
            hr = hr.double().numpy()
            expect.append((peak_signal_noise_ratio(hr, sr, data_range=1), structural_similarity(hr, sr, data_range=1)))
        row = report.get("bicubic", s)
        assert row.images == 2
        assert row.psnr == pytest.approx(np.mean([e[0] for e in expect]))
        assert row.ssim == pytest.approx(np.mean([e[1] for e in expect]))


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # PSNR of an exact match is inf
def test_a_perfect_model_beats_bicubic() -> None:
    rng = np.random.default_rng(2)
    images = [rng.random((30, 30)).astype(np.float32)]
    hr_of = {}

    def oracle(lr: np.ndarray, s: Fraction) -> np.ndarray:
        return hr_of[s]

    for s in (Fraction(2), Fraction(3)):
        hr_of[s] = make_pair(images[0], s)[1].numpy()
    report = evaluate(
        [bicubic_predictor(), Predictor("oracle", oracle, (2.0, 3.0))], images, [Fraction(2), Fraction(3)]
    )
    assert report.get("oracle", Fraction(2)).psnr == float("inf")
    assert report.get("oracle", Fraction(3)).ssim == pytest.approx(1.0)
    assert report.get("bicubic", Fraction(2)).ssim < 1.0


def test_eval_cli_end_to_end_with_fixed_scale_baseline(
    eval_data: Path, checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "eval"
    rc = eval_main(
        [
            "--ckpt",
            str(checkpoints["metasrgan"]),
            "--ckpt",
            str(checkpoints["srgan"]),
            "--data",
            f"folder:{eval_data}",
            "--scales",
            "1.5:3.0:0.5",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    figures = [f"{stem}.{fmt}" for stem in ("crops", "metrics") for fmt in ("pdf", "png", "svg")]
    assert sorted(p.name for p in out.iterdir()) == sorted([*figures, "per_image.csv", "table.csv", "table.md"])
    rows = list(csv.DictReader(open(out / "table.csv")))
    by_model: dict[str, list[str]] = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r["scale"])
        assert r["images"] == "3" and 0 < float(r["psnr"]) and -1 <= float(r["ssim"]) <= 1
        assert float(r["psnr_std"]) > 0 and float(r["psnr_ci95"]) > float(r["psnr_std"])  # t(2 dof) * s / sqrt(3)
    assert by_model == {"bicubic": ["1.5", "2", "2.5", "3"], "metasrgan": ["1.5", "2", "2.5", "3"], "srgan": ["2"]}
    # the per-image CSV holds every (image, scale, model) and its means are the table's
    per_image = list(csv.DictReader(open(out / "per_image.csv")))
    assert len(per_image) == 3 * (4 + 4 + 1)
    for r in rows:
        mine = [float(p["psnr"]) for p in per_image if p["model"] == r["model"] and p["scale"] == r["scale"]]
        assert len(mine) == 3 and np.mean(mine) == pytest.approx(float(r["psnr"]), abs=1e-3)
    assert {p["image"] for p in per_image} == {"img0.png", "img1.png", "img2.png"}
    table = (out / "table.md").read_text()
    assert table.count("\n") == 2 + 4 + 2 and "metasrgan dPSNR" in table and " ± " in table
    assert cv2.imread(str(out / "metrics.png")) is not None and cv2.imread(str(out / "crops.png")) is not None
    assert (out / "metrics.pdf").read_bytes().startswith(b"%PDF") and b"<svg" in (out / "crops.svg").read_bytes()


def test_exported_model_folder_matches_its_checkpoint(tiny_checkpoint: Path, tiny_export_dir: Path) -> None:
    rng = np.random.default_rng(4)
    images = [cv2.GaussianBlur(rng.random((40, 44)).astype(np.float32), (0, 0), 1.0)]
    scales = [Fraction(2), Fraction(27, 10)]
    torch_model = load_predictor(tiny_checkpoint)
    onnx_model = load_predictor(tiny_export_dir)
    report = evaluate([torch_model, onnx_model], images, scales)
    for s in scales:
        a, b = report.rows[scales.index(s) * 2], report.rows[scales.index(s) * 2 + 1]
        assert a.psnr == pytest.approx(b.psnr, abs=0.01) and a.ssim == pytest.approx(b.ssim, abs=1e-3)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ckpt", "/nonexistent.pt"], "does not exist"),
        (["--data", "folder:/nonexistent"], "does not exist"),
        (["--scales", "2:6:1"], "outside"),
        (["--scales", "0.5"], "greater than 1"),
    ],
)
def test_eval_bad_input_exits_2_with_one_line(
    args: list[str],
    message: str,
    eval_data: Path,
    checkpoints: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    argv = ["--out", str(tmp_path / "eval"), "--no-progress"]
    if "--ckpt" not in args:
        argv += ["--ckpt", str(checkpoints["metasrgan"])]
    if "--data" not in args:
        argv += ["--data", f"folder:{eval_data}"]
    rc = eval_main(argv + args)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "eval").exists()


def test_report_files_are_deterministic_and_carry_the_spread() -> None:
    from metasr.training.figures import report_files

    rng = np.random.default_rng(5)
    images = [cv2.GaussianBlur(rng.random((40, 44)).astype(np.float32), (0, 0), 1.0) for _ in range(4)]
    scales = [Fraction(2), Fraction(3)]

    def run() -> dict[str, bytes]:
        report = evaluate([bicubic_predictor()], images, scales, sample_scales=[Fraction(2)])
        return report_files(report), report

    (first, report), (second, _) = run(), run()
    assert first == second  # same report, same bytes: PNG, PDF and SVG alike
    scores = [s.psnr for s in report.scores if s.scale == 2]
    row = report.get("bicubic", Fraction(2))
    assert row.psnr_std == pytest.approx(np.std(scores, ddof=1))
    assert row.psnr_ci95 == pytest.approx(3.182446 * row.psnr_std / 2, rel=1e-5)  # t(0.975, 3 dof) s / sqrt(4)
    # the figure: markers exactly at the evaluated scales, a spread band per panel
    import matplotlib.pyplot as plt

    from metasr.training.figures import metrics_figure

    fig = metrics_figure(report)
    for ax in fig.axes:
        (line,) = ax.get_lines()
        assert line.get_marker() == "o" and list(line.get_xdata()) == [2.0, 3.0]
        assert len(ax.collections) == 1  # the +-1 s.d. band
    plt.close(fig)


def test_degraded_evaluation_is_seeded_and_noise_costs_bicubic() -> None:
    from metasr.training.degradations import Degradation, parse_degradation

    rng = np.random.default_rng(6)
    images = [cv2.GaussianBlur(rng.random((64, 60)).astype(np.float32), (0, 0), 2.0) for _ in range(3)]
    scales = [Fraction(2), Fraction(3)]
    clean = evaluate([bicubic_predictor()], images, scales, degradation=parse_degradation("gauss"))
    noisy = Degradation().with_noise("rician", 0.03)
    first = evaluate([bicubic_predictor()], images, scales, degradation=noisy, seed=3)
    again = evaluate([bicubic_predictor()], images, scales, degradation=noisy, seed=3)
    other = evaluate([bicubic_predictor()], images, scales, degradation=noisy, seed=4)
    assert [s.psnr for s in first.scores] == [s.psnr for s in again.scores]  # same noise for every run/model
    assert [s.psnr for s in first.scores] != [s.psnr for s in other.scores]
    assert first.degradation == "bicubic+rician:0.03" and clean.degradation == "gauss"
    for s in scales:
        assert first.get("bicubic", s).psnr < evaluate([bicubic_predictor()], images, [s]).get("bicubic", s).psnr


def test_intervals_are_over_independent_files() -> None:
    rng = np.random.default_rng(7)
    images = [cv2.GaussianBlur(rng.random((40, 40)).astype(np.float32), (0, 0), 1.0) for _ in range(5)]
    names = ["vol.nii.gz:axial1", "vol.nii.gz:axial2", "vol.nii.gz:axial3", "b.png", "c.dcm:frame1"]
    report = evaluate([bicubic_predictor()], images, [Fraction(2)], names=names)
    row = report.get("bicubic", Fraction(2))
    assert row.images == 5 and row.groups == 3
    assert {s.group for s in report.scores} == {"vol.nii.gz", "b.png", "c.dcm"}
    means = []
    for g in ("vol.nii.gz", "b.png", "c.dcm"):
        means.append(np.mean([s.psnr for s in report.scores if s.group == g]))
    from scipy.stats import t

    assert row.psnr_ci95 == pytest.approx(t.ppf(0.975, 2) * np.std(means, ddof=1) / np.sqrt(3))


def test_eval_cli_degradation_crop_and_window(
    eval_data: Path, checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "eval"
    argv = ["--ckpt", str(checkpoints["metasrgan"]), "--data", f"folder:{eval_data}", "--scales", "2,3"]
    argv += ["--degradation", "kspace:hamming", "--noise", "gaussian:0.01", "--crop-scales", "2"]
    argv += ["--crop", "img1.png:4,6,20", "--window", "0.5,0.6", "--out", str(out), "--no-progress"]
    assert eval_main(argv) == 0, capsys.readouterr().err
    table = (out / "table.md").read_text()
    assert "LR made by: kspace:hamming+gaussian:0.01" in table
    assert b"img1.png" in (out / "crops.svg").read_bytes()


def test_eval_cli_zero_fill_baseline(
    eval_data: Path, checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """--zero-fill scores the scanner's interpolation beside the models; under k-space truncation it beats bicubic."""
    out = tmp_path / "eval"
    argv = ["--ckpt", str(checkpoints["metasrgan"]), "--data", f"folder:{eval_data}", "--scales", "2,3"]
    argv += ["--degradation", "kspace", "--zero-fill", "--crop-scales", "2", "--out", str(out), "--no-progress"]
    assert eval_main(argv) == 0, capsys.readouterr().err
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert {r["model"] for r in rows} == {"bicubic", "metasrgan", "zero-fill"}
    psnr = {(r["image"], r["scale"], r["model"]): float(r["psnr"]) for r in rows}
    for (image, scale, model), value in psnr.items():
        if model == "zero-fill":
            assert value >= psnr[(image, scale, "bicubic")] - 0.05
    assert "zero-fill PSNR" in (out / "table.md").read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--noise", "rician"], "noise 'rician' is not understood"),
        (["--degradation", "box"], "degradation 'box' is not understood"),
        (["--crop", "img1.png:4,4"], "is not IMAGE:Y,X,SIZE"),
        (["--crop", "nothere.png:4,4,16"], "is not among the evaluated images"),
        (["--window", "0.5,nan"], "is not C,W"),
    ],
)
def test_eval_degradation_options_refused_in_one_line(
    args: list[str], message: str, eval_data: Path, checkpoints: dict[str, Path], tmp_path: Path, capsys
) -> None:
    argv = ["--ckpt", str(checkpoints["metasrgan"]), "--data", f"folder:{eval_data}", "--scales", "2"]
    rc = eval_main([*argv, "--out", str(tmp_path / "e"), "--no-progress", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "e").exists()


def test_models_can_be_labelled(checkpoints: dict[str, Path]) -> None:
    predictor = load_predictor(f"previous={checkpoints['metasrgan']}")
    assert predictor.name == "previous" and predictor.fixed_scale is None
    assert load_predictor(checkpoints["metasrgan"]).name == "metasrgan"
