"""TensorRT engines and GPU parity.

CPU parts always run: optimisation-profile bounds, the fp16 graph used for TensorRT 11's strongly
typed networks (checked in ONNX Runtime CPU, which runs fp16 graphs), and the clear error when
TensorRT is missing. GPU parts (ORT vs TensorRT fp32 <= 1e-3, fp16 PSNR >= 45 dB against fp32,
ORT CUDA vs CPU) skip with the reason where TensorRT or a CUDA GPU is absent.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from conftest import make_checkpoint  # noqa: E402

from metasr.core.errors import DependencyError  # noqa: E402
from metasr.export import Profiles, export_model  # noqa: E402
from metasr.export.manifest import read_manifest, verify_files  # noqa: E402
from metasr.export.tensorrt import check_available, input_profiles, to_fp16  # noqa: E402
from metasr.export.verify import UpscaleSessions, ort_session, phantom, upscale_feeds  # noqa: E402

SCALES = ("1.1", "1.8", "2", "2.3", "3", "3.7", "4")
HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def _checkpoint(path: Path) -> Path:
    return make_checkpoint(path)


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_model(_checkpoint(tmp_path_factory.mktemp("trt") / "best.pt"), verify=False).out_dir


# ---- CPU: profiles, fp16 graph, availability ---------------------------------------------------


def test_profiles_are_validated_and_cover_every_dynamic_input() -> None:
    with pytest.raises(ValueError, match="min <= opt <= max"):
        Profiles(min_size=64, opt_size=32)
    with pytest.raises(ValueError, match="batch"):
        Profiles(opt_batch=4, max_batch=2)
    p = Profiles(min_size=8, opt_size=64, max_size=128, opt_batch=1, max_batch=2, max_hr_size=256)
    fe = input_profiles("feature_extractor", 64, p)
    assert fe == {"lr": ((1, 1, 8, 8), (1, 1, 64, 64), (2, 1, 128, 128))}
    for name in ("upscale", "upscale_pixels"):
        up = input_profiles(name, 64, p)
        assert set(up) == {"features", "kernels", "row_index", "row_kernel", "col_index", "col_kernel"}
        assert up["features"][2] == (2, 64, 128, 128) and up["row_index"] == ((1,), (128,), (256,))
        assert up["kernels"] == ((1, 576), (4, 576), (64 * 64, 576))
        for lo, opt, hi in up.values():
            assert all(a <= b <= c for a, b, c in zip(lo, opt, hi))
    assert input_profiles("kernels", 64, p) == {"row_offset": ((1,), (2,), (64,)), "col_offset": ((1,), (2,), (64,))}
    with pytest.raises(ValueError, match="classes"):
        Profiles(opt_classes=8, max_classes=4)


def test_fp16_graph_keeps_the_float32_contract_and_is_accurate(onnx_export: Path, tmp_path: Path) -> None:
    for name in ("feature_extractor", "upscale", "upscale_pixels"):
        half = to_fp16(onnx.load(str(onnx_export / f"{name}.onnx")))
        onnx.checker.check_model(half, full_check=True)
        inits = [i for i in half.graph.initializer if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
        assert inits and all(i.data_type == onnx.TensorProto.FLOAT16 for i in inits)
        io = list(half.graph.input) + list(half.graph.output)
        assert {v.type.tensor_type.elem_type for v in io} <= {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64}
        onnx.save(half, str(tmp_path / f"{name}.onnx"))
    fe32, fe16 = (ort_session(d / "feature_extractor.onnx", threads=1) for d in (onnx_export, tmp_path))
    kernels = ort_session(onnx_export / "kernels.onnx", threads=1)  # fp32 on every device
    up32 = {n: ort_session(onnx_export / f"{n}.onnx", threads=1) for n in ("upscale", "upscale_pixels")}
    up16 = {n: ort_session(tmp_path / f"{n}.onnx", threads=1) for n in ("upscale", "upscale_pixels")}
    lr = phantom(1, 40, 48)
    f32, f16 = fe32.run(["features"], {"lr": lr})[0], fe16.run(["features"], {"lr": lr})[0]
    assert f16.dtype == np.float32
    for scale in ("1.5", "2.3", "4"):
        for name in up32:
            ref = up32[name].run(["sr"], upscale_feeds(kernels, f32, scale))[0]
            half = up16[name].run(["sr"], upscale_feeds(kernels, f16, scale))[0]
            assert half.shape == ref.shape and half.dtype == np.float32
            assert _psnr(half, ref) >= 45.0


def test_trt_unavailable_is_one_clear_error() -> None:
    try:
        check_available()
    except DependencyError as e:
        message = str(e)
        assert "\n" not in message and ("tensorrt" in message.lower())
        assert "pip install" in message or "GPU" in message
    else:
        pytest.skip("TensorRT and a CUDA GPU are available here")


def test_library_trt_fails_up_front_without_writing(tmp_path: Path) -> None:
    if HAVE_TRT:
        pytest.skip("TensorRT is installed; the up-front failure needs it absent")
    ckpt = _checkpoint(tmp_path / "best.pt")
    with pytest.raises(DependencyError, match="TensorRT"):
        export_model(ckpt, tmp_path / "out", trt=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


# ---- CPU: the engine-building logic against a stand-in TensorRT module -------------------------


def _fake_tensorrt(version: str, has_fp16_flag: bool):  # noqa: C901 (one stand-in class per TensorRT type)
    """A stand-in ``tensorrt`` module that records what the builder was asked to do."""
    import enum
    import types

    log: dict = {"flags": set(), "shapes": {}, "parsed": [], "network_flags": []}
    creation = enum.IntEnum(
        "NetworkDefinitionCreationFlag",
        {"STRONGLY_TYPED": 5} if not has_fp16_flag else {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 5},
    )
    builder_flag = enum.Enum("BuilderFlag", {"FP16": 0, "TF32": 1} if has_fp16_flag else {"TF32": 1})

    class Network:
        def __init__(self) -> None:
            self.inputs: list[str] = []

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int):
            return types.SimpleNamespace(name=self.inputs[i])

    class Parser:
        def __init__(self, network: Network, logger) -> None:
            self.network, self.num_errors = network, 0

        def parse(self, data: bytes) -> bool:
            model = onnx.load_from_string(data)
            log["parsed"].append(model)
            self.network.inputs = [i.name for i in model.graph.input]
            return True

    class Cache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self) -> bytes:
            return self.data + b"+timed"

    class Config:
        def set_memory_pool_limit(self, pool, size: int) -> None:
            log["workspace"] = size

        def set_flag(self, flag) -> None:
            log["flags"].add(flag.name)

        def create_timing_cache(self, data: bytes) -> Cache:
            log["cache_in"] = data
            return Cache(data)

        def set_timing_cache(self, cache: Cache, ignore_mismatch: bool) -> None:
            self.cache = cache

        def get_timing_cache(self) -> Cache:
            return self.cache

        def add_optimization_profile(self, profile) -> None:
            log["shapes"].update(profile.shapes)

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict = {}

        def set_shape(self, name: str, lo, opt, hi) -> None:
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class Builder:
        def __init__(self, logger) -> None:
            pass

        def create_network(self, flags: int) -> Network:
            log["network_flags"].append(flags)
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            return b"ENGINE:" + ",".join(network.inputs).encode()

    class Logger:
        ERROR, WARNING = 1, 2

        def __init__(self, level: int) -> None:
            pass

    fake = types.SimpleNamespace(
        __version__=version,
        Logger=Logger,
        Builder=Builder,
        OnnxParser=Parser,
        NetworkDefinitionCreationFlag=creation,
        BuilderFlag=builder_flag,
        MemoryPoolType=types.SimpleNamespace(WORKSPACE=0),
    )
    return fake, log


@pytest.mark.parametrize("version, has_flag", [("10.7.0", True), ("11.0.0", False)])
def test_engine_build_logic_with_a_stand_in_tensorrt(
    onnx_export: Path, tmp_path: Path, monkeypatch, version: str, has_flag: bool
) -> None:
    import sys

    fake, log = _fake_tensorrt(version, has_flag)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    out = tmp_path / "out"
    profiles = Profiles(min_size=8, opt_size=64, max_size=128, max_batch=2, max_hr_size=256)
    result = export_model(onnx_export / "best.pt", out, trt=True, fp16=True, profiles=profiles, verify=False)
    m = result.manifest
    assert m["tensorrt"]["precision"] == "fp16" and m["tensorrt"]["profiles"]["max_hr_size"] == 256
    graphs = ("feature_extractor", "kernels", "upscale", "upscale_pixels")
    engines = {f"{g}.fp16.engine" for g in graphs}
    contexts = {f"{g}.fp16_ctx.onnx" for g in graphs}
    halves = {f"{g}.fp16.onnx" for g in graphs if g != "kernels"}  # CUDA fp16 graphs, made by every export
    assert set(m["files"]) == {f"{g}.onnx" for g in graphs} | engines | contexts | halves
    verify_files(out, m)
    # the EP-context models name their engine and keep the graph's inputs and outputs
    for g in graphs:
        assert m["tensorrt"]["engines"][g]["context"] == f"{g}.fp16_ctx.onnx"
        ctx, src = onnx.load(str(out / f"{g}.fp16_ctx.onnx")), onnx.load(str(out / f"{g}.onnx"))
        (node,) = ctx.graph.node
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert (node.op_type, node.domain) == ("EPContext", "com.microsoft")
        assert attrs["ep_cache_context"] == f"{g}.fp16.engine".encode() and attrs["embed_mode"] == 0
        assert attrs["source"] == b"TensorrtExecutionProvider" and attrs["ep_sdk_version"] == version.encode()
        assert [i.name for i in ctx.graph.input] == [i.name for i in src.graph.input]
        assert [o.name for o in ctx.graph.output] == [o.name for o in src.graph.output]
    assert m["tensorrt"]["version"] == version and "gpu" in m["tensorrt"]
    assert (out / "upscale.fp16.engine").read_bytes().startswith(b"ENGINE:features,kernels,row_index")
    assert log["shapes"]["features"] == ((1, 64, 8, 8), (1, 64, 64, 64), (2, 64, 128, 128))
    assert log["shapes"]["lr"] == ((1, 1, 8, 8), (1, 1, 64, 64), (2, 1, 128, 128))
    assert "inv_scale" not in log["shapes"]
    fp16_inits = [
        any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer) for model in log["parsed"]
    ]
    if has_flag:  # TensorRT 10: fp32 graph, the builder flag does the rest
        assert log["flags"] == {"FP16"} and not any(fp16_inits)
        assert all(f == 1 << 0 for f in log["network_flags"])
    else:  # TensorRT 11: no flag; an fp16 graph in a strongly typed network
        assert log["flags"] == set() and all(fp16_inits)
        assert all(f == 1 << 5 for f in log["network_flags"])
    # the timing cache is published for the next build and reused by it
    assert (out / "trt_timing.cache").read_bytes() == b"+timed" * 4  # one per graph
    export_model(onnx_export / "best.pt", out, trt=True, profiles=profiles, verify=False)
    assert log["cache_in"].startswith(b"+timed" * 4)
    assert not (out / "upscale.fp16.engine").exists() and (out / "upscale.fp32.engine").exists()


# ---- GPU: engines and parity -------------------------------------------------------------------


def _require_gpu():
    if not HAVE_TRT:
        pytest.skip("TensorRT not installed (pip install 'metasr[trt]' on a machine with an NVIDIA GPU)")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU (or this torch build has no CUDA, needed to hold engine buffers)")
    try:
        return check_available()
    except DependencyError as e:
        pytest.skip(str(e))


class _Engine:
    """Minimal TensorRT runner: torch CUDA tensors as buffers, one optimisation profile."""

    def __init__(self, trt, path: Path) -> None:
        self.trt = trt
        self.engine = trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(path.read_bytes())
        assert self.engine is not None, f"cannot deserialize {path}"
        self.context = self.engine.create_execution_context()

    def run(self, feeds: dict[str, np.ndarray], output: str) -> np.ndarray:
        trt, keep = self.trt, []
        for name, array in feeds.items():
            array = np.ascontiguousarray(array.astype(trt.nptype(self.engine.get_tensor_dtype(name))))
            tensor = torch.from_numpy(array).cuda()
            keep.append(tensor)
            self.context.set_input_shape(name, tuple(array.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        shape = tuple(self.context.get_tensor_shape(output))
        result = torch.empty(shape, dtype=torch.float32, device="cuda")
        self.context.set_tensor_address(output, result.data_ptr())
        stream = torch.cuda.current_stream()
        assert self.context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return result.cpu().numpy()


PROFILES = Profiles(min_size=8, opt_size=64, max_size=128, opt_batch=1, max_batch=2, max_hr_size=512)


@pytest.fixture(scope="module")
def engines(onnx_export: Path, tmp_path_factory: pytest.TempPathFactory):
    trt = _require_gpu()
    ckpt = onnx_export / "best.pt"
    built = {}
    for precision in ("fp32", "fp16"):
        out = tmp_path_factory.mktemp(f"engines-{precision}")
        result = export_model(
            ckpt, out, trt=True, fp16=precision == "fp16", profiles=PROFILES, sizes=((1, 16, 20),), scales=("2", "3.7")
        )
        built[precision] = result.out_dir
    return trt, built


def test_engines_are_listed_and_hashed_in_the_manifest(engines) -> None:
    _, built = engines
    for precision, out in built.items():
        m = read_manifest(out)
        verify_files(out, m)
        assert m["tensorrt"]["precision"] == precision and m["tensorrt"]["profiles"]["max_size"] == 128
        assert {f"feature_extractor.{precision}.engine", f"upscale.{precision}.engine"} <= set(m["files"])
        assert (out / "trt_timing.cache").is_file() and "trt_timing.cache" not in m["files"]


def _run_all(trt, out: Path, precision: str, lr: np.ndarray) -> dict[str, np.ndarray]:
    fe = _Engine(trt, out / f"feature_extractor.{precision}.engine")
    up = _Engine(trt, out / f"upscale.{precision}.engine")
    kernels = ort_session(out / "kernels.onnx", threads=1)
    feats = fe.run({"lr": lr}, "features")
    return {s: up.run(upscale_feeds(kernels, feats, s), "sr") for s in SCALES}


def _ort_all(onnx_export: Path, lr: np.ndarray) -> dict[str, np.ndarray]:
    fe = ort_session(onnx_export / "feature_extractor.onnx", threads=1)
    up = UpscaleSessions.load(onnx_export, threads=1)
    feats = fe.run(["features"], {"lr": lr})[0]
    return {s: up.run(feats, s, "classes") for s in SCALES}


@pytest.mark.gpu
def test_tensorrt_fp32_matches_onnx_runtime(engines, onnx_export: Path) -> None:
    trt, built = engines
    lr = phantom(2, 37, 50)
    ref, got = _ort_all(onnx_export, lr), _run_all(trt, built["fp32"], "fp32", lr)
    for scale in SCALES:
        assert got[scale].shape == ref[scale].shape
        assert np.abs(got[scale] - ref[scale]).max() <= 1e-3, scale


@pytest.mark.gpu
def test_tensorrt_fp16_psnr_against_fp32(engines, onnx_export: Path) -> None:
    trt, built = engines
    lr = phantom(1, 64, 64, seed=3)
    ref, got = _ort_all(onnx_export, lr), _run_all(trt, built["fp16"], "fp16", lr)
    for scale in SCALES:
        assert _psnr(got[scale], ref[scale]) >= 45.0, scale


@pytest.mark.gpu
def test_onnx_runtime_cuda_matches_cpu(onnx_export: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("no CUDA GPU (onnxruntime has no CUDA provider here)")
    providers = [("CUDAExecutionProvider", {"use_tf32": 0}), "CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    fe = ort.InferenceSession(str(onnx_export / "feature_extractor.onnx"), options, providers=providers)
    if fe.get_providers()[0] != "CUDAExecutionProvider":
        pytest.skip("no CUDA GPU (onnxruntime fell back to CPU)")
    up = ort.InferenceSession(str(onnx_export / "upscale.onnx"), options, providers=providers)
    kernels = ort_session(onnx_export / "kernels.onnx", threads=1)
    lr = phantom(2, 37, 50)
    ref = _ort_all(onnx_export, lr)
    feats = fe.run(["features"], {"lr": lr})[0]
    for scale in SCALES:
        got = up.run(["sr"], upscale_feeds(kernels, feats, scale))[0]
        assert np.abs(got - ref[scale]).max() <= 1e-4, scale  # TF32 off: fp32 means fp32


def test_engines_run_only_where_they_were_built(monkeypatch: pytest.MonkeyPatch) -> None:
    from metasr.core.choices import Precision
    from metasr.runtime import backends

    monkeypatch.setattr(backends, "gpu_name", lambda: "NVIDIA H200")
    monkeypatch.setattr(backends, "tensorrt_version", lambda: "10.13.0")
    engines = {
        g: {"file": f"{g}.fp16.engine", "context": f"{g}.fp16_ctx.onnx"} for g in ("feature_extractor", "upscale")
    }
    info = {"gpu": "NVIDIA H200", "version": "10.13.0", "precision": "fp16", "engines": engines}
    assert backends.engine_mismatch(info, Precision.FP16) is None
    assert backends.engine_mismatch(None, Precision.FP16) == "the export has no TensorRT engines"
    assert backends.engine_mismatch(info, Precision.FP32) == "they are fp16 engines and fp32 was requested"
    other = dict(info, gpu="NVIDIA A100-SXM4-80GB")
    assert backends.engine_mismatch(other, Precision.FP16) == (
        "they were built on NVIDIA A100-SXM4-80GB with TensorRT 10.13.0, this machine has NVIDIA H200 with "
        "TensorRT 10.13.0"
    )
    monkeypatch.setattr(backends, "tensorrt_version", lambda: None)
    assert "with TensorRT not installed" in backends.engine_mismatch(info, Precision.FP16)


def test_forced_tensorrt_with_foreign_engines_is_one_line(
    onnx_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import shutil

    import onnxruntime as ort

    from metasr.core.errors import InputError
    from metasr.runtime import Upscaler, backends, upscaler

    model = tmp_path / "model"
    shutil.copytree(onnx_export, model)
    manifest = json.loads((model / "manifest.json").read_text())
    engines = {g: {"file": f"{g}.fp32.engine", "context": f"{g}.fp32_ctx.onnx"} for g in manifest["graphs"]}
    manifest["tensorrt"] = {
        "gpu": "NVIDIA A100-SXM4-80GB",
        "version": "10.3.0",
        "precision": "fp32",
        "engines": engines,
    }
    (model / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(upscaler, "tensorrt_possible", lambda: True)
    monkeypatch.setattr(upscaler, "trt_cache_dir", lambda *a: tmp_path / "cache")
    monkeypatch.setattr(backends, "gpu_name", lambda: "NVIDIA H200")
    monkeypatch.setattr(backends, "tensorrt_version", lambda: "10.13.0")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(InputError) as e:
        Upscaler(model, device="tensorrt")
    assert str(e.value) == (
        "the TensorRT engines of model cannot run here: they were built on NVIDIA A100-SXM4-80GB with TensorRT "
        "10.3.0, this machine has NVIDIA H200 with TensorRT 10.13.0; rebuild them on this machine "
        "(metasr-export --trt) or use --device cuda"
    )
