"""TensorRT engines from the exported ONNX graphs (TensorRT 10 and 11).

``tensorrt`` is imported lazily (``pip install "metasr[trt]"``); :func:`check_available` tells,
before anything is written, whether engines can be built here and why not.

* Optimisation profiles: min/opt/max for the batch and spatial dimensions of every dynamic
  input (:class:`Profiles`), written into the manifest so the caller knows the engine's limits.
* A timing cache (``trt_timing.cache`` in the export folder) is loaded when present and saved
  after the build, so re-exports on the same GPU are fast.
* fp16: TensorRT 10 sets ``BuilderFlag.FP16`` on a weakly typed network. TensorRT 11 removed the
  flag (networks are strongly typed), so the ONNX graph itself is converted to fp16 inside
  (:func:`to_fp16`: fp16 initializers, fp32 inputs/outputs cast at the edges, so the I/O contract
  does not change) and the network is created ``STRONGLY_TYPED``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnx
from onnx import helper

from metasr.core.choices import Precision
from metasr.core.deps import require
from metasr.core.errors import DependencyError, ModelError
from metasr.core.hardware import tensorrt_version
from metasr.runtime.backends import to_fp16

__all__ = [
    "Precision",
    "Profiles",
    "TIMING_CACHE_NAME",
    "check_available",
    "tensorrt_version",
    "to_fp16",
    "input_profiles",
    "build_engine",
    "write_ep_context",
]

TIMING_CACHE_NAME = "trt_timing.cache"


@dataclass(frozen=True)
class Profiles:
    """Optimisation-profile bounds of the engines.

    Attributes:
        min_size, opt_size, max_size: LR spatial size (h and w) the engines accept.
        max_batch, opt_batch: batch bounds (min is 1).
        max_hr_size: largest HR extent (H and W) the upscale engine accepts in one call; larger
            outputs are produced in HR tiles by the caller. The ``pixels`` upscale graph holds
            ``9C`` (576) floats per HR pixel, so this bound sets the engine's activation memory.
        opt_classes, max_classes: offset classes per axis the kernels (and upscale) engines
            accept: ``p`` of the scale, or the distinct residues of a tile beyond it.
    """

    min_size: int = 16
    opt_size: int = 256
    max_size: int = 1024
    opt_batch: int = 1
    max_batch: int = 4
    max_hr_size: int = 1024
    opt_classes: int = 2
    max_classes: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.min_size <= self.opt_size <= self.max_size:
            raise ValueError(
                f"sizes must satisfy 1 <= min <= opt <= max, got {self.min_size}/{self.opt_size}/{self.max_size}"
            )
        if not 1 <= self.opt_batch <= self.max_batch:
            raise ValueError(f"batch must satisfy 1 <= opt <= max, got {self.opt_batch}/{self.max_batch}")
        if not 1 <= self.opt_classes <= self.max_classes:
            raise ValueError(f"classes must satisfy 1 <= opt <= max, got {self.opt_classes}/{self.max_classes}")
        if self.max_hr_size < 1:
            raise ValueError(f"max_hr_size must be >= 1, got {self.max_hr_size}")

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def check_available() -> Any:
    """Import TensorRT and make sure a CUDA GPU is usable; return the ``tensorrt`` module.

    Raises:
        DependencyError: naming what is missing (package or GPU) and what to do.
    """
    trt = require("tensorrt", "TensorRT engines (--trt)", "trt")
    logger = trt.Logger(trt.Logger.ERROR)
    try:
        builder = trt.Builder(logger)
    except Exception as e:  # TensorRT raises plain errors (TypeError/RuntimeError) without a GPU
        raise DependencyError(
            f"TensorRT {trt.__version__} is installed but cannot create a builder "
            f"(no usable CUDA GPU or driver: {str(e).splitlines()[0] if str(e) else e!r}); "
            f"build engines on the target device"
        ) from e
    if builder is None:
        raise DependencyError(
            f"TensorRT {trt.__version__} is installed but no CUDA GPU is usable here; "
            f"build engines on the target device"
        )
    return trt


def _has_fp16_flag(trt: Any) -> bool:
    return hasattr(trt.BuilderFlag, "FP16")


def input_profiles(kind: str, features: int, profiles: Profiles) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shapes of every dynamic input of a graph (``kind``: feature_extractor,
    kernels, upscale, upscale_pixels or model)."""
    p = profiles
    lr = (
        (1, 1, p.min_size, p.min_size),
        (p.opt_batch, 1, p.opt_size, p.opt_size),
        (p.max_batch, 1, p.max_size, p.max_size),
    )
    if kind in ("feature_extractor", "model"):
        return {"lr": lr}
    classes = ((1,), (p.opt_classes,), (p.max_classes,))
    if kind == "kernels":
        return {"row_offset": classes, "col_offset": classes}
    if kind not in ("upscale", "upscale_pixels"):
        raise ValueError(f"unknown graph {kind!r}")
    feats = tuple((s[0], features, s[2], s[3]) for s in lr)
    hr = ((1,), (min(2 * p.opt_size, p.max_hr_size),), (p.max_hr_size,))
    kernels = tuple((c[0] * c[0], 9 * features) for c in classes)
    return {"features": feats, "kernels": kernels, "row_index": hr, "row_kernel": hr, "col_index": hr, "col_kernel": hr}


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    shapes: dict[str, tuple],
    precision: Precision | str = Precision.FP32,
    timing_cache: str | os.PathLike | None = None,
    workspace_gib: float = 4.0,
) -> dict[str, Any]:
    """Build and serialize a TensorRT engine for an ONNX graph with one optimisation profile.

    Args:
        onnx_path: The ONNX graph (float32).
        engine_path: Where to write the serialized engine.
        shapes: ``{input: (min, opt, max)}`` from :func:`input_profiles`.
        precision: fp32 or fp16 (TensorRT 10: builder flag; 11: fp16 graph, strongly typed).
        timing_cache: File to load the timing cache from (if present) and save it to.
        workspace_gib: Builder workspace limit.

    Returns:
        What the manifest records: version, precision, mode, profile shapes.

    Raises:
        DependencyError: TensorRT or a GPU is missing.
        ModelError: the parser or builder rejects the graph (first parser error included).
    """
    trt = check_available()
    precision = Precision(precision)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    model = onnx.load(str(onnx_path))
    strongly_typed = precision is Precision.FP16 and not _has_fp16_flag(trt)
    flags = 0
    creation = trt.NetworkDefinitionCreationFlag
    if strongly_typed:
        model = to_fp16(model)
        if hasattr(creation, "STRONGLY_TYPED"):  # the default (and maybe gone) where FP16 is gone
            flags |= 1 << int(creation.STRONGLY_TYPED)
    elif hasattr(creation, "EXPLICIT_BATCH"):  # deprecated no-op in 10, gone later
        flags |= 1 << int(creation.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.SerializeToString()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelError(f"TensorRT cannot parse {Path(onnx_path).name}: {errors[0] if errors else 'unknown error'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision is Precision.FP16 and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    cache_bytes = b""
    if timing_cache is not None and Path(timing_cache).is_file():
        cache_bytes = Path(timing_cache).read_bytes()
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=True)  # a cache from another GPU is ignored, not fatal
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        if name in shapes:
            lo, opt, hi = shapes[name]
            profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(
            f"TensorRT failed to build an engine for {Path(onnx_path).name} "
            f"(see the TensorRT log above); try smaller --max-size or fp32"
        )
    Path(engine_path).write_bytes(bytes(serialized))
    if timing_cache is not None:
        Path(timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))
    return {
        "file": Path(engine_path).name,
        "precision": precision.value,
        "strongly_typed": strongly_typed,
        "shapes": {k: [list(s) for s in v] for k, v in shapes.items()},
    }


