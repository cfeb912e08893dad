"""metasr.core: plumbing every metasr package may import (torch-free, no other metasr imports).

Errors, exact scale arithmetic, atomic writes, command-line plumbing, string-choice Enums,
optional-dependency loading, grid resampling and the export manifest reader.
"""

from metasr.core.errors import (
    CheckpointError,
    DependencyError,
    InputError,
    MetaSRError,
    ModelError,
    OutputError,
    ScaleError,
)
from metasr.core.scale import Scale, axis_mapping, hr_length, parse_scale

__all__ = [
    "CheckpointError",
    "DependencyError",
    "InputError",
    "MetaSRError",
    "ModelError",
    "OutputError",
    "Scale",
    "ScaleError",
    "axis_mapping",
    "hr_length",
    "parse_scale",
]
