"""metasr.export: a trained checkpoint -> ONNX graphs (+ TensorRT engines) that verify themselves.

:func:`export_model` (in :mod:`metasr.export.exporter`) writes the export folder; the graphs are
built in :mod:`metasr.export.onnx_graphs` and :mod:`metasr.export.upscale_graphs`, checked in
:mod:`metasr.export.verify` and published by :mod:`metasr.export.publish`.
"""

from metasr.core.manifest import read_manifest, sha256_file, verify_files
from metasr.export.exporter import EXPORTABLE_ARCHS, ExportResult, export_model
from metasr.export.tensorrt import Precision, Profiles
from metasr.export.verify import ParityError, ParityReport

__all__ = [
    "EXPORTABLE_ARCHS",
    "ExportResult",
    "ParityError",
    "ParityReport",
    "Precision",
    "Profiles",
    "export_model",
    "read_manifest",
    "verify_files",
    "sha256_file",
]