def write_ep_context(graph: str | os.PathLike, engine_file: str, out_path: str | os.PathLike, version: str) -> Path:
    """Write an ONNX Runtime EP-context model that runs ``engine_file`` with ORT's TensorRT provider.

    The model has ``graph``'s inputs and outputs and one ``com.microsoft.EPContext`` node whose
    ``ep_cache_context`` names the engine file beside it (``embed_mode`` 0), so a session on the
    TensorRT provider deserializes the exported engine instead of building one at first use.
    """
    source = onnx.load(str(graph), load_external_data=False)
    node = helper.make_node(
        "EPContext",
        [i.name for i in source.graph.input],
        [o.name for o in source.graph.output],
        name=f"{Path(engine_file).stem}_context",
        domain="com.microsoft",
        main_context=1,
        embed_mode=0,
        ep_cache_context=engine_file,
        ep_sdk_version=version,
        source="TensorrtExecutionProvider",
        partition_name=Path(engine_file).stem,
    )
    context = helper.make_graph(
        [node], f"{source.graph.name}_context", list(source.graph.input), list(source.graph.output)
    )
    model = helper.make_model(
        context,
        opset_imports=[
            helper.make_opsetid("", max(o.version for o in source.opset_import if o.domain in ("", "ai.onnx"))),
            helper.make_opsetid("com.microsoft", 1),
        ],
        producer_name="metasr",
    )
    model.ir_version = source.ir_version
    onnx.save(model, str(out_path))
    return Path(out_path)
