"""ONNX Runtime sessions on TensorRT, CUDA or CPU, created quietly.

``onnxruntime-gpu`` lists the TensorRT and CUDA providers even where their libraries or the GPU
are missing; creating a session then prints loader errors to the process's stdout/stderr (from
C++ and from Python) and silently falls back to the CPU. This module creates sessions with that
noise captured, reads back the providers the session really uses, and reports them to the caller,
who decides what to tell the user (the library itself prints nothing).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metasr.core.choices import Device, Precision
from metasr.core.errors import InputError, ModelError
from metasr.core.hardware import gpu_name, tensorrt_version
from metasr.core.native import quiet_native_output

__all__ = [
    "Device",
    "Precision",
    "SessionSpec",
    "create_session",
    "preload_cuda_libraries",
    "device_of",
    "engine_mismatch",
    "gpu_name",
    "provider_chain",
    "quiet_native_output",
    "tensorrt_possible",
    "tensorrt_version",
    "to_fp16",
    "trt_cache_dir",
]

TRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def _first_reason(text: str) -> str:
    """The most informative line of ORT's loader output (a missing library, a driver error)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not set(ln.strip()) <= {"*"}]
    for pattern in (r"error: (.*)$", r"(Failed to create \w+ExecutionProvider.*?)(?: Please|$)", r"\] (.*)$"):
        for line in lines:
            m = re.search(pattern, line)
            if m:
                return m.group(1).strip()[:200]
    return lines[0][:200] if lines else "no reason given by onnxruntime"


def tensorrt_possible() -> bool:
    """Whether TensorRT could run here at all: an NVIDIA GPU (or Jetson) or TensorRT installed.

    onnxruntime-gpu always lists its TensorRT provider; asking this first keeps CPU-only
    machines from creating engine-cache folders and paying for a doomed provider load.
    """
    return gpu_name() is not None or Path("/etc/nv_tegra_release").exists() or tensorrt_version() is not None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "unknown"


def trt_cache_dir(model_dir: Path, model_id: str, precision: Precision = Precision.FP32) -> Path:
    """Folder of TensorRT engines for this model on this GPU with this TensorRT.

    ORT never invalidates cached engines when the model, the GPU or TensorRT change, so the key
    is in the folder name: ``<model_dir>/trt_cache/<gpu>-trt<version>-<model id>[-fp16]``. A model
    folder that is not writable (an installed package) falls back to ``~/.cache/metasr``.
    """
    key = f"{_slug(gpu_name() or 'gpu')}-trt{_slug(tensorrt_version() or 'unknown')}-{model_id[:12]}"
    if precision is Precision.FP16:
        key += "-fp16"  # fp16 and fp32 engines of one model must not overwrite each other
    user_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "metasr" / "trt"
    for base in (model_dir / "trt_cache", user_cache):
        path = base / key
        try:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path, prefix=".probe"):
                pass  # really writable (permission bits mislead root and read-only mounts)
            return path
        except OSError:
            continue
    raise ModelError(
        f"no writable folder for TensorRT engines (tried {model_dir / 'trt_cache'} and ~/.cache/metasr); "
        f"make one of them writable or use --device cuda"
    )


def engine_mismatch(tensorrt: dict[str, Any] | None, precision: Precision) -> str | None:
    """Why an export's TensorRT engines cannot run on this machine, or None when they can.

    Engines are specific to the GPU model and the TensorRT version that built them; the manifest's
    ``tensorrt`` entry records both (``gpu``, ``version``) and the engines' ``precision``.
    """
    if not tensorrt or not tensorrt.get("engines"):
        return "the export has no TensorRT engines"
    built_gpu, built_version = tensorrt.get("gpu"), tensorrt.get("version")
    here_gpu, here_version = gpu_name(), tensorrt_version()
    if built_gpu != here_gpu or built_version != here_version:
        return (
            f"they were built on {built_gpu or 'an unrecorded GPU'} with TensorRT {built_version or 'unknown'}, "
            f"this machine has {here_gpu or 'no NVIDIA GPU'} with TensorRT {here_version or 'not installed'}"
        )
    if tensorrt.get("precision") != precision.value:
        return f"they are {tensorrt.get('precision')} engines and {precision.value} was requested"
    missing = [name for name, e in tensorrt["engines"].items() if not isinstance(e, dict) or not e.get("context")]
    if missing:
        return f"the engines of {', '.join(sorted(missing))} have no EP-context model"
    return None


@dataclass(frozen=True)
class SessionSpec:
    """What one graph needs from its session: TensorRT optimisation profiles (min/opt/max)."""

    profiles: tuple[str, str, str] | None = None  # "name:1x1x64x64,..." strings
    precision: Precision = Precision.FP32
    device_id: int = 0  # which GPU (CUDA's numbering of the visible ones)


def provider_chain(device: Device, spec: SessionSpec, cache_dir: Path | None) -> list[Any]:
    """The providers list passed to ORT for ``device`` (CPU always last as the fallback)."""
    chain: list[Any] = []
    if device in (Device.AUTO, Device.TENSORRT) and cache_dir is not None:
        opts: dict[str, Any] = {
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache_dir),
            "trt_fp16_enable": spec.precision is Precision.FP16,
            "device_id": str(spec.device_id),
        }
        if spec.profiles is not None:
            for key, shapes in zip(("min", "opt", "max"), spec.profiles, strict=True):
                opts[f"trt_profile_{key}_shapes"] = shapes
        chain.append((TRT, opts))
    if device in (Device.AUTO, Device.TENSORRT, Device.CUDA):
        # ORT's CUDA provider rounds convolutions/MatMul to TF32 unless told not to: fp32 means fp32
        tf32 = "1" if spec.precision is Precision.TF32 else "0"
        chain.append((CUDA, {"use_tf32": tf32, "device_id": str(spec.device_id)}))
    chain.append((CPU, {}))
    return chain


