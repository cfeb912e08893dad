"""Lazy imports of optional dependencies, failing with the feature that needs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from metasr.core.errors import DependencyError

__all__ = ["require"]


def require(module: str, feature: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`DependencyError` naming the feature and the install.

    Args:
        module: Dotted module name, e.g. ``"tensorrt"``.
        feature: What needs it, e.g. ``"TensorRT engines"``.
        extra: The ``metasr[...]`` extra that installs it, if any.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        hint = f'pip install "metasr[{extra}]"' if extra else f"pip install {module.split('.')[0]}"
        raise DependencyError(f"{feature} needs the '{module}' package, which is not installed; run: {hint}") from e
