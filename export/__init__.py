"""metasr.export: a trained checkpoint -> ONNX graphs (+ TensorRT engines) that verify themselves.

Export directory contract (``INTERFACES.md`` section 1, ``design.md`` "Export contract"):

* Meta-SRGAN (``kind: "meta"``): ``feature_extractor.onnx`` (``lr`` float32 [N,1,h,w] in [0,1]
  -> ``features`` float32 [N,64,h,w]) and ``upscale.onnx`` (``features``, ``inv_scale`` float32
  [1], ``row_index`` int64 [H], ``row_offset`` float32 [H], ``col_index`` int64 [W],
  ``col_offset`` float32 [W] -> ``sr`` float32 [N,1,H,W], [0,1] intensity space, not clipped).
  Index/offset values come from :func:`metasr.core.scale.axis_mapping`; ``index_dtype`` in
  the manifest is ``"int64"``.
* SRGAN/EDSR (``kind: "fixed"``, ``fixed_scale: 2``): ``model.onnx``, ``lr`` -> ``sr`` [N,1,2h,2w].
* ``manifest.json`` (format_version 1), written last: arch, kind, normalisation (applied inside
  the graphs), scale range, features, ``receptive_radius`` (LR halo for exact tiling: 16 for
  Meta-SRGAN), opset, index dtype, graph I/O, sha256 of every file and of the checkpoint, tool
  versions, parity result, TensorRT engines (or null).
* With ``trt=True``: ``<graph>.<fp32|fp16>.engine`` per graph, listed in ``files`` and described
  under ``tensorrt`` (version, precision, profiles, per-engine input shapes), and the builder's
  ``trt_timing.cache`` (reused by the next build; not in ``files``, it is not part of the model).

Only additions to the INTERFACES.md example, nothing renamed or removed: ``parity.worst_case``
(label of the worst case), ``checkpoint.metrics``, and under ``tensorrt``: ``profiles`` (the
:class:`Profiles` bounds), ``engines`` (per graph: file, precision, strongly_typed, input shapes)
and ``timing_cache``. The upscale graph needs only a 1-pixel feature halo around the LR rows and
columns its indices name, so callers may feed feature tiles (see ``metasr.export.onnx_graphs``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metasr.core.errors import CheckpointError, ModelError, OutputError
from metasr.export.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    read_manifest,
    sha256_file,
    validate_manifest,
    verify_files,
    write_manifest,
)
from metasr.export.onnx_graphs import INDEX_DTYPE, MAX_OPSET, receptive_radius
from metasr.export.tensorrt import Precision, Profiles
from metasr.export.verify import DEFAULT_SCALES, DEFAULT_SIZES, DEFAULT_TOLERANCE, ParityError, ParityReport
from metasr.training.models import ARCH_SPECS

__all__ = [
    "EXPORTABLE_ARCHS",
    "ExportResult",
    "ParityError",
    "ParityReport",
    "Precision",
    "Profiles",
    "export_model",
    "read_manifest",
    "verify_files",
    "sha256_file",
]

#: Architectures with weights that export, and the kind of export each gives.
EXPORTABLE_ARCHS = {name: spec.kind for name, spec in ARCH_SPECS.items() if spec.exportable}
_META_FILES = ("feature_extractor.onnx", "upscale.onnx")
_FIXED_FILES = ("model.onnx",)


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


def _check_target(out_dir: Path, ckpt_path: Path, ckpt_sha: str, names: list[str], force: bool) -> dict | None:
    """Refuse to replace another model's export without ``force``; return the old manifest if any."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {out_dir} exists and is not a folder; choose a folder for the export")
    for name in names + [MANIFEST_NAME]:
        if (out_dir / name).resolve() == ckpt_path.resolve():
            raise OutputError(
                f"the export would overwrite the checkpoint {ckpt_path}; rename the checkpoint or choose another --out"
            )
    if not out_dir.is_dir():
        return None
    old = None
    if (out_dir / MANIFEST_NAME).exists():
        try:
            old = read_manifest(out_dir)
        except ModelError as e:
            if not force:
                raise OutputError(
                    f"{out_dir} holds a {MANIFEST_NAME} that is not a valid metasr export ({e}); "
                    f"pass --force to replace it"
                ) from e
            return None
        old_sha = (old.get("checkpoint") or {}).get("sha256")
        old_name = (old.get("checkpoint") or {}).get("file")
        if (
            old_sha != ckpt_sha
            and not force
            and old_name == ckpt_path.name
            and out_dir.resolve() == ckpt_path.parent.resolve()
        ):
            raise OutputError(
                f"{out_dir} holds the export of an earlier version of {ckpt_path.name} "
                f"(sha256 {str(old_sha)[:12]}...); pass --force to re-export it"
            )
        if old_sha != ckpt_sha and not force:
            raise OutputError(
                f"{out_dir} already holds the export of another checkpoint "
                f"({(old.get('checkpoint') or {}).get('file')}, sha256 {str(old_sha)[:12]}...); "
                f"pass --force to replace it, or choose another --out"
            )
        return old
    clash = [n for n in names if (out_dir / n).exists()]
    if clash and not force:
        raise OutputError(
            f"{out_dir} already has {', '.join(clash)} without a {MANIFEST_NAME} (unknown origin); "
            f"pass --force to replace them, or choose another --out"
        )
    return None


