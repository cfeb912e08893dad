"""metasr.export: the export folder contract, safe publishing, bad input, fixed-scale archs, CLI."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from conftest import make_checkpoint  # noqa: E402

from metasr.core.errors import ModelError, OutputError  # noqa: E402
from metasr.export import EXPORTABLE_ARCHS, ExportResult, export_model  # noqa: E402
from metasr.export.cli import main  # noqa: E402
from metasr.export.manifest import read_manifest, sha256_file, verify_files, write_manifest  # noqa: E402
from metasr.export.onnx_graphs import receptive_radius  # noqa: E402
from metasr.export.verify import ParityError, UpscaleSessions, ort_session, phantom  # noqa: E402
from metasr.training import build_model, model_config, save_checkpoint  # noqa: E402

# What TensorRT 10 and 11's ONNX parser imports with static shapes, written out independently of
# the exporter's own list so the test does not just compare a list with itself.
META_FILES = ("feature_extractor.onnx", "kernels.onnx", "upscale.onnx", "upscale_pixels.onnx")
#: fp16 copies written by metasr-export for CUDA fp16 (the runtime never converts graphs itself).
FP16_FILES = ("feature_extractor.fp16.onnx", "upscale.fp16.onnx", "upscale_pixels.fp16.onnx")
TRT_IMPORTABLE = {
    "Add",
    "MatMul",
    "Pad",
    "Slice",
    "Shape",
    "Sub",
    "Mul",
    "Div",
    "Conv",
    "Relu",
    "PRelu",
    "Gather",
    "Unsqueeze",
    "ReduceSum",
    "Constant",
    "Identity",
    "DepthToSpace",
    "Cast",
    "Reshape",
    "Concat",
    "Transpose",
}
FORBIDDEN = {
    "Col2Im",
    "NonZero",
    "Unique",
    "Loop",
    "If",
    "Scan",
    "Resize",
    "GridSample",
    "Range",
    "ConstantOfShape",
    "Expand",
    "TopK",
    "Compress",
    "Where",
}


def _checkpoint(path: Path, arch: str = "metasrgan", seed: int = 0, **args) -> Path:
    # the shared maker, undamped: these tests compare graphs before any clipping
    return make_checkpoint(path, arch, seed, step=7, damp=False, **args)


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    """A verified export into the checkpoint's own folder (the default --out)."""
    folder = tmp_path_factory.mktemp("meta")
    ckpt = _checkpoint(folder / "best.pt")
    return export_model(ckpt, verify=True, sizes=((1, 13, 17),), scales=("1.5", "2.7", "4"))


# ---- contract --------------------------------------------------------------------------------


def test_export_writes_contract_files_and_manifest(exported: ExportResult) -> None:
    out = exported.out_dir
    assert sorted(p.name for p in out.iterdir()) == sorted(["best.pt", "manifest.json", *META_FILES, *FP16_FILES])
    m = read_manifest(out)
    assert (m["format"], m["format_version"], m["arch"], m["kind"], m["fixed_scale"]) == (
        "metasr-export",
        2,
        "metasrgan",
        "meta",
        None,
    )
    assert m["scale_range"] == [1.1, 4.0] and m["features"] == 64 and m["index_dtype"] == "int64"
    assert m["normalization"] == {"mean": pytest.approx(0.37), "std": pytest.approx(0.117)}
    assert m["receptive_radius"] == 16  # 4 (9x9 head) + 5 blocks x 2 + 1 (tail) + 1 (upscale 3x3)
    assert m["opset"] == 17 and m["tensorrt"] is None
    assert m["checkpoint"]["sha256"] == sha256_file(out / "best.pt") and m["checkpoint"]["step"] == 7
    assert m["checkpoint"]["file"] == "best.pt" and m["checkpoint"]["config"]["arch"] == "metasrgan"
    assert set(m["files"]) == {*META_FILES, *FP16_FILES}
    assert {g: s.get("fp16_file") for g, s in m["graphs"].items()} == {
        "feature_extractor": "feature_extractor.fp16.onnx",
        "kernels": None,
        "upscale": "upscale.fp16.onnx",
        "upscale_pixels": "upscale_pixels.fp16.onnx",
    }
    assert m["upscale_form"] == "class-kernel"
    assert (m["graphs"]["upscale"]["form"], m["graphs"]["upscale_pixels"]["form"]) == ("classes", "pixels")
    verify_files(out, m)  # every sha256 matches
    assert m["parity"]["max_abs_error"] <= m["parity"]["tolerance"] == 1e-4 and m["parity"]["cases"] > 0
    assert {"metasr", "torch", "onnx", "onnxruntime"} <= set(m["tools"])
    assert m["graphs"]["upscale"]["inputs"][2] == {"name": "row_index", "dtype": "int64", "shape": ["H"]}
    assert m["graphs"]["kernels"]["outputs"] == [{"name": "kernels", "dtype": "float32", "shape": ["K", 576]}]
    assert exported.files[-1] == out / "manifest.json" and exported.seconds > 0


