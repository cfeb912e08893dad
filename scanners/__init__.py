"""metasr.scanners: read what scanners produce and write derived (super-resolved) images back.

Torch-free. One entry point reads any supported file into float32 frames in [0, 1]::

    from metasr.scanners import read_image, DerivationInfo
    with read_image("slice.dcm") as scan:          # DICOM, NIfTI, PNG, TIFF or JPEG
        sr = upscaler.upscale(scan.frames, "2.3")   # [F, H, W] in [0, 1]
        scan.write_derived(sr, "slice_x2.3.dcm", DerivationInfo("2.3", model_id, "0.1.0", "metasrgan-mri"))

``write_derived`` maps the frames back to the input's units, range and bit depth, puts the
geometry (pixel spacing, position, affine) on the network's pixel grid, records the derivation
(DICOM) and writes atomically, never over the input. Files of one series share one intensity
mapping::

    groups = group_series(paths)                   # [SeriesGroup(key, paths, window)]
    scan = read_image(path, window=groups[0].window)
"""

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
from metasr.scanners.intensity import IntensityMap, IntensityRange, IntensityWindow
from metasr.scanners.reader import MAX_FILE_BYTES, SUPPORTED_SUFFIXES, detect_format, iter_images, read_image
from metasr.scanners.series import SeriesGroup, group_series

__all__ = [
    "read_image",
    "group_series",
    "SeriesGroup",
    "IntensityWindow",
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
    "MAX_FILE_BYTES",
]
