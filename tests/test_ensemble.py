"""The x8 self-ensemble: exact on the pixel grid, in the runtime, metasr-run and metasr-eval."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from test_run_bad_input import _phantom, _write_png
from test_run_cli import _run

from metasr.core.errors import InputError, ScaleError
from metasr.core.scale import hr_length, parse_scale
from metasr.runtime import Upscaler
from metasr.runtime.ensemble import ENSEMBLE_SIZE, check_ensemble, ensemble_extension, self_ensemble


def _area_matrix(n: int, scale: Fraction) -> np.ndarray:
    """Exact area sampling of one axis: HR pixel i is the mean of LR over [i q/p, (i + 1) q/p)."""
    p, q = scale.numerator, scale.denominator
    big = hr_length(n, scale)
    a = np.zeros((big, n))
    for i in range(big):
        lo, hi = Fraction(i * q, p), Fraction((i + 1) * q, p)
        for j in range(int(lo), min(n, int(np.ceil(hi)))):
            overlap = min(hi, j + 1) - max(lo, j)
            a[i, j] = float(overlap * p / q)
    return a


def _area_run(scale: Fraction):
    def run(x: np.ndarray) -> np.ndarray:
        h, w = x.shape[-2:]
        return (_area_matrix(h, scale) @ x @ _area_matrix(w, scale).T).astype(np.float32)

    return run


def _naive_flip_run(run, x: np.ndarray) -> np.ndarray:
    """A flipped run turned back without the exact extension: what a careless ensemble averages in."""
    return run(x[::-1].copy())[::-1]


@pytest.mark.parametrize("scale", ["1.8", "2.3", "3.7", "7/3", "2", "1.5"])
@pytest.mark.parametrize("shape", [(37, 41), (30, 30), (23, 64)])
def test_area_sampling_is_its_own_ensemble(scale: str, shape: tuple[int, int]) -> None:
    """Area sampling gives each HR pixel the mean of the LR area it covers, in any orientation:
    the exact ensemble of it is the single run, whatever the size; a misplaced grid is not."""
    s = parse_scale(scale)
    run = _area_run(s)
    x = np.random.default_rng(1).random(shape)
    single = run(x)
    ens = self_ensemble(run, x, s)
    assert ens.shape == single.shape == (hr_length(shape[0], s), hr_length(shape[1], s))
    assert ens.dtype == np.float32
    np.testing.assert_allclose(ens, single, atol=2e-6)
    if shape[0] % s.denominator:  # the test has teeth: without the extension the flipped grid is shifted
        assert np.abs(_naive_flip_run(run, x)[: single.shape[0]] - single).max() > 0.05


def test_extension_is_to_multiples_of_the_denominator() -> None:
    assert ensemble_extension(37, 41, Fraction(9, 5)) == (3, 4)
    assert ensemble_extension(40, 40, Fraction(9, 5)) == (0, 0)
    assert ensemble_extension(37, 41, Fraction(2)) == (0, 0)


def test_the_ensemble_is_the_mean_of_the_eight_orientations() -> None:
    """A run that only counts how it was called: 8 calls, 8 distinct orientations of the input."""
    seen: list[np.ndarray] = []
    x = np.arange(12 * 12, dtype=np.float64).reshape(12, 12)

    def run(y: np.ndarray) -> np.ndarray:
        seen.append(y.copy())
        return np.zeros((24, 24), np.float32)

    self_ensemble(run, x, Fraction(2))
    assert len(seen) == ENSEMBLE_SIZE
    assert len({a.tobytes() for a in seen}) == ENSEMBLE_SIZE
    expected = {np.ascontiguousarray(np.rot90(m, k)).tobytes() for m in (x, x.T) for k in range(4)}
    assert {a.tobytes() for a in seen} == expected


@pytest.mark.parametrize(
    "h, w, scale, advice",
    [
        (64, 64, "2.333", "(e.g. 7/3)"),
        (484, 484, "2.333", "(e.g. 7/3)"),
        (3, 3, "3.7", "(e.g. 4)"),
        (7, 7, "1.2", "leave out the ensemble for an image this small"),
    ],
)
def test_a_large_denominator_is_refused_with_advice(h: int, w: int, scale: str, advice: str) -> None:
    s = parse_scale(scale)
    with pytest.raises(ScaleError, match="to stay exact") as e:
        check_ensemble(h, w, s)
    assert advice in str(e.value) and "\n" not in str(e.value)
    if "e.g." in advice:  # the advice works: the scale it names is accepted for this image
        check_ensemble(h, w, parse_scale(advice.split()[1].rstrip(")")))


def test_small_denominators_are_accepted() -> None:
    for h, w, scale in [(64, 64, "7/3"), (484, 484, "2.3"), (10, 10, "1.8"), (2, 2, "2")]:
        check_ensemble(h, w, parse_scale(scale))


@pytest.fixture(scope="module")
def ens(tiny_export_dir: Path) -> Upscaler:
    return Upscaler(tiny_export_dir, device="cpu", ensemble=True)


@pytest.mark.parametrize("scale", ["1.8", "2.5", "3"])
def test_upscaler_ensemble_commutes_with_every_orientation(ens: Upscaler, scale: str) -> None:
    """Where the denominator divides both sides, turning the input turns the output (to rounding)."""
    x = np.random.default_rng(2).random((30, 30)).astype(np.float32)
    out = ens.upscale(x, scale)
    for t in range(1, 8):
        y = x[::-1] if t & 1 else x
        y = y[:, ::-1] if t & 2 else y
        y = y.T if t & 4 else y
        back = ens.upscale(np.ascontiguousarray(y), scale)
        back = back.T if t & 4 else back
        back = back[:, ::-1] if t & 2 else back
        back = back[::-1] if t & 1 else back
        np.testing.assert_allclose(back, out, atol=1e-6)


def test_upscaler_ensemble_shape_batch_and_single(ens: Upscaler, tiny_export_dir: Path) -> None:
    x = np.random.default_rng(3).random((2, 23, 31)).astype(np.float32)
    single = Upscaler(tiny_export_dir, device="cpu")
    batch = ens.upscale(x, "2.3")
    assert batch.shape == single.upscale(x, "2.3").shape == (2, hr_length(23, Fraction(23, 10)), 71)
    np.testing.assert_allclose(batch[1], ens.upscale(x[1], "2.3"), atol=1e-6)
    assert np.isfinite(batch).all() and batch.min() >= 0 and batch.max() <= 1
    # it averages 8 different runs of an untrained network: not one run
    assert np.abs(batch - single.upscale(x, "2.3")).mean() > 1e-3


def test_upscaler_ensemble_settings(ens: Upscaler, tiny_export_dir: Path) -> None:
    assert ens.describe().endswith(", self-ensemble x8")
    assert ens.pixel_settings()["ensemble"] == "x8"
    plain = Upscaler(tiny_export_dir, device="cpu")
    assert "ensemble" not in plain.pixel_settings() and "ensemble" not in plain.describe()
    with pytest.raises(InputError, match="ensemble must be True or False"):
        Upscaler(tiny_export_dir, device="cpu", ensemble="yes")  # type: ignore[arg-type]
    with pytest.raises(ScaleError, match="small denominator"):
        ens.upscale(np.zeros((40, 40), np.float32), "2.333")


def test_upscaler_ensemble_keeps_a_constant_constant(ens: Upscaler) -> None:
    out = ens.upscale(np.full((40, 40), 0.4, np.float32), "1.8")
    centre = out[16:-16, 16:-16]
    assert float(np.abs(centre - np.median(centre)).max()) <= 2e-4


def test_metasr_run_ensemble(tmp_path: Path, tiny_export_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    import cv2

    src = _write_png(tmp_path / "frame.png", _phantom(30, 30) * 8)
    code, _, err = _run(["-i", str(src), "-s", "1.8", "--model", str(tiny_export_dir), "--ensemble"], capfd)
    assert code == 0, err
    assert "self-ensemble x8" in err
    with_ens = cv2.imread(str(tmp_path / "frame_sr1.8.png"), cv2.IMREAD_UNCHANGED)
    code, _, err = _run(
        ["-i", str(src), "-s", "1.8", "--model", str(tiny_export_dir), "-o", str(tmp_path / "p.png")], capfd
    )
    assert code == 0, err
    plain = cv2.imread(str(tmp_path / "p.png"), cv2.IMREAD_UNCHANGED)
    assert with_ens.shape == plain.shape and not np.array_equal(with_ens, plain)


def test_metasr_run_ensemble_refusals(tmp_path: Path, tiny_export_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    src = _write_png(tmp_path / "frame.png", _phantom(30, 30) * 8)
    listing = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = _run(["-i", str(src), "-s", "2.333", "--model", str(tiny_export_dir), "--ensemble"], capfd)
    assert code == 2 and not out
    assert len(err.strip().splitlines()) == 1 and "small denominator" in err and "Traceback" not in err
    code, out, err = _run(["-i", str(src), "-s", "2", "--server", "localhost:8001", "--ensemble"], capfd)
    assert code == 2 and "--ensemble and --server exclude each other" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # nothing written


def test_metasr_run_ensemble_dicom_records_it(
    tmp_path: Path, tiny_export_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import pydicom
    from test_run_bad_input import write_dicom

    src = write_dicom(tmp_path / "slice.dcm", _phantom(30, 30))
    outs = []
    for extra, name in (([], "a.dcm"), (["--ensemble"], "b.dcm")):
        code, _, err = _run(
            ["-i", str(src), "-s", "2", "--model", str(tiny_export_dir), "-o", str(tmp_path / name), *extra], capfd
        )
        assert code == 0, err
        outs.append(pydicom.dcmread(tmp_path / name))
    assert "self-ensemble x8" in outs[1].DerivationDescription and "ensemble" not in outs[0].DerivationDescription
    # other pixels, so other instances: never one UID for two different images
    assert outs[0].SOPInstanceUID != outs[1].SOPInstanceUID
    assert outs[0].SeriesInstanceUID != outs[1].SeriesInstanceUID


def test_metasr_eval_ensemble(tmp_path: Path, tiny_checkpoint: Path, tiny_export_dir: Path) -> None:
    import csv

    from conftest import write_smooth_images

    from metasr.training.cli import eval_main

    data = tmp_path / "data"
    write_smooth_images(data, 2, shape=(40, 40))
    out = tmp_path / "ev"
    args = ["--ckpt", str(tiny_checkpoint), "--ckpt", f"onnx={tiny_export_dir}", "--data", f"folder:{data}"]
    code = eval_main(
        [*args, "--out", str(out), "--scales", "2,1.8", "--crop-scales", "2", "--no-progress", "--ensemble"]
    )
    assert code == 0
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    models = {r["model"] for r in rows}
    assert models == {"bicubic", "metasrgan x8", "onnx"}
    # the torch checkpoint and its export give the same ensemble (the export's parity, 8 times over)
    by = {(r["image"], r["scale"], r["model"]): float(r["psnr"]) for r in rows}
    for image, scale, model in by:
        if model == "onnx":
            assert abs(by[(image, scale, "metasrgan x8")] - by[(image, scale, model)]) < 0.01


def test_metasr_run_folder_never_keeps_single_runs_for_an_ensemble(
    tmp_path: Path, tiny_export_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The resume journal records the ensemble: a rerun with it does not pass off single runs as its own."""
    import cv2

    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        _write_png(src / f"f{i}.png", _phantom(30, 30) * (8 + i))
    out = tmp_path / "out"
    base = ["-i", str(src), "-o", f"{out}/", "-s", "2", "--model", str(tiny_export_dir)]
    code, _, err = _run(base, capfd)
    assert code == 0, err
    single = cv2.imread(str(out / "f0_sr2.png"), cv2.IMREAD_UNCHANGED)
    code, _, err = _run([*base, "--ensemble"], capfd)
    assert code == 2 and err.count("does not provably come from this input with these settings") == 2
    assert np.array_equal(cv2.imread(str(out / "f0_sr2.png"), cv2.IMREAD_UNCHANGED), single)  # untouched
    code, _, err = _run([*base, "--ensemble", "--overwrite"], capfd)
    assert code == 0, err
    assert not np.array_equal(cv2.imread(str(out / "f0_sr2.png"), cv2.IMREAD_UNCHANGED), single)
    code, _, err = _run([*base, "--ensemble"], capfd)  # and now the journal proves the ensemble's outputs
    assert code == 0, err