def device_of(providers: Sequence[str]) -> Device:
    """The device a session runs on, from its providers (the first one does the work)."""
    if providers and providers[0] == TRT:
        return Device.TENSORRT
    if providers and providers[0] == CUDA:
        return Device.CUDA
    return Device.CPU


_PRELOADED: list[bool] = []


def preload_cuda_libraries(ort: Any) -> bool:
    """Let ORT find CUDA/cuDNN installed as pip packages (``nvidia-*``), once per process.

    onnxruntime-gpu 1.21+ looks for those libraries only after ``onnxruntime.preload_dlls()``
    (or after PyTorch loaded them), so without this a machine whose CUDA came from pip would
    silently run on the CPU. Only where an NVIDIA GPU is present; quiet; never raises (a
    failure leaves ORT to its own search, and the session reports what it could use).

    Returns:
        Whether ``preload_dlls`` ran (now or earlier).
    """
    if _PRELOADED:
        return _PRELOADED[0]
    ran = False
    if gpu_name() is not None and hasattr(ort, "preload_dlls"):
        with quiet_native_output(), contextlib.suppress(Exception):
            ort.preload_dlls()
            ran = True
    _PRELOADED.append(ran)
    return ran


def create_session(
    path: Path,
    device: Device,
    *,
    threads: int,
    spec: SessionSpec = SessionSpec(),
    cache_dir: Path | None = None,
    model_bytes: bytes | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` on ``device``, with ORT's loader noise captured.

    Args:
        path: The ``.onnx`` file.
        device: Requested device; ``AUTO`` takes the best that works.
        threads: Intra-op threads for the CPU provider.
        spec: TensorRT optimisation profiles of the graph.
        cache_dir: TensorRT engine cache folder (None: TensorRT is not tried).
        model_bytes: The graph to load instead of ``path``'s content (e.g. its fp16 copy);
            ``path`` still names it in messages.

    Raises:
        InputError: a forced device (cpu/cuda/tensorrt) that cannot be used here.
        ModelError: the graph cannot be loaded.
    """
    import onnxruntime as ort

    # Process-wide, but it only lowers ORT's own logging; metasr never logs through it.
    ort.set_default_logger_severity(3)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    chain = provider_chain(device, spec, cache_dir)
    available = set(ort.get_available_providers())
    chain = [p for p in chain if p[0] in available] or [(CPU, {})]
    names = [p[0] for p in chain]
    if names[0] != CPU:
        preload_cuda_libraries(ort)
    try:
        with quiet_native_output() as noise:
            session = ort.InferenceSession(
                model_bytes if model_bytes is not None else str(path),
                sess_options=options,
                providers=names,
                provider_options=[p[1] for p in chain],
            )
    except Exception as e:  # ORT raises its own pybind exception types for unreadable graphs
        reason = " ".join(str(e).split())[:300]
        raise ModelError(f"cannot load model graph {path}: {reason}; re-export the model with metasr-export") from e
    # A provider failing later (e.g. a TensorRT build error) must raise, not print and fall back.
    session.disable_fallback()
    got = device_of(session.get_providers())
    if device not in (Device.AUTO, got):
        reason = _first_reason(noise.getvalue())
        raise InputError(
            f"device {device.value} was requested but onnxruntime cannot use it on this machine "
            f"({reason}); use --device auto or --device cpu"
        )
    return session


def to_fp16(model: Any) -> Any:
    """An fp16 copy of a float32 graph whose inputs and outputs stay float32.

    Float initializers and Constant tensors become fp16; float graph inputs are cast to fp16 on
    entry and float outputs back to fp32 on exit. Integer tensors (indices, shapes, axes) are
    untouched. Used for CUDA fp16 sessions and TensorRT 11's strongly typed networks. Needs the
    ``onnx`` package (imported here, so the runtime itself does not).
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name))
    renames: dict[str, str] = {}
    casts_in = []
    for inp in graph.input:
        if inp.type.tensor_type.elem_type == TensorProto.FLOAT:
            renames[inp.name] = f"{inp.name}__fp16"
            casts_in.append(
                helper.make_node(
                    "Cast", [inp.name], [renames[inp.name]], name=f"{inp.name}_to_fp16", to=TensorProto.FLOAT16
                )
            )
    out_renames: dict[str, str] = {}
    for outp in graph.output:
        if outp.type.tensor_type.elem_type == TensorProto.FLOAT:
            out_renames[outp.name] = f"{outp.name}__fp16"
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
        for i, name in enumerate(node.output):
            if name in out_renames:
                node.output[i] = out_renames[name]
    casts_out = [
        helper.make_node("Cast", [new], [old], name=f"{old}_to_fp32", to=TensorProto.FLOAT)
        for old, new in out_renames.items()
    ]
    nodes = casts_in + list(graph.node) + casts_out
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # stale float32 annotations of intermediates
    return out
