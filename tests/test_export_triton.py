"""``metasr-export --triton DIR``: the export and, beside it, a Triton model repository serving it."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import pytest

from metasr.export.cli import main as export_main
from metasr.serve.repository import RepositoryOptions, model_config_text, write_repository


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_export_writes_the_repository_metasr_serve_writes(tiny_checkpoint, tmp_path, capsys) -> None:
    out, repo = tmp_path / "export", tmp_path / "repo"
    rc = export_main(["--ckpt", str(tiny_checkpoint), "--out", str(out), "--triton", str(repo), "--no-verify"])
    assert rc == 0, capsys.readouterr().err
    assert f"tritonserver --model-repository {repo}" in capsys.readouterr().err
    # the same bytes as metasr-serve --write-repository of this export with the same options
    reference = tmp_path / "reference"
    write_repository(reference, out, RepositoryOptions(device="auto"))
    assert _tree(repo) == _tree(reference)
    manifest = json.loads((out / "manifest.json").read_text())
    for name in ["manifest.json", *manifest["files"]]:
        assert filecmp.cmp(out / name, repo / "metasr" / "1" / "export" / name, shallow=False)
    config = (repo / "metasr" / "config.pbtxt").read_text()
    assert config == model_config_text(
        manifest, config.split('"model_id" value: { string_value: "')[1][:64], "export", RepositoryOptions("auto")
    )
    assert 'backend: "python"' in config and "kind: KIND_AUTO" in config


def test_triton_device_and_instances_reach_the_config(tiny_checkpoint, tmp_path, capsys) -> None:
    repo = tmp_path / "repo"
    argv = ["--ckpt", str(tiny_checkpoint), "--out", str(tmp_path / "e"), "--no-verify", "--triton", str(repo)]
    assert export_main([*argv, "--triton-device", "cuda:1", "--triton-instances", "3"]) == 0, capsys.readouterr().err
    config = (repo / "metasr" / "config.pbtxt").read_text()
    assert "count: 3 kind: KIND_GPU gpus: [ 1 ]" in config and '"device" value: { string_value: "cuda" }' in config


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("full", ["--triton", "{repo}"], "is not an empty folder"),
        ("file", ["--triton", "{repo}"], "is not an empty folder"),
        ("", ["--triton", "{out}"], "overlaps the export folder"),
        ("", ["--triton", "{out}/repo"], "overlaps the export folder"),
        ("", ["--triton", "{repo}", "--triton-device", "tpu"], "unknown device"),
        ("", ["--triton-device", "cuda"], "apply to --triton DIR"),
    ],
)
def test_bad_triton_options_fail_before_any_work(tiny_checkpoint, tmp_path, capsys, setup, args, message) -> None:
    out, repo = tmp_path / "export", tmp_path / "repo"
    if setup == "full":
        repo.mkdir()
        (repo / "keep.txt").write_text("mine")
    elif setup == "file":
        repo.write_text("mine")
    args = [a.format(repo=repo, out=out) for a in args]
    rc = export_main(["--ckpt", str(tiny_checkpoint), "--out", str(out), "--no-verify", *args])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()  # nothing exported
    if setup == "full":
        assert (repo / "keep.txt").read_text() == "mine" and len(list(repo.iterdir())) == 1
    elif setup == "file":
        assert repo.read_text() == "mine"
