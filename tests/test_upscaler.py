"""metasr.runtime.Upscaler on tiny random-init exports: exactness, tiling, caching, threads, errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from metasr.core.errors import InputError, ModelError, ScaleError
from metasr.core.scale import axis_mapping, hr_length
from metasr.runtime import Device, UpscaleMethod, Upscaler, check_image
from metasr.runtime.backends import tensorrt_possible, trt_cache_dir
from metasr.runtime.tiling import split_axis


@pytest.fixture(scope="module")
def up(tiny_export_dir: Path) -> Upscaler:
    return Upscaler(tiny_export_dir, device="cpu", threads=1)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(7)
    # smooth structure plus noise, so the network sees edges as well as texture
    y, x = np.mgrid[0:29, 0:37]
    return np.clip(0.5 + 0.3 * np.sin(x / 4.0) * np.cos(y / 5.0) + 0.1 * rng.standard_normal((29, 37)), 0, 1).astype(
        np.float32
    )


def _torch_reference(checkpoint: Path, batch: np.ndarray, scale: str) -> np.ndarray:
    import torch

    from metasr.training import load_checkpoint

    model = load_checkpoint(checkpoint)
    with torch.no_grad():
        return model(torch.from_numpy(batch)[:, None], scale)[:, 0].clamp(0, 1).numpy()


@pytest.mark.parametrize("scale", ["1.5", "1.8", "2.3", "3.7", "4"])
def test_matches_pytorch_with_exact_sizes(up: Upscaler, tiny_checkpoint: Path, image: np.ndarray, scale: str) -> None:
    out = up.upscale(image, scale)
    r = Fraction(scale)
    assert out.shape == (hr_length(29, r), hr_length(37, r))
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    ref = _torch_reference(tiny_checkpoint, image[None], scale)[0]
    assert np.abs(out - ref).max() <= 1e-4
    # the fixture's model leaves most pixels unclipped, so the comparison means something
    assert ((out > 0) & (out < 1)).mean() > 0.5


@pytest.fixture(scope="module")
def graph_up(tiny_export_dir: Path) -> Upscaler:
    return Upscaler(tiny_export_dir, device="cpu", threads=1, method="graph")


@pytest.fixture(scope="module")
def kernels_up(tiny_export_dir: Path) -> Upscaler:
    return Upscaler(tiny_export_dir, device="cpu", threads=1, method="kernels")


@pytest.mark.parametrize("scale", ["1.1", "1.8", "2", "2.3", "3.7", "4", "7/3", "6"])
def test_kernels_match_the_upscale_graph(
    up: Upscaler, kernels_up: Upscaler, graph_up: Upscaler, image: np.ndarray, scale: str
) -> None:
    s = up.check_scale(scale, allow_extrapolation=True)
    form = "classes" if s.q <= 5 else "pixels"
    assert kernels_up.plan(s, image.shape).mode == "kernels"
    assert graph_up.plan(s, image.shape).mode == form
    # the CPU default: the host products while the classes are few (p <= 48), measured faster there
    assert up.plan(s, image.shape).mode == "kernels"
    batch = np.stack([image, image[::-1].copy()])
    np.testing.assert_allclose(kernels_up.upscale(batch, scale), graph_up.upscale(batch, scale), atol=1e-5, rtol=0)
    assert kernels_up._kernels[s.value].classes == s.p  # p * p kernels, computed once per scale


def test_auto_method_falls_back_to_the_graph_for_many_classes(
    up: Upscaler, graph_up: Upscaler, image: np.ndarray
) -> None:
    s = up.check_scale("1.51")  # 151/100: 151 offset classes per axis, too many for host kernels
    assert up.plan(s, image.shape).mode == "pixels"
    np.testing.assert_array_equal(up.upscale(image, "1.51"), graph_up.upscale(image, "1.51"))
    assert UpscaleMethod("KERNELS") is UpscaleMethod.KERNELS
    with pytest.raises(InputError, match="unknown upscale method"):
        Upscaler(up.model_dir, method="fast")


def test_batch_equals_single_frames(up: Upscaler, image: np.ndarray) -> None:
    batch = np.stack([image, 1 - image, image[::-1].copy()])
    out = up.upscale(batch, "2.3")
    assert out.shape == (3, hr_length(29, Fraction("2.3")), hr_length(37, Fraction("2.3")))
    for k in range(3):
        np.testing.assert_allclose(out[k], up.upscale(batch[k], "2.3"), atol=1e-6)


@pytest.mark.parametrize("scale", ["1.1", "1.8", "2", "2.7", "4"])
@pytest.mark.parametrize("tile", [5, 12])
@pytest.mark.parametrize("method", ["kernels", "graph"])
def test_tiled_equals_untiled(
    tiny_export_dir: Path, up: Upscaler, image: np.ndarray, scale: str, tile: int, method: str
) -> None:
    tiled = Upscaler(tiny_export_dir, device="cpu", threads=1, tile_size=tile, method=method)
    plan = tiled.plan(scale, image.shape)
    assert len(plan.rows.tiles) > 1 and len(plan.cols.tiles) > 1  # really tiled
    np.testing.assert_allclose(tiled.upscale(image, scale), up.upscale(image, scale), atol=1e-5, rtol=0)


def test_memory_budget_drives_tiling(tiny_export_dir: Path, up: Upscaler) -> None:
    rng = np.random.default_rng(3)
    big = rng.random((96, 80)).astype(np.float32)
    small_budget = Upscaler(tiny_export_dir, device="cpu", threads=1, memory_budget_mb=4, method="graph")
    plan = small_budget.plan("3", (1, 96, 80))
    tiles = len(plan.rows.tiles) * len(plan.cols.tiles)
    assert tiles > 1  # a 4 MiB budget cannot hold a 288x240 HR upscale at once
    assert len(up.plan("3", (1, 96, 80)).rows.tiles) == 1  # the default budget can
    np.testing.assert_allclose(small_budget.upscale(big, "3"), up.upscale(big, "3"), atol=1e-5, rtol=0)


@pytest.mark.parametrize("n", [1, 2, 7, 50, 113])
@pytest.mark.parametrize("scale", ["1.1", "1.8", "2.3", "3.7", "8"])
def test_split_axis_partitions_lr_and_hr(n: int, scale: str) -> None:
    r = Fraction(scale)
    spans = split_axis(n, 6, 16, r)
    mapping = axis_mapping(n, r)
    covered = []
    for s in spans:
        assert s.ctx_start == max(0, s.start - 16) and s.ctx_stop == min(n, s.stop + 16)
        src = mapping.index[s.hr_start : s.hr_stop]
        assert ((src >= s.start) & (src < s.stop)).all()  # every HR pixel of a tile comes from its core
        covered.extend(range(s.hr_start, s.hr_stop))
    assert covered == list(range(hr_length(n, r)))  # HR spans partition the output, in order


def test_second_call_reuses_cached_plan(tiny_export_dir: Path, image: np.ndarray) -> None:
    fresh = Upscaler(tiny_export_dir, device="cpu", threads=1)
    first = fresh.upscale(image, "1.8")
    plan = fresh.plan("1.8", image.shape)
    second = fresh.upscale(image, "1.8")
    assert fresh.plan("9/5", image.shape) is plan  # the same object: nothing recomputed
    np.testing.assert_array_equal(first, second)
    for k in range(70):  # the cache is bounded
        fresh.plan("2", (1, 8 + k, 8))
    assert fresh.plan("1.8", image.shape) is not plan  # evicted by 70 newer plans


def test_thread_safe(up: Upscaler, image: np.ndarray) -> None:
    jobs = [(scale, image if k % 2 else 1 - image) for k, scale in enumerate(["1.5", "2.3", "1.8", "3", "2.3", "1.5"])]
    serial = [up.upscale(img, s) for s, img in jobs]
    results: list[np.ndarray | None] = [None] * len(jobs)
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for _ in range(2):
                results[k] = up.upscale(jobs[k][1], jobs[k][0])
        except Exception as e:  # pragma: no cover - reported below (a thread cannot raise into the test)
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got, want in zip(results, serial):
        np.testing.assert_array_equal(got, want)


def test_fixed_scale_export(tiny_srgan_export_dir: Path, image: np.ndarray) -> None:
    srgan = Upscaler(tiny_srgan_export_dir, device="cpu", threads=1)
    assert srgan.kind == "fixed" and srgan.scale_range == (2.0, 2.0)
    out = srgan.upscale(image, 2)
    assert out.shape == (58, 74)
    tiled = Upscaler(tiny_srgan_export_dir, device="cpu", threads=1, tile_size=7)
    np.testing.assert_allclose(tiled.upscale(image, "2"), out, atol=1e-5, rtol=0)
    with pytest.raises(ScaleError, match="only supports scale 2"):
        srgan.upscale(image, "1.8")


def test_properties_and_describe(up: Upscaler, tiny_export_dir: Path) -> None:
    assert up.providers == ["CPUExecutionProvider"]
    assert up.device is Device.CPU
    assert up.scale_range == (1.1, 4.0)
    assert len(up.model_id) == 64
    line = up.describe()
    assert "\n" not in line
    assert (
        line
        == f"metasr: model {tiny_export_dir.name} ({up.model_id[:12]}) on CPU (CPUExecutionProvider), 1 thread, fp32"
    )


def test_model_id_is_stable_across_copies(up: Upscaler, tiny_export_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_export_dir, tmp_path / "copy")
    assert Upscaler(copy, device="cpu").model_id == up.model_id


def test_device_enum_accepts_strings_and_rejects_typos(tiny_export_dir: Path) -> None:
    assert Device("CPU") is Device.CPU and Device("TensorRT") is Device.TENSORRT
    with pytest.raises(ValueError):
        Device("cpux")
    with pytest.raises(InputError, match="unknown device 'gpux'; choose one of: auto, cpu, cuda, tensorrt"):
        Upscaler(tiny_export_dir, device="gpux")


def test_session_creation_is_quiet(tiny_export_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # onnxruntime-gpu tries TensorRT/CUDA first on 'auto' and prints loader errors where they are missing
    model = shutil.copytree(tiny_export_dir, tmp_path / "m")
    up = Upscaler(model, device="auto")
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    if not tensorrt_possible():
        assert up.device is Device.CPU
        assert not (model / "trt_cache").exists()  # no engine folders on machines that cannot use them


def _gpu_usable() -> bool:
    return tensorrt_possible()


@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_forcing_a_missing_gpu_is_one_clear_error(
    tiny_export_dir: Path, device: str, capfd: pytest.CaptureFixture[str]
) -> None:
    if _gpu_usable():
        pytest.skip("a GPU is present; this test covers machines without one")
    with pytest.raises(InputError) as info:
        Upscaler(tiny_export_dir, device=device)
    message = str(info.value)
    assert f"device {device} was requested" in message and "\n" not in message
    assert capfd.readouterr() == ("", "")


@pytest.mark.gpu
@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_gpu_matches_cpu(tiny_export_dir: Path, tmp_path: Path, up: Upscaler, image: np.ndarray, device: str) -> None:
    if not _gpu_usable():
        pytest.skip("no NVIDIA GPU on this machine")
    model = shutil.copytree(tiny_export_dir, tmp_path / "m")
    try:
        gpu = Upscaler(model, device=device)
    except InputError as e:
        pytest.skip(f"{device} not usable here: {e}")
    assert gpu.device is Device(device)
    tolerance = 1e-4 if device == "cuda" else 1e-3  # CUDA runs fp32 with TF32 off; TensorRT picks its tactics
    np.testing.assert_allclose(gpu.upscale(image, "2.3"), up.upscale(image, "2.3"), atol=tolerance)
    if device == "tensorrt":
        assert any((model / "trt_cache").iterdir())


def test_trt_cache_is_keyed_by_gpu_and_tensorrt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from metasr.runtime import backends

    monkeypatch.setattr(backends, "gpu_name", lambda: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(backends, "tensorrt_version", lambda: "10.3.0")
    a = trt_cache_dir(tmp_path, "ab" * 32)
    monkeypatch.setattr(backends, "tensorrt_version", lambda: "10.4.1")
    b = trt_cache_dir(tmp_path, "ab" * 32)
    monkeypatch.setattr(backends, "gpu_name", lambda: "Orin")
    c = trt_cache_dir(tmp_path, "ab" * 32)
    assert a.parent == tmp_path / "trt_cache" and a.name == "NVIDIA-H100-80GB-HBM3-trt10.3.0-" + "ab" * 6
    assert len({a, b, c}) == 3 and all(p.is_dir() for p in (a, b, c))


def test_fp16_engines_are_cached_apart_and_requested_from_tensorrt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from metasr.runtime import backends
    from metasr.runtime.backends import Precision, SessionSpec, provider_chain

    monkeypatch.setattr(backends, "gpu_name", lambda: "Orin")
    monkeypatch.setattr(backends, "tensorrt_version", lambda: "10.3.0")
    fp32 = trt_cache_dir(tmp_path, "cd" * 32)
    fp16 = trt_cache_dir(tmp_path, "cd" * 32, Precision("fp16"))
    assert fp32 != fp16 and fp16.name.endswith("-fp16")
    for precision, flag in ((Precision.FP32, False), (Precision.FP16, True)):
        chain = provider_chain(Device.TENSORRT, SessionSpec(None, precision), fp16)
        assert chain[0][0] == "TensorrtExecutionProvider" and chain[0][1]["trt_fp16_enable"] is flag
        assert [name for name, _ in chain[1:]] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert provider_chain(Device.CPU, SessionSpec(None, Precision.FP16), None) == [("CPUExecutionProvider", {})]


def test_fp16_and_tf32_on_the_cpu_run_fp32_and_say_so(tiny_export_dir: Path) -> None:
    from metasr.runtime.backends import Precision

    up = Upscaler(tiny_export_dir, device="cpu", precision="FP16")
    assert up.requested_precision is Precision.FP16 and up.precision is Precision.FP32
    assert "fp32 (fp16 needs a GPU (CUDA or TensorRT))" in up.describe()
    tf32 = Upscaler(tiny_export_dir, device="cpu", precision="tf32")
    assert tf32.precision is Precision.FP32 and "fp32 (tf32 needs CUDA)" in tf32.describe()
    with pytest.raises(InputError, match="unknown precision 'fp8'.*fp32, fp16, tf32"):
        Upscaler(tiny_export_dir, device="cpu", precision="fp8")


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.full((8, 8), np.nan, np.float32), "NaN or infinite"),
        (np.pad(np.zeros((7, 7), np.float32), ((0, 1), (0, 1)), constant_values=np.inf), "NaN or infinite"),
        (np.zeros((8, 8), np.uint16), "float array"),
        (np.zeros((2, 2, 8, 8), np.float32), "expected an image"),
        (np.zeros((1, 1), np.float32), "too small"),
        (np.zeros((0, 8, 8), np.float32), "too small"),
        (np.full((8, 8), 1.5, np.float32), r"in \[0, 1\]"),
        ([[0.5] * 8] * 8, "numpy float array"),
    ],
)
def test_bad_images_raise_input_error(up: Upscaler, bad: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        up.upscale(bad, "2")  # type: ignore[arg-type]


def test_check_image_converts_float64(image: np.ndarray) -> None:
    out = check_image(image.astype(np.float64))
    assert out.dtype == np.float32 and out.shape == (1, 29, 37)


@pytest.mark.parametrize("scale", ["0", "-1", "nan", "inf", "1e9", "abc", "0.5", "9"])
def test_bad_scales_raise_scale_error(up: Upscaler, image: np.ndarray, scale: str) -> None:
    with pytest.raises(ScaleError):
        up.upscale(image, scale)


def test_trained_range_needs_extrapolation(up: Upscaler) -> None:
    assert up.check_scale("4").value == 4
    with pytest.raises(ScaleError, match="outside the model's trained range 1.1-4"):
        up.check_scale("5")
    assert up.check_scale("5", allow_extrapolation=True).value == 5
    with pytest.raises(ScaleError, match="between 1 and 8"):
        up.check_scale("8.5", allow_extrapolation=True)


def _damaged_copy(src: Path, dst: Path, name: str) -> Path:
    shutil.copytree(src, dst)
    data = bytearray((dst / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (dst / name).write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("name", ["feature_extractor.onnx", "upscale.onnx"])
def test_damaged_model_file_is_refused(tiny_export_dir: Path, tmp_path: Path, name: str) -> None:
    model = _damaged_copy(tiny_export_dir, tmp_path / "m", name)
    with pytest.raises(ModelError, match=f"{name} is damaged") as info:
        Upscaler(model, device="cpu")
    assert "\n" not in str(info.value)


def test_missing_model_parts_are_refused(tiny_export_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        Upscaler(tmp_path / "nowhere")
    model = shutil.copytree(tiny_export_dir, tmp_path / "m")
    (model / "upscale.onnx").unlink()
    with pytest.raises(ModelError, match="upscale.onnx is missing"):
        Upscaler(model)
    (model / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ModelError, match="not a metasr export manifest"):
        Upscaler(model)
    (model / "manifest.json").unlink()
    with pytest.raises(ModelError, match="no manifest.json"):
        Upscaler(model)


def test_runtime_never_imports_torch(tiny_export_dir: Path) -> None:
    code = (
        "import sys, numpy as np; from metasr.runtime import Upscaler; "
        f"up = Upscaler({str(tiny_export_dir)!r}, device='cpu'); up.upscale(np.full((9, 9), 0.5, np.float32), 2); "
        "import metasr.runtime.cli; "
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_shipped_model_loads_and_runs() -> None:
    from metasr.models import default_model_dir

    if not (default_model_dir() / "manifest.json").is_file():
        pytest.skip(f"no exported model shipped yet in {default_model_dir()}")
    shipped = Upscaler(device="cpu")
    assert shipped.model_name == default_model_dir().name
    out = shipped.upscale(np.full((12, 10), 0.5, np.float32), "1.8")
    assert out.shape == (21, 18) and np.isfinite(out).all()
