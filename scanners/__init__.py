"""metasr.scanners: read what scanners produce and write derived (super-resolved) images back.

Torch-free. One entry point reads any supported file into float32 frames in [0, 1]::

    from metasr.scanners import read_image, DerivationInfo
    with read_image("slice.dcm") as scan:          # DICOM, NIfTI, PNG, TIFF or JPEG
        sr = upscaler.upscale(scan.frames, "2.3")   # [F, H, W] in [0, 1]
        scan.write_derived(sr, "slice_x2.3.dcm", DerivationInfo("2.3", model_id, "0.1.0", "metasrgan-mri"))

``write_derived`` maps the frames back to the input's units, range and bit depth, updates the
geometry (pixel spacing, position, affine) so the field of view is preserved, records the
derivation (DICOM) and writes atomically, never over the input.
"""

from metasr.scanners._detect import SUPPORTED_SUFFIXES, detect_format, iter_images, read_image
from metasr.scanners.base import (
    MAX_PIXELS,
    MAX_SIDE,
    MIN_SIDE,
    DerivationInfo,
    ImageFormat,
    ScanImage,
    check_dimensions,
)
from metasr.scanners.images import RasterScan, read_raster
from metasr.scanners.intensity import IntensityMap, IntensityRange

__all__ = [
    "read_image",
    "iter_images",
    "detect_format",
    "ScanImage",
    "DerivationInfo",
    "ImageFormat",
    "IntensityMap",
    "IntensityRange",
    "RasterScan",
    "read_raster",
    "check_dimensions",
    "SUPPORTED_SUFFIXES",
    "MIN_SIDE",
    "MAX_SIDE",
    "MAX_PIXELS",
]