def _dims(value_info: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_graph_io_matches_contract_with_dynamic_dims(exported: ExportResult) -> None:
    fe = onnx.load(str(exported.out_dir / "feature_extractor.onnx"))
    kg = onnx.load(str(exported.out_dir / "kernels.onnx"))
    assert [(i.name, _dims(i)) for i in fe.graph.input] == [("lr", ["N", 1, "h", "w"])]
    assert [(o.name, _dims(o)) for o in fe.graph.output] == [("features", ["N", 64, "h", "w"])]
    assert [(i.name, _dims(i)) for i in kg.graph.input] == [
        ("inv_scale", [1]),
        ("row_offset", ["P"]),
        ("col_offset", ["Q"]),
    ]
    assert [(o.name, _dims(o)) for o in kg.graph.output] == [("kernels", ["K", 576])]
    for name in ("upscale.onnx", "upscale_pixels.onnx"):
        up = onnx.load(str(exported.out_dir / name))
        assert [(i.name, _dims(i)) for i in up.graph.input] == [
            ("features", ["N", 64, "h", "w"]),
            ("kernels", ["K", 576]),
            ("row_index", ["H"]),
            ("row_kernel", ["H"]),
            ("col_index", ["W"]),
            ("col_kernel", ["W"]),
        ]
        types = {i.name: i.type.tensor_type.elem_type for i in up.graph.input}
        assert {types[k] for k in ("row_index", "col_index", "row_kernel", "col_kernel")} == {onnx.TensorProto.INT64}
        assert types["features"] == types["kernels"] == onnx.TensorProto.FLOAT
        assert [(o.name, _dims(o)) for o in up.graph.output] == [("sr", ["N", 1, "H", "W"])]
    for model in (fe, kg, up):
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) <= 18
        assert not model.graph.initializer or all(
            i.name not in {x.name for x in model.graph.input} for i in model.graph.initializer
        )


@pytest.mark.parametrize("name", ["upscale.onnx", "upscale_pixels.onnx"])
def test_output_shape_follows_from_input_shapes_only(exported: ExportResult, name: str) -> None:
    # strict symbolic shape inference must derive sr = [N, 1, H, W] from the input dims alone
    up = onnx.shape_inference.infer_shapes(onnx.load(str(exported.out_dir / name)), strict_mode=True, data_prop=True)
    inferred = {v.name: _dims(v) for v in list(up.graph.value_info) + list(up.graph.output)}
    assert inferred["sr"] == ["N", 1, "H", "W"]
    assert inferred["kernel_number"] == ["H", "W"]  # built from two 1-D arrays, nothing [H, W] is fed


def test_every_node_is_tensorrt_importable(exported: ExportResult) -> None:
    for name in ("upscale.onnx", "upscale_pixels.onnx", "kernels.onnx", "feature_extractor.onnx"):
        model = onnx.load(str(exported.out_dir / name))
        for node in model.graph.node:
            assert node.domain in ("", "ai.onnx"), f"{name}: custom-domain node {node.domain}.{node.op_type}"
            assert node.op_type in TRT_IMPORTABLE, f"{name}: node {node.name} uses {node.op_type}"
            assert node.op_type not in FORBIDDEN
    ops = [n.op_type for n in onnx.load(str(exported.out_dir / "upscale.onnx")).graph.node]
    # the class form: 9 shifted slices -> one MatMul with all kernels -> one Gather of the products
    assert "Conv" not in ops and ops.count("MatMul") == 1 and ops.count("Gather") == 1 and ops.count("Slice") >= 9
    ops = [n.op_type for n in onnx.load(str(exported.out_dir / "upscale_pixels.onnx")).graph.node]
    assert "MatMul" not in ops and ops.count("Gather") == 3 and ops.count("ReduceSum") == 1


