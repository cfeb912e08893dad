"""Self-ensemble distillation (``metasr-train --teacher``): the target, the loss, resume, refusals."""

from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from conftest import make_checkpoint
from test_train import _cfg as _train_cfg

from metasr.training import load_checkpoint, read_checkpoint
from metasr.training.cli import train_main
from metasr.training.distill import EnsembleTeacher, check_teacher
from metasr.training.trainer import TrainConfig, train


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("teacher") / "teacher.pt", seed=3)


def _cfg(data: Path, out: Path, steps: int, **kw) -> TrainConfig:
    """test_train's tiny run at scales whose exact ensemble fits a 16-pixel patch."""
    return _train_cfg(data, out, steps, **{"scales": "1.5,2,3", "val_every": 100, "val_scales": "2", **kw})


def _by_hand(model: torch.nn.Module, lr: torch.Tensor, scale: Fraction) -> torch.Tensor:
    """The x8 ensemble written out with torch's own flips (sides that the denominator divides)."""
    total = torch.zeros(())
    for t in range(8):
        x = lr
        x = x.flip(-2) if t & 1 else x
        x = x.flip(-1) if t & 2 else x
        x = x.transpose(-1, -2) if t & 4 else x
        y = model(x.contiguous(), scale)
        y = y.transpose(-1, -2) if t & 4 else y
        y = y.flip(-1) if t & 2 else y
        y = y.flip(-2) if t & 1 else y
        total = total + y
    return total / 8


@pytest.mark.parametrize("scale", [Fraction(2), Fraction(3, 2), Fraction(5, 2)])
def test_teacher_target_is_the_mean_of_the_eight_orientations(teacher: Path, scale: Fraction) -> None:
    torch.manual_seed(0)
    lr = torch.rand(2, 1, 12, 14)  # 12 and 14 are multiples of 2: no extension is needed
    target = EnsembleTeacher(teacher, torch.device("cpu"))(lr, scale)
    with torch.no_grad():
        expected = _by_hand(load_checkpoint(teacher), lr, scale)
        single = load_checkpoint(teacher)(lr, scale)
    assert target.shape == expected.shape == single.shape
    assert torch.allclose(target, expected, atol=1e-5)
    assert not torch.allclose(target, single, atol=1e-3)  # the ensemble differs from one run


def test_teacher_target_keeps_one_runs_shape_where_a_flip_needs_an_extension(teacher: Path) -> None:
    lr = torch.rand(1, 1, 11, 13)
    scale = Fraction(7, 4)  # 11 and 13 are not multiples of 4
    target = EnsembleTeacher(teacher, torch.device("cpu"))(lr, scale)
    assert target.shape == (1, 1, 19, 22)
    assert torch.isfinite(target).all()


def test_teacher_is_frozen_and_stays_in_eval_mode(teacher: Path) -> None:
    t = EnsembleTeacher(teacher, torch.device("cpu"))
    t.train()
    assert not t.training and not t.model.training
    assert not any(p.requires_grad for p in t.parameters())


def test_loss_is_the_weighted_sum_and_the_teacher_is_recorded(tiny_data: Path, teacher: Path, tmp_path: Path) -> None:
    rows: list[dict] = []
    cfg = _cfg(tiny_data, tmp_path / "run", 3, teacher=teacher, teacher_weight=0.3, init=teacher)
    train(cfg, on_step=lambda step, row: rows.append(dict(row)))
    assert len(rows) == 3
    for row in rows:
        assert row["loss"] == pytest.approx(0.7 * row["l1"] + 0.3 * row["teacher"], rel=1e-5)
        assert row["teacher"] > 0
    # a student that starts as the teacher is closer to the teacher's ensemble than to the HR patch
    assert rows[0]["teacher"] < rows[0]["l1"]
    info = read_checkpoint(tmp_path / "run" / "last.pt")["training"]
    assert info["teacher"] == str(teacher) and info["teacher_weight"] == 0.3
    assert len(info["teacher_sha256"]) == 64
    header = next(csv.reader(open(tmp_path / "run" / "log.csv")))
    assert "teacher" in header


