"""The GPU-resident runtime: run plans, device budget, precision, IO binding; GPU parity where a GPU is.

The plan and budget logic is pure Python and runs everywhere (a CUDA Upscaler is imitated by
setting its device and budget on a CPU one). The IO-binding path is the same code on every device
(CPU OrtValues here). Tests marked ``gpu`` need ONNX Runtime's CUDA provider and skip elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from metasr.core.choices import Device, Precision
from metasr.core.errors import InputError
from metasr.runtime import Upscaler, upscaler
from metasr.runtime.backends import SessionSpec, provider_chain

EVERY_SCALE = [f"{k / 10:.1f}" for k in range(11, 41)] + ["1.25", "1.75", "2.333", "3.7", "1.51"]


def _as_gpu(up: Upscaler, budget_mb: float) -> Upscaler:
    up.device, up._budget_mb = Device.CUDA, budget_mb
    up._plans.clear()
    return up


@pytest.mark.parametrize("scale, h, w", [("2", 540, 960), ("1.8", 540, 960), ("4", 512, 512)])
def test_a_frame_is_one_run_within_a_gpu_budget(tiny_export_dir: Path, scale: str, h: int, w: int) -> None:
    up = _as_gpu(Upscaler(tiny_export_dir, device="cpu", threads=1), 70_000)  # half an H200's free memory
    plan = up.plan(scale, (4, h, w))
    assert (len(plan.rows.tiles), len(plan.cols.tiles), plan.group) == (1, 1, 4)  # a batch of 4: one run
    assert plan.mode == "classes"
    # the CPU's 384 MiB budget on the same frame: many runs (what made the GPU slow)
    cpu = _as_gpu(Upscaler(tiny_export_dir, device="cpu", threads=1), 384)
    crowded = cpu.plan(scale, (4, h, w))
    assert len(crowded.rows.tiles) * len(crowded.cols.tiles) > 1 or crowded.group < 4


def test_gpu_budget_defaults_to_half_the_free_memory(tiny_export_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    up = Upscaler(tiny_export_dir, device="cpu", threads=1, memory_budget_mb=100)
    assert up._device_budget_mb() == 100  # the CPU keeps the host budget
    up.device = Device.CUDA
    monkeypatch.setattr(upscaler, "gpu_free_memory_mb", lambda index=0: 100_000.0)
    assert up._device_budget_mb() == 50_000
    up.gpu_memory_mb = 2000.0
    assert up._device_budget_mb() == 2000  # the cap
    up.gpu_memory_mb = None
    monkeypatch.setattr(upscaler, "gpu_free_memory_mb", lambda index=0: None)
    assert up._device_budget_mb() == upscaler.DEFAULT_GPU_BUDGET_MB


@pytest.mark.parametrize("bad", [0, -5, float("nan"), float("inf"), "lots", True])
def test_gpu_memory_mb_is_validated(tiny_export_dir: Path, bad: object) -> None:
    with pytest.raises(InputError, match="gpu_memory_mb must be a positive number of MiB"):
        Upscaler(tiny_export_dir, device="cpu", gpu_memory_mb=bad)


def test_cuda_runs_fp32_with_tf32_off_unless_asked() -> None:
    for precision, flag in ((Precision.FP32, "0"), (Precision.FP16, "0"), (Precision.TF32, "1")):
        chain = provider_chain(Device.CUDA, SessionSpec(None, precision), None)
        assert chain == [("CUDAExecutionProvider", {"use_tf32": flag, "device_id": "0"}), ("CPUExecutionProvider", {})]
    assert Precision.parse("TF32") is Precision.TF32


def test_a_frame_is_one_feature_run_and_one_upscale_run(tiny_export_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    up = Upscaler(tiny_export_dir, device="cpu", threads=1, method="graph")
    runs: list[str] = []
    real = up._run_bound

    def counted(name: str, binding) -> None:
        runs.append(name)
        real(name, binding)

    monkeypatch.setattr(up, "_run_bound", counted)
    batch = np.random.default_rng(0).random((3, 24, 40)).astype(np.float32)
    first = up.upscale(batch, "1.8")
    assert runs == ["feature_extractor", "kernels", "upscale"]  # the batch in one run of each
    runs.clear()
    np.testing.assert_array_equal(up.upscale(batch, "1.8"), first)
    assert runs == ["feature_extractor", "upscale"]  # the scale's kernels stay on the device
    runs.clear()
    up.upscale(batch, "1.51")
    assert runs == ["feature_extractor", "kernels", "upscale_pixels"]
    runs.clear()
    up.upscale(batch, "1.51")  # 151 classes: the frame size's own kernels are cached too
    assert runs == ["feature_extractor", "upscale_pixels"]


# ---- on a GPU ------------------------------------------------------------------------------------


def _cuda(model_dir: Path, precision: str = "fp32") -> Upscaler:
    try:
        up = Upscaler(model_dir, device="cuda", precision=precision)
    except InputError as e:
        pytest.skip(f"no CUDA GPU for ONNX Runtime here ({e})")
    if up.device is not Device.CUDA:
        pytest.skip("ONNX Runtime runs on the CPU here (no CUDA GPU)")
    return up


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def _phantom(h: int, w: int) -> np.ndarray:
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    return np.clip(0.5 + 0.4 * np.sin(5 * xx) * np.cos(3 * yy) * (xx**2 + yy**2 < 0.8), 0, 1).astype(np.float32)


@pytest.mark.gpu
def test_cuda_fp32_matches_the_cpu_at_every_scale(tiny_export_dir: Path) -> None:
    gpu = _cuda(tiny_export_dir)
    cpu = Upscaler(tiny_export_dir, device="cpu", method="graph")
    image = np.random.default_rng(1).random((2, 29, 37)).astype(np.float32)
    errors = {s: float(np.abs(gpu.upscale(image, s) - cpu.upscale(image, s)).max()) for s in EVERY_SCALE}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-4, f"x{worst}: {errors[worst]:.3g}"
    assert "fp32 (TF32 off)" in gpu.describe()


@pytest.mark.gpu
@pytest.mark.parametrize("precision, floor", [("tf32", 50.0), ("fp16", 45.0)])
def test_fast_precisions_keep_their_psnr(precision: str, floor: float) -> None:
    from metasr.models import default_model_dir

    fast = _cuda(default_model_dir(), precision)
    exact = _cuda(default_model_dir(), "fp32")
    assert fast.precision.value == precision and f", {precision}" in fast.describe()
    image = _phantom(96, 128)
    for scale in ("1.5", "1.8", "2", "3", "4"):
        assert _psnr(fast.upscale(image, scale), exact.upscale(image, scale)) >= floor, scale


@pytest.mark.gpu
def test_a_1080p_frame_is_one_run_on_the_gpu() -> None:
    from metasr.models import default_model_dir

    up = _cuda(default_model_dir())
    plan = up.plan("2", (1, 540, 960))
    assert len(plan.rows.tiles) == len(plan.cols.tiles) == 1
    out = up.upscale(_phantom(540, 960), "2")
    assert out.shape == (1080, 1920) and np.isfinite(out).all()
