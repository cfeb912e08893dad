"""``manifest.json`` of an export folder: read, validate and verify (torch-free).

The manifest describes an export completely (architecture, normalisation, graph inputs and
outputs, opset, index dtype, sha256 of every file and of the source checkpoint, tool versions,
parity result, TensorRT engines), so the runtime never needs the training configuration.
This is the one manifest module: the exporter writes with :func:`write_manifest`, the runtime,
``metasr-eval`` and the exporter read with :func:`read_manifest` (every number range-checked).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from metasr.core.atomic import atomic_write_text
from metasr.core.errors import ModelError

__all__ = [
    "MANIFEST_NAME",
    "MANIFEST_FORMAT",
    "MANIFEST_VERSION",
    "UPSCALE_FORM",
    "sha256_file",
    "model_id",
    "read_manifest",
    "write_manifest",
    "validate_manifest",
    "verify_files",
]

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "metasr-export"
MANIFEST_VERSION = 2
#: How the Meta-Upscale stage of a "meta" export is expressed (see ``metasr.export.upscale_graphs``).
UPSCALE_FORM = "class-kernel"

_REQUIRED = (
    "format",
    "format_version",
    "arch",
    "kind",
    "graphs",
    "files",
    "normalization",
    "opset",
    "receptive_radius",
    "checkpoint",
)
_KIND_GRAPHS = {"meta": {"feature_extractor", "kernels", "upscale", "upscale_pixels"}, "fixed": {"model"}}
#: Largest scale a manifest's scale_range may name.
MAX_MANIFEST_SCALE = 16
_FIX = "re-export the model (metasr-export) or reinstall metasr"
#: Largest manifest read (the shipped one is 9 KB; TensorRT sections add a few KB).
MAX_MANIFEST_BYTES = 1 << 20
#: Manifest fields that change output pixels besides the files: the model id covers them.
PIXEL_FIELDS = ("arch", "kind", "fixed_scale", "upscale_form", "normalization", "features", "receptive_radius")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (checkpoints and engines can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def validate_manifest(manifest: Any, where: str = MANIFEST_NAME) -> None:
    """Check the structure of a manifest dict (not the file hashes: see :func:`verify_files`).

    Raises:
        ModelError: naming the first problem found.
    """
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ModelError(
            f"{where} is not a metasr export manifest (expected format {MANIFEST_FORMAT!r}, found {found!r})"
        )
    if manifest.get("format_version") != MANIFEST_VERSION:
        raise ModelError(
            f"{where}: format_version {manifest.get('format_version')!r} is not supported "
            f"(this metasr reads {MANIFEST_VERSION}); re-export the model with metasr-export"
        )
    missing = [key for key in _REQUIRED if key not in manifest]
    if missing:
        raise ModelError(f"{where}: missing keys {missing}; {_FIX}")
    for key in ("name", "arch", "upscale_form", "index_dtype"):
        if key in manifest and manifest[key] is not None and not isinstance(manifest[key], str):
            raise ModelError(f"{where}: {key} must be a name, found {_brief(manifest[key])}; {_FIX}")
    if len(str(manifest.get("name") or "")) > 64:
        raise ModelError(f"{where}: name must be at most 64 characters (it is written into DICOM headers); {_FIX}")
    kind = manifest["kind"]
    if not isinstance(kind, str) or kind not in _KIND_GRAPHS:
        raise ModelError(f"{where}: kind must be one of {sorted(_KIND_GRAPHS)}, found {kind!r}")
    _check_graphs(manifest["graphs"], manifest["files"], kind, where)
    if kind == "fixed" and not isinstance(manifest.get("fixed_scale"), int):
        raise ModelError(f"{where}: a fixed-scale export needs an integer 'fixed_scale'")
    if kind == "meta" and manifest.get("upscale_form") != UPSCALE_FORM:
        raise ModelError(
            f"{where}: upscale_form {manifest.get('upscale_form')!r} is not one this metasr runs "
            f"({UPSCALE_FORM!r}); re-export the model with metasr-export"
        )
    _check_numbers(manifest, where)


def _check_graphs(graphs: Any, files: Any, kind: str, where: str) -> None:
    """The graphs a kind of export has, each naming files listed with their sha256."""
    if not isinstance(graphs, dict) or set(graphs) != _KIND_GRAPHS[kind]:
        raise ModelError(
            f"{where}: a {kind!r} export has graphs {sorted(_KIND_GRAPHS[kind])}, "
            f"found {sorted(graphs) if isinstance(graphs, dict) else graphs!r}"
        )
    if not isinstance(files, dict) or not all(_is_sha256(v) for v in files.values()):
        raise ModelError(f"{where}: 'files' must map file names to sha256 hex digests; {_FIX}")
    for name, spec in graphs.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("file"), str) or spec["file"] not in files:
            raise ModelError(f"{where}: graph {name!r} names a file that has no sha256 in 'files'; {_FIX}")
        half = spec.get("fp16_file")
        if half is not None and (not isinstance(half, str) or half not in files):
            raise ModelError(f"{where}: graph {name!r} names an fp16 file that has no sha256 in 'files'; {_FIX}")
    for name in files:
        if Path(name).name != name or name.startswith("."):
            raise ModelError(f"{where}: file name {name!r} must be a plain name inside the export folder")


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower())


def _is_number(value: Any, lo: float, hi: float) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and lo <= value <= hi
    )


#: Normalisation a model may carry (the limits metasr-train puts on a checkpoint).
NORMALIZATION_LIMITS = {"mean": (-10.0, 10.0), "std": (1e-6, 10.0)}


def _check_normalization(norm: Any, where: str) -> None:
    if not isinstance(norm, dict) or set(norm) != set(NORMALIZATION_LIMITS):
        raise ModelError(f'{where}: normalization must be {{"mean": m, "std": s}}, found {_brief(norm)}; {_FIX}')
    for key, (lo, hi) in NORMALIZATION_LIMITS.items():
        if not _is_number(norm[key], lo, hi):
            raise ModelError(
                f"{where}: normalization {key} must be a number from {lo:g} to {hi:g}, found {_brief(norm[key])}; "
                f"{_FIX}"
            )


def _is_int(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _check_numbers(manifest: dict[str, Any], where: str) -> None:
    """Refuse NaN, infinite or absurd numbers a runtime would otherwise compute with."""
    rng = manifest.get("scale_range")
    if rng is not None:
        ok = (
            isinstance(rng, list)
            and len(rng) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in rng)
            and 1 <= rng[0] <= rng[1] <= MAX_MANIFEST_SCALE
        )
        if not ok:
            raise ModelError(
                f"{where}: scale_range must be [min, max] with 1 <= min <= max <= {MAX_MANIFEST_SCALE}, "
                f"got {rng!r}; re-export the model with metasr-export"
            )
    _check_normalization(manifest.get("normalization"), where)
    if manifest.get("index_dtype") not in (None, "int64", "int32"):
        raise ModelError(f"{where}: index_dtype must be int64 or int32, found {_brief(manifest['index_dtype'])}")
    checks = (("features", 1, 4096), ("receptive_radius", 0, 1024), ("fixed_scale", 1, 16), ("opset", 7, 30))
    for key, lo, hi in checks:
        value = manifest.get(key)
        if value is not None and not _is_int(value, lo, hi):
            raise ModelError(
                f"{where}: {key} must be an integer from {lo} to {hi}, got {value!r}; "
                f"re-export the model with metasr-export"
            )


def model_id(manifest: dict[str, Any]) -> str:
    """The provenance id of an export: sha256 of its files' hashes and every field that changes pixels.

    Stable across copies of the folder; editing the normalisation (or any of :data:`PIXEL_FIELDS`)
    gives another id, so resume records and derived UIDs never mix the two.
    """
    key = {"files": manifest["files"], **{k: manifest.get(k) for k in PIXEL_FIELDS}}
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def verify_files(model_dir: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Check every file of ``manifest['files']`` exists in ``model_dir`` with its sha256.

    Raises:
        ModelError: for a missing file or a hash mismatch (damaged or replaced file).
    """
    model_dir = Path(model_dir)
    for name, expected in manifest["files"].items():
        path = model_dir / name
        if not path.is_file():
            raise ModelError(f"model file {path} is missing; {_FIX}")
        found = sha256_file(path)
        if found != expected:
            raise ModelError(
                f"model file {path} is damaged: its sha256 {found[:12]}... does not match the "
                f"manifest ({expected[:12]}...); {_FIX}"
            )


