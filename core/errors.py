"""Errors raised by metasr libraries.

Every error a user can cause derives from :class:`MetaSRError`; command-line entry points turn
it into one line on stderr and exit code 2. Messages say what was expected, what was found and
what to do.
"""

from __future__ import annotations

__all__ = [
    "MetaSRError",
    "InputError",
    "ScaleError",
    "CheckpointError",
    "ModelError",
    "DependencyError",
    "OutputError",
    "ServerError",
]


class MetaSRError(Exception):
    """Base class of all errors caused by input, models or the environment."""


class InputError(MetaSRError, ValueError):
    """An input image, file or argument cannot be used."""


class ScaleError(InputError):
    """A scale factor is not a finite number in the allowed range."""


class CheckpointError(MetaSRError, ValueError):
    """A file is not a usable metasr checkpoint."""


class ModelError(MetaSRError):
    """An exported model directory is missing, damaged or inconsistent."""


class DependencyError(MetaSRError, ImportError):
    """An optional dependency needed by a feature is not installed."""


class OutputError(MetaSRError, OSError):
    """An output cannot be written where it was asked to go."""


class ServerError(MetaSRError):
    """An inference server cannot be reached, was lost, or refused a request."""
