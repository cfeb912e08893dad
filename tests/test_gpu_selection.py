"""Choosing a GPU (``cuda:N``) and its memory (``--gpu-memory``) from the library and both commands."""

from __future__ import annotations

import pytest

from metasr.core.choices import Device, Precision
from metasr.core.devicespec import DeviceSpec, parse_device_spec
from metasr.runtime.backends import CUDA, TRT, SessionSpec, provider_chain


@pytest.mark.parametrize(
    ("text", "expected"),
    [("cuda", DeviceSpec(Device.CUDA)), ("cuda:1", DeviceSpec(Device.CUDA, 1)), ("GPU:2", DeviceSpec(Device.CUDA, 2))],
)
def test_device_text_with_an_index(text, expected):
    assert parse_device_spec(text) == expected


def test_the_gpu_index_reaches_both_gpu_providers(tmp_path):
    chain = dict(provider_chain(Device.TENSORRT, SessionSpec(None, Precision.FP32, device_id=3), tmp_path))
    assert chain[CUDA]["device_id"] == "3" and chain[TRT]["device_id"] == "3"
    assert chain[CUDA]["use_tf32"] == "0"  # fp32 means fp32 on any GPU


def test_upscaler_takes_a_device_with_an_index(monkeypatch):
    from metasr.runtime import upscaler as module

    seen = []
    real = module.create_session

    def spy(path, device, *, threads, spec=SessionSpec(), **kwargs):
        seen.append((device, spec.device_id))
        return real(path, Device.CPU, threads=threads, spec=spec, **kwargs)

    monkeypatch.setattr(module, "create_session", spy)
    up = module.Upscaler(device="cuda:1", threads=1)
    assert seen and all(device_id == 1 for _device, device_id in seen)
    assert seen[0][0] is Device.CUDA and up.device_index == 1


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "1e99", "lots"])
def test_gpu_memory_flag_is_checked_in_one_line(value, capsys, tmp_path):
    from metasr.runtime.cli import main as run_main
    from metasr.video.cli import main as stream_main

    src = tmp_path / "in.png"
    src.write_bytes(b"")  # never read: the flag is checked first
    assert run_main(["-i", str(src), "-s", "2", "--gpu-memory", value]) == 2
    assert stream_main(["-i", str(tmp_path / "in.avi"), "-s", "2", "--gpu-memory", value]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all("--gpu-memory must be a number" in line for line in lines), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_gpu_memory_flag_reaches_the_upscaler(monkeypatch, tmp_path):
    import numpy as np
    from conftest import write_dicom

    from metasr.runtime import cli
    from metasr.runtime.upscaler import Upscaler

    seen = {}

    class Spy(Upscaler):
        def __init__(self, *args, **kwargs):
            seen.update(kwargs)
            super().__init__(*args, **{**kwargs, "device": "cpu"})

    monkeypatch.setattr(cli, "Upscaler", Spy)
    src = write_dicom(tmp_path / "a.dcm", (np.arange(24 * 24).reshape(24, 24) % 200).astype(np.uint16))
    out = tmp_path / "b.dcm"
    assert cli.main(["-i", str(src), "-s", "2", "-o", str(out), "--gpu-memory", "512", "-q"]) == 0
    assert seen["gpu_memory_mb"] == 512.0 and out.is_file()


def test_cuda_libraries_from_pip_are_preloaded_once_on_a_gpu_machine(monkeypatch):
    from metasr.runtime import backends

    calls = []

    class FakeOrt:
        @staticmethod
        def preload_dlls():
            calls.append(1)
            print("noise that must not reach the user")

    monkeypatch.setattr(backends, "_PRELOADED", [])
    monkeypatch.setattr(backends, "gpu_name", lambda: "NVIDIA H200")
    assert backends.preload_cuda_libraries(FakeOrt) and backends.preload_cuda_libraries(FakeOrt)
    assert calls == [1]


def test_no_preload_without_a_gpu(monkeypatch):
    from metasr.runtime import backends

    class FakeOrt:
        @staticmethod
        def preload_dlls():
            raise AssertionError("must not be called on a machine without an NVIDIA GPU")

    monkeypatch.setattr(backends, "_PRELOADED", [])
    monkeypatch.setattr(backends, "gpu_name", lambda: None)
    assert backends.preload_cuda_libraries(FakeOrt) is False


class _OnCuda:
    """A real CPU session that reports CUDA, so the session logic can be followed without a GPU."""

    def __init__(self, session):
        self._session = session

    def get_providers(self):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def __getattr__(self, name):
        return getattr(self._session, name)


@pytest.mark.parametrize("device, probes", [("cuda", 0), ("auto", 1)])
def test_cuda_fp16_builds_each_session_once(monkeypatch, device, probes):
    from metasr.runtime import upscaler as module

    calls = []
    real = module.create_session

    def fake(path, dev, *, threads, spec=SessionSpec(), model_bytes=None, **kwargs):
        calls.append((path.name, model_bytes is not None))
        return _OnCuda(real(path, Device.CPU, threads=threads, spec=spec, **kwargs))

    monkeypatch.setattr(module, "create_session", fake)
    monkeypatch.setattr(module.Upscaler, "_fp16_bytes", staticmethod(lambda path: b"fp16"))
    monkeypatch.setattr(module, "tensorrt_possible", lambda: False)
    module.Upscaler(device=device, precision="fp16", threads=1)
    graphs = [name for name, _half in calls]
    assert len(graphs) == len(set(graphs)) + probes  # "auto" probes the first graph once, in fp32
    halves = {name: half for name, half in calls}  # the last session of each graph is the one kept
    assert halves["kernels.onnx"] is False and all(h for n, h in halves.items() if n != "kernels.onnx")
