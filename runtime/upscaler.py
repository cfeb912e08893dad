"""The torch-free Upscaler: an exported model on ONNX Runtime (TensorRT, CUDA or CPU).

Usage::

    from metasr.runtime import Upscaler
    up = Upscaler()                       # the shipped model, best device available
    sr = up.upscale(image, "1.8")         # float [h, w] or [N, h, w] in [0, 1] -> float32 in [0, 1]

An export (``metasr-export``) is a folder with ``manifest.json`` and either the Meta-SRGAN graphs
(``kind`` "meta": a feature extractor run once per image, ``kernels.onnx`` run once per scale,
and two forms of the upscale graph fed the features, the kernels and index arrays; see
:mod:`metasr.runtime.kernels`) or one fixed-scale graph (``kind`` "fixed", ``model.onnx``).
Nothing is re-exported or rebuilt for a new scale: the plan of a (scale, size) and the kernels of
a scale are computed once and kept in small LRU caches.

On every device the graphs run through ORT's IO binding: the features stay where the feature
extractor put them (GPU memory on CUDA/TensorRT) and go straight into the upscale graph, the
scale's kernels are kept on the device, and the output is written by ORT into the caller's result
array. A frame (or a batch) is one feature-extractor run and one upscale run while it fits the
memory budget (on a GPU: ``gpu_memory_mb``, by default half the GPU's free memory; on the CPU:
``memory_budget_mb``); larger images are processed in overlapping tiles whose results equal
untiled processing (see :mod:`metasr.runtime.tiling`).

(About 600 lines: one class whose loading, planning, kernel caches and three run paths share
state; the run plans live in :mod:`metasr.runtime.tiling`, the kernel arithmetic in
:mod:`metasr.runtime.kernels` and the sessions in :mod:`metasr.runtime.backends`.)
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from fractions import Fraction
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np

from metasr.core.choices import ChoiceEnum
from metasr.core.devicespec import DeviceSpec, parse_device_spec
from metasr.core.errors import InputError, ModelError, ScaleError
from metasr.core.hardware import gpu_free_memory_mb
from metasr.core.kspace import kspace_project
from metasr.core.manifest import model_id, read_manifest
from metasr.core.scale import DEFAULT_SCALE_RANGE, MAX_OUTPUT_SIDE, MAX_SCALE, MIN_SIDE, Scale, hr_length
from metasr.runtime.backends import (
    Device,
    Precision,
    SessionSpec,
    create_session,
    device_of,
    engine_mismatch,
    tensorrt_possible,
    to_fp16,
    trt_cache_dir,
)
from metasr.runtime.ensemble import ENSEMBLE_SIZE, self_ensemble
from metasr.runtime.kernels import (
    FORMS,
    MAX_CACHED_CLASSES,
    MAX_CLASSES,
    Kernels,
    apply_kernels,
    choose_form,
    kernel_feeds,
    upscale_inputs,
)
from metasr.runtime.tiling import Block, Plan, Span, plan_run

__all__ = [
    "DEFAULT_MEMORY_BUDGET_MB",
    "MAX_OUTPUT_SIDE",
    "MAX_SCALE",
    "MIN_SIDE",
    "Device",
    "UpscaleMethod",
    "Upscaler",
    "check_image",
    "check_model_scale",
    "read_manifest",
]

#: Host working memory for one tile on the CPU (inputs, features and intermediates), in MiB.
DEFAULT_MEMORY_BUDGET_MB = 384
#: Device memory for one run on a GPU whose free memory cannot be read, in MiB.
DEFAULT_GPU_BUDGET_MB = 4096
# Share of the GPU's free memory one Upscaler plans a run for (sessions and other work need the rest).
_GPU_FREE_SHARE = 0.5
#: Tiling halo when a manifest does not state the model's receptive radius.
DEFAULT_RECEPTIVE_RADIUS = 16
_PLAN_CACHE_SIZE = 64
_KERNEL_CACHE_SIZE = 16
# Largest kernel set of one tile (scales with many classes) kept in the kernel cache.
_MAX_BLOCK_KERNEL_BYTES = 8 * 2**20

# Peak live [N, C, h, w] tensors of the feature extractor on ONNX Runtime (float32), measured on
# the exports (bench/bench_runtime.py prints the measurement).
_FE_TENSORS = 4.0


class UpscaleMethod(ChoiceEnum):
    """How the Meta-Upscale stage runs (same results, to float32 rounding).

    Both use the scale's ``p * p`` kernels from the export's ``kernels.onnx``. ``GRAPH`` applies
    them with the export's upscale graphs (the ``classes`` or ``pixels`` form, chosen per scale by
    :func:`metasr.runtime.kernels.choose_form`) on the device, features never copied to the host.
    ``KERNELS`` applies them on the host with dense matrix products (scales with at most
    ``MAX_CLASSES`` classes; the graphs beyond). ``AUTO``: the graphs, except on the CPU at scales
    the class form does not suit and the host products do (see ``Upscaler._mode``).
    """

    AUTO = "auto"
    GRAPH = "graph"
    KERNELS = "kernels"

    @classmethod
    def choice_name(cls) -> str:
        return "upscale method"


def output_shape(h: int, w: int, s: Scale) -> tuple[int, int]:
    """``(floor(h*r), floor(w*r))``, refused when a side would exceed the limit or vanish.

    Raises:
        InputError: a side over ``MAX_OUTPUT_SIDE``.
        ScaleError: an empty output.
    """
    big_h, big_w = hr_length(h, s.value), hr_length(w, s.value)
    if max(big_h, big_w) > MAX_OUTPUT_SIDE:
        raise InputError(
            f"output would be {big_w}x{big_h} pixels, more than {MAX_OUTPUT_SIDE} per side; "
            f"use a smaller scale or crop the image"
        )
    if min(big_h, big_w) < 1:
        raise ScaleError(f"scale {s} turns a {w}x{h} image into nothing; use a scale of at least 1")
    return big_h, big_w


def check_image(image: Any) -> np.ndarray:
    """Validate an image for :meth:`Upscaler.upscale` and return it as float32 ``[N, h, w]``.

    Accepts float arrays (float16/32/64) of shape ``[h, w]`` or ``[N, h, w]`` with values in
    [0, 1]. Integer arrays are refused rather than guessed at (is 255 white, or 4095?).

    Raises:
        InputError: wrong type, dtype, shape, size, non-finite values or values outside [0, 1].
    """
    if not isinstance(image, np.ndarray):
        raise InputError(f"expected a numpy float array in [0, 1], got {type(image).__name__}")
    if image.dtype.kind != "f":
        raise InputError(
            f"expected a float array in [0, 1], got dtype {image.dtype}; scale integer pixels to [0, 1] "
            f"first (e.g. divide by their maximum possible value) or read files with metasr.scanners"
        )
    if image.ndim not in (2, 3):
        raise InputError(f"expected an image [h, w] or a batch [N, h, w], got shape {image.shape}")
    batch = image if image.ndim == 3 else image[None]
    n, h, w = batch.shape
    if n < 1 or h < MIN_SIDE or w < MIN_SIDE:
        raise InputError(
            f"image of shape {image.shape} is too small to super-resolve: each side needs at least {MIN_SIDE} pixels"
        )
    lo, hi = float(batch.min()), float(batch.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError(
            "image contains NaN or infinite pixel values; replace them (e.g. numpy.nan_to_num) before upscaling"
        )
    if lo < 0.0 or hi > 1.0:
        raise InputError(f"pixel values must lie in [0, 1], found [{lo:.4g}, {hi:.4g}]; rescale the image first")
    return np.ascontiguousarray(batch, dtype=np.float32)


class Upscaler:
    """Super-resolve images with an exported metasr model, torch-free.

    Args:
        model_dir: Export folder (``manifest.json`` + graphs); None: the default shipped model; the
            bare name of a shipped model (``metasr.models.shipped_models()``) selects that one.
        device: ``auto`` (TensorRT, then CUDA, then CPU), ``cpu``, ``cuda`` or ``tensorrt``.
        memory_budget_mb: Host working memory for one tile on the CPU; sets the tile size of large images.
        gpu_memory_mb: Device memory for one run on CUDA/TensorRT; None: half the GPU's free memory.
        tile_size: Force the LR tile core side (testing, tuning); None derives it from the budget.
        threads: CPU threads per graph; None uses the CPUs this process may run on.
        method: How the Meta-Upscale stage runs (:class:`UpscaleMethod`; same results).
        precision: ``fp32`` (TF32 off), ``tf32`` (CUDA) or ``fp16`` (CUDA, TensorRT); the CPU runs fp32.
        ensemble: Average the 8 orientations of each image (:mod:`metasr.runtime.ensemble`): 8x the
            work, a little less error (held-out MR: 0.02-0.15 dB with the default model).
        data_consistency: Make each output consistent with its input in k-space
            (:func:`metasr.core.kspace.kspace_project`): the output's k-space truncation to the
            input's matrix is the input, and only the frequencies above it come from the model.
            For MR acquired at a lower matrix, whose finer acquisition would share its k-space
            centre; not for blurred, photographic or video inputs.

    Raises:
        ModelError: missing, inconsistent or damaged export (hashes are verified on load).
        InputError: an unknown device, or a forced device that cannot be used here.

    Thread-safe: one instance may serve several threads at once.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike | None = None,
        device: str | Device | DeviceSpec = "auto",
        *,
        memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
        gpu_memory_mb: float | None = None,
        tile_size: int | None = None,
        threads: int | None = None,
        method: str | UpscaleMethod = UpscaleMethod.AUTO,
        precision: str | Precision = Precision.FP32,
        ensemble: bool = False,
        data_consistency: bool = False,
    ) -> None:
        device_spec = device if isinstance(device, DeviceSpec) else parse_device_spec(device)
        requested = device_spec.device
        #: Which GPU runs the graphs (CUDA's numbering of the visible GPUs; ``cuda:1`` -> 1).
        self.device_index = device_spec.index or 0
        #: Requested precision; :attr:`precision` is what actually runs (fp32 on the CPU).
        self.requested_precision = Precision.parse(precision)
        self.method = UpscaleMethod.parse(method)
        if not isinstance(ensemble, bool):
            raise InputError(f"ensemble must be True or False, got {ensemble!r}")
        #: Whether each image is the mean of its 8 orientations (8 runs of the model).
        self.ensemble = ensemble
        if not isinstance(data_consistency, bool):
            raise InputError(f"data_consistency must be True or False, got {data_consistency!r}")
        #: Whether each output's k-space truncation is made to equal its input (MR data consistency).
        self.data_consistency = data_consistency
        from metasr.models import resolve_model_dir

        model_dir = resolve_model_dir(model_dir)  # None: the default; a shipped model's name: its folder
        _check_positive("memory_budget_mb", memory_budget_mb)
        if gpu_memory_mb is not None:
            _check_positive("gpu_memory_mb", gpu_memory_mb)
        if tile_size is not None and (isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1):
            raise InputError(f"tile_size must be a positive integer or None, got {tile_size!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise InputError(f"threads must be a positive integer or None, got {threads!r}")
        self.model_dir = Path(model_dir)
        self._read_model()
        self.memory_budget_mb = float(memory_budget_mb)
        self.gpu_memory_mb = None if gpu_memory_mb is None else float(gpu_memory_mb)
        self.tile_size = tile_size
        self.threads = threads or max(
            1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        )
        self._plans: OrderedDict[tuple, Plan] = OrderedDict()
        self._kernels: OrderedDict[Fraction, Kernels] = OrderedDict()
        self._device_kernels: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._sessions = self._load_sessions(requested)
        first = next(iter(self._sessions.values()))
        #: Providers the sessions actually use, best first (e.g. ["CPUExecutionProvider"]).
        self.providers: list[str] = list(first.get_providers())
        #: The device that does the work (never AUTO).
        self.device: Device = device_of(self.providers)
        self._io_device = "cpu" if self.device is Device.CPU else "cuda"
        self._io_index = 0 if self.device is Device.CPU else self.device_index
        self._budget_mb = self._device_budget_mb()

    def _read_model(self) -> None:
        self.manifest = read_manifest(self.model_dir, verify=True)
        #: Provenance id: the files' hashes and every field that changes pixels, stable across copies.
        self.model_id = self.id_of(self.manifest)
        self.model_name = self.model_dir.name
        self.kind: str = self.manifest["kind"]
        self.arch: str = str(self.manifest.get("arch", "unknown"))
        self.fixed_scale: int | None = self.manifest.get("fixed_scale") if self.kind == "fixed" else None
        rng = self.manifest.get("scale_range") or (
            [self.fixed_scale] * 2 if self.fixed_scale else list(DEFAULT_SCALE_RANGE)
        )
        self.scale_range: tuple[float, float] = (float(rng[0]), float(rng[1]))  # validated by read_manifest
        radius = self.manifest.get("receptive_radius")
        self.receptive_radius = radius if isinstance(radius, int) and radius >= 1 else DEFAULT_RECEPTIVE_RADIUS
        self.features = int(self.manifest.get("features") or 64)
        self.mean = float(self.manifest["normalization"]["mean"])

    @staticmethod
    def id_of(manifest: dict[str, Any]) -> str:
        """The model id of an export's manifest (:func:`metasr.core.manifest.model_id`)."""
        return model_id(manifest)

    def _device_budget_mb(self) -> float:
        """Working memory of one run: the host budget on the CPU, device memory on a GPU."""
        if self.device is Device.CPU:
            return self.memory_budget_mb
        free = gpu_free_memory_mb(self.device_index)
        default = DEFAULT_GPU_BUDGET_MB if free is None else free * _GPU_FREE_SHARE
        return min(self.gpu_memory_mb, default) if self.gpu_memory_mb is not None else default

    # ------------------------------------------------------------------ loading

    def _load_sessions(self, device: Device) -> dict[str, Any]:
        names = tuple(_EXPECTED_META) if self.kind == "meta" else ("model",)
        cache = None
        if device is Device.TENSORRT and not tensorrt_possible():
            raise InputError(
                "device tensorrt was requested but this machine has no NVIDIA GPU and no TensorRT "
                "installation; use --device auto or --device cpu"
            )
        if device in (Device.AUTO, Device.TENSORRT) and tensorrt_possible():
            import onnxruntime as ort

            if "TensorrtExecutionProvider" in ort.get_available_providers():
                cache = trt_cache_dir(self.model_dir, self.model_id, self.requested_precision)
        files = self._graph_files(device, cache is not None)
        sessions: dict[str, Any] = {}
        chosen = device
        for name in names:
            path = self.model_dir / files[name]
            profiles = self._trt_profiles(name) if cache is not None and files[name].endswith(".onnx") else None
            spec = SessionSpec(profiles, self.requested_precision, self.device_index)
            half = self.requested_precision is Precision.FP16 and name != "kernels"  # CUDA fp16: an fp16 graph
            data = self._fp16_bytes(name) if half and chosen is Device.CUDA else None
            session = create_session(path, chosen, threads=self.threads, spec=spec, cache_dir=cache, model_bytes=data)
            # Every graph runs where the first one landed, so data never bounces between devices.
            landed = device_of(session.get_providers())
            if half and data is None and landed is Device.CUDA:  # "auto" found CUDA: this graph only, once
                data = self._fp16_bytes(name)
                session = create_session(path, landed, threads=self.threads, spec=spec, model_bytes=data)
            chosen = landed
            _check_io(session, path, *(_EXPECTED_META.get(name) or _EXPECTED_FIXED))
            sessions[name] = session
        return sessions

    def _graph_files(self, device: Device, tensorrt: bool) -> dict[str, str]:
        """The file each graph loads from: the exported engines' EP-context models where they can
        run here, else the ONNX graphs (ORT's TensorRT provider then builds and caches engines)."""
        graphs = {name: spec["file"] for name, spec in self.manifest["graphs"].items()}
        info = self.manifest.get("tensorrt")
        if not tensorrt or not info:
            return graphs
        reason = engine_mismatch(info, self.requested_precision)
        if reason is None:
            return {name: info["engines"][name]["context"] for name in graphs}
        if device is Device.TENSORRT:
            raise InputError(
                f"the TensorRT engines of {self.model_name} cannot run here: {reason}; rebuild them on this "
                f"machine (metasr-export --trt) or use --device cuda"
            )
        return graphs

    def _fp16_bytes(self, name: str) -> bytes:
        """The fp16 graph CUDA fp16 runs (fp32 inputs and outputs; TensorRT converts itself).

        ``metasr-export`` writes it beside the fp32 graph (``fp16_file`` in the manifest, its sha256
        checked at load); the runtime never needs the ``onnx`` package for it. An export made before
        that is converted here only where ``onnx`` happens to be installed.
        """
        spec = self.manifest["graphs"][name]
        if spec.get("fp16_file"):
            return (self.model_dir / spec["fp16_file"]).read_bytes()
        path = self.model_dir / spec["file"]
        try:
            import onnx
        except ImportError:
            raise ModelError(
                f"model {self.model_name} has no fp16 graphs (it was exported by an older metasr-export); "
                "re-export it with metasr-export, or use --precision fp32"
            ) from None
        try:
            return to_fp16(onnx.load(str(path))).SerializeToString()
        except Exception as e:  # a graph onnx cannot read is reported by create_session's load
            raise ModelError(f"cannot convert {path} to fp16 ({e}); use --precision fp32") from e

    # TensorRT builds one engine per optimisation profile; tiles never exceed the profile's max.
    _TRT_MAX_SIDE = 1024
    _TRT_MAX_GROUP = 4

    def _trt_profiles(self, name: str) -> tuple[str, str, str]:
        c, s, g, m = self.features, self._TRT_MAX_SIDE, self._TRT_MAX_GROUP, MIN_SIDE
        opt = 256
        if name in ("feature_extractor", "model"):
            return f"lr:1x1x{m}x{m}", f"lr:1x1x{opt}x{opt}", f"lr:{g}x1x{s}x{s}"
        if name == "kernels":
            return tuple(f"row_offset:{k},col_offset:{k}" for k in (1, 2, MAX_CACHED_CLASSES))  # type: ignore[return-value]

        def dims(n: int, lr: int, big: int, k: int) -> str:
            axes = ",".join(f"{a}:{big}" for a in ("row_index", "row_kernel", "col_index", "col_kernel"))
            return f"features:{n}x{c}x{lr}x{lr},kernels:{k}x{9 * c},{axes}"

        return dims(1, 1, 1, 1), dims(1, opt, opt * 2, 4), dims(g, s, s * MAX_SCALE, MAX_CACHED_CLASSES**2)

    # ------------------------------------------------------------------ scales

    def check_scale(self, scale: str | Real | Fraction | Scale, *, allow_extrapolation: bool = False) -> Scale:
        """Parse ``scale`` and check it is usable with this model.

        Args:
            scale: e.g. ``"1.8"``, ``2.3``, ``Fraction(7, 3)``.
            allow_extrapolation: Accept scales outside the trained range (1 to :data:`MAX_SCALE`).

        Raises:
            ScaleError: not a finite positive number, outside the trained range (unless allowed),
                outside 1..MAX_SCALE, or not the fixed scale of a fixed-scale model.
        """
        return check_model_scale(
            scale,
            scale_range=self.scale_range,
            fixed_scale=self.fixed_scale,
            model=f"{self.model_name} ({self.arch})",
            allow_extrapolation=allow_extrapolation,
        )

    # ------------------------------------------------------------------ planning

    def _mode(self, s: Scale) -> str:
        """How the Meta-Upscale stage runs at ``s``: a graph form or ``kernels`` (host dense products).

        The graphs run on GPUs (and wherever ``method="graph"``). On the CPU, scales with few
        kernels (``p <= MAX_CLASSES``) run the same kernels by the host's dense products: they beat
        ORT's CPU provider running either graph form once each keeps to the memory budget (256x256
        LR, 2 threads: x2 354 ms vs 533 ms for the tiled class form; x3.7: 34 ms vs 218 ms class form,
        283 ms pixel form at 128x128 on one core; bench/bench_runtime.py), with less memory per
        pixel. Scales with many kernels (x1.51 = 151/100) run the pixel form there too.
        """
        form = choose_form(s)
        few = s.p <= MAX_CLASSES  # past it the p*p host kernels cost more than they save (x2.333: 2333**2)
        if self.method is UpscaleMethod.KERNELS and few:
            return "kernels"
        if self.method is UpscaleMethod.AUTO and self.device is Device.CPU and few:
            return "kernels"
        return form

    def _bytes_per_pixel(self, s: Scale, mode: str) -> tuple[float, float]:
        """Peak bytes per LR pixel (feature extractor) and per LR pixel of the Meta-Upscale stage."""
        c4, r2 = self.features * 4, float(s.value) ** 2
        if mode == "fixed":
            return c4 * _FE_TENSORS + c4 * 3 * r2, 0.0
        fe = c4 * _FE_TENSORS + c4
        taps = 9 * c4
        if mode == "kernels":  # padded + row-stacked features per LR pixel; per-class products per HR pixel
            return fe, c4 * 4 + (16 + 8 * 3 * s.q) * r2
        if mode == "classes":  # padded features, nine shifted copies and their concatenation (both alive in
            # ORT's plan: measured 6.3 kB per LR pixel at x2); q*q products, position and output per HR pixel
            return fe, 2 * taps + c4 + (4 * s.q * s.q + 32) * r2
        kernels = taps if s.p > MAX_CACHED_CLASSES else 0  # kernels of the tile's own classes
        return fe, 2 * taps + (3 * taps + kernels + 32) * r2  # pixels: gathered patches, kernels, products

    def plan(self, scale: str | Real | Fraction | Scale, shape: tuple[int, ...]) -> Plan:
        """How :meth:`upscale` will process an image or batch of ``shape`` at ``scale``.

        The plan names the upscale form (``mode``: ``classes``, ``pixels``, ``kernels`` or
        ``fixed``), the frames per run and the LR tiles per axis; useful to check that a frame
        runs as one tile under a memory budget. Cached like the runs themselves.

        Args:
            scale: As for :meth:`upscale`.
            shape: ``(h, w)`` or ``(N, h, w)``.
        """
        s = self.check_scale(scale, allow_extrapolation=True)
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise InputError(f"shape must be (h, w) or (N, h, w) with positive sides, got {tuple(shape)}")
        n, h, w = (1, *shape) if len(shape) == 2 else tuple(shape)
        return self._plan(s, int(n), int(h), int(w))

    def _plan(self, s: Scale, n: int, h: int, w: int) -> Plan:
        key = (s.value, n, h, w)
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
                return plan
        plan = self._make_plan(s, n, h, w)
        with self._lock:
            self._plans[key] = plan
            while len(self._plans) > _PLAN_CACHE_SIZE:
                self._plans.popitem(last=False)
        return plan

    def _make_plan(self, s: Scale, n: int, h: int, w: int) -> Plan:
        mode = self._mode(s) if self.kind == "meta" else "fixed"
        fe_px, up_px = self._bytes_per_pixel(s, mode)
        trt = self.device is Device.TENSORRT
        return plan_run(
            s,
            (n, h, w),
            mode,
            budget_bytes=self._budget_mb * 2**20,
            pixel_bytes=(fe_px, up_px),
            radius=self.receptive_radius,
            tile_size=self.tile_size,
            max_side=self._TRT_MAX_SIDE if trt else None,
            max_group=self._TRT_MAX_GROUP if trt else None,
        )

    # ------------------------------------------------------------------ kernels

    def _kernels_for(self, s: Scale) -> Kernels:
        """All ``p * p`` kernels of ``s`` on the host (the CPU's dense products), cached per scale."""
        with self._lock:
            found = self._kernels.get(s.value)
            if found is not None:
                self._kernels.move_to_end(s.value)
                return found
        classes = np.arange(s.p, dtype=np.int64)
        kernels = Kernels(self._run("kernels", kernel_feeds(s, classes, classes)), self.mean)
        with self._lock:
            self._kernels[s.value] = kernels
            while len(self._kernels) > _KERNEL_CACHE_SIZE:
                self._kernels.popitem(last=False)
        return kernels

    def _device_kernels_for(self, s: Scale, rows: Block, cols: Block) -> Any:
        """The kernels of a block pair as an OrtValue on the device, cached: per scale for small ``p``,
        per (scale, classes of the block pair) beyond while they are at most ``_MAX_BLOCK_KERNEL_BYTES``
        (a video at x1.51 reuses the 22801 kernels of its frame size)."""
        key: tuple | None = (s.value,)
        if s.p > MAX_CACHED_CLASSES:
            size = len(rows.classes) * len(cols.classes) * 9 * self.features * 4
            key = (s.value, rows.classes.tobytes(), cols.classes.tobytes()) if size <= _MAX_BLOCK_KERNEL_BYTES else None
        if key is not None:
            with self._lock:
                found = self._device_kernels.get(key)
                if found is not None:
                    self._device_kernels.move_to_end(key)
                    return found
        binding = self._sessions["kernels"].io_binding()
        for name, value in kernel_feeds(s, rows.classes, cols.classes).items():
            binding.bind_cpu_input(name, value)
        binding.bind_output("kernels", self._io_device, self._io_index)
        self._run_bound("kernels", binding)
        value = binding.get_outputs()[0]
        if key is not None:
            with self._lock:
                self._device_kernels[key] = value
                while len(self._device_kernels) > _KERNEL_CACHE_SIZE:
                    self._device_kernels.popitem(last=False)
        return value

    # ------------------------------------------------------------------ inference

    def upscale(self, image: np.ndarray, scale: str | Real | Fraction | Scale) -> np.ndarray:
        """Super-resolve ``image`` by ``scale``.

        Args:
            image: float array ``[h, w]`` or ``[N, h, w]`` with values in [0, 1] (float64 and
                float16 are computed in float32).
            scale: Exact scale (``"1.8"`` is 9/5); between 1 and :data:`MAX_SCALE` for
                arbitrary-scale models, the fixed scale for fixed-scale ones.

        Returns:
            float32 ``[H, W]`` or ``[N, H, W]`` in [0, 1], ``H = floor(h * r)``, ``W = floor(w * r)``.

        Raises:
            InputError: invalid image (see :func:`check_image`).
            ScaleError: invalid scale, or (with ``ensemble``) a scale whose exact grid needs a much
                larger image (:func:`metasr.runtime.ensemble.check_ensemble`).
        """
        s = self.check_scale(scale, allow_extrapolation=True)
        batch = check_image(image)
        if self.ensemble:
            out = self_ensemble(lambda x: self._upscale_batch(x, s), batch, s.value)
        else:
            out = self._upscale_batch(batch, s)
        if self.data_consistency:
            for i in range(len(out)):  # on the host, frame by frame: two small matrix products and FFTs
                out[i] = np.clip(kspace_project(out[i], batch[i], s.value), 0.0, 1.0)
        return out if image.ndim == 3 else out[0]

    def _upscale_batch(self, batch: np.ndarray, s: Scale) -> np.ndarray:
        """One run of the model over a checked ``[N, h, w]`` float32 batch, clipped to [0, 1]."""
        n, h, w = batch.shape
        big_h, big_w = output_shape(h, w, s)
        plan = self._plan(s, n, h, w)
        out = np.empty((n, big_h, big_w), dtype=np.float32)
        x = batch[:, None]
        for g0 in range(0, n, plan.group):
            g1 = min(n, g0 + plan.group)
            if plan.mode == "kernels":
                self._run_kernels(x[g0:g1], out[g0:g1], plan, self._kernels_for(s))
            elif plan.mode != "fixed":
                self._run_graphs(x[g0:g1], out[g0:g1], plan, s)
            else:
                self._run_fixed(x[g0:g1], out[g0:g1], plan)
        np.clip(out, 0.0, 1.0, out=out)
        return out

    def _fail(self, name: str, e: Exception) -> ModelError:
        if isinstance(e, MemoryError) or "out of memory" in str(e).lower() or "bad_alloc" in str(e):
            what = (
                "gpu_memory_mb (--gpu-memory)"
                if self.device is not Device.CPU
                else "memory_budget_mb (--memory-budget)"
            )
            return ModelError(f"out of memory running the {name} graph on {self.device.label}; lower {what}")
        reason = " ".join(str(e).split())[:300]
        return ModelError(f"onnxruntime failed running the {name} graph on {self.device.label}: {reason}")

    def _run(self, name: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        try:
            return self._sessions[name].run(None, feeds)[0]
        except Exception as e:  # ORT raises pybind types; surface them as one clear line
            raise self._fail(name, e) from e

    def _run_bound(self, name: str, binding: Any) -> None:
        try:
            self._sessions[name].run_with_iobinding(binding)
        except Exception as e:
            raise self._fail(name, e) from e

    def _run_kernels(self, x: np.ndarray, out: np.ndarray, plan: Plan, kernels: Kernels) -> None:
        """The CPU path: features on the host, the kernels applied with dense products."""
        single = len(plan.rows.tiles) == 1 and len(plan.cols.tiles) == 1
        for rt, rblocks in zip(plan.rows.tiles, plan.rows.blocks):
            for ct, cblocks in zip(plan.cols.tiles, plan.cols.blocks):
                lr = x if single else _crop(x, rt, ct)
                feats = self._run("feature_extractor", {"lr": lr})
                for rb in rblocks:
                    for cb in cblocks:
                        f = feats[:, :, rb.crop_start : rb.crop_stop, cb.crop_start : cb.crop_stop]
                        out[:, rb.hr_start : rb.hr_stop, cb.hr_start : cb.hr_stop] = apply_kernels(
                            kernels, f, rb.index, rb.residue, cb.index, cb.residue
                        )

    def _run_graphs(self, x: np.ndarray, out: np.ndarray, plan: Plan, s: Scale) -> None:
        """Feature extractor then one upscale graph per tile, features kept on the device."""
        graph = FORMS[plan.mode]
        single = len(plan.rows.tiles) == 1 and len(plan.cols.tiles) == 1
        for rt, (rb,) in zip(plan.rows.tiles, plan.rows.blocks):
            for ct, (cb,) in zip(plan.cols.tiles, plan.cols.blocks):
                fe = self._sessions["feature_extractor"].io_binding()
                fe.bind_cpu_input("lr", x if single else _crop(x, rt, ct))
                fe.bind_output("features", self._io_device, self._io_index)
                self._run_bound("feature_extractor", fe)
                up = self._sessions[graph].io_binding()
                up.bind_ortvalue_input("features", fe.get_outputs()[0])
                up.bind_ortvalue_input("kernels", self._device_kernels_for(s, rb, cb))
                feeds = {
                    **upscale_inputs(rb.index, rb.rank, len(cb.classes), "row"),
                    **upscale_inputs(cb.index, cb.rank, len(cb.classes), "col"),
                }
                for name, value in feeds.items():
                    up.bind_cpu_input(name, value)
                shape = (x.shape[0], 1, rb.hr_stop - rb.hr_start, cb.hr_stop - cb.hr_start)
                # ORT writes the result straight into the output array when it is one contiguous block
                target = out if single else np.empty(shape[:1] + shape[2:], np.float32)
                up.bind_output("sr", "cpu", 0, np.float32, list(shape), target.ctypes.data)
                self._run_bound(graph, up)
                if not single:
                    out[:, rb.hr_start : rb.hr_stop, cb.hr_start : cb.hr_stop] = target

    def _run_fixed(self, x: np.ndarray, out: np.ndarray, plan: Plan) -> None:
        f = int(self.fixed_scale or 1)
        for rt in plan.rows.tiles:
            for ct in plan.cols.tiles:
                lr = _crop(x, rt, ct)
                sr = self._run("model", {"lr": lr})
                want = (lr.shape[2] * f, lr.shape[3] * f)
                if tuple(sr.shape[2:]) != want:
                    raise ModelError(
                        f"fixed-scale graph returned {tuple(sr.shape[2:])} for a {lr.shape[2:]} input, "
                        f"expected {want}; the export does not match its manifest"
                    )
                r0, c0 = rt.hr_start - rt.ctx_start * f, ct.hr_start - ct.ctx_start * f
                block = sr[:, 0, r0 : r0 + rt.hr_size, c0 : c0 + ct.hr_size]
                out[:, rt.hr_start : rt.hr_stop, ct.hr_start : ct.hr_stop] = block

    # ------------------------------------------------------------------ reporting

    def describe(self) -> str:
        """One line saying what runs where and in which arithmetic, e.g.
        ``metasr: model metasrgan-mri (3f2a...) on CPU (CPUExecutionProvider), 2 threads, fp32``."""
        where = f"{self.device.label} ({self.providers[0]})"
        threads = f", {self.threads} thread{'s' if self.threads != 1 else ''}" if self.device is Device.CPU else ""
        arithmetic = {Precision.FP32: "fp32", Precision.TF32: "tf32", Precision.FP16: "fp16"}[self.precision]
        if self.device is Device.CUDA and self.precision is Precision.FP32:
            arithmetic += " (TF32 off)"
        if self.requested_precision is not self.precision:
            arithmetic += f" ({self.requested_precision.value} needs {self._needs(self.requested_precision)})"
        memory = f", {self._budget_mb:.0f} MiB per run" if self.device is not Device.CPU else ""
        ensemble = f", self-ensemble x{ENSEMBLE_SIZE}" if self.ensemble else ""
        consistency = ", k-space data consistency" if self.data_consistency else ""
        model = f"model {self.model_name} ({self.model_id[:12]})"
        return f"metasr: {model} on {where}{threads}, {arithmetic}{memory}{ensemble}{consistency}"

    def pixel_settings(self) -> dict[str, str]:
        """What changes output pixels besides the model and the job: the arithmetic and the device class.

        Recorded in the resume journal, so an fp16 GPU output is never kept by an fp32 rerun.
        """
        settings = {"precision": self.precision.value, "device": self.device.value}
        if self.ensemble:  # only when on, so the journals of single runs stay valid
            settings["ensemble"] = f"x{ENSEMBLE_SIZE}"
        if self.data_consistency:
            settings["data-consistency"] = "kspace"
        return settings

    @staticmethod
    def _needs(precision: Precision) -> str:
        return "CUDA" if precision is Precision.TF32 else "a GPU (CUDA or TensorRT)"

    @property
    def precision(self) -> Precision:
        """The precision that runs: fp32 on the CPU; on TensorRT fp32 or fp16; on CUDA any."""
        p = self.requested_precision
        if self.device is Device.CPU or (self.device is Device.TENSORRT and p is Precision.TF32):
            return Precision.FP32
        return p

    def __repr__(self) -> str:
        return f"Upscaler(model_dir={str(self.model_dir)!r}, device={self.device.value!r}, kind={self.kind!r})"


_EXPECTED_META = {
    "feature_extractor": ({"lr"}, "features"),
    "kernels": ({"inv_scale", "row_offset", "col_offset"}, "kernels"),
    "upscale": ({"features", "kernels", "row_index", "row_kernel", "col_index", "col_kernel"}, "sr"),
    "upscale_pixels": ({"features", "kernels", "row_index", "row_kernel", "col_index", "col_kernel"}, "sr"),
}
_EXPECTED_FIXED = ({"lr"}, "sr")


def _check_io(session: Any, path: Path, want_in: set[str], want_out: str) -> None:
    inputs = {i.name for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    if inputs != want_in or want_out not in outputs:
        raise ModelError(
            f"graph {path} has inputs {sorted(inputs)} and outputs {outputs}, expected inputs "
            f"{sorted(want_in)} and output {want_out!r}; re-export the model with metasr-export"
        )


def check_model_scale(
    scale: str | Real | Fraction | Scale,
    *,
    scale_range: tuple[float, float],
    fixed_scale: int | None,
    model: str,
    allow_extrapolation: bool = False,
) -> Scale:
    """The checks of :meth:`Upscaler.check_scale` for a model described by its manifest values
    (shared with the remote upscaler of :mod:`metasr.runtime.remote`)."""
    s = Scale.parse(scale)
    if fixed_scale is not None:
        if s.value != fixed_scale:
            raise ScaleError(
                f"model {model} only supports scale {fixed_scale}, got {s}; use a Meta-SRGAN model for other scales"
            )
        return s
    lo, hi = scale_range
    if s.value < 1 or s.value > MAX_SCALE:
        raise ScaleError(f"scale must be between 1 and {MAX_SCALE}, got {s}")
    if not allow_extrapolation and not (Fraction(repr(lo)) <= s.value <= Fraction(repr(hi))):
        raise ScaleError(
            f"scale {s} is outside the model's trained range {lo:g}-{hi:g}; choose a scale in that "
            f"range or allow extrapolation (--allow-extrapolation, up to {MAX_SCALE})"
        )
    return s


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not (isinstance(value, Real) and value > 0 and np.isfinite(float(value))):
        raise InputError(f"{name} must be a positive number of MiB, got {value!r}")


def _crop(x: np.ndarray, rt: Span, ct: Span) -> np.ndarray:
    return np.ascontiguousarray(x[:, :, rt.ctx_start : rt.ctx_stop, ct.ctx_start : ct.ctx_stop])
