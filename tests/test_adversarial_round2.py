"""The second adversarial corpus (issue 17): concurrent runs, URLs, reports, manifests, journals.

The serious faults first, each a test that failed before the fix; then the corpus of bad inputs
that gave a traceback, a hang or a silent skip: each gives exit code 2, exactly one line on
stderr, nothing written and the inputs byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from _stream_data import moving_shapes, write_video
from test_run_bad_input import _phantom, _write_png

from metasr.core.atomic import publish_file
from metasr.core.errors import ModelError, OutputError
from metasr.core.locks import exclusive_lock, output_lock
from metasr.core.paths import shown
from metasr.runtime.cli import main as run_main
from metasr.training.cli import eval_main
from metasr.video.cli import main as stream_main

JOURNAL = ".metasr-run.jsonl"


def _tree(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (links by target), and the folders."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[str(p)] = "-> " + os.readlink(p)
        elif p.is_file():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[str(p)] = "dir" if p.is_dir() else "special"
    return out


def _one_line_refusal(capfd: pytest.CaptureFixture[str], rc: int, prog: str, words: str) -> str:
    out, err = capfd.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    assert words in lines[0], lines[0]
    assert out == "" and "Traceback" not in err
    return lines[0]


def _video(d: Path, name: str = "v.avi") -> Path:
    return write_video(d / name, moving_shapes(4, 20, 24, color=True))


def _png(d: Path, name: str = "frame.png") -> Path:
    return _write_png(d / name, _phantom())


def _model_copy(tmp: Path, model: Path, edit: Callable[[dict], object] | None = None, text: str | None = None) -> Path:
    copy = Path(shutil.copytree(model, tmp / "model"))
    if text is not None:
        (copy / "manifest.json").write_text(text)
    elif edit is not None:
        manifest = json.loads((copy / "manifest.json").read_text())
        edit(manifest)
        (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


# -- serious faults ---------------------------------------------------------------------------------


def test_stream_file_url_onto_its_own_input_is_refused(tmp_path, tiny_export_dir, capfd):
    src = _video(tmp_path)
    before = _tree(tmp_path)
    rc = stream_main(["-i", f"file://{src}", "-s", "2", "-o", str(src), "--overwrite", "--model", str(tiny_export_dir)])
    _one_line_refusal(capfd, rc, "metasr-stream", "is the input")
    assert _tree(tmp_path) == before


def test_stream_file_url_is_read_as_a_file(tmp_path, tiny_export_dir, capfd):
    src = _video(tmp_path)
    out = tmp_path / "o.avi"
    rc = stream_main(
        ["-i", f"file://{src}", "-s", "2", "-o", str(out), "--stats", "-", "-q", "--model", str(tiny_export_dir)]
    )
    stdout, err = capfd.readouterr()
    assert rc == 0, err
    stats = json.loads(stdout)
    assert stats["source_kind"] == "file" and stats["frames_out"] == 4 and stats["dropped"] == 0
    assert out.is_file() and not list(tmp_path.glob(".o*"))  # no partial or lock file left


def test_second_folder_run_into_a_locked_output_folder_refuses(tmp_path, tiny_export_dir, capfd):
    folder = tmp_path / "in"
    folder.mkdir()
    _png(folder, "a.png")
    out = tmp_path / "out"
    out.mkdir()
    before = _tree(tmp_path)
    with exclusive_lock(out):  # the first run, still working
        rc = run_main(["-i", str(folder), "-s", "2", "-o", str(out), "-q", "--model", str(tiny_export_dir)])
    _one_line_refusal(capfd, rc, "metasr-run", "in use by another metasr run")
    assert _tree(tmp_path) == before


def test_second_single_file_run_to_a_locked_output_refuses(tmp_path, tiny_export_dir, capfd):
    src = _png(tmp_path)
    out = tmp_path / "big.png"
    with output_lock(out):
        before = _tree(tmp_path)
        rc = run_main(["-i", str(src), "-s", "2", "-o", str(out), "-q", "--model", str(tiny_export_dir)])
        _one_line_refusal(capfd, rc, "metasr-run", "in use by another metasr run")
        assert _tree(tmp_path) == before
    assert not out.exists() and not (tmp_path / ".big.png.lock").exists()


def test_an_output_written_meanwhile_by_another_run_is_never_replaced(tmp_path, tiny_export_dir, capfd, monkeypatch):
    from metasr.runtime.upscaler import Upscaler

    src = _png(tmp_path)
    out = tmp_path / "big.png"
    real = Upscaler.upscale

    def other_run_finishes_first(self, image, scale):
        out.write_bytes(b"the other run's output")
        return real(self, image, scale)

    monkeypatch.setattr(Upscaler, "upscale", other_run_finishes_first)
    rc = run_main(["-i", str(src), "-s", "2", "-o", str(out), "-q", "--model", str(tiny_export_dir)])
    _one_line_refusal(capfd, rc, "metasr-run", "nothing was replaced")
    assert out.read_bytes() == b"the other run's output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png", "frame.png"]


def test_publish_file_never_replaces_without_permission(tmp_path):
    tmp, dest = tmp_path / ".part", tmp_path / "out"
    tmp.write_bytes(b"new")
    dest.write_bytes(b"old")
    with pytest.raises(OutputError, match="nothing was replaced"):
        publish_file(tmp, dest)
    assert dest.read_bytes() == b"old" and not tmp.exists()
    tmp.write_bytes(b"new")
    publish_file(tmp, dest, replace=True)
    assert dest.read_bytes() == b"new" and not tmp.exists()


def test_stream_output_locked_by_another_stream_refuses(tmp_path, tiny_export_dir, capfd):
    src = _video(tmp_path)
    out = tmp_path / "o.avi"
    with output_lock(out):
        before = _tree(tmp_path)
        rc = stream_main(["-i", str(src), "-s", "2", "-o", str(out), "--model", str(tiny_export_dir)])
        _one_line_refusal(capfd, rc, "metasr-stream", "in use by another metasr run")
        assert _tree(tmp_path) == before


def test_report_never_replaces_an_existing_file_without_overwrite(tmp_path, tiny_export_dir, capfd):
    src = _png(tmp_path)
    report = tmp_path / "r.csv"
    report.write_text("keep me\n")
    before = _tree(tmp_path)
    rc = run_main(["-i", str(src), "-s", "2", "--report", str(report), "-q", "--model", str(tiny_export_dir)])
    _one_line_refusal(capfd, rc, "metasr-run", "already exists")
    assert _tree(tmp_path) == before
    rc = run_main(
        ["-i", str(src), "-s", "2", "--report", str(report), "--overwrite", "-q", "--model", str(tiny_export_dir)]
    )
    assert rc == 0 and report.read_text().startswith("input,output,status")


def test_report_never_replaces_the_models_manifest(tmp_path, tiny_export_dir, capfd):
    model = _model_copy(tmp_path, tiny_export_dir)
    src = _png(tmp_path)
    before = _tree(tmp_path)
    report = model / "manifest.json"
    rc = run_main(["-i", str(src), "-s", "2", "--report", str(report), "--overwrite", "-q", "--model", str(model)])
    _one_line_refusal(capfd, rc, "metasr-run", "inside the model folder")
    assert _tree(tmp_path) == before


def test_second_evaluation_into_one_out_is_refused(tmp_path, capfd):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "table.md").write_text("| the first evaluation |\n")
    before = _tree(tmp_path)
    rc = eval_main(["--ckpt", str(tmp_path / "any.pt"), "--data", f"folder:{tmp_path}", "--out", str(out)])
    _one_line_refusal(capfd, rc, "metasr-eval", "already holds an evaluation")
    assert _tree(tmp_path) == before


def test_stream_sequence_pattern_name_is_refused(tmp_path, tiny_export_dir, capfd):
    frame = (_phantom() * 255).astype(np.uint8)
    for i in range(4):
        _write_png(tmp_path / f"seq{i:02d}.png", frame)
    _write_png(tmp_path / "seq%02d.png", frame)
    before = _tree(tmp_path)
    rc = stream_main(
        ["-i", str(tmp_path / "seq%02d.png"), "-s", "2", "-o", str(tmp_path / "o.avi"), "--model", str(tiny_export_dir)]
    )
    _one_line_refusal(capfd, rc, "metasr-stream", "image-sequence pattern")
    assert _tree(tmp_path) == before


def test_manifest_with_an_absurd_mean_is_refused(tmp_path, tiny_export_dir, capfd):
    model = _model_copy(tmp_path, tiny_export_dir, lambda m: m["normalization"].update(mean=1e30))
    src = _png(tmp_path)
    before = _tree(tmp_path)
    rc = run_main(["-i", str(src), "-s", "2", "-q", "--model", str(model)])
    _one_line_refusal(capfd, rc, "metasr-run", "normalization mean")
    assert _tree(tmp_path) == before


def test_model_id_covers_every_field_that_changes_pixels(tmp_path, tiny_export_dir):
    from metasr.core.manifest import model_id as id_of
    from metasr.core.manifest import read_manifest

    base = read_manifest(tiny_export_dir)
    for key, value in (("normalization", {"mean": 0.5, "std": 0.2}), ("receptive_radius", 3), ("features", 9)):
        assert id_of({**base, key: value}) != id_of(base), key
    assert id_of(json.loads(json.dumps(base))) == id_of(base)  # stable across copies


def test_reexport_removes_only_files_an_export_wrote(tmp_path, tiny_checkpoint):
    from metasr.core.manifest import sha256_file
    from metasr.export import export_model

    out = tmp_path / "exp"
    export_model(tiny_checkpoint, out, verify=False)
    last = out / "last.pt"
    last.write_bytes(b"a checkpoint the user keeps here")
    stale_graph = out / "old_graph.onnx"
    stale_graph.write_bytes(b"a graph of the previous export")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"]["last.pt"] = sha256_file(last)
    manifest["files"]["old_graph.onnx"] = sha256_file(stale_graph)
    (out / "manifest.json").write_text(json.dumps(manifest))
    export_model(tiny_checkpoint, out, verify=False)
    assert last.read_bytes() == b"a checkpoint the user keeps here"
    assert not stale_graph.exists()  # the previous export's own file, unchanged: removed


def test_journal_records_precision_and_device(tmp_path, tiny_export_dir, capfd):
    folder = tmp_path / "in"
    folder.mkdir()
    _png(folder, "a.png")
    out = tmp_path / "out"
    assert run_main(["-i", str(folder), "-s", "2", "-o", str(out), "-q", "--model", str(tiny_export_dir)]) == 0
    record = json.loads((out / JOURNAL).read_text().splitlines()[0])
    assert record["settings"]["precision"] == "fp32" and record["settings"]["device"] == "cpu"


# -- journals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        '{"output": "a_sr2.png", "input": ',  # torn by a crash, no newline
        "[" * 200_000,  # nested too deeply for the JSON reader
        '{"output": ["a"], "settings": 7}',
        '"just a string"\n\xff\xfe garbage',
    ],
    ids=["torn", "deep", "wrong-types", "garbage"],
)
def test_a_bad_journal_line_is_skipped_with_a_note_and_resume_goes_on(tmp_path, tiny_export_dir, capfd, bad):
    folder = tmp_path / "in"
    folder.mkdir()
    _png(folder, "a.png")
    out = tmp_path / "out"
    args = ["-i", str(folder), "-s", "2", "-o", str(out), "--model", str(tiny_export_dir)]
    assert run_main([*args, "-q"]) == 0
    with open(out / JOURNAL, "a", encoding="utf-8", errors="surrogateescape") as fh:
        fh.write(bad)  # no newline after it
    capfd.readouterr()
    _png(folder, "b.png")
    assert run_main(args) == 0
    err = capfd.readouterr().err
    assert "damaged line(s) skipped" in err and "Traceback" not in err
    lines = (out / JOURNAL).read_text(errors="replace").splitlines()
    assert json.loads(lines[-1])["output"] == "b_sr2.png"  # the new record starts on a fresh line
    assert run_main([*args, "-q"]) == 0  # and the next resume still reads both records
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["a_sr2.png", "b_sr2.png"]


# -- the corpus: one line, exit 2, nothing written ---------------------------------------------------

DAMAGED_MANIFESTS: dict[str, Callable[[Path, Path], Path]] = {
    "deep brackets": lambda tmp, m: _model_copy(tmp, m, text="[" * 200_000),
    "kind is a list": lambda tmp, m: _model_copy(tmp, m, lambda d: d.update(kind=[])),
    "normalization empty": lambda tmp, m: _model_copy(tmp, m, lambda d: d.update(normalization={})),
    "normalization a string": lambda tmp, m: _model_copy(tmp, m, lambda d: d.update(normalization="x")),
    "mean a string": lambda tmp, m: _model_copy(tmp, m, lambda d: d["normalization"].update(mean="abc")),
    "std zero": lambda tmp, m: _model_copy(tmp, m, lambda d: d["normalization"].update(std=0)),
    "mean nan": lambda tmp, m: _model_copy(tmp, m, lambda d: d["normalization"].update(mean=float("nan"))),
    "opset a string": lambda tmp, m: _model_copy(tmp, m, lambda d: d.update(opset="17")),
    "arch a dict": lambda tmp, m: _model_copy(tmp, m, lambda d: d.update(arch={})),
}


@pytest.mark.parametrize("case", list(DAMAGED_MANIFESTS))
def test_damaged_manifest_one_line_in_run_stream_and_eval(case, tmp_path, tiny_export_dir, capfd):
    model = DAMAGED_MANIFESTS[case](tmp_path, tiny_export_dir)
    src, video = _png(tmp_path), _video(tmp_path)
    before = _tree(tmp_path)
    rc = run_main(["-i", str(src), "-s", "2", "-q", "--model", str(model)])
    _one_line_refusal(capfd, rc, "metasr-run", "manifest.json")
    rc = stream_main(["-i", str(video), "-s", "2", "-o", str(tmp_path / "o.avi"), "--model", str(model)])
    _one_line_refusal(capfd, rc, "metasr-stream", "manifest.json")
    rc = eval_main(["--ckpt", str(model), "--data", f"folder:{tmp_path}", "--out", str(tmp_path / "ev")])
    _one_line_refusal(capfd, rc, "metasr-eval", "manifest.json")
    assert _tree(tmp_path) == before


STREAM_CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "camera superscript two": (lambda d: ["-i", "²", "-s", "2"], "does not exist"),
    "camera circled one": (lambda d: ["-i", "①", "-s", "2"], "does not exist"),
    "camera huge index": (lambda d: ["-i", "99999999999999999999", "-s", "2"], "camera index"),
    "scale needing a large denominator": (lambda d: ["-i", str(_video(d)), "-s", "2.3333"], "7/3"),
    "output name too long for its partial file": (
        lambda d: ["-i", str(_video(d)), "-s", "2", "-o", str(d / ("o" * 242 + ".avi"))],
        "too long",
    ),
    "file url to a fifo": (lambda d: (os.mkfifo(d / "p.avi"), ["-i", f"file://{d}/p.avi", "-s", "2"])[1], "FIFO"),
    "sequence pattern whose first file is a fifo": (
        lambda d: (os.mkfifo(d / "p0.png"), (d / "p%d.png").write_bytes(b"x"), ["-i", str(d / "p%d.png"), "-s", "2"])[
            2
        ],
        "image-sequence pattern",
    ),
    "file url of another host": (lambda d: ["-i", "file://server/share/v.avi", "-s", "2"], "host"),
    "name with a newline and an escape": (lambda d: ["-i", str(d / "a\nb\x1b[2J.avi"), "-s", "2"], "does not exist"),
}


@pytest.mark.parametrize("case", list(STREAM_CASES))
def test_stream_corpus(case, tmp_path, tiny_export_dir, capfd):
    build, words = STREAM_CASES[case]
    args = build(tmp_path)
    before = _tree(tmp_path)
    rc = stream_main([*args, "--model", str(tiny_export_dir)])
    line = _one_line_refusal(capfd, rc, "metasr-stream", words)
    assert "\x1b" not in line
    assert _tree(tmp_path) == before


def test_shown_escapes_control_characters_and_undecodable_bytes():
    assert shown("a\nb\x1b[2J") == "a\\nb\\x1b[2J"
    assert shown(os.fsdecode(b"x\xff.png")) == "x\\udcff.png"
    assert len(shown("y" * 1000)) <= 200


# -- folder runs: every input gets a verdict ----------------------------------------------------------


def _folder_run(tmp: Path, model: Path, inputs: list[Path], *extra: str) -> tuple[int, list[dict]]:
    report = tmp / "report.json"
    args = [a for i in inputs for a in ("-i", str(i))]
    rc = run_main(
        [*args, "-s", "2", "-o", str(tmp / "out"), "-q", "--report", str(report), *extra, "--model", str(model)]
    )
    return rc, json.loads(report.read_text())["files"] if report.exists() else []


def test_a_folder_and_its_subfolder_or_one_folder_twice_are_not_empty(tmp_path, tiny_export_dir, capfd):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    _png(folder, "a.png")
    _png(folder / "sub", "c.png")
    for inputs in ([folder, folder / "sub"], [folder, folder]):
        rc, rows = _folder_run(tmp_path, tiny_export_dir, inputs, "--overwrite")
        assert rc == 0, capfd.readouterr().err
        assert sorted(Path(r["input"]).name for r in rows) == ["a.png", "c.png"]


def test_a_dicom_without_preamble_gets_a_verdict_in_a_folder(tmp_path, tiny_export_dir):
    from test_run_bad_input import write_dicom

    folder = tmp_path / "in"
    folder.mkdir()
    full = write_dicom(tmp_path / "full.dcm", _phantom(16, 16))
    (folder / "IM0001").write_bytes(full.read_bytes()[132:])  # no 128-byte preamble, no "DICM"
    rc, rows = _folder_run(tmp_path, tiny_export_dir, [folder])
    assert rc == 0 and [(Path(r["input"]).name, r["status"]) for r in rows] == [("IM0001", "written")]


def test_a_path_over_path_max_gets_a_verdict(tmp_path, tiny_export_dir, capfd):
    folder = tmp_path / "in"
    folder.mkdir()
    _png(folder, "a.png")
    fd = os.open(folder, os.O_RDONLY)
    for _ in range(18):  # 18 x 251 bytes: deeper than PATH_MAX (4096)
        os.mkdir("d" * 250, dir_fd=fd)
        inner = os.open("d" * 250, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    w = os.open("z.png", os.O_WRONLY | os.O_CREAT, dir_fd=fd)
    os.write(w, (folder / "a.png").read_bytes())
    os.close(w)
    os.close(fd)
    try:
        rc, rows = _folder_run(tmp_path, tiny_export_dir, [folder])
    finally:
        shutil.rmtree(folder)  # other tests walk the session's temporary folders with pathlib, which cannot
    assert rc == 2 and [r["status"] for r in rows] == ["written", "failed"]
    assert "too long" in rows[1]["reason"]


def test_undecodable_and_control_character_names_in_the_report_and_on_stdout(tmp_path, tiny_export_dir, capfd):
    folder = tmp_path / "in"
    folder.mkdir()
    data = _png(tmp_path).read_bytes()
    (Path(os.fsdecode(bytes(folder) + b"/x\xff.png"))).write_bytes(data)
    (folder / "a\nb.png").write_bytes(data)
    for suffix in ("csv", "json"):
        report = tmp_path / f"r.{suffix}"
        args = ["-i", str(folder), "-s", "2", "-o", str(tmp_path / suffix), "--report", str(report), "-q"]
        assert run_main([*args, "--model", str(tiny_export_dir)]) == 0
        out = capfd.readouterr().out
        assert len(out.splitlines()) == 2 and "a\\nb_sr2.png" in out and "x\\udcff_sr2.png" in out
        assert "x\\udcff" in report.read_text(encoding="utf-8").replace("\\\\", "\\")


# -- signals and leftovers ---------------------------------------------------------------------------


def test_sigterm_while_series_are_grouped_writes_a_report_of_not_run(tmp_path, tiny_export_dir, capfd, monkeypatch):
    import signal

    from metasr.runtime import cli

    folder = tmp_path / "in"
    folder.mkdir()
    _png(folder, "a.png")
    _png(folder, "b.png")

    def term(*_args):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the run")

    monkeypatch.setattr(cli, "series_windows", term)
    rc, rows = _folder_run(tmp_path, tiny_export_dir, [folder])
    assert rc == 143 and "terminated" in capfd.readouterr().err
    assert [(Path(r["input"]).name, r["status"]) for r in rows] == [("a.png", "not run"), ("b.png", "not run")]
    assert not (tmp_path / "out").exists()


def test_a_successful_stream_removes_partial_files_killed_runs_left(tmp_path, tiny_export_dir, capfd):
    src = _video(tmp_path)
    stale = tmp_path / ".o.partial-4999999.avi"  # no such process (pid_max is at most 4194304)
    stale.write_bytes(b"left by a run killed with SIGKILL")
    other = tmp_path / ".p.partial-4999999.avi"  # another output's: not ours to remove
    other.write_bytes(b"x")
    rc = stream_main(["-i", str(src), "-s", "2", "-o", str(tmp_path / "o.avi"), "-q", "--model", str(tiny_export_dir)])
    assert rc == 0, capfd.readouterr().err
    assert not stale.exists() and other.exists() and (tmp_path / "o.avi").is_file()


def test_libpng_messages_never_come_before_the_error_line(tmp_path, tiny_export_dir, capfd):
    import cv2

    ok, data = cv2.imencode(".png", (np.random.default_rng(0).random((64, 64)) * 65535).astype(np.uint16))
    src = tmp_path / "cut.png"
    src.write_bytes(data.tobytes()[:-20])  # libpng: "PNG input buffer is incomplete"
    before = _tree(tmp_path)
    rc = run_main(["-i", str(src), "-s", "2", "-q", "--model", str(tiny_export_dir)])
    line = _one_line_refusal(capfd, rc, "metasr-run", "cut.png")
    assert "libpng" not in line
    assert _tree(tmp_path) == before


# -- export and train ---------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [{"features": 1024, "num_blocks": 256}, {"features": 512, "num_blocks": 64}])
def test_checkpoint_arguments_absurd_together_are_refused_before_building(tmp_path, tiny_checkpoint, capfd, args):
    import torch

    from metasr.export.cli import main as export_main

    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    ckpt["config"]["args"] = {**ckpt["config"].get("args", {}), **args}
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    before = _tree(tmp_path)
    rc = export_main(["--ckpt", str(bad), "--out", str(tmp_path / "exp")])
    _one_line_refusal(capfd, rc, "metasr-export", "parameters")
    assert _tree(tmp_path) == before


def test_export_after_sigterm_leaves_no_temporary_folder(tmp_path, tiny_checkpoint, capfd, monkeypatch):
    import signal

    from metasr.export import exporter
    from metasr.export.cli import main as export_main

    def term(*_args, **_kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the export")

    monkeypatch.setattr(exporter, "_write_graphs", term)
    ckpt = Path(shutil.copy(tiny_checkpoint, tmp_path / "c.pt"))
    before = _tree(tmp_path)
    rc = export_main(["--ckpt", str(ckpt), "--out", str(tmp_path / "exp")])
    assert rc == 143 and "terminated" in capfd.readouterr().err
    assert _tree(tmp_path) == before  # no .exp.export-* folder, no export


def _loop(tmp: Path) -> Path:
    (tmp / "a").symlink_to(tmp / "b")
    (tmp / "b").symlink_to(tmp / "a")
    return tmp / "a" / "out"


def test_export_into_a_symbolic_link_loop_is_one_line(tmp_path, tiny_checkpoint, capfd):
    from metasr.export.cli import main as export_main

    out = _loop(tmp_path)
    before = _tree(tmp_path)
    rc = export_main(["--ckpt", str(tiny_checkpoint), "--out", str(out), "--no-verify"])
    _one_line_refusal(capfd, rc, "metasr-export", "symbolic link loop")
    assert _tree(tmp_path) == before


def test_eval_into_a_symbolic_link_loop_is_one_line(tmp_path, tiny_checkpoint, capfd):
    out = _loop(tmp_path)
    before = _tree(tmp_path)
    rc = eval_main(["--ckpt", str(tiny_checkpoint), "--data", f"folder:{tmp_path}", "--out", str(out)])
    _one_line_refusal(capfd, rc, "metasr-eval", "symbolic link loop")
    assert _tree(tmp_path) == before


def test_export_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, tiny_checkpoint, capfd, monkeypatch):
    import errno

    from metasr.export import exporter
    from metasr.export.cli import main as export_main

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(exporter, "_write_graphs", full)
    ckpt = Path(shutil.copy(tiny_checkpoint, tmp_path / "c.pt"))
    before = _tree(tmp_path)
    rc = export_main(["--ckpt", str(ckpt), "--out", str(tmp_path / "exp"), "-q"])
    _one_line_refusal(capfd, rc, "metasr-export", "No space left on device")
    assert _tree(tmp_path) == before


def test_export_into_a_folder_another_export_writes_refuses(tmp_path, tiny_checkpoint, capfd):
    from metasr.export.cli import main as export_main

    out = tmp_path / "exp"
    with output_lock(out, "--out"):
        before = _tree(tmp_path)
        rc = export_main(["--ckpt", str(tiny_checkpoint), "--out", str(out), "--no-verify", "-q"])
        _one_line_refusal(capfd, rc, "metasr-export", "in use by another metasr run")
        assert _tree(tmp_path) == before


def test_training_into_a_run_folder_another_run_writes_refuses(tmp_path, capfd):
    from metasr.training.cli import train_main

    data = tmp_path / "data"
    data.mkdir()
    _png(data, "a.png")
    out = tmp_path / "run"
    with output_lock(out, "run folder"):
        before = _tree(tmp_path)
        rc = train_main(["--data", f"folder:{data}", "--out", str(out), "--steps", "1", "--no-progress"])
        _one_line_refusal(capfd, rc, "metasr-train", "in use by another metasr run")
        assert _tree(tmp_path) == before


@pytest.mark.parametrize("device", ["cuda:²", "cpu:1", "tensorrt"])
def test_training_devices_use_the_one_device_parser(tmp_path, capfd, device):
    from metasr.training.cli import train_main

    data = tmp_path / "data"
    data.mkdir()
    _png(data, "a.png")
    before = _tree(tmp_path)
    rc = train_main(["--data", f"folder:{data}", "--out", str(tmp_path / "run"), "--device", device, "--steps", "1"])
    _one_line_refusal(capfd, rc, "metasr-train", "device")
    assert _tree(tmp_path) == before


# -- fp16 graphs come from metasr-export, not from the runtime ----------------------------------------


def test_fp16_graphs_are_made_by_export_and_loaded_without_onnx(tmp_path, tiny_export_dir, monkeypatch):
    import sys

    from metasr.runtime.upscaler import Upscaler

    up = Upscaler(tiny_export_dir, device="cpu", threads=1)
    monkeypatch.setitem(sys.modules, "onnx", None)  # the torch-free runtime: no onnx package
    for name in ("feature_extractor", "upscale", "upscale_pixels"):
        half = up.manifest["graphs"][name]["fp16_file"]
        assert up._fp16_bytes(name) == (tiny_export_dir / half).read_bytes()
    old = _model_copy(tmp_path, tiny_export_dir, lambda m: [g.pop("fp16_file", None) for g in m["graphs"].values()])
    with pytest.raises(ModelError, match="re-export it with metasr-export"):
        Upscaler(old, device="cpu", threads=1)._fp16_bytes("feature_extractor")


def test_an_output_folder_inside_the_input_holding_inputs_is_refused(tmp_path, tiny_export_dir, capfd):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    _png(folder, "a.png")
    _png(folder / "sub", "c.png")  # an input, inside what is asked to be the output folder
    before = _tree(tmp_path)
    rc = run_main(["-i", str(folder), "-s", "2", "-o", str(folder / "sub"), "-q", "--model", str(tiny_export_dir)])
    _one_line_refusal(capfd, rc, "metasr-run", "c.png")
    assert _tree(tmp_path) == before
    # an output folder inside the input that holds only this command's outputs is resumed as before
    args = ["-i", str(folder), "-s", "2", "-o", str(folder / "out"), "-q", "--model", str(tiny_export_dir)]
    assert run_main(args) == 0 and run_main(args) == 0, capfd.readouterr().err
