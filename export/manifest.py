"""``manifest.json`` of an export directory: the names of :mod:`metasr.core.manifest`, the one
manifest module (write, read, validate, sha256), re-exported where ``metasr.export`` has always
offered them."""

from __future__ import annotations

from metasr.core.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    read_manifest,
    sha256_file,
    validate_manifest,
    verify_files,
    write_manifest,
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
