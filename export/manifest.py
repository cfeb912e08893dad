"""``manifest.json`` of an export directory: write, read, validate, and sha256 helpers.

The manifest describes the export completely (architecture, upscale form, normalisation, graph
inputs and outputs, opset, index dtype, sha256 of every file and of the source checkpoint, tool
versions, parity result, TensorRT engines), so the runtime never needs the training
configuration. :mod:`metasr.export.exporter` documents the format; this module writes it, and
reading, validating and hash checks live in :mod:`metasr.core.manifest` (one reader for the
runtime and the exporter), re-exported here. The module is torch-free.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from metasr.core.atomic import atomic_write_text
from metasr.core.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    read_manifest,
    sha256_file,
    validate_manifest,
    verify_files,
)

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


def write_manifest(out_dir: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Validate and write ``manifest.json`` atomically (temp file in ``out_dir``, then rename)."""
    out_dir = Path(out_dir)
    validate_manifest(manifest, where=str(out_dir / MANIFEST_NAME))
    path = out_dir / MANIFEST_NAME
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path
