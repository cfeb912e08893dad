"""The torch-free Upscaler: an exported model on ONNX Runtime (TensorRT, CUDA or CPU).

Usage::

    from metasr.runtime import Upscaler
    up = Upscaler()                       # the shipped model, best device available
    sr = up.upscale(image, "1.8")         # float [h, w] or [N, h, w] in [0, 1] -> float32 in [0, 1]

An export (``metasr-export``) is a folder with ``manifest.json`` and either two graphs (``kind``
"meta": a feature extractor run once per image and an upscale graph fed the scale's index/offset
arrays) or one fixed-scale graph (``kind`` "fixed", ``model.onnx``). Nothing is re-exported or
rebuilt for a new scale: the index/offset arrays of a (scale, size) are computed once and kept
in a small LRU cache. Images larger than the memory budget allows are processed in overlapping
tiles whose results equal untiled processing (see :mod:`metasr.runtime.tiling`).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np

from metasr.core.choices import ChoiceEnum
from metasr.core.errors import InputError, ModelError, ScaleError
from metasr.core.manifest import read_manifest
from metasr.core.scale import DEFAULT_SCALE_RANGE, Scale, axis_mapping, hr_length
from metasr.runtime.backends import (
    Device,
    Precision,
    SessionSpec,
    create_session,
    device_of,
    tensorrt_possible,
    trt_cache_dir,
)
from metasr.runtime.kernels import MAX_CLASSES, Kernels, apply_kernels, probe_kernels
from metasr.runtime.tiling import Span, hr_span, split_axis, tile_side_for_budget

__all__ = [
    "DEFAULT_MEMORY_BUDGET_MB",
    "MAX_OUTPUT_SIDE",
    "MAX_SCALE",
    "MIN_SIDE",
    "Device",
    "UpscaleMethod",
    "Upscaler",
    "check_image",
    "read_manifest",
]

#: Smallest image side accepted: the network needs neighbours to infer detail from.
MIN_SIDE = 2
#: Largest scale ever accepted (extrapolation included).
MAX_SCALE = 8
#: Largest output side: beyond it the output alone would not fit a device's memory.
MAX_OUTPUT_SIDE = 32768
#: Working memory for one tile (inputs, features and intermediates), in MiB.
DEFAULT_MEMORY_BUDGET_MB = 384
#: Tiling halo when a manifest does not state the model's receptive radius.
DEFAULT_RECEPTIVE_RADIUS = 16
_PLAN_CACHE_SIZE = 64
_KERNEL_CACHE_SIZE = 16

# Peak bytes per pixel of the graphs on ONNX Runtime's CPU provider (float32), measured on the
# exports (bench/bench_runtime.py prints the measurement). Features are C channels; the
# upscale graph holds a few [N, hidden, H, W] intermediates per HR pixel.
_FE_TENSORS = 4.0  # live [N, C, h, w] tensors in the feature extractor
_UP_HR_TENSORS = 3.0  # live [N, hidden, H, W] tensors in the upscale graph
_HIDDEN = 256


class UpscaleMethod(ChoiceEnum):
    """How the Meta-Upscale stage runs (same results, to float32 rounding).

    ``GRAPH`` runs the export's ``upscale.onnx`` on every image. ``KERNELS`` reads the scale's
    ``p * p`` predicted kernels out of that graph once, then applies them with dense matrix
    products (:mod:`metasr.runtime.kernels`), much cheaper on a CPU. ``AUTO``: kernels on the CPU
    for scales whose numerator is at most ``MAX_CLASSES``, the graph otherwise and on GPUs.
    """

    AUTO = "auto"
    GRAPH = "graph"
    KERNELS = "kernels"

    @classmethod
    def choice_name(cls) -> str:
        return "upscale method"


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


@dataclass(frozen=True)
class _Block:
    """An upscale sub-block along one axis: feature crop (relative to its tile's context) and arrays."""

    crop_start: int
    crop_stop: int
    index: np.ndarray  # LR index shifted to the crop, graph's index dtype
    offset: np.ndarray  # float32
    residue: np.ndarray  # offset class (i * q) % p
    hr_start: int
    hr_stop: int


@dataclass(frozen=True)
class _AxisPlan:
    tiles: tuple[Span, ...]
    blocks: tuple[tuple[_Block, ...], ...]  # per tile (meta kind); empty for fixed kind


@dataclass(frozen=True)
class _Plan:
    group: int  # frames per run
    rows: _AxisPlan
    cols: _AxisPlan
    inv_scale: np.ndarray
    kernels: bool  # Meta-Upscale through probed kernels (else the upscale graph)


class Upscaler:
    """Super-resolve images with an exported metasr model, torch-free.

    Args:
        model_dir: Export folder (``manifest.json`` + graphs); None: the shipped model.
        device: ``auto`` (TensorRT, then CUDA, then CPU), ``cpu``, ``cuda`` or ``tensorrt``.
        memory_budget_mb: Working memory for one tile; sets the tile size of large images.
        tile_size: Force the LR tile core side (testing, tuning); None derives it from the budget.
        threads: CPU threads per graph; None uses the CPUs this process may run on.
        method: How the Meta-Upscale stage runs (:class:`UpscaleMethod`; same results).

    Raises:
        ModelError: missing, inconsistent or damaged export (hashes are verified on load).
        InputError: an unknown device, or a forced device that cannot be used here.

    Thread-safe: one instance may serve several threads at once.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike | None = None,
        device: str | Device = "auto",
        *,
        memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
        tile_size: int | None = None,
        threads: int | None = None,
        method: str | UpscaleMethod = UpscaleMethod.AUTO,
        precision: str | Precision = Precision.FP32,
    ) -> None:
        requested = Device.parse(device)
        #: Requested TensorRT precision; :attr:`precision` is what actually runs (fp32 off TensorRT).
        self.requested_precision = Precision.parse(precision)
        self.method = UpscaleMethod.parse(method)
        if model_dir is None:
            from metasr.models import default_model_dir

            model_dir = default_model_dir()
        if not (isinstance(memory_budget_mb, Real) and memory_budget_mb > 0):
            raise InputError(f"memory_budget_mb must be a positive number, got {memory_budget_mb!r}")
        if tile_size is not None and (isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1):
            raise InputError(f"tile_size must be a positive integer or None, got {tile_size!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise InputError(f"threads must be a positive integer or None, got {threads!r}")
        self.model_dir = Path(model_dir)
        self.manifest = read_manifest(self.model_dir, verify=True)
        files = self.manifest["files"]
        #: Provenance id: sha256 of the manifest's file hashes (sorted JSON), stable across copies.
        self.model_id = hashlib.sha256(json.dumps(files, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        self.model_name = self.model_dir.name
        self.kind: str = self.manifest["kind"]
        self.arch: str = str(self.manifest.get("arch", "unknown"))
        self.fixed_scale: int | None = self.manifest.get("fixed_scale") if self.kind == "fixed" else None
        if self.kind == "fixed" and not (isinstance(self.fixed_scale, int) and self.fixed_scale >= 1):
            raise ModelError(
                f"{self.model_dir / 'manifest.json'}: a fixed-scale model needs an integer fixed_scale, "
                f"got {self.fixed_scale!r}"
            )
        rng = self.manifest.get("scale_range") or (
            [self.fixed_scale] * 2 if self.fixed_scale else list(DEFAULT_SCALE_RANGE)
        )
        try:
            lo, hi = (float(v) for v in rng)
        except (TypeError, ValueError):
            raise ModelError(
                f"{self.model_dir / 'manifest.json'}: scale_range must be [min, max], got {rng!r}; "
                f"re-export the model with metasr-export"
            ) from None
        self.scale_range: tuple[float, float] = (lo, hi)
        radius = self.manifest.get("receptive_radius", DEFAULT_RECEPTIVE_RADIUS)
        self.receptive_radius = int(radius) if isinstance(radius, int) and radius >= 1 else DEFAULT_RECEPTIVE_RADIUS
        self.features = int(self.manifest.get("features") or 64)
        self.memory_budget_mb = float(memory_budget_mb)
        self.tile_size = tile_size
        self.threads = threads or max(
            1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        )
        self._plans: OrderedDict[tuple, _Plan] = OrderedDict()
        self._kernels: OrderedDict[Fraction, Kernels] = OrderedDict()
        self._lock = threading.Lock()
        self._sessions = self._load_sessions(requested)
        first = next(iter(self._sessions.values()))
        #: Providers the sessions actually use, best first (e.g. ["CPUExecutionProvider"]).
        self.providers: list[str] = list(first.get_providers())
        #: The device that does the work (never AUTO).
        self.device: Device = device_of(self.providers)
        if self.kind == "meta":
            index_type = {i.name: i.type for i in self._sessions["upscale"].get_inputs()}["row_index"]
            self._index_dtype = np.int32 if "int32" in index_type else np.int64

    # ------------------------------------------------------------------ loading

    def _load_sessions(self, device: Device) -> dict[str, Any]:
        graphs = self.manifest["graphs"]
        names = ("feature_extractor", "upscale") if self.kind == "meta" else ("model",)
        expected = {
            "feature_extractor": ({"lr"}, "features"),
            "upscale": ({"features", "inv_scale", "row_index", "row_offset", "col_index", "col_offset"}, "sr"),
            "model": ({"lr"}, "sr"),
        }
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
        sessions: dict[str, Any] = {}
        chosen = device
        for name in names:
            path = self.model_dir / graphs[name]["file"]
            spec = (
                SessionSpec(self._trt_profiles(name), self.requested_precision) if cache is not None else SessionSpec()
            )
            session = create_session(path, chosen, threads=self.threads, spec=spec, cache_dir=cache)
            # Every graph runs where the first one landed, so data never bounces between devices.
            chosen = device_of(session.get_providers())
            inputs = {i.name for i in session.get_inputs()}
            outputs = [o.name for o in session.get_outputs()]
            want_in, want_out = expected[name]
            if inputs != want_in or want_out not in outputs:
                raise ModelError(
                    f"graph {path} has inputs {sorted(inputs)} and outputs {outputs}, expected inputs "
                    f"{sorted(want_in)} and output {want_out!r}; re-export the model with metasr-export"
                )
            sessions[name] = session
        return sessions

    # TensorRT builds one engine per optimisation profile; tiles never exceed the profile's max.
    _TRT_MAX_SIDE = 1024
    _TRT_MAX_GROUP = 4

    def _trt_profiles(self, name: str) -> tuple[str, str, str]:
        c, s, g, m = self.features, self._TRT_MAX_SIDE, self._TRT_MAX_GROUP, MIN_SIDE
        opt = 256
        if name in ("feature_extractor", "model"):
            return f"lr:1x1x{m}x{m}", f"lr:1x1x{opt}x{opt}", f"lr:{g}x1x{s}x{s}"

        def dims(n: int, lr: int, big: int) -> str:
            return f"features:{n}x{c}x{lr}x{lr},row_index:{big},row_offset:{big},col_index:{big},col_offset:{big}"

        return dims(1, 1, 1), dims(1, opt, opt * 2), dims(g, s, s * MAX_SCALE)

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
        s = Scale.parse(scale)
        if self.fixed_scale is not None:
            if s.value != self.fixed_scale:
                raise ScaleError(
                    f"model {self.model_name} ({self.arch}) only supports scale {self.fixed_scale}, "
                    f"got {s}; use a Meta-SRGAN model for other scales"
                )
            return s
        lo, hi = self.scale_range
        if s.value < 1 or s.value > MAX_SCALE:
            raise ScaleError(f"scale must be between 1 and {MAX_SCALE}, got {s}")
        if not allow_extrapolation and not (Fraction(repr(lo)) <= s.value <= Fraction(repr(hi))):
            raise ScaleError(
                f"scale {s} is outside the model's trained range {lo:g}-{hi:g}; choose a scale in that "
                f"range or allow extrapolation (--allow-extrapolation, up to {MAX_SCALE})"
            )
        return s

    # ------------------------------------------------------------------ planning

    def _fe_bytes(self) -> float:
        return self.features * 4 * _FE_TENSORS

    def _up_bytes(self, scale: Fraction, kernels: bool) -> tuple[float, float]:
        """Peak bytes per LR pixel and per HR pixel of the Meta-Upscale stage."""
        if kernels:  # padded + row-stacked features per LR pixel; per-class products and output per HR pixel
            return float(self.features * 4 * 4), float(16 + 8 * 3 * scale.denominator)
        return float(_HIDDEN * 4 + self.features * 4), float(_HIDDEN * 4 * _UP_HR_TENSORS)

    def _uses_kernels(self, s: Scale) -> bool:
        if self.kind != "meta" or self.method is UpscaleMethod.GRAPH:
            return False
        if self.method is UpscaleMethod.KERNELS:
            return True
        return self.device is Device.CPU and s.p <= MAX_CLASSES

    def _kernels_for(self, s: Scale) -> Kernels:
        with self._lock:
            found = self._kernels.get(s.value)
            if found is not None:
                self._kernels.move_to_end(s.value)
                return found
        kernels = probe_kernels(lambda feeds: self._run("upscale", feeds), s, self.features, self._index_dtype)
        with self._lock:
            self._kernels[s.value] = kernels
            while len(self._kernels) > _KERNEL_CACHE_SIZE:
                self._kernels.popitem(last=False)
        return kernels

    def _plan(self, s: Scale, n: int, h: int, w: int) -> _Plan:
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

    def _make_plan(self, s: Scale, n: int, h: int, w: int) -> _Plan:
        budget = self.memory_budget_mb * 2**20
        r2 = float(s.value) ** 2
        radius = self.receptive_radius
        limit = self._TRT_MAX_SIDE if self.device is Device.TENSORRT else None
        use_kernels = self._uses_kernels(s)
        if self.kind == "meta":
            lr_b, hr_b = self._up_bytes(s.value, use_kernels)
            # Features of a whole tile stay alive while its upscale blocks run: half the budget each.
            fe_px = self._fe_bytes() + self.features * 4
            up_px = lr_b + hr_b * r2
        else:
            fe_px = self._fe_bytes() + self.features * 4 * 3 * r2
            up_px = 0.0
        per_frame = max(h * w * fe_px, h * w * up_px)
        group = int(max(1, min(n, budget // max(per_frame, 1.0))))
        if limit is not None:
            group = min(group, self._TRT_MAX_GROUP)
        if self.tile_size is not None:
            fe_core = self.tile_size
        elif per_frame <= budget:
            fe_core = max(h, w)
        else:
            fe_core = tile_side_for_budget(budget / 2 if up_px else budget, fe_px, radius)
        if limit is not None:
            fe_core = min(fe_core, limit - 2 * radius)
        up_core = tile_side_for_budget(budget / 2, up_px, 1) if up_px else fe_core
        up_core = min(up_core, fe_core)
        rows = self._axis_plan(h, s.value, fe_core, up_core, radius)
        cols = self._axis_plan(w, s.value, fe_core, up_core, radius)
        return _Plan(group, rows, cols, np.array([s.inv], dtype=np.float32), use_kernels)

    def _axis_plan(self, n: int, scale: Fraction, fe_core: int, up_core: int, radius: int) -> _AxisPlan:
        tiles = tuple(split_axis(n, fe_core, radius, scale))
        if self.kind != "meta":
            return _AxisPlan(tiles, ())
        blocks = []
        for t in tiles:
            per_tile = []
            for sub in split_axis(t.stop - t.start, up_core, 0, scale):
                b0, b1 = t.start + sub.start, t.start + sub.stop
                a, b = hr_span(b0, b1, n, scale)
                if b <= a:
                    continue
                m = axis_mapping(n, scale, a, b)
                # The 3x3 neighbourhood of the used LR pixels; outside the image the graph pads as untiled.
                c0, c1 = max(0, int(m.index[0]) - 1), min(n, int(m.index[-1]) + 2)
                per_tile.append(
                    _Block(
                        c0 - t.ctx_start,
                        c1 - t.ctx_start,
                        (m.index - c0).astype(self._index_dtype),
                        m.offset,
                        m.residue,
                        a,
                        b,
                    )
                )
            blocks.append(tuple(per_tile))
        return _AxisPlan(tiles, tuple(blocks))

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
            ScaleError: invalid scale.
        """
        s = self.check_scale(scale, allow_extrapolation=True)
        batch = check_image(image)
        n, h, w = batch.shape
        big_h, big_w = hr_length(h, s.value), hr_length(w, s.value)
        if max(big_h, big_w) > MAX_OUTPUT_SIDE:
            raise InputError(
                f"output would be {big_w}x{big_h} pixels, more than {MAX_OUTPUT_SIDE} per side; "
                f"use a smaller scale or crop the image"
            )
        if min(big_h, big_w) < 1:
            raise ScaleError(f"scale {s} turns a {w}x{h} image into nothing; use a scale of at least 1")
        plan = self._plan(s, n, h, w)
        out = np.empty((n, big_h, big_w), dtype=np.float32)
        x = batch[:, None]
        for g0 in range(0, n, plan.group):
            g1 = min(n, g0 + plan.group)
            if self.kind == "meta":
                self._run_meta(x[g0:g1], out[g0:g1], plan, self._kernels_for(s) if plan.kernels else None)
            else:
                self._run_fixed(x[g0:g1], out[g0:g1], plan)
        np.clip(out, 0.0, 1.0, out=out)
        return out if image.ndim == 3 else out[0]

    def _run(self, name: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        try:
            return self._sessions[name].run(None, feeds)[0]
        except Exception as e:  # ORT raises pybind types; surface them as one clear line
            if isinstance(e, MemoryError):
                raise ModelError(f"out of memory running {name}; lower memory_budget_mb (or --memory-budget)") from e
            reason = " ".join(str(e).split())[:300]
            raise ModelError(f"onnxruntime failed running the {name} graph on {self.device.label}: {reason}") from e

    def _run_meta(self, x: np.ndarray, out: np.ndarray, plan: _Plan, kernels: Kernels | None) -> None:
        single = len(plan.rows.tiles) == 1 and len(plan.cols.tiles) == 1
        for rt, rblocks in zip(plan.rows.tiles, plan.rows.blocks):
            for ct, cblocks in zip(plan.cols.tiles, plan.cols.blocks):
                lr = (
                    x
                    if single
                    else np.ascontiguousarray(x[:, :, rt.ctx_start : rt.ctx_stop, ct.ctx_start : ct.ctx_stop])
                )
                feats = self._run("feature_extractor", {"lr": lr})
                for rb in rblocks:
                    for cb in cblocks:
                        f = feats[:, :, rb.crop_start : rb.crop_stop, cb.crop_start : cb.crop_stop]
                        if kernels is not None:
                            out[:, rb.hr_start : rb.hr_stop, cb.hr_start : cb.hr_stop] = apply_kernels(
                                kernels, f, rb.index, rb.residue, cb.index, cb.residue
                            )
                            continue
                        sr = self._run(
                            "upscale",
                            {
                                "features": np.ascontiguousarray(f),
                                "inv_scale": plan.inv_scale,
                                "row_index": rb.index,
                                "row_offset": rb.offset,
                                "col_index": cb.index,
                                "col_offset": cb.offset,
                            },
                        )
                        out[:, rb.hr_start : rb.hr_stop, cb.hr_start : cb.hr_stop] = sr[:, 0]

    def _run_fixed(self, x: np.ndarray, out: np.ndarray, plan: _Plan) -> None:
        f = int(self.fixed_scale or 1)
        for rt in plan.rows.tiles:
            for ct in plan.cols.tiles:
                lr = np.ascontiguousarray(x[:, :, rt.ctx_start : rt.ctx_stop, ct.ctx_start : ct.ctx_stop])
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
        """One line saying what runs where, e.g.
        ``metasr: model metasrgan-mri (3f2a...) on CPU (CPUExecutionProvider), 2 threads``."""
        where = f"{self.device.label} ({self.providers[0]})"
        threads = f", {self.threads} thread{'s' if self.threads != 1 else ''}" if self.device is Device.CPU else ""
        precision = f", {self.precision.value}" if self.device is Device.TENSORRT else ""
        if self.requested_precision is not self.precision:
            precision += f" ({self.requested_precision.value} needs TensorRT)"
        return f"metasr: model {self.model_name} ({self.model_id[:12]}) on {where}{threads}{precision}"

    @property
    def precision(self) -> Precision:
        """The precision that runs: the requested one on TensorRT, fp32 everywhere else."""
        return self.requested_precision if self.device is Device.TENSORRT else Precision.FP32

    def __repr__(self) -> str:
        return f"Upscaler(model_dir={str(self.model_dir)!r}, device={self.device.value!r}, kind={self.kind!r})"
