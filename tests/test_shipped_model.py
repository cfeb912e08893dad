"""The shipped models (``models/<name>``): each export is committed, intact and current.

Checks the sha256 of every exported file against ``manifest.json``, that the manifest was made
from the checkpoint that ships next to it, and that ONNX Runtime reproduces that checkpoint in
PyTorch. After a new checkpoint is committed, re-export with::

    metasr-export --ckpt models/metasrgan-mri/best.pt --force
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from metasr.models import default_model_dir, shipped_models

# Only json/hashlib at module level: the hash checks run without torch or onnx installed.
MANIFEST_NAME = "manifest.json"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module", params=shipped_models())
def shipped(request: pytest.FixtureRequest) -> tuple[dict, Path, Path, str]:
    """(manifest, checkpoint path, model folder, re-export command) of each shipped model."""
    model_dir = default_model_dir(request.param)
    reexport = f"metasr-export --ckpt {model_dir / 'best.pt'} --force"
    manifest_path = model_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        if not (model_dir / "best.pt").is_file():
            pytest.skip(f"no checkpoint shipped yet in {model_dir} (training has not committed best.pt)")
        pytest.fail(f"{model_dir / 'best.pt'} ships without an export; run: {reexport}")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    assert manifest.get("format") == "metasr-export" and manifest.get("format_version") == 2
    return manifest, model_dir / manifest["checkpoint"]["file"], model_dir, reexport


def test_shipped_export_is_the_meta_contract(shipped) -> None:
    manifest = shipped[0]
    assert manifest["arch"] == "metasrgan" and manifest["kind"] == "meta"
    assert manifest["upscale_form"] == "class-kernel"
    assert set(manifest["files"]) >= {"feature_extractor.onnx", "kernels.onnx", "upscale.onnx", "upscale_pixels.onnx"}
    assert manifest["receptive_radius"] == 16 and manifest["features"] == 64
    assert manifest["parity"] is not None and manifest["parity"]["max_abs_error"] <= manifest["parity"]["tolerance"]


def test_shipped_files_match_their_hashes(shipped) -> None:
    manifest, _, model_dir, reexport = shipped
    for name, digest in manifest["files"].items():
        assert (model_dir / name).is_file(), f"{name} is listed in the manifest but not shipped; run: {reexport}"
        assert sha256_file(model_dir / name) == digest, f"{name} does not match its manifest; run: {reexport}"


def test_shipped_export_was_made_from_the_shipped_checkpoint(shipped) -> None:
    manifest, ckpt, _, reexport = shipped
    assert ckpt.is_file(), f"the manifest names checkpoint {ckpt.name}, which is not shipped"
    assert sha256_file(ckpt) == manifest["checkpoint"]["sha256"], (
        f"the export is stale (made from another checkpoint); run: {reexport}"
    )


def test_shipped_graphs_reproduce_the_checkpoint(shipped) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from metasr.export.manifest import validate_manifest
    from metasr.export.verify import UpscaleSessions, ort_session, phantom
    from metasr.training import load_checkpoint

    manifest, ckpt, model_dir, _ = shipped
    validate_manifest(manifest)
    model = load_checkpoint(ckpt)
    fe = ort_session(model_dir / "feature_extractor.onnx", threads=1)
    up = UpscaleSessions.load(model_dir, threads=1)
    lr = phantom(2, 41, 52, seed=5)
    feats = fe.run(["features"], {"lr": lr})[0]
    for scale in ("1.5", "2", "2.7", "4", "1.51"):
        with torch.no_grad():
            ref = model(torch.from_numpy(lr), scale).numpy()
        for form in ("classes", "pixels"):
            sr = up.run(feats, scale, form)
            assert sr.shape == ref.shape
            assert np.isfinite(sr).all() and np.abs(sr - ref).max() <= 1e-4, (scale, form)


def test_shipped_models_are_found_by_name(tmp_path, monkeypatch) -> None:
    from metasr.models import DEFAULT_MODEL, default_model_dir, resolve_model_dir, shipped_models

    names = shipped_models()
    assert names[0] == DEFAULT_MODEL
    for name in names:
        assert resolve_model_dir(name) == default_model_dir(name)
        assert (resolve_model_dir(name) / "manifest.json").is_file()
    assert resolve_model_dir(None) == default_model_dir()
    monkeypatch.chdir(tmp_path)
    (tmp_path / DEFAULT_MODEL).mkdir()  # a folder of that name here is what the user means
    assert resolve_model_dir(DEFAULT_MODEL) == Path(DEFAULT_MODEL)
    assert resolve_model_dir("no-such-model") == Path("no-such-model")  # left to the manifest reader's error


def test_list_models_prints_each_shipped_model(capsys) -> None:
    from metasr.models import shipped_models
    from metasr.runtime.cli import main

    assert main(["--list-models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == shipped_models()
    assert "(default)" in lines[0] and " x1.1-4 " in lines[0] + " "
