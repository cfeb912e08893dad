"""metasr-train: init checkpoint, exact resume, Ctrl-C, schedule, workers, GAN/VGG, DDP, bad input."""

from __future__ import annotations

import csv
import os
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from metasr.core.errors import InputError
from metasr.training import load_checkpoint, read_checkpoint
from metasr.training.cli import train_main
from metasr.training.trainer import Stage, TrainConfig, train


def _cfg(data: Path, out: Path, steps: int, **kw) -> TrainConfig:
    base = dict(
        out_dir=out,
        data=[f"folder:{data}"],
        steps=steps,
        batch_size=2,
        patch_size=16,
        val_every=3,
        checkpoint_every=100,
        progress=False,
        tensorboard=False,
        val_images=2,
        val_scales="2,3",
        val_fraction=0.2,
    )
    base.update(kw)
    return TrainConfig(**base)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["model"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_steps_zero_writes_the_initialised_checkpoint(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    rc = train_main(
        [
            "--data",
            f"folder:{tiny_data}",
            "--out",
            str(out),
            "--steps",
            "0",
            "--patch-size",
            "16",
            "--seed",
            "3",
            "--no-progress",
            "--val-images",
            "1",
            "--val-scales",
            "2",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    ckpt = read_checkpoint(out / "last.pt")
    assert ckpt["step"] == 0 and ckpt["config"]["arch"] == "metasrgan"
    assert ckpt["config"]["scale_range"] == [1.1, 4.0]
    model = load_checkpoint(out / "best.pt")
    torch.manual_seed(3)
    fresh = type(model)()
    assert _same({k: v for k, v in fresh.state_dict().items()}, ckpt["model"])
    assert "psnr" in read_checkpoint(out / "best.pt")["metrics"]
    assert "optimizer" not in read_checkpoint(out / "best.pt")  # best.pt is the shippable, small one


def test_train_cli_end_to_end(tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    rc = train_main(
        [
            "--data",
            f"folder:{tiny_data}",
            "--out",
            str(out),
            "--steps",
            "4",
            "--patch-size",
            "16",
            "--batch-size",
            "2",
            "--val-every",
            "2",
            "--val-images",
            "1",
            "--val-scales",
            "2.3",
            "--workers",
            "1",
            "--identity-init",
            "--max-minutes",
            "5",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.json", "last.pt", "log.csv", "tb"]
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tb").iterdir())
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [r["step"] for r in rows] == ["2", "4"] and all(float(r["val_psnr"]) > 0 for r in rows)
    assert "\r" not in err and "step/s" not in err  # stderr is not a terminal here: no progress bar
    assert read_checkpoint(out / "last.pt")["step"] == 4


def test_train_cli_snapshots_without_tensorboard(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """--no-tensorboard (machines without the package) and --snapshot-every from the command line."""
    out = tmp_path / "run"
    args = ["--data", f"folder:{tiny_data}", "--out", str(out), "--steps", "4", "--patch-size", "16"]
    args += ["--batch-size", "2", "--val-images", "1", "--val-scales", "2", "--snapshot-every", "2", "--no-tensorboard"]
    rc = train_main(args)
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.json", "last.pt", "log.csv", "snapshots"]
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["step-000002.pt", "step-000004.pt"]


def test_mse_pixel_loss_trains_logs_and_is_recorded(tiny_data: Path, tmp_path: Path) -> None:
    """--pixel-loss mse: the log's mse column is filled (l1 empty), the run's config records it, a
    resume continues with it, and the weights differ from an L1 run of the same seed."""
    mse = train(_cfg(tiny_data, tmp_path / "mse", 3, pixel_loss="mse"))
    l1 = train(_cfg(tiny_data, tmp_path / "l1", 3))
    assert mse.step == l1.step == 3
    assert not _same(_weights(tmp_path / "mse" / "last.pt"), _weights(tmp_path / "l1" / "last.pt"))
    rows = list(csv.DictReader(open(tmp_path / "mse" / "log.csv")))
    assert rows and all(float(r["mse"]) >= 0 and r["l1"] == "" for r in rows)
    assert all(r["mse"] == "" and float(r["l1"]) >= 0 for r in csv.DictReader(open(tmp_path / "l1" / "log.csv")))
    assert read_checkpoint(tmp_path / "mse" / "last.pt")["training"]["pixel_loss"] == "mse"
    train(_cfg(tiny_data, tmp_path / "psnr", 2, pixel_loss="psnr"))
    rows = list(csv.DictReader(open(tmp_path / "psnr" / "log.csv")))
    assert rows and all(float(r["psnr"]) < 0 and r["l1"] == r["mse"] == "" for r in rows)  # minus a PSNR
    # a run whose log predates the mse/psnr columns resumes under its own header: no row shifts
    old = tmp_path / "psnr" / "log.csv"
    lines = old.read_text().splitlines()
    old_fields = ["step", "seconds", "scale", "loss", "l1", "adversarial", "perceptual", "d_loss", "lr", "val_psnr"]
    kept = [dict(zip(lines[0].split(","), line.split(","))) for line in lines[1:]]
    old.write_text(",".join(old_fields) + "\n" + "".join(",".join(r[k] for k in old_fields) + "\n" for r in kept))
    train(_cfg(tiny_data, tmp_path / "psnr", 4, pixel_loss="psnr", resume=True))
    resumed = list(csv.reader(open(old)))
    assert resumed[0] == old_fields and all(len(r) == len(old_fields) for r in resumed)
    assert [r[0] for r in resumed[1:]][-1] == "4" and float(resumed[-1][3]) < 0  # "loss" holds minus a PSNR
    with pytest.raises(InputError, match="--pixel-loss"):
        train(_cfg(tiny_data, tmp_path / "bad", 1, pixel_loss="l2"))
    assert not (tmp_path / "bad" / "last.pt").exists()


def test_resume_continues_exactly(tiny_data: Path, tmp_path: Path) -> None:
    straight = train(_cfg(tiny_data, tmp_path / "a", 6, lr_step=4, lr_gamma=0.5))
    train(_cfg(tiny_data, tmp_path / "b", 4, lr_step=4, lr_gamma=0.5))
    resumed = train(_cfg(tiny_data, tmp_path / "b", 6, lr_step=4, lr_gamma=0.5, resume=True))
    assert straight.step == resumed.step == 6
    assert _same(_weights(tmp_path / "a" / "last.pt"), _weights(tmp_path / "b" / "last.pt"))
    # lr x0.5 after 4 updates
    assert read_checkpoint(tmp_path / "a" / "last.pt")["optimizer"]["param_groups"][0]["lr"] == pytest.approx(5e-5)
    rows = list(csv.DictReader(open(tmp_path / "b" / "log.csv")))
    assert [int(r["step"]) for r in rows] == [3, 4, 6]  # validation steps and the last step, appended on resume


def test_snapshots_for_weight_averaging(tiny_data: Path, tmp_path: Path) -> None:
    """--snapshot-every keeps the weights of those steps; a new run in the folder replaces them."""
    from metasr.core.errors import OutputError
    from metasr.training.checkpoint import average_checkpoints

    out = tmp_path / "snap"
    train(_cfg(tiny_data, out, 6, snapshot_every=2))
    snaps = sorted((out / "snapshots").glob("*.pt"))
    assert [p.name for p in snaps] == ["step-000002.pt", "step-000004.pt", "step-000006.pt"]
    assert _same(_weights(snaps[-1]), _weights(out / "last.pt"))
    assert not _same(_weights(snaps[0]), _weights(snaps[-1]))
    assert "optimizer" not in read_checkpoint(snaps[0])  # the shippable form
    assert average_checkpoints(snaps)["training"]["averaged"] == [2, 4, 6]
    with pytest.raises(OutputError, match="snapshots/"):
        train(_cfg(tiny_data, out, 2))
    for name in ("last.pt", "best.pt", "log.csv"):
        (out / name).unlink()
    with pytest.raises(OutputError, match="snapshots/"):  # snapshots alone still mark an earlier run
        train(_cfg(tiny_data, out, 2))
    train(_cfg(tiny_data, out, 3, snapshot_every=3, overwrite=True))
    assert [p.name for p in (out / "snapshots").glob("*.pt")] == ["step-000003.pt"]


def test_workers_do_not_change_the_result(tiny_data: Path, tmp_path: Path) -> None:
    train(_cfg(tiny_data, tmp_path / "w0", 3))
    train(_cfg(tiny_data, tmp_path / "w1", 3, workers=1))
    assert _same(_weights(tmp_path / "w0" / "last.pt"), _weights(tmp_path / "w1" / "last.pt"))


def test_ctrl_c_writes_last_checkpoint(tiny_data: Path, tmp_path: Path) -> None:
    def interrupt(step: int, row: dict) -> None:
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tiny_data, tmp_path / "c", 10), on_step=interrupt)
    ckpt = read_checkpoint(tmp_path / "c" / "last.pt")
    assert ckpt["step"] == 2 and "optimizer" in ckpt
    resumed = train(_cfg(tiny_data, tmp_path / "c", 3, resume=True))
    assert resumed.step == 3


def test_sigterm_writes_last_checkpoint_and_exits_143(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal

    from metasr.training.trainer import _Run

    step = _Run.train_step

    def step_then_sigterm(self, *args):
        row = step(self, *args)
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return row

    monkeypatch.setattr(_Run, "train_step", step_then_sigterm)
    out = tmp_path / "term"
    before = signal.getsignal(signal.SIGTERM)
    argv = ["--data", f"folder:{tiny_data}", "--out", str(out), "--steps", "10", "--patch-size", "16"]
    assert train_main([*argv, "--batch-size", "2", "--val-scales", "2", "--val-images", "1"]) == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"metasr-train: terminated; {out / 'last.pt'} holds the progress"
    assert read_checkpoint(out / "last.pt")["step"] == 2
    assert signal.getsignal(signal.SIGTERM) is before  # the command restores the handler it replaced


def test_divergence_is_one_line_and_keeps_the_last_good_checkpoint(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metasr.training.losses import GeneratorLoss

    forward = GeneratorLoss.forward
    calls = []

    def nan_after_three(self, sr, hr, fake_logits=None):
        loss, terms = forward(self, sr, hr, fake_logits)
        calls.append(1)
        return (loss * float("nan") if len(calls) > 3 else loss), terms

    monkeypatch.setattr(GeneratorLoss, "forward", nan_after_three)
    cfg = _cfg(tiny_data, tmp_path / "nan", 10, checkpoint_every=2)
    with pytest.raises(InputError, match=r"diverged at step 4: the loss is nan; .*last.pt keeps step 2; lower --lr"):
        train(cfg)
    ckpt = read_checkpoint(tmp_path / "nan" / "last.pt")
    assert ckpt["step"] == 2 and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_max_minutes_stops_cleanly_with_a_validated_best(tiny_data: Path, tmp_path: Path) -> None:
    result = train(_cfg(tiny_data, tmp_path / "t", 1000, max_minutes=1e-6, val_every=1000))
    assert result.stopped_early and result.step == 1
    assert read_checkpoint(result.last)["step"] == 1
    assert read_checkpoint(result.best)["step"] == 1  # the stopping step is validated


def test_init_transfers_weights_and_best_tracks_validation(tiny_data: Path, tmp_path: Path) -> None:
    first = train(_cfg(tiny_data, tmp_path / "s1", 3, tensorboard=True))
    assert first.best is not None and (tmp_path / "s1" / "tb").is_dir()
    best = read_checkpoint(first.best)
    assert best["metrics"]["psnr"] == pytest.approx(first.best_psnr)
    second = train(_cfg(tiny_data, tmp_path / "s2", 0, init=first.best))
    assert _same(_weights(second.last), best["model"])


def test_gan_stage_with_vgg_perceptual_loss(tiny_data: Path, tmp_path: Path) -> None:
    from metasr.training.losses import vgg19_features

    torch.manual_seed(0)
    vgg = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in vgg19_features().state_dict().items()}, vgg)
    result = train(_cfg(tiny_data, tmp_path / "g", 2, stage=Stage.GAN, vgg_weights=vgg, val_every=2))
    ckpt = read_checkpoint(result.last)
    assert ckpt["stage"] == "gan" and "discriminator" in ckpt and "d_optimizer" in ckpt
    row = list(csv.DictReader(open(tmp_path / "g" / "log.csv")))[-1]
    for key in ("l1", "adversarial", "perceptual", "d_loss"):
        assert np.isfinite(float(row[key])), key


@pytest.mark.parametrize("scale", ["1.1", "2.3", "3.7"])
def test_identity_init_starts_as_nearest_neighbour(scale: str) -> None:
    from fractions import Fraction

    from metasr.core.scale import axis_mapping
    from metasr.training import build_model
    from metasr.training.trainer import identity_init

    torch.manual_seed(0)
    model = identity_init(build_model("metasrgan"))
    lr = torch.rand(2, 1, 11, 14)
    rows = torch.from_numpy(axis_mapping(11, Fraction(scale)).index)
    cols = torch.from_numpy(axis_mapping(14, Fraction(scale)).index)
    nearest = lr[:, :, rows][:, :, :, cols]
    for mode in (True, False):  # batch statistics or running statistics: the same output
        model.train(mode)
        with torch.no_grad():
            assert torch.allclose(model(lr, scale), nearest, atol=1e-5)
    out = model(lr, scale)
    out.mean().backward()
    assert model.upscale.wpn[2].weight.grad.abs().sum() > 0  # and it trains from there


def test_progress_bar_only_on_a_terminal(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import metasr.training.cli as cli
    from metasr.core.cli import Verbosity

    # as on a terminal: progress_enabled is then true unless -q
    monkeypatch.setattr(cli, "progress_enabled", lambda verbosity, stream=None: verbosity is not Verbosity.QUIET)
    argv = ["--data", f"folder:{tiny_data}", "--patch-size", "16", "--batch-size", "2", "--steps", "2"]
    assert train_main([*argv, "--out", str(tmp_path / "a"), "--val-images", "1", "--val-scales", "2"]) == 0
    err = capsys.readouterr().err
    assert "step/s" in err or "s/step" in err  # the bar shows the rate
    assert train_main([*argv, "--out", str(tmp_path / "b"), "--val-images", "1", "--val-scales", "2", "-q"]) == 0
    assert capsys.readouterr().err == ""  # quiet: nothing but errors


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, data: str, out: str, stage: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    train(_cfg(Path(data), Path(out), 3, batch_size=4, stage=Stage(stage)))


@pytest.mark.parametrize("stage", ["l1", "gan"])
def test_ddp_two_gloo_processes_match_one_process(stage: str, tiny_data: Path, tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tiny_data), str(tmp_path / "ddp"), stage), nprocs=2, join=True)
    train(_cfg(tiny_data, tmp_path / "single", 3, batch_size=4, stage=Stage(stage)))
    ddp, single = _weights(tmp_path / "ddp" / "last.pt"), _weights(tmp_path / "single" / "last.pt")
    assert ddp.keys() == single.keys()
    for k in ddp:
        diff = float((ddp[k].float() - single[k].float()).abs().max())
        pre_bn_bias = k.endswith(".bias") and (".body.0." in k or ".body.3." in k or "tail.0." in k)
        if pre_bn_bias or k.endswith("running_mean"):  # running means absorb those biases
            # Conv biases feeding a batch norm get zero gradient up to rounding, which Adam scales
            # to full steps (|update| <= (1-b1)/sqrt(1-b2) lr = 3.2 lr): they may differ by that
            # much per step in each run, and do not change the output.
            assert diff <= 2 * 3 * 3.2e-4, k
        else:
            # Adam turns a gradient that is zero up to rounding (summed in another order across
            # ranks) into a full step of either sign, so a rare element may differ by one such
            # step; a real DDP fault (wrong shard, missing all-reduce) moves most elements.
            delta = (ddp[k].float() - single[k].float()).abs()
            assert diff <= 2 * 3 * 3.2e-4, (k, diff)
            assert float((delta > 5e-5).float().mean()) <= 0.01, (k, float((delta > 5e-5).float().mean()))
    assert read_checkpoint(tmp_path / "ddp" / "last.pt")["training"]["world_size"] == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "folder:/nonexistent/path"], "does not exist"),
        (["--data", "EMPTY"], "no usable images"),
        (["--arch", "resnet"], "resnet"),
        (["--scales", "0.5:2.0:0.1"], "greater than 1"),
        (["--scales", "2:9:1"], "outside"),
        (["--init", "/nonexistent.pt"], "does not exist"),
        (["--clean-fraction", "1.5"], "--clean-fraction"),
        (["--hr-noise", "-0.1"], "--hr-noise"),
        (["--reduction-mix", "bicubic=1,sinc=1"], "'sinc=1' is not understood"),
        (["--reduction-mix", "gauss=0"], "no positive weight"),
        (["--snapshot-every", "-1"], "--snapshot-every"),
        (["--pixel-loss", "huber"], "--pixel-loss"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    args: list[str], message: str, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    cv2.imwrite(str(empty / "black.png"), np.zeros((32, 32), np.uint8))
    argv = ["--out", str(tmp_path / "run"), "--steps", "1", "--patch-size", "16", "--no-progress"]
    if "--data" not in args:
        argv += ["--data", f"folder:{tiny_data}"]
    argv += [str(empty) if a == "EMPTY" else a for a in args]
    argv = [f"folder:{empty}" if a == str(empty) else a for a in argv]
    rc = train_main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("main, prog", [(train_main, "metasr-train"), (None, "metasr-eval")])
def test_version_and_conflicting_verbosity(main, prog: str, capsys: pytest.CaptureFixture) -> None:
    from metasr import __version__
    from metasr.training.cli import eval_main

    main = main or eval_main
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"{prog} {__version__}"
    assert (
        main(["-q", "-v", "--data", "folder:.", "--out", "x", "--ckpt", "y"][: 6 if prog == "metasr-train" else 8]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "either --quiet or --verbose" in err[0]
