"""metasr.runtime: the torch-free runtime (``Upscaler`` on ONNX Runtime, ``metasr-run``)."""

from metasr.runtime.backends import Device, Precision
from metasr.runtime.upscaler import MAX_SCALE, MIN_SIDE, UpscaleMethod, Upscaler, check_image, read_manifest

__all__ = ["MAX_SCALE", "MIN_SIDE", "Device", "Precision", "UpscaleMethod", "Upscaler", "check_image", "read_manifest"]
