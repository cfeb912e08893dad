"""k-space data consistency: the projection (metasr.core.kspace), the runtime, metasr-run and metasr-eval."""

from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from test_run_bad_input import _phantom, _write_png
from test_run_cli import _run

from metasr.core.errors import InputError
from metasr.core.kspace import kspace_downscale, kspace_project, kspace_upscale
from metasr.core.scale import hr_length
from metasr.runtime import Upscaler

SCALES = [Fraction(3, 2), Fraction(2), Fraction(7, 3), Fraction(4)]


def _high_band(shape: tuple[int, int], lr_shape: tuple[int, int], scale: Fraction, seed: int) -> np.ndarray:
    """An HR image that k-space truncation to ``lr_shape`` maps to zero: only frequencies above the LR band."""
    y = np.random.default_rng(seed).normal(size=shape)
    return y - kspace_upscale(kspace_downscale(y, scale, lr_shape), scale)


@pytest.mark.parametrize("scale", SCALES)
def test_the_projection_keeps_the_input_and_the_models_high_band(scale: Fraction) -> None:
    q = scale.denominator
    rng = np.random.default_rng(int(scale * 3))
    lr = rng.random((8 * q, 6 * q))
    hr_shape = (hr_length(8 * q, scale), hr_length(6 * q, scale))
    sr = rng.random(hr_shape)
    out = kspace_project(sr, lr, scale)
    assert out.shape == hr_shape
    np.testing.assert_allclose(kspace_downscale(out, scale, lr.shape), lr, atol=1e-12)  # the input comes back
    np.testing.assert_allclose(kspace_project(out, lr, scale), out, atol=1e-12)  # a projection
    # what the truncation cannot see is the model's, untouched
    high = _high_band(hr_shape, lr.shape, scale, seed=5)
    np.testing.assert_allclose(kspace_project(sr + high, lr, scale) - out, high, atol=1e-12)
    # a zero-filled input is its own consistent output
    filled = kspace_upscale(lr, scale)
    np.testing.assert_allclose(kspace_project(filled, lr, scale), filled, atol=1e-12)


def test_the_projection_on_sides_that_are_not_multiples_of_the_denominator() -> None:
    rng = np.random.default_rng(1)
    scale = Fraction(3, 2)
    lr = rng.random((31, 43))
    sr = kspace_upscale(lr, scale) + 0.05 * rng.normal(size=(46, 64))
    out = kspace_project(sr, lr, scale)
    assert out.shape == sr.shape
    # mirrored to the next multiple and cropped back: consistent but for the mirrored margin
    err = np.abs(kspace_downscale(np.pad(out, ((0, 2), (0, 2)), mode="symmetric"), scale, (32, 44))[:31, :43] - lr)
    assert err.mean() < 0.01 and np.abs(out - sr).mean() < 0.05


@pytest.fixture(scope="module")
def consistent(tiny_export_dir: Path) -> Upscaler:
    return Upscaler(tiny_export_dir, device="cpu", data_consistency=True)


def test_upscaler_outputs_give_their_input_back(consistent: Upscaler, tiny_export_dir: Path) -> None:
    lr = (0.3 + 0.4 * _phantom(24, 36) / max(1, _phantom(24, 36).max())).astype(np.float32)  # no clipping
    out = consistent.upscale(lr, "2")
    np.testing.assert_allclose(kspace_downscale(out.astype(np.float64), Fraction(2), lr.shape), lr, atol=2e-5)
    plain = Upscaler(tiny_export_dir, device="cpu").upscale(lr, "2")
    assert np.abs(kspace_downscale(plain.astype(np.float64), Fraction(2), lr.shape) - lr).max() > 1e-2
    frames = consistent.upscale(np.stack([lr, lr[::-1]]), "2")  # frame by frame
    np.testing.assert_allclose(frames[1], consistent.upscale(lr[::-1].copy(), "2"), atol=1e-6)
    assert frames.min() >= 0 and frames.max() <= 1


def test_upscaler_data_consistency_settings(consistent: Upscaler, tiny_export_dir: Path) -> None:
    assert consistent.describe().endswith(", k-space data consistency")
    assert consistent.pixel_settings()["data-consistency"] == "kspace"
    plain = Upscaler(tiny_export_dir, device="cpu")
    assert "data-consistency" not in plain.pixel_settings() and "consistency" not in plain.describe()
    with pytest.raises(InputError, match="data_consistency must be True or False"):
        Upscaler(tiny_export_dir, device="cpu", data_consistency=1)  # type: ignore[arg-type]


