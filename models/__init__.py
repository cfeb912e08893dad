"""Trained models shipped with metasr (package data, no download needed)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_MODEL", "default_model_dir"]

DEFAULT_MODEL = "metasrgan-mri"


def default_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """Return the folder of a shipped model (checkpoint, exported graphs, manifest, card)."""
    return Path(__file__).resolve().parent / name
