"""``metasr-eval --compare``: the paper's table from checkpoints and exports, through the runtime."""

from __future__ import annotations

import csv
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import make_checkpoint, write_smooth_images

from metasr.export import export_model
from metasr.export.compare import count_parameters, eval_main, split_label, time_model
from metasr.runtime import Upscaler
from metasr.training.checkpoint import load_checkpoint
from metasr.training.models import build_model


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cmpdata")
    for sub in ("a", "b", "c"):  # three files: three independent groups
        write_smooth_images(root, count=1, shape=(40, 44), seed=ord(sub))
        (root / "img0.png").rename(root / f"{sub}.png")
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cmpmodels")
    meta = make_checkpoint(root / "meta" / "best.pt", "metasrgan", features=8, num_blocks=1, wpn_hidden=8)
    (root / "meta" / "config.json").write_text(json.dumps({"arch": "metasrgan", "steps": 7, "batch_size": 2}))
    srgan = make_checkpoint(root / "srgan" / "best.pt", "srgan", features=8, num_blocks=1)
    edsr = make_checkpoint(root / "edsr.pt", "edsr-baseline", features=8, num_blocks=1)
    exported = export_model(edsr, root / "edsr-export", verify=False).out_dir
    return {"meta": meta, "srgan": srgan, "edsr": edsr, "edsr_export": exported}