def test_metasr_run_data_consistency_dicom_records_it(
    tmp_path: Path, tiny_export_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import pydicom
    from test_run_bad_input import write_dicom

    src = write_dicom(tmp_path / "slice.dcm", _phantom(30, 30))
    outs = []
    for extra, name in (([], "a.dcm"), (["--data-consistency"], "b.dcm")):
        code, _, err = _run(
            ["-i", str(src), "-s", "2", "--model", str(tiny_export_dir), "-o", str(tmp_path / name), *extra], capfd
        )
        assert code == 0, err
        outs.append(pydicom.dcmread(tmp_path / name))
    assert "k-space data consistency" in err
    assert "data consistency" in outs[1].DerivationDescription and "consistency" not in outs[0].DerivationDescription
    assert not np.array_equal(outs[0].pixel_array, outs[1].pixel_array)
    assert outs[0].SOPInstanceUID != outs[1].SOPInstanceUID  # other pixels: other instances and series
    assert outs[0].SeriesInstanceUID != outs[1].SeriesInstanceUID


def test_metasr_run_data_consistency_and_server_refused(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    src = _write_png(tmp_path / "frame.png", _phantom(30, 30) * 8)
    listing = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = _run(["-i", str(src), "-s", "2", "--server", "localhost:8001", "--data-consistency"], capfd)
    assert code == 2 and not out and len(err.strip().splitlines()) == 1
    assert "--data-consistency and --server exclude each other" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # nothing written


def test_metasr_eval_data_consistency(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from conftest import make_checkpoint, write_smooth_images

    from metasr.training.cli import eval_main

    data = tmp_path / "data"
    write_smooth_images(data, count=2, shape=(48, 40))
    ckpt = make_checkpoint(tmp_path / "m.pt", "metasrgan", features=8, num_blocks=1, wpn_hidden=8)
    out = tmp_path / "eval"
    argv = ["--ckpt", f"net={ckpt}", "--data", f"folder:{data}", "--scales", "2", "--crop-scales", "2"]
    argv += ["--degradation", "kspace", "--data-consistency", "--zero-fill", "--out", str(out), "--no-progress"]
    assert eval_main(argv) == 0, capsys.readouterr().err
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert {r["model"] for r in rows} == {"bicubic", "net +dc", "zero-fill"}
    psnr = {(r["image"], r["model"]): float(r["psnr"]) for r in rows}
    plain = [*argv[: argv.index("--data-consistency")], "--out", str(tmp_path / "raw"), "--no-progress"]
    assert eval_main(plain) == 0
    raw = {
        r["image"]: float(r["psnr"])
        for r in csv.DictReader((tmp_path / "raw" / "per_image.csv").open())
        if r["model"] == "net"
    }
    # an untrained network's output made consistent keeps the LR's band exactly: far better than the raw network
    assert raw and all(psnr[(image, "net +dc")] > raw[image] + 3 for image in raw)


def test_metasr_run_notes_a_zero_filled_input(
    tmp_path: Path, tiny_export_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Data consistency keeps a zero-filled input's empty band empty: metasr-run says so, and only then."""
    import pydicom
    from test_run_bad_input import write_dicom

    src = write_dicom(tmp_path / "zf.dcm", _phantom(30, 30))
    ds = pydicom.dcmread(src)
    ds.AcquisitionMatrix, ds.InPlanePhaseEncodingDirection = [15, 0, 0, 15], "COL"  # 2 stored pixels per sample
    ds.save_as(src)
    plain = write_dicom(tmp_path / "plain.dcm", _phantom(30, 30))
    code, _, err = _run(["-i", str(src), "-s", "2", "--model", str(tiny_export_dir), "--data-consistency"], capfd)
    assert code == 0, err
    assert "zf.dcm is stored at 2 pixels per acquired sample (AcquisitionMatrix 15 x 15" in err
    assert "leave --data-consistency off" in err
    assert len([line for line in err.splitlines() if "acquired sample" in line]) == 1
    model = ["--model", str(tiny_export_dir)]
    code, _, err = _run(["-i", str(src), "-s", "2", *model, "-o", str(tmp_path / "n.dcm")], capfd)
    assert code == 0 and "acquired sample" not in err  # without --data-consistency nothing to say
    code, _, err = _run(["-i", str(plain), "-s", "2", "--model", str(tiny_export_dir), "--data-consistency"], capfd)
    assert code == 0 and "acquired sample" not in err  # silent header, too small for its spectrum: as stored


def test_metasr_run_notes_inputs_data_consistency_is_not_for(
    tmp_path: Path, tiny_export_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A CT or a photograph is not a k-space truncation: metasr-run says so once; it still runs as asked."""
    from _scanners_data import ct_phantom, write_ct

    ct = write_ct(tmp_path / "ct.dcm", ct_phantom(32))
    png = _write_png(tmp_path / "frame.png", _phantom(30, 30) * 8)
    model = ["--model", str(tiny_export_dir), "--data-consistency"]
    code, _, err = _run(["-i", str(ct), "-s", "2", *model], capfd)
    assert code == 0, err
    assert "ct.dcm is a CT image; --data-consistency assumes MR acquired at a lower matrix" in err
    code, _, err = _run(["-i", str(png), "-s", "2", *model], capfd)
    assert code == 0, err
    assert "frame.png is a PNG image; --data-consistency assumes MR" in err and err.count("assumes MR") == 1
    plain = ["-i", str(png), "-s", "2", "--model", str(tiny_export_dir), "-o", str(tmp_path / "b.png")]
    code, _, err = _run(plain, capfd)
    assert code == 0 and "assumes MR" not in err