def read_manifest(model_dir: str | os.PathLike, verify: bool = False) -> dict[str, Any]:
    """Read and validate ``model_dir/manifest.json``; with ``verify``, check every file's sha256.

    Raises:
        ModelError: missing folder or manifest, not JSON, not a metasr manifest of a known
            version, and (with ``verify``) a missing or damaged file.
    """
    model_dir = Path(model_dir)
    path = model_dir / MANIFEST_NAME
    if not model_dir.is_dir():
        raise ModelError(f"model folder {model_dir} does not exist; pass a folder written by metasr-export")
    if not path.is_file():
        raise ModelError(
            f"model folder {model_dir} has no {MANIFEST_NAME}; pass a folder written by metasr-export "
            f"(or reinstall metasr for the shipped model)"
        )
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ModelError(
                f"{path} is {path.stat().st_size} bytes, not a manifest (at most {MAX_MANIFEST_BYTES}); {_FIX}"
            )
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise ModelError(f"{path} is not readable JSON (nested too deeply); {_FIX}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path} is not readable JSON ({e}); {_FIX}") from e
    validate_manifest(manifest, where=str(path))
    if verify:
        verify_files(model_dir, manifest)
    return manifest


def write_manifest(out_dir: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Validate and write ``manifest.json`` atomically (temp file in ``out_dir``, then rename)."""
    out_dir = Path(out_dir)
    validate_manifest(manifest, where=str(out_dir / MANIFEST_NAME))
    path = out_dir / MANIFEST_NAME
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path
