"""``manifest.json`` of an export directory: write, read, validate, and sha256 helpers.

The manifest describes the export completely (architecture, normalisation, graph inputs and
outputs, opset, index dtype, sha256 of every file and of the source checkpoint, tool versions,
parity result, TensorRT engines), so the runtime never needs the training configuration. See
``INTERFACES.md`` section 1 / ``design.md`` "Export contract" for the format; this module is its
producer-side reference. The module is torch-free.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from metasr.runtime.errors import ModelError

__all__ = [
    "MANIFEST_NAME",
    "MANIFEST_FORMAT",
    "MANIFEST_VERSION",
    "sha256_file",
    "write_manifest",
    "read_manifest",
    "validate_manifest",
    "verify_files",
]

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "metasr-export"
MANIFEST_VERSION = 1

_REQUIRED = ("format", "format_version", "arch", "kind", "graphs", "files", "normalization", "opset",
             "receptive_radius", "checkpoint")
_KIND_GRAPHS = {"meta": {"feature_extractor", "upscale"}, "fixed": {"model"}}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (checkpoints can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(out_dir: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Validate and write ``manifest.json`` atomically (temp file in ``out_dir``, then rename)."""
    out_dir = Path(out_dir)
    validate_manifest(manifest, where=str(out_dir / MANIFEST_NAME))
    path = out_dir / MANIFEST_NAME
    # a plain open() (not mkstemp) so the file gets the usual umask permissions, not 0600
    tmp = out_dir / f".{MANIFEST_NAME}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_manifest(model_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``model_dir/manifest.json``.

    Raises:
        ModelError: missing, not JSON, or not a metasr export manifest of a known version.
    """
    path = Path(model_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ModelError(f"{path} does not exist; export a checkpoint there with: metasr-export --ckpt best.pt "
                         f"--out {Path(model_dir)}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path} is not readable JSON ({e}); re-export the model") from e
    validate_manifest(manifest, where=str(path))
    return manifest


def validate_manifest(manifest: Any, where: str = MANIFEST_NAME) -> None:
    """Check the structure of a manifest dict (not the file hashes: see :func:`verify_files`).

    Raises:
        ModelError: naming the first problem found.
    """
    if not isinstance(manifest, dict):
        raise ModelError(f"{where}: expected a JSON object, found {type(manifest).__name__}")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ModelError(f"{where}: expected format {MANIFEST_FORMAT!r}, found {manifest.get('format')!r}; "
                         f"this is not a metasr export")
    if manifest.get("format_version") != MANIFEST_VERSION:
        raise ModelError(f"{where}: format_version {manifest.get('format_version')!r} is not supported "
                         f"(this metasr reads {MANIFEST_VERSION}); re-export with this version")
    missing = [key for key in _REQUIRED if key not in manifest]
    if missing:
        raise ModelError(f"{where}: missing keys {missing}; re-export the model")
    kind = manifest["kind"]
    if kind not in _KIND_GRAPHS:
        raise ModelError(f"{where}: kind must be one of {sorted(_KIND_GRAPHS)}, found {kind!r}")
    graphs, files = manifest["graphs"], manifest["files"]
    if not isinstance(graphs, dict) or set(graphs) != _KIND_GRAPHS[kind]:
        raise ModelError(f"{where}: a {kind!r} export has graphs {sorted(_KIND_GRAPHS[kind])}, "
                         f"found {sorted(graphs) if isinstance(graphs, dict) else graphs!r}")
    if not isinstance(files, dict) or not all(isinstance(v, str) and len(v) == 64 for v in files.values()):
        raise ModelError(f"{where}: 'files' must map file names to sha256 hex digests")
    for name, spec in graphs.items():
        if not isinstance(spec, dict) or spec.get("file") not in files:
            raise ModelError(f"{where}: graph {name!r} names a file that has no sha256 in 'files'")
    for name in files:
        if Path(name).name != name or name.startswith("."):
            raise ModelError(f"{where}: file name {name!r} must be a plain name inside the export folder")
    if kind == "fixed" and not isinstance(manifest.get("fixed_scale"), int):
        raise ModelError(f"{where}: a fixed-scale export needs an integer 'fixed_scale'")


def verify_files(model_dir: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Check every file of ``manifest['files']`` exists in ``model_dir`` with its sha256.

    Raises:
        ModelError: for a missing file or a hash mismatch (damaged or replaced file).
    """
    model_dir = Path(model_dir)
    for name, expected in manifest["files"].items():
        path = model_dir / name
        if not path.is_file():
            raise ModelError(f"{path} is listed in the manifest but missing; re-export the model")
        found = sha256_file(path)
        if found != expected:
            raise ModelError(f"{path} does not match its manifest (sha256 {found[:12]}..., expected "
                             f"{expected[:12]}...); the file was changed or damaged: re-export the model")
