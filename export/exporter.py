"""``export_model``: a trained checkpoint -> verified ONNX graphs (+ TensorRT engines) and a manifest.

Export folder contract:

* Meta-SRGAN (``kind: "meta"``, ``upscale_form: "class-kernel"``): ``feature_extractor.onnx``
  (``lr`` float32 [N,1,h,w] in [0,1] -> ``features`` float32 [N,C,h,w]) and the Meta-Upscale
  stage as ``kernels.onnx``, ``upscale.onnx`` and ``upscale_pixels.onnx`` (inputs and outputs in
  :mod:`metasr.export.upscale_graphs`). Index values come from :func:`metasr.core.scale.axis_mapping`.
* SRGAN/EDSR (``kind: "fixed"``, ``fixed_scale: 2``): ``model.onnx``, ``lr`` -> ``sr`` [N,1,2h,2w].
* ``manifest.json`` (format_version 2), written last: arch, kind, upscale form, normalisation
  (applied inside the graphs), scale range, features, ``receptive_radius`` (LR halo for exact
  tiling), opset, index dtype, graph I/O, sha256 of every file and of the checkpoint, tool
  versions, parity result, TensorRT engines (or null).
* With ``trt=True``: ``<graph>.<fp32|fp16>.engine`` per graph, listed in ``files`` and described
  under ``tensorrt`` (version, GPU, precision, profiles, per-engine input shapes), and the
  builder's ``trt_timing.cache`` (reused by the next build; not in ``files``).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metasr.core.errors import CheckpointError, MetaSRError
from metasr.core.hardware import gpu_name
from metasr.core.jsonio import jsonable
from metasr.core.locks import exclusive_lock, output_lock
from metasr.core.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    UPSCALE_FORM,
    sha256_file,
    validate_manifest,
)
from metasr.export.manifest import write_manifest
from metasr.export.onnx_graphs import MAX_OPSET, receptive_radius
from metasr.export.publish import check_target, make_temp_dir, publish
from metasr.export.tensorrt import Precision, Profiles
from metasr.export.upscale_graphs import GRAPH_FILES, INDEX_DTYPE
from metasr.export.verify import DEFAULT_SCALES, DEFAULT_SIZES, DEFAULT_TOLERANCE, ParityReport
from metasr.training.models import ARCH_SPECS

__all__ = ["EXPORTABLE_ARCHS", "ExportResult", "export_model"]

#: Architectures with weights that export, and the kind of export each gives.
EXPORTABLE_ARCHS = {name: spec.kind for name, spec in ARCH_SPECS.items() if spec.exportable}
_META_FILES = ("feature_extractor.onnx", *GRAPH_FILES.values())
_FIXED_FILES = ("model.onnx",)
#: Graphs that get an fp16 copy for CUDA fp16 sessions (the kernel prediction stays fp32: it is tiny
#: and its output feeds the fp16 upscale graph through a cast).
_FP16_GRAPHS = {"feature_extractor", "upscale", "upscale_pixels", "model"}


def fp16_name(graph_file: str) -> str:
    """``feature_extractor.onnx`` -> ``feature_extractor.fp16.onnx``."""
    return graph_file.removesuffix(".onnx") + ".fp16.onnx"


def _write_fp16_graphs(tmp: Path, names: list[str]) -> list[str]:
    """fp16 copies (fp32 inputs and outputs) of the graphs CUDA fp16 runs, written at export so the
    torch-free runtime never needs the ``onnx`` package to make them."""
    import onnx

    from metasr.export import verify as verify_mod
    from metasr.runtime.backends import to_fp16

    written = []
    for name in names:
        if name.removesuffix(".onnx") not in _FP16_GRAPHS:
            continue
        half = fp16_name(name)
        onnx.save(to_fp16(onnx.load(str(tmp / name))), str(tmp / half))
        verify_mod.check_graph(tmp / half, MAX_OPSET)
        written.append(half)
    return written


@dataclass
class ExportResult:
    """What :func:`export_model` wrote.

    Attributes:
        out_dir: The export folder.
        manifest: The manifest as written.
        files: Paths of the files of the export (graphs, engines), manifest last.
        parity: The verification report, or None with ``verify=False``.
        seconds: Wall time of the whole export.
    """

    out_dir: Path
    manifest: dict[str, Any]
    files: list[Path] = field(default_factory=list)
    parity: ParityReport | None = None
    seconds: float = 0.0

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / MANIFEST_NAME


@dataclass
class _Source:
    """A checkpoint read for export: its path, metadata, model and kind."""

    path: Path
    ckpt: dict[str, Any]
    arch: str
    kind: str
    model: Any
    sha256: str

    @property
    def config(self) -> dict[str, Any]:
        return self.ckpt["config"]


def _read_source(ckpt_path: Path) -> _Source:
    """Read and load the checkpoint; any failure is one :class:`CheckpointError` line."""
    from metasr.training.checkpoint import load_checkpoint, read_checkpoint

    try:
        ckpt = read_checkpoint(ckpt_path)
        config = ckpt["config"]
        arch = config["arch"]
        if not isinstance(arch, str):
            raise CheckpointError(
                f"{ckpt_path}: config 'arch' must be an architecture name, got {type(arch).__name__} {arch!r}; "
                f"use a checkpoint written by metasr-train"
            )
        kind = EXPORTABLE_ARCHS.get(arch)
        if kind is None:
            raise CheckpointError(
                f"{ckpt_path} holds architecture {arch!r}, which has nothing to export; "
                f"export one of: {', '.join(EXPORTABLE_ARCHS)}"
            )
        model = load_checkpoint(ckpt_path)
    except MetaSRError:
        raise
    except Exception as e:  # a damaged config (wrong types, absurd sizes) must not surface as a traceback
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise CheckpointError(
            f"{ckpt_path}: the checkpoint's config cannot be exported ({reason}); "
            f"use a checkpoint written by metasr-train"
        ) from e
    return _Source(ckpt_path, ckpt, arch, kind, model, sha256_file(ckpt_path))


def _write_graphs(src: _Source, tmp: Path, opset: int, say: Callable[[str], None]) -> list[str]:
    from metasr.export import onnx_graphs, upscale_graphs
    from metasr.export import verify as verify_mod

    if src.kind == "meta":
        say(f"exporting {src.arch} graphs (opset {opset})")
        onnx_graphs.export_feature_extractor(src.model, tmp / "feature_extractor.onnx", opset)
        upscale_graphs.export_upscale_graphs(src.model, tmp, opset)
        names = list(_META_FILES)
    else:
        say(f"exporting fixed-scale {src.arch} x{src.model.upscale_factor} graph (opset {opset})")
        onnx_graphs.export_fixed(src.model, tmp / "model.onnx", opset)
        names = list(_FIXED_FILES)
    for name in names:
        verify_mod.check_graph(tmp / name, MAX_OPSET)
    return names


def _verify(
    src: _Source,
    tmp: Path,
    scales: Sequence[str | float],
    sizes: Sequence[tuple[int, int, int]],
    tolerance: float,
    say: Callable[[str], None],
) -> ParityReport:
    from metasr.export import verify as verify_mod

    say("verifying ONNX Runtime against PyTorch")
    if src.kind == "meta":
        report = verify_mod.verify_meta(src.model, tmp, scales=scales, sizes=sizes, tolerance=tolerance)
    else:
        report = verify_mod.verify_fixed(src.model, tmp / "model.onnx", sizes=sizes, tolerance=tolerance)
    say(
        f"parity: max abs error {report.max_abs_error:.3g} over {report.cases} cases "
        f"(tolerance {tolerance:g}; worst: {report.worst_case})"
    )
    return report


def _manifest(
    src: _Source,
    tmp: Path,
    names: list[str],
    opset: int,
    report: ParityReport | None,
    trt_info: dict[str, Any] | None,
    name: str | None = None,
) -> dict[str, Any]:
    model, kind, config = src.model, src.kind, src.config
    features = int(getattr(model, "features", 0)) or None
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        # the model's name travels with the manifest (derived DICOMs record it), whatever the folder is called later
        "name": name or src.arch,
        "arch": src.arch,
        "kind": kind,
        "fixed_scale": int(model.upscale_factor) if kind == "fixed" else None,
        "upscale_form": UPSCALE_FORM if kind == "meta" else None,
        "scale_range": [float(v) for v in config.get("scale_range", [])] or None,
        "normalization": {"mean": float(model.mean), "std": float(model.std)},
        "features": features,
        "receptive_radius": receptive_radius(model),
        "opset": opset,
        "index_dtype": INDEX_DTYPE if kind == "meta" else None,
        "graphs": _with_fp16_files(_graph_specs(kind, features), names),
        "files": {name: sha256_file(tmp / name) for name in names},
        "checkpoint": {
            "file": src.path.name,
            "sha256": src.sha256,
            "step": int(src.ckpt.get("step") or 0),
            "config": jsonable(config),
            "metrics": jsonable(src.ckpt.get("metrics") or {}),
        },
        "tools": _tool_versions(),
        "parity": report.as_manifest() if report is not None else None,
        "tensorrt": trt_info,
    }
    validate_manifest(manifest)
    return manifest


def export_model(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    opset: int = 17,
    force: bool = False,
    verify: bool = True,
    trt: bool = False,
    fp16: bool = False,
    profiles: Profiles | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    scales: Sequence[str | float] = DEFAULT_SCALES,
    sizes: Sequence[tuple[int, int, int]] = DEFAULT_SIZES,
    log: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export a metasr checkpoint to ONNX (and TensorRT), verify it, and publish it atomically.

    The graphs are written to a temporary folder beside ``out_dir``, checked (``onnx.checker``
    full check, opset and TensorRT operator allow-list), compared with the PyTorch model on
    random and phantom inputs at several scales and sizes, then moved into ``out_dir`` with
    ``manifest.json`` last. A failure leaves ``out_dir`` as it was. The checkpoint itself may live
    in ``out_dir``; it is never moved or deleted.

    Args:
        checkpoint: A checkpoint written by ``metasr-train`` (``metasrgan``, ``srgan`` or ``edsr``).
        out_dir: Export folder; default the checkpoint's folder.
        opset: ONNX opset (13..18).
        force: Replace an export of a different checkpoint (or unidentified graph files).
        verify: Run the ORT-vs-PyTorch parity check (the ONNX checker always runs).
        trt: Also build TensorRT engines. Fails before writing anything if TensorRT or a GPU is
            missing (the CLI then exports ONNX only and reports why; see ``metasr.export.cli``).
        fp16: Build fp16 engines (needs ``trt``).
        profiles: TensorRT optimisation-profile bounds (default :class:`Profiles`).
        tolerance: Max abs error allowed between ORT and PyTorch on [0,1] outputs.
        scales: Scales the parity check runs (Meta-SRGAN; fixed archs use their own).
        sizes: ``(N, h, w)`` inputs of the parity check (random and phantom images of each).
        log: Called with one-line progress messages (the CLI prints them to stderr).

    Raises:
        CheckpointError: missing, unreadable, malicious, damaged or non-exportable checkpoint.
        OutputError: ``out_dir`` holds another model's export (without ``force``) or is not writable.
        DependencyError: ``trt=True`` without TensorRT or a GPU.
        ParityError / ModelError: the exported graphs fail verification (nothing is written).
    """
    start = time.perf_counter()
    say = log or (lambda message: None)
    if fp16 and not trt:
        raise ValueError("fp16 applies to TensorRT engines; pass trt=True as well")
    if not MAX_OPSET >= opset >= 13:
        raise ValueError(f"opset must be between 13 and {MAX_OPSET}, got {opset}")
    src = _read_source(Path(checkpoint))
    trt_mod = None
    if trt:
        from metasr.export.tensorrt import check_available

        trt_mod = check_available()  # up front: nothing is written when engines cannot be built
    profiles = profiles or Profiles()
    out_dir = Path(out_dir) if out_dir is not None else src.path.parent
    graph_files = _META_FILES if src.kind == "meta" else _FIXED_FILES
    expected = [*graph_files, *(fp16_name(n) for n in graph_files if n.removesuffix(".onnx") in _FP16_GRAPHS)]
    check_target(out_dir, src.path, src.sha256, expected, force)  # before any work: refusals cost nothing
    tmp = make_temp_dir(out_dir)
    try:
        with _export_lock(out_dir):  # two exports into one folder at once: the second refuses
            old = check_target(out_dir, src.path, src.sha256, expected, force)  # again, now no one else writes
            names = _write_graphs(src, tmp, opset, say)
            report = _verify(src, tmp, scales, sizes, tolerance, say) if verify else None
            trt_info = None
            if trt_mod is not None:
                features = int(getattr(src.model, "features", 0)) or None
                precision = Precision.FP16 if fp16 else Precision.FP32
                trt_info, engine_names = _build_engines(
                    tmp, out_dir, list(names), src.kind, features, profiles, precision, say
                )
                names += engine_names
            names += _write_fp16_graphs(tmp, list(graph_files))
            manifest = _manifest(src, tmp, names, opset, report, trt_info, out_dir.name)
            write_manifest(tmp, manifest)
            publish(tmp, out_dir, names, old, keep=src.path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = [out_dir / n for n in names] + [out_dir / MANIFEST_NAME]
    return ExportResult(
        out_dir=out_dir, manifest=manifest, files=files, parity=report, seconds=time.perf_counter() - start
    )


def _export_lock(out_dir: Path) -> AbstractContextManager[None]:
    """An exclusive lock on the export folder: a lock file beside it, or (its parent read-only) the folder itself."""
    if out_dir.is_dir() and not os.access(out_dir.resolve().parent, os.W_OK):
        return exclusive_lock(out_dir, "--out")
    return output_lock(out_dir, "--out")


def _tool_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    import onnx
    import torch

    def dist(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    try:
        import onnxruntime

        ort_version: str | None = onnxruntime.__version__
    except ImportError:
        ort_version = None
    return {
        "metasr": dist("metasr"),
        "torch": torch.__version__.split("+")[0],
        "onnx": onnx.__version__,
        "onnxruntime": ort_version,
    }


def _with_fp16_files(graphs: dict[str, Any], names: list[str]) -> dict[str, Any]:
    for spec in graphs.values():
        if fp16_name(spec["file"]) in names:
            spec["fp16_file"] = fp16_name(spec["file"])
    return graphs


def _graph_specs(kind: str, features: int | None) -> dict[str, Any]:
    def t(name: str, dtype: str, shape: list) -> dict[str, Any]:
        return {"name": name, "dtype": dtype, "shape": shape}

    if kind == "fixed":
        return {
            "model": {
                "file": "model.onnx",
                "inputs": [t("lr", "float32", ["N", 1, "h", "w"])],
                "outputs": [t("sr", "float32", ["N", 1, "H", "W"])],
            }
        }
    taps = 9 * (features or 0)
    upscale_io = {
        "inputs": [
            t("features", "float32", ["N", features, "h", "w"]),
            t("kernels", "float32", ["K", taps]),
            t("row_index", INDEX_DTYPE, ["H"]),
            t("row_kernel", INDEX_DTYPE, ["H"]),
            t("col_index", INDEX_DTYPE, ["W"]),
            t("col_kernel", INDEX_DTYPE, ["W"]),
        ],
        "outputs": [t("sr", "float32", ["N", 1, "H", "W"])],
    }
    return {
        "feature_extractor": {
            "file": "feature_extractor.onnx",
            "inputs": [t("lr", "float32", ["N", 1, "h", "w"])],
            "outputs": [t("features", "float32", ["N", features, "h", "w"])],
        },
        "kernels": {
            "file": GRAPH_FILES["kernels"],
            "inputs": [
                t("inv_scale", "float32", [1]),
                t("row_offset", "float32", ["P"]),
                t("col_offset", "float32", ["Q"]),
            ],
            "outputs": [t("kernels", "float32", ["K", taps])],
        },
        "upscale": {"file": GRAPH_FILES["upscale"], "form": "classes", **upscale_io},
        "upscale_pixels": {"file": GRAPH_FILES["upscale_pixels"], "form": "pixels", **upscale_io},
    }


def _build_engines(
    tmp: Path,
    out_dir: Path,
    graph_names: list[str],
    kind: str,
    features: int | None,
    profiles: Profiles,
    precision: Precision,
    say: Callable[[str], None],
) -> tuple[dict[str, Any], list[str]]:
    import tensorrt  # imported (and checked) by check_available before anything was written

    from metasr.export.tensorrt import (
        TIMING_CACHE_NAME,
        build_engine,
        input_profiles,
        tensorrt_version,
        write_ep_context,
    )

    version = str(getattr(tensorrt, "__version__", None) or tensorrt_version())
    cache = tmp / TIMING_CACHE_NAME
    previous = out_dir / TIMING_CACHE_NAME
    if previous.is_file():  # reuse the tactics timed by an earlier export on this GPU
        shutil.copyfile(previous, cache)
    engines: dict[str, Any] = {}
    names: list[str] = []
    for graph in graph_names:
        stem = graph.removesuffix(".onnx")
        engine = f"{stem}.{precision.value}.engine"
        say(f"building TensorRT {precision.value} engine {engine} (minutes on first build)")
        engines[stem] = build_engine(
            tmp / graph, tmp / engine, input_profiles(stem, features or 0, profiles), precision, timing_cache=cache
        )
        # the model the runtime loads on a TensorRT host: ORT's provider runs this engine as is
        context = f"{stem}.{precision.value}_ctx.onnx"
        write_ep_context(tmp / graph, engine, tmp / context, version)
        engines[stem]["context"] = context
        names += [engine, context]
    # the timing cache is published beside the engines for the next build, but is not part of the
    # model (it changes with every build and GPU), so it has no entry in "files"
    return {
        "version": version,
        "gpu": gpu_name(),
        "precision": precision.value,
        "profiles": profiles.as_dict(),
        "engines": engines,
        "timing_cache": TIMING_CACHE_NAME,
    }, names