def test_teacher_changes_the_update(tiny_data: Path, teacher: Path, tmp_path: Path) -> None:
    plain = train(_cfg(tiny_data, tmp_path / "plain", 2, init=teacher))
    taught = train(_cfg(tiny_data, tmp_path / "taught", 2, init=teacher, teacher=teacher, teacher_weight=0.9))
    a, b = read_checkpoint(plain.last)["model"], read_checkpoint(taught.last)["model"]
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_resume_with_the_teacher_continues_exactly(tiny_data: Path, teacher: Path, tmp_path: Path) -> None:
    kw = dict(teacher=teacher, lr_step=3, lr_gamma=0.5)
    train(_cfg(tiny_data, tmp_path / "a", 5, **kw))
    train(_cfg(tiny_data, tmp_path / "b", 3, **kw))
    train(_cfg(tiny_data, tmp_path / "b", 5, resume=True, **kw))
    a, b = read_checkpoint(tmp_path / "a" / "last.pt")["model"], read_checkpoint(tmp_path / "b" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"teacher": None}, "was trained with a teacher of sha256"),
        ({"teacher_weight": 0.2}, "at weight 0.5"),
        ({"teacher": "OTHER"}, "resume with the same --teacher"),
    ],
)
def test_resume_refuses_another_teacher(
    change: dict, message: str, tiny_data: Path, teacher: Path, tmp_path: Path
) -> None:
    from metasr.core.errors import CheckpointError

    train(_cfg(tiny_data, tmp_path / "run", 2, teacher=teacher))
    before = (tmp_path / "run" / "last.pt").read_bytes()
    kw = {"teacher": teacher, **change}
    if kw["teacher"] == "OTHER":
        kw["teacher"] = make_checkpoint(tmp_path / "other.pt", seed=9)
    with pytest.raises(CheckpointError, match=message):
        train(_cfg(tiny_data, tmp_path / "run", 4, resume=True, **kw))
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


def test_resume_refuses_a_teacher_added_later(tiny_data: Path, teacher: Path, tmp_path: Path) -> None:
    from metasr.core.errors import CheckpointError

    train(_cfg(tiny_data, tmp_path / "run", 2))
    with pytest.raises(CheckpointError, match="trained with no teacher"):
        train(_cfg(tiny_data, tmp_path / "run", 4, resume=True, teacher=teacher))


def test_the_suggested_patch_size_works(teacher: Path) -> None:
    from metasr.core.errors import InputError
    from metasr.training.specs import parse_scales

    scales = parse_scales("1.1:4.0:0.1")
    with pytest.raises(InputError, match=r"give --patch-size (\d+) or more") as caught:
        check_teacher(teacher, "metasrgan", 32, scales)
    enough = int(caught.value.args[0].split("--patch-size ")[1].split()[0])
    check_teacher(teacher, "metasrgan", enough, scales)
    with pytest.raises(InputError):
        check_teacher(teacher, "metasrgan", enough - 1, scales)


def _cli(tmp_path: Path, data: Path, *extra: str) -> list[str]:
    out = tmp_path / "run"
    return [
        "--data",
        f"folder:{data}",
        "--out",
        str(out),
        "--steps",
        "1",
        "--patch-size",
        "16",
        "--no-progress",
        *extra,
    ]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--teacher-weight", "0.3"], "--teacher-weight needs --teacher"),
        (["--teacher", "TEACHER", "--teacher-weight", "0"], "--teacher-weight"),
        (["--teacher", "TEACHER", "--teacher-weight", "1.5"], "--teacher-weight"),
        (["--teacher", "TEACHER", "--scales", "2,3,4", "--stage", "gan"], "--teacher applies to the l1 stage"),
        (["--teacher", "TEACHER"], "would more than double a"),
        (["--teacher", "SRGAN", "--scales", "2"], "a teacher must be an any-scale metasrgan"),
        (["--teacher", "RANGE", "--scales", "2,3"], "outside the x1.1-x2 the teacher"),
        (["--teacher", "TEACHER", "--scales", "2", "--arch", "metasrgan-nc"], "carries a noise map"),
        (["--teacher", "MISSING", "--scales", "2"], "MISSING"),
    ],
)
def test_bad_teacher_exits_2_with_one_line_and_writes_nothing(
    extra: list[str], message: str, tiny_data: Path, teacher: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    names = {
        "TEACHER": str(teacher),
        "SRGAN": str(make_checkpoint(tmp_path / "srgan.pt", "srgan", features=8, num_blocks=1)),
        "RANGE": str(make_checkpoint(tmp_path / "range.pt", scale_range=[1.1, 2.0])),
        "MISSING": str(tmp_path / "MISSING.pt"),
    }
    rc = train_main(_cli(tmp_path, tiny_data, *[names.get(a, a) for a in extra]))
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("own", ["last.pt", "best.pt", "snapshots/step-000001.pt"])
def test_a_teacher_from_the_run_folder_is_refused(
    own: str, tiny_data: Path, teacher: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # through the CLI, as a user would (its logging goes to this test's stderr)
    assert train_main([*_cli(tmp_path, tiny_data, "--scales", "2"), "--snapshot-every", "1", "--val-every", "1"]) == 0
    capsys.readouterr()
    before = (tmp_path / "run" / own).read_bytes()
    rc = train_main(_cli(tmp_path, tiny_data, "--teacher", str(tmp_path / "run" / own), "--scales", "2", "--overwrite"))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert f"this run's own {own}" in err and "copy it elsewhere" in err
    assert (tmp_path / "run" / own).read_bytes() == before


def test_cli_trains_toward_the_teacher(tiny_data: Path, teacher: Path, tmp_path: Path) -> None:
    rc = train_main(_cli(tmp_path, tiny_data, "--teacher", str(teacher), "--scales", "2", "--teacher-weight", "0.25"))
    assert rc == 0
    assert read_checkpoint(tmp_path / "run" / "last.pt")["training"]["teacher_weight"] == 0.25