def _table(out: Path) -> list[dict[str, str]]:
    with open(out / "compare.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_compare_scores_checkpoints_and_exports_through_the_runtime(data, models, tmp_path, capsys) -> None:
    out = tmp_path / "cmp"
    argv = ["--compare", str(models["meta"]), f"srgan={models['srgan']}", f"edsr={models['edsr_export']}"]
    rc = eval_main([*argv, "--data", f"folder:{data}", "--out", str(out), "--no-progress", "--crop-scales", "2"])
    assert rc == 0, capsys.readouterr().err
    rows = _table(out)
    assert [(r["scale"], r["model"]) for r in rows] == [("2", m) for m in ("bicubic", "meta", "srgan", "edsr")]
    by = {r["model"]: r for r in rows}
    assert all(r["images"] == "3" and r["groups"] == "3" for r in rows)
    # parameters: counted from the checkpoint, and from the export's own best.pt when it has one (none here)
    meta_model = load_checkpoint(models["meta"], "cpu")
    assert int(by["meta"]["parameters"]) == sum(p.numel() for p in meta_model.parameters())
    assert by["edsr"]["parameters"] == "" and by["bicubic"]["parameters"] == ""
    assert float(by["meta"]["ms"]) > 0 and float(by["srgan"]["ms"]) > 0 and by["bicubic"]["ms"] == ""
    assert all(r["size"] == "256" for r in rows if r["model"] != "bicubic")
    # the scores are the runtime's: the same numbers as the plain report of the same run
    with open(out / "table.csv", newline="") as f:
        plain = {r["model"]: r for r in csv.DictReader(f)}
    for name in ("bicubic", "meta", "srgan", "edsr"):
        assert float(by[name]["psnr"]) == pytest.approx(float(plain[name]["psnr"]), abs=1e-4)
        assert float(by[name]["psnr_ci95"]) > 0  # three groups: a real interval
    # the gains are paired: per image against bicubic, averaged per file, then over the files
    with open(out / "per_image.csv", newline="") as f:
        scores = list(csv.DictReader(f))
    bic = {r["image"]: float(r["psnr"]) for r in scores if r["model"] == "bicubic"}
    for name in ("meta", "srgan"):
        per_file = [float(r["psnr"]) - bic[r["image"]] for r in scores if r["model"] == name]
        assert float(by[name]["dpsnr"]) == pytest.approx(np.mean(per_file), abs=2e-4)  # one image per file here
        spread = 4.302653 * np.std(per_file, ddof=1) / np.sqrt(3)  # Student's t, 2 degrees of freedom
        assert float(by[name]["dpsnr_ci95"]) == pytest.approx(spread, rel=1e-3, abs=2e-4)
    assert by["bicubic"]["dpsnr"] == ""
    md = (out / "compare.md").read_text()
    assert "| 2 | srgan |" in md and "steps 7" in md and "(exported for this run)" in md
    for fmt, magic in (("png", b"\x89PNG"), ("pdf", b"%PDF"), ("svg", b"<?xml")):
        assert (out / f"compare.{fmt}").read_bytes().startswith(magic)


def test_compare_through_the_runtime_equals_the_export_it_makes(data, models, tmp_path) -> None:
    """The score of a checkpoint is the score of its export, run by the Upscaler users run."""
    out = tmp_path / "one"
    assert eval_main(["--compare", f"m={models['meta']}", "--data", f"folder:{data}", "--out", str(out)]) == 0
    exported = export_model(models["meta"], tmp_path / "exp", verify=False).out_dir
    out2 = tmp_path / "two"
    assert eval_main(["--compare", f"m={exported}", "--data", f"folder:{data}", "--out", str(out2)]) == 0
    assert _table(out)[1]["psnr"] == _table(out2)[1]["psnr"]


def test_compare_with_the_self_ensemble(data, models, tmp_path) -> None:
    """--ensemble scores every network's self-ensemble and names an unlabelled one so."""
    one, ens = tmp_path / "one", tmp_path / "ens"
    argv = ["--compare", str(models["meta"]), f"srgan={models['srgan']}", "--data", f"folder:{data}"]
    assert eval_main([*argv, "--out", str(one), "--crop-scales", "2"]) == 0
    assert eval_main([*argv, "--out", str(ens), "--crop-scales", "2", "--ensemble"]) == 0
    a, b = ({r["model"]: r for r in _table(out)} for out in (one, ens))
    assert set(b) == {"bicubic", "meta x8", "srgan"}
    assert a["bicubic"]["psnr"] == b["bicubic"]["psnr"]  # the same LR
    assert a["meta"]["psnr"] != b["meta x8"]["psnr"] and a["srgan"]["psnr"] != b["srgan"]["psnr"]


def test_compare_scales_span_every_model(data, models, tmp_path) -> None:
    out = tmp_path / "cmp"
    argv = ["--compare", str(models["meta"]), str(models["srgan"]), "--scales", "2,3"]
    assert eval_main([*argv, "--data", f"folder:{data}", "--out", str(out), "--crop-scales", "2"]) == 0
    got = {(r["scale"], r["model"]) for r in _table(out)}
    assert ("3", "meta") in got and ("3", "srgan") not in got and ("2", "srgan") in got


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--compare"], "--compare needs the models"),
        (["--compare", "missing.pt"], "does not exist"),
        (["--compare", "{empty}"], "without manifest.json"),
        (["{meta}"], "unexpected arguments"),
        ([], "--ckpt is required"),
    ],
)
def test_compare_bad_input_is_one_line_and_writes_nothing(data, models, tmp_path, capsys, args, message) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [a.format(empty=empty, meta=models["meta"]) for a in args]
    out = tmp_path / "out"
    rc = eval_main([*args, "--data", f"folder:{data}", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_compare_refuses_to_overwrite_an_earlier_comparison(data, models, tmp_path, capsys) -> None:
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "compare.md").write_text("earlier\n")
    rc = eval_main(["--compare", str(models["meta"]), "--data", f"folder:{data}", "--out", str(out)])
    assert rc == 2 and "already holds an evaluation" in capsys.readouterr().err
    assert (out / "compare.md").read_text() == "earlier\n"


def test_plain_eval_still_works_through_the_installed_command(data, models, tmp_path, capsys) -> None:
    out = tmp_path / "plain"
    assert eval_main(["--ckpt", str(models["meta"]), "--data", f"folder:{data}", "--out", str(out)]) == 0
    assert (out / "table.md").is_file() and not (out / "compare.md").exists()


def test_split_label_and_counts(models, tmp_path) -> None:
    assert split_label("a=b/c.pt") == ("a", Path("b/c.pt"))
    weird = tmp_path / "x=y.pt"
    weird.write_bytes(b"")
    assert split_label(str(weird)) == (None, weird)  # a path that exists is never split
    assert count_parameters(models["edsr"]) == sum(
        p.numel() for p in build_model("edsr-baseline", features=8, num_blocks=1).parameters()
    )
    assert count_parameters(tmp_path) is None


def test_time_model_is_a_median_of_real_runs(models) -> None:
    up = Upscaler(models["edsr_export"], device="cpu")
    ms = time_model(up, Fraction(2), size=32, runs=3)
    assert 0 < ms < 60_000 and np.isfinite(ms)


def test_paired_gain_averages_per_file_first() -> None:
    from metasr.training.compare import paired_gain
    from metasr.training.evaluate import EvalReport, ImageScore

    two = Fraction(2)
    gains = {"a.nii:1": 1.0, "a.nii:2": 5.0, "b.dcm": 4.0, "c.dcm": 0.0}  # file a: 3 on average
    scores = []
    for image, gain in gains.items():
        group = image.split(":")[0]
        scores.append(ImageScore(image, two, "bicubic", 20.0, 0.5, group))
        scores.append(ImageScore(image, two, "m", 20.0 + gain, 0.5 + gain / 100, group))
    report = EvalReport(models=["bicubic", "m"], scales=[two], images=4, scores=scores)
    g = paired_gain(report, "m", two)
    # the files' gains are 3, 4, 0: mean 7/3 (the images' mean would be 2.5)
    assert g.psnr == pytest.approx(7 / 3) and g.ssim == pytest.approx(7 / 300)
    assert g.psnr_ci95 == pytest.approx(4.302653 * np.std([3.0, 4.0, 0.0], ddof=1) / np.sqrt(3), rel=1e-5)
    assert paired_gain(report, "bicubic", two) is None and paired_gain(report, "m", Fraction(3)) is None


def test_compare_scores_the_zero_fill_baseline_as_an_interpolator(data, models, tmp_path, capsys) -> None:
    out = tmp_path / "cmp"
    argv = ["--compare", str(models["meta"]), "--zero-fill", "--degradation", "kspace", "--data", f"folder:{data}"]
    assert eval_main([*argv, "--out", str(out), "--no-progress", "--crop-scales", "2"]) == 0, capsys.readouterr().err
    by = {r["model"]: r for r in _table(out)}
    assert list(by) == ["bicubic", "meta", "zero-fill"]
    assert by["zero-fill"]["ms"] == "" and by["zero-fill"]["parameters"] == ""  # not timed, nothing to count
    assert float(by["zero-fill"]["dpsnr"]) > 0  # k-space LR: the ideal interpolator beats bicubic
    rows = (out / "compare.md").read_text().splitlines()
    assert any(r.startswith("| 2 | zero-fill |") and r.endswith("| 0 |  |") for r in rows)


def test_compare_runs_data_consistency_in_the_runtime_and_times_it(data, models, tmp_path, capsys) -> None:
    out = tmp_path / "cmp"
    argv = ["--compare", str(models["meta"]), "--data-consistency", "--degradation", "kspace"]
    argv += ["--data", f"folder:{data}", "--out", str(out), "--no-progress", "--crop-scales", "2"]
    assert eval_main(argv) == 0, capsys.readouterr().err
    by = {r["model"]: r for r in _table(out)}
    assert list(by) == ["bicubic", "meta +dc"]  # wrapped once, by the runtime, not again by the evaluation
    assert by["meta +dc"]["parameters"] != "" and float(by["meta +dc"]["ms"]) > 0
