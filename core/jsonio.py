"""Plain JSON data from library objects (enums, numpy values, paths, tuples)."""

from __future__ import annotations

import math
from enum import Enum
from typing import Any

__all__ = ["jsonable"]


def jsonable(value: Any) -> Any:
    """Turn ``value`` into data :func:`json.dumps` writes as standard JSON.

    Enums become their value, mappings get string keys, tuples and lists become lists, objects
    with ``tolist`` (numpy arrays and scalars, torch tensors) are converted through it,
    non-finite floats become ``None`` (standard JSON has no NaN or Infinity), and anything else
    becomes its ``str``.
    """
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "tolist"):
        return jsonable(value.tolist())
    return str(value)
