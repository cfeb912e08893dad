"""Plain JSON data from metadata that may hold tensors, numpy scalars or tuples."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["jsonable"]


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: dicts (string keys), lists, finite numbers, strings, None.

    Tensors and numpy arrays/scalars become lists/numbers (through ``tolist``); NaN and infinities
    become None (JSON has no spelling for them); anything else becomes its ``str``.
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "tolist"):  # torch tensors, numpy arrays and scalars
        return jsonable(value.tolist())
    return str(value)