def test_kernels_are_the_wpn_with_denormalisation_folded(exported: ExportResult) -> None:
    import onnxruntime as ort

    from metasr.training import load_checkpoint

    model = load_checkpoint(exported.out_dir / "best.pt")
    session = ort.InferenceSession(str(exported.out_dir / "kernels.onnx"), providers=["CPUExecutionProvider"])
    offsets = np.array([0.0, 0.4, 0.8], np.float32)
    kernels = session.run(
        None, {"inv_scale": np.array([0.4], np.float32), "row_offset": offsets, "col_offset": offsets}
    )[0]
    with torch.no_grad():  # the WPN itself, per (row, col) offset pair, weights in unfold order c*9 + tap
        pairs = torch.tensor([[0.4, a, b] for a in offsets for b in offsets])
        ref = (model.upscale.predict_kernels(pairs) * model.std).view(9, 64, 9).transpose(1, 2).reshape(9, 576)
    np.testing.assert_allclose(kernels, ref.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch, expected", [("metasrgan", 16), ("srgan", 18)])
def test_receptive_radius_is_the_exact_gradient_support(arch: str, expected: int) -> None:
    torch.manual_seed(1)
    model = build_model(arch).eval()
    assert receptive_radius(model) == expected
    size, centre = 2 * expected + 9, expected + 4
    lr = torch.rand(1, 1, size, size, requires_grad=True)
    out = model(lr, 2)
    out[0, 0, 2 * centre, 2 * centre].backward()
    rows = torch.nonzero(lr.grad[0, 0].abs().sum(1)).ravel()
    cols = torch.nonzero(lr.grad[0, 0].abs().sum(0)).ravel()
    assert int(rows.min()) == int(cols.min()) == centre - expected
    assert int(rows.max()) == int(cols.max()) == centre + expected


def test_edsr_receptive_radius_counts_hr_convs_at_lr_scale() -> None:
    # head 1 + 2 blocks x 2 + body 1 + upsample conv 1 + HR tail 3x3 (1 HR px = 0.5 LR) -> ceil 7.5
    assert receptive_radius(build_model("edsr", features=8, num_blocks=2)) == 8


# ---- publishing: default out, re-export, refusal, force, atomic failure -----------------------


def test_reexport_of_the_same_checkpoint_needs_no_force(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "best.pt")
    first = export_model(ckpt, tmp_path / "out", verify=False)
    second = export_model(ckpt, tmp_path / "out", verify=False)
    assert first.manifest["files"] == second.manifest["files"]  # deterministic graphs
    assert (tmp_path / "best.pt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "out"]  # no temp folders left
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (tmp_path / "out" / "manifest.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_refuses_another_checkpoints_export_without_force(tmp_path: Path) -> None:
    old = _checkpoint(tmp_path / "old.pt", seed=0)
    new = _checkpoint(tmp_path / "new.pt", seed=1)
    out = tmp_path / "out"
    export_model(old, out, verify=False)
    before = _snapshot(out)
    with pytest.raises(OutputError, match="another checkpoint.*--force"):
        export_model(new, out, verify=False)
    assert _snapshot(out) == before
    replaced = export_model(new, out, verify=False, force=True)
    # a retrained checkpoint under the same name, exported into its own folder: one --force away
    (out / "best.pt").write_bytes(old.read_bytes())
    export_model(out / "best.pt", verify=False, force=True)
    (out / "best.pt").write_bytes(new.read_bytes())
    with pytest.raises(OutputError, match="earlier version of best.pt.*--force"):
        export_model(out / "best.pt", verify=False)
    replaced = export_model(out / "best.pt", verify=False, force=True)
    assert (out / "best.pt").read_bytes() == new.read_bytes()
    assert replaced.manifest["checkpoint"]["sha256"] == sha256_file(new)
    assert _snapshot(out) != before
    verify_files(out, read_manifest(out))


def test_force_removes_files_only_the_old_export_had(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "best.pt")
    out = tmp_path / "out"
    export_model(ckpt, out, verify=False)
    # pretend the previous export also had an engine (as a --trt export would)
    manifest = read_manifest(out)
    (out / "upscale.fp32.engine").write_bytes(b"engine")
    manifest["files"]["upscale.fp32.engine"] = sha256_file(out / "upscale.fp32.engine")
    manifest["checkpoint"]["sha256"] = "0" * 64
    write_manifest(out, manifest)
    (out / "notes.txt").write_text("mine")
    export_model(ckpt, out, verify=False, force=True)
    assert not (out / "upscale.fp32.engine").exists()
    assert (out / "notes.txt").read_text() == "mine"  # files the manifest never listed are left alone


def test_refuses_unidentified_graphs_without_force(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "best.pt")
    out = tmp_path / "out"
    out.mkdir()
    (out / "upscale.onnx").write_bytes(b"someone else's")
    with pytest.raises(OutputError, match="without a manifest.json"):
        export_model(ckpt, out, verify=False)
    assert (out / "upscale.onnx").read_bytes() == b"someone else's"


def test_failed_verification_leaves_nothing_new(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "best.pt")
    with pytest.raises(ParityError, match="tolerance"):
        export_model(ckpt, tmp_path / "new", tolerance=0.0, sizes=((1, 9, 11),), scales=("2.3",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]
    # over an existing export (and in the checkpoint's own folder) the old files stay as they were
    export_model(ckpt, verify=False)
    before = _snapshot(tmp_path)
    with pytest.raises(ParityError):
        export_model(ckpt, tolerance=0.0, sizes=((1, 9, 11),), scales=("2.3",))
    assert _snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)


def test_unwritable_parent_falls_back_to_a_temp_folder_inside_out(tmp_path: Path, monkeypatch) -> None:
    import metasr.export.publish as export_pkg

    ckpt = _checkpoint(tmp_path / "best.pt")
    real = export_pkg._new_dir

    def refuse_beside(parent: Path, prefix: str) -> Path:
        if Path(parent).resolve() == tmp_path.parent.resolve():
            raise PermissionError(13, "Permission denied")
        return real(parent, prefix)

    monkeypatch.setattr(export_pkg, "_new_dir", refuse_beside)
    export_model(ckpt, verify=False)  # out = the checkpoint's folder, whose parent "refuses" writes
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["best.pt", "manifest.json", *META_FILES, *FP16_FILES])
    with pytest.raises(OutputError, match="cannot write"):
        export_model(ckpt, tmp_path.parent / f"{tmp_path.name}-new", verify=False)  # new folder, parent refuses
    assert not (tmp_path.parent / f"{tmp_path.name}-new").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        export_model(ckpt, tmp_path / "file", verify=False)


# ---- fixed-scale archs -----------------------------------------------------------------------


@pytest.mark.parametrize("arch, args", [("srgan", {}), ("edsr", {"features": 16, "num_blocks": 2})])
def test_fixed_scale_archs_export_one_x2_graph(tmp_path: Path, arch: str, args: dict) -> None:
    ckpt = _checkpoint(tmp_path / f"{arch}.pt", arch, **args)
    result = export_model(ckpt, tmp_path / "out")
    m = result.manifest
    assert EXPORTABLE_ARCHS[arch] == m["kind"] == "fixed" and m["fixed_scale"] == 2 and m["arch"] == arch
    assert set(m["files"]) == {"model.onnx", "model.fp16.onnx"} and set(m["graphs"]) == {"model"}
    assert m["parity"]["max_abs_error"] <= 1e-4
    session = ort_session(result.out_dir / "model.onnx", threads=1)
    lr = phantom(2, 19, 26)
    sr = session.run(["sr"], {"lr": lr})[0]
    assert sr.shape == (2, 1, 38, 52)
    from metasr.training import load_checkpoint

    with torch.no_grad():
        ref = load_checkpoint(ckpt)(torch.from_numpy(lr), 2).numpy()
    assert np.abs(sr - ref).max() <= 1e-4


def test_checkpoint_metadata_with_tensors_is_recorded_as_json(tmp_path: Path) -> None:
    model = build_model("srgan")
    ckpt = save_checkpoint(
        tmp_path / "s.pt",
        model,
        model_config("srgan", model, {}),
        step=3,
        metrics={"psnr": torch.tensor(30.5), "curve": [torch.tensor([1.0, 2.0])]},
    )
    m = export_model(ckpt, tmp_path / "out", verify=False).manifest
    assert m["checkpoint"]["metrics"] == {"psnr": 30.5, "curve": [[1.0, 2.0]]} and m["checkpoint"]["step"] == 3
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == m


# ---- manifest --------------------------------------------------------------------------------


def test_manifest_detects_damage(exported: ExportResult, tmp_path: Path) -> None:
    m = read_manifest(exported.out_dir)
    for name in m["files"]:
        (tmp_path / name).write_bytes((exported.out_dir / name).read_bytes())
    verify_files(tmp_path, m)
    with open(tmp_path / "upscale.onnx", "r+b") as f:  # flip one byte
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(ModelError, match="upscale.onnx.*re-export"):
        verify_files(tmp_path, m)
    (tmp_path / "manifest.json").write_text(json.dumps({**m, "format_version": 99}))
    with pytest.raises(ModelError, match="format_version"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError, match="JSON"):
        read_manifest(tmp_path)


# ---- CLI ---------------------------------------------------------------------------------------


def _one_error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("metasr-export: error:"), err
    assert "Traceback" not in err[0]
    return err[0]


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("case", ["missing", "empty", "text", "truncated", "malicious", "not-metasr", "bicubic"])
def test_cli_bad_checkpoint_one_line_exit_2_nothing_written(tmp_path: Path, capsys, case: str) -> None:
    ckpt = tmp_path / "in" / "bad.pt"
    ckpt.parent.mkdir()
    marker = tmp_path / "pwned"
    if case == "empty":
        ckpt.write_bytes(b"")
    elif case == "text":
        ckpt.write_text("hello, I am not a checkpoint\n")
    elif case == "truncated":
        good = _checkpoint(tmp_path / "good.pt")
        ckpt.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        good.unlink()
    elif case == "malicious":
        torch.save({"model": _Evil(marker), "config": {"arch": "metasrgan"}}, ckpt)
    elif case == "not-metasr":
        torch.save({"weights": torch.zeros(3)}, ckpt)
    elif case == "bicubic":
        save_checkpoint(ckpt, build_model("bicubic"), {"arch": "bicubic", "args": {}})
    before = sorted(p.name for p in ckpt.parent.iterdir())
    rc = main(["--ckpt", str(ckpt), "--out", str(tmp_path / "out")])
    assert rc == 2
    line = _one_error_line(capsys)
    assert ("bad.pt" in line) and (case != "bicubic" or "nothing to export" in line)
    assert not (tmp_path / "out").exists() and not marker.exists()
    assert sorted(p.name for p in ckpt.parent.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_exports_next_to_the_checkpoint_and_summarises(tmp_path: Path, capsys) -> None:
    ckpt = _checkpoint(tmp_path / "best.pt")
    digest = sha256_file(ckpt)
    assert main(["--ckpt", str(ckpt), "--no-verify", "--opset", "18"]) == 0
    out = capsys.readouterr()
    assert "exported metasrgan to" in out.out and "upscale.onnx" in out.out and "--no-verify" in out.out
    assert sha256_file(ckpt) == digest  # the checkpoint is never touched
    m = read_manifest(tmp_path)
    assert m["opset"] == 18 and m["parity"] is None
    assert all(o.version == 18 for o in onnx.load(str(tmp_path / "upscale.onnx")).opset_import)
    # a different model in the same folder is refused, then accepted with --force
    other = _checkpoint(tmp_path / "other.pt", seed=3)
    assert main(["--ckpt", str(other), "--out", str(tmp_path), "--no-verify"]) == 2
    assert "--force" in _one_error_line(capsys)
    assert main(["--ckpt", str(other), "--out", str(tmp_path), "--no-verify", "--force"]) == 0
    assert read_manifest(tmp_path)["checkpoint"]["file"] == "other.pt"


def test_cli_usage_errors(tmp_path: Path, capsys) -> None:
    assert main(["--ckpt", str(tmp_path / "x.pt"), "--fp16"]) == 2
    assert "--trt" in _one_error_line(capsys)
    assert main(["--ckpt", str(tmp_path / "x.pt"), "--opset", "20"]) == 2
    assert "opset" in _one_error_line(capsys)
    assert main(["--ckpt", str(tmp_path / "x.pt"), "--trt", "--min-size", "300", "--opt-size", "256"]) == 2
    assert "min <= opt" in _one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_cli_trt_without_tensorrt_writes_onnx_and_exits_2(tmp_path: Path, capsys) -> None:
    from metasr.core.errors import DependencyError
    from metasr.export.tensorrt import check_available

    try:
        check_available()
    except DependencyError:
        pass
    else:
        pytest.skip("TensorRT and a GPU are available here; the fallback path is not reachable")
    ckpt = _checkpoint(tmp_path / "best.pt")
    rc = main(["--ckpt", str(ckpt), "--out", str(tmp_path / "out"), "--trt", "--no-verify"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("metasr-export: error: TensorRT engines were not built")
    assert "complete and verified" in err[-1]
    m = read_manifest(tmp_path / "out")
    verify_files(tmp_path / "out", m)
    assert m["tensorrt"] is None and set(m["files"]) == {*META_FILES, *FP16_FILES}
    session = UpscaleSessions.load(tmp_path / "out", threads=1)
    feats = np.zeros((1, 64, 5, 6), np.float32)
    assert session.run(feats, "2").shape == (1, 1, 10, 12)


def test_parity_report_fails_on_nan_and_names_the_worst_case() -> None:
    from metasr.export.verify import ParityReport

    report = ParityReport(tolerance=1e-4)
    report.add("a x2", 1e-6)
    report.raise_if_failed("g")  # within tolerance
    report.add("b x3", float("nan"))
    with pytest.raises(ParityError, match="b x3"):
        report.raise_if_failed("g")


# ---- CLI conventions, damaged checkpoints and manifests ------------------------------------------


def test_cli_version_and_quiet(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("metasr-export ")
    assert main(["--ckpt", str(tiny_checkpoint), "--out", str(tmp_path / "q"), "--no-verify", "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert main(["--ckpt", str(tiny_checkpoint), "--out", str(tmp_path / "q"), "-q", "-v"]) == 2
    assert "either --quiet or --verbose" in capsys.readouterr().err


@pytest.mark.parametrize(
    "config, message",
    [
        ({"arch": ["metasrgan"], "args": {}}, "cannot be exported|architecture"),
        ({"arch": "metasrgan", "args": {"features": "wide"}}, "features is .wide.; expected a whole number"),
    ],
)
def test_checkpoint_with_a_damaged_config_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: dict, message: str
) -> None:
    ckpt = save_checkpoint(tmp_path / "bad.pt", build_model("metasrgan", features=8, num_blocks=1), config)
    assert main(["--ckpt", str(ckpt), "--out", str(tmp_path / "out"), "--no-verify"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("metasr-export: error:") and "Traceback" not in err[0]
    assert re.search(message, err[0]) and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"scale_range": [float("nan"), 4.0]}, "scale_range must be"),
        ({"scale_range": [1.1, float("inf")]}, "scale_range must be"),
        ({"scale_range": [4.0, 1.1]}, "scale_range must be"),
        ({"features": 10**9}, "features must be an integer from 1 to 4096"),
        ({"receptive_radius": -3}, "receptive_radius must be an integer"),
        ({"receptive_radius": 2.5}, "receptive_radius must be an integer"),
        ({"format_version": 1}, "format_version 1 is not supported .* re-export the model with metasr-export"),
        ({"upscale_form": "identity"}, "upscale_form 'identity' .* re-export the model with metasr-export"),
    ],
)
def test_manifest_with_absurd_numbers_or_an_old_form_is_refused(
    exported: ExportResult, tmp_path: Path, change: dict, message: str
) -> None:
    bad = dict(exported.manifest, **change)
    with pytest.raises(ModelError, match=message):
        write_manifest(tmp_path, bad)  # never written
    assert not (tmp_path / "manifest.json").exists()
    (tmp_path / "manifest.json").write_text(json.dumps(bad))  # Python writes NaN; the reader refuses it
    with pytest.raises(ModelError, match=message):
        read_manifest(tmp_path)


def test_re_export_is_reproducible_and_names_the_model(exported: ExportResult, tmp_path: Path) -> None:
    """The same checkpoint exported again: byte-identical graphs, the same model id, the exporter's version."""
    from metasr.core.manifest import model_id

    again = export_model(
        exported.out_dir / "best.pt", tmp_path / "copy", verify=True, sizes=((1, 13, 17),), scales=("2",)
    )
    first = json.loads((exported.out_dir / "manifest.json").read_text())
    second = json.loads((again.out_dir / "manifest.json").read_text())
    assert first["files"] == second["files"]  # every graph byte-identical
    assert model_id(first) == model_id(second)
    assert first["name"] == exported.out_dir.name and second["name"] == "copy"
    assert isinstance(first["tools"]["metasr"], str) and first["tools"]["metasr"]
