"""Trained models shipped with metasr (package data, no download needed)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_MODEL", "default_model_dir", "shipped_models", "resolve_model_dir"]

DEFAULT_MODEL = "metasrgan-mri"


def default_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """Return the folder of a shipped model (checkpoint, exported graphs, manifest, card)."""
    return Path(__file__).resolve().parent / name


def shipped_models() -> list[str]:
    """Names of the shipped models (folders holding a ``manifest.json``), the default first."""
    root = Path(__file__).resolve().parent
    names = sorted(p.parent.name for p in root.glob("*/manifest.json"))
    return sorted(names, key=lambda n: n != DEFAULT_MODEL)


def resolve_model_dir(model: str | Path | None) -> Path:
    """The folder of ``model``: None is the default; a shipped model's bare name is its folder.

    Anything else is taken as a path (an export folder), so ``--model DIR`` keeps working; a
    folder in the current directory wins over a shipped model of the same name.
    """
    if model is None:
        return default_model_dir()
    path = Path(model)
    text = str(model)
    if not path.exists() and "/" not in text and "\\" not in text and text in shipped_models():
        return default_model_dir(text)
    return path
