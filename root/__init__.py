"""metasr: arbitrary-scale super-resolution of medical images (Meta-SRGAN), torch-free at run time.

This file is the top-level package ``metasr`` (the folder is named ``root/`` so that a checkout
never shadows an installed ``metasr`` when Python runs from the repository root).

The subpackages live in the repository's top-level folders (``pyproject.toml`` maps them):
``metasr.core``, ``metasr.training``, ``metasr.export``, ``metasr.runtime``, ``metasr.scanners``
and ``metasr.models``.
"""

from importlib import metadata as _metadata

try:
    __version__: str = _metadata.version("metasr")
except _metadata.PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