def _make_temp_dir(out_dir: Path) -> Path:
    """A temp folder on the same file system as ``out_dir``: beside it, or (if its parent is not
    writable but ``out_dir`` exists) hidden inside it, so the final moves are renames."""
    prefix = f".{out_dir.resolve().name or 'export'}.export-"
    candidates = [out_dir.resolve().parent] + ([out_dir] if out_dir.is_dir() else [])
    error: OSError | None = None
    for parent in candidates:
        try:
            parent.mkdir(parents=True, exist_ok=True)
            return _new_dir(parent, prefix)
        except OSError as e:
            error = e
    raise OutputError(
        f"cannot write the export to {out_dir} ({getattr(error, 'strerror', None) or error}); choose a writable --out"
    ) from error


def _new_dir(parent: Path, prefix: str) -> Path:
    # os.mkdir (not tempfile.mkdtemp, which makes it 0700) so the folder gets the user's umask
    # permissions: when out_dir is new, this folder is renamed into it as is
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary folder in {parent}")


def _publish(tmp: Path, out_dir: Path, names: list[str], old: dict | None, keep: Path) -> None:
    """Move the verified files from ``tmp`` into ``out_dir``, manifest last."""
    if not out_dir.exists():
        os.rename(tmp, out_dir)  # the whole export appears at once
        return
    # drop the old manifest first so a half-replaced folder never passes for a valid export
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    for path in sorted(tmp.iterdir()):  # the listed files plus build caches (trt_timing.cache)
        if path.name != MANIFEST_NAME:
            os.replace(path, out_dir / path.name)
    if old is not None:  # files of the previous export that this one does not have (e.g. engines)
        for name in old.get("files", {}):
            stale = out_dir / name
            if name not in names and name != MANIFEST_NAME and stale.resolve() != keep.resolve():
                stale.unlink(missing_ok=True)
    os.replace(tmp / MANIFEST_NAME, out_dir / MANIFEST_NAME)
    shutil.rmtree(tmp, ignore_errors=True)


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

    Returns:
        An :class:`ExportResult`.

    Raises:
        CheckpointError: missing, unreadable, malicious or non-exportable checkpoint.
        OutputError: ``out_dir`` holds another model's export (without ``force``) or is not writable.
        DependencyError: ``trt=True`` without TensorRT or a GPU.
        ParityError / ModelError: the exported graphs fail verification (nothing is written).
    """
    from metasr.export import onnx_graphs
    from metasr.export import verify as verify_mod
    from metasr.training.checkpoint import load_checkpoint, read_checkpoint

    start = time.perf_counter()
    say = log or (lambda message: None)
    if fp16 and not trt:
        raise ValueError("fp16 applies to TensorRT engines; pass trt=True as well")
    if not MAX_OPSET >= opset >= 13:
        raise ValueError(f"opset must be between 13 and {MAX_OPSET}, got {opset}")
    ckpt_path = Path(checkpoint)
    ckpt = read_checkpoint(ckpt_path)
    config = ckpt["config"]
    arch = config["arch"]
    kind = EXPORTABLE_ARCHS.get(arch)
    if kind is None:
        raise CheckpointError(
            f"{ckpt_path} holds architecture {arch!r}, which has nothing to export; "
            f"export one of: {', '.join(EXPORTABLE_ARCHS)}"
        )
    model = load_checkpoint(ckpt_path)
    ckpt_sha = sha256_file(ckpt_path)
    trt_mod = None
    if trt:
        from metasr.export.tensorrt import check_available

        trt_mod = check_available()  # up front: nothing is written when engines cannot be built
    profiles = profiles or Profiles()
    out_dir = Path(out_dir) if out_dir is not None else ckpt_path.parent
    graph_names = list(_META_FILES if kind == "meta" else _FIXED_FILES)
    old = _check_target(out_dir, ckpt_path, ckpt_sha, graph_names, force)

    tmp = _make_temp_dir(out_dir)
    try:
        features = int(getattr(model, "features", 0)) or None
        report: ParityReport | None = None
        if kind == "meta":
            say(f"exporting {arch} graphs (opset {opset})")
            onnx_graphs.export_feature_extractor(model, tmp / "feature_extractor.onnx", opset)
            onnx_graphs.export_upscale(model, tmp / "upscale.onnx", opset)
        else:
            say(f"exporting fixed-scale {arch} x{model.upscale_factor} graph (opset {opset})")
            onnx_graphs.export_fixed(model, tmp / "model.onnx", opset)
        for name in graph_names:
            verify_mod.check_graph(tmp / name, MAX_OPSET)
        if verify:
            say("verifying ONNX Runtime against PyTorch")
            if kind == "meta":
                report = verify_mod.verify_meta(
                    model,
                    tmp / "feature_extractor.onnx",
                    tmp / "upscale.onnx",
                    scales=scales,
                    sizes=sizes,
                    tolerance=tolerance,
                )
            else:
                report = verify_mod.verify_fixed(model, tmp / "model.onnx", sizes=sizes, tolerance=tolerance)
            say(
                f"parity: max abs error {report.max_abs_error:.3g} over {report.cases} cases "
                f"(tolerance {tolerance:g}; worst: {report.worst_case})"
            )

        names = list(graph_names)
        trt_info = None
        if trt_mod is not None:
            trt_info, engine_names = _build_engines(
                tmp, out_dir, graph_names, kind, features, profiles, Precision.FP16 if fp16 else Precision.FP32, say
            )
            names += engine_names

        graphs = _graph_specs(kind, features)
        manifest: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "format_version": MANIFEST_VERSION,
            "arch": arch,
            "kind": kind,
            "fixed_scale": int(model.upscale_factor) if kind == "fixed" else None,
            "scale_range": [float(v) for v in config.get("scale_range", [])] or None,
            "normalization": {"mean": float(model.mean), "std": float(model.std)},
            "features": features,
            "receptive_radius": receptive_radius(model),
            "opset": opset,
            "index_dtype": INDEX_DTYPE if kind == "meta" else None,
            "graphs": graphs,
            "files": {name: sha256_file(tmp / name) for name in names},
            "checkpoint": {
                "file": ckpt_path.name,
                "sha256": ckpt_sha,
                "step": int(ckpt.get("step") or 0),
                "config": _jsonable(config),
                "metrics": _jsonable(ckpt.get("metrics") or {}),
            },
            "tools": _tool_versions(),
            "parity": report.as_manifest() if report is not None else None,
            "tensorrt": trt_info,
        }
        validate_manifest(manifest)
        write_manifest(tmp, manifest)
        _publish(tmp, out_dir, names, old, keep=ckpt_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = [out_dir / n for n in names] + [out_dir / MANIFEST_NAME]
    return ExportResult(
        out_dir=out_dir, manifest=manifest, files=files, parity=report, seconds=time.perf_counter() - start
    )


def _jsonable(value: Any) -> Any:
    """Plain JSON data from checkpoint metadata (which may hold tensors or numpy scalars)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "tolist"):  # torch tensors, numpy arrays and scalars
        return _jsonable(value.tolist())
    return str(value)


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
    return {
        "feature_extractor": {
            "file": "feature_extractor.onnx",
            "inputs": [t("lr", "float32", ["N", 1, "h", "w"])],
            "outputs": [t("features", "float32", ["N", features, "h", "w"])],
        },
        "upscale": {
            "file": "upscale.onnx",
            "inputs": [
                t("features", "float32", ["N", features, "h", "w"]),
                t("inv_scale", "float32", [1]),
                t("row_index", INDEX_DTYPE, ["H"]),
                t("row_offset", "float32", ["H"]),
                t("col_index", INDEX_DTYPE, ["W"]),
                t("col_offset", "float32", ["W"]),
            ],
            "outputs": [t("sr", "float32", ["N", 1, "H", "W"])],
        },
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
    from metasr.export.tensorrt import TIMING_CACHE_NAME, build_engine, input_profiles, tensorrt_version

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
        names.append(engine)
    # the timing cache is published beside the engines for the next build, but is not part of the
    # model (it changes with every build and GPU), so it has no entry in "files"
    return {
        "version": tensorrt_version(),
        "precision": precision.value,
        "profiles": profiles.as_dict(),
        "engines": engines,
        "timing_cache": TIMING_CACHE_NAME,
    }, names
