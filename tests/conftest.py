"""Shared fixtures: tiny random-init checkpoints and their exports, made once per test session.

torch is imported inside the fixtures only, so torch-free tests still collect without it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One torch thread for the whole run, where torch is installed.

    The test machine has 2 cores shared with ONNX Runtime's own pools; oversubscribed OpenMP
    threads spun and made 2 torch threads up to 10x slower than 1 under load.
    """
    if importlib.util.find_spec("torch") is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_checkpoint(
    path: Path, arch: str = "metasrgan", seed: int = 0, *, step: int = 0, damp: bool = True, **args: object
) -> Path:
    """Write a small random-init checkpoint of ``arch`` whose outputs look like an image.

    Batch-norm running statistics are perturbed (so folding them into convolutions is exercised)
    and, with ``damp``, the last layer is scaled by 0.2 so outputs stay mostly inside [0, 1],
    where clipping does not hide differences between implementations. ``args`` are constructor
    arguments (e.g. ``features=8, num_blocks=1`` for a fast model), stored in the config.
    """
    import torch
    from torch import nn

    from metasr.training import build_model, model_config, save_checkpoint

    torch.manual_seed(seed)
    model = build_model(arch, **args)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        last = model.upscale.wpn[2] if arch == "metasrgan" else getattr(model, "out", None)
        if damp and last is not None:
            last.weight.mul_(0.2)
    return save_checkpoint(path, model, model_config(arch, model, dict(args)), step=step)


def write_smooth_images(
    folder: Path, count: int = 3, shape: tuple[int, int] = (40, 48), seed: int = 0, border: int = 0
) -> Path:
    """Write ``count`` smooth 8-bit grayscale PNGs ``img{i}.png`` (blurred noise over 40..240).

    With ``border`` the content is framed by that many black pixels, which the maximal-information
    crop removes. Returns ``folder``.
    """
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        a = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), 2)
        a = (a - a.min()) / (a.max() - a.min())
        img = np.zeros((shape[0] + 2 * border, shape[1] + 2 * border), np.uint8)
        img[border : border + shape[0], border : border + shape[1]] = (a * 200 + 40).astype(np.uint8)
        assert cv2.imwrite(str(folder / f"img{i}.png"), img)
    return folder


def write_dicom(
    path: Path,
    pixels: object,
    *,
    photometric: str = "MONOCHROME2",
    preamble: bool = True,
    bits: int = 16,
    slope: float | None = None,
    intercept: float | None = None,
) -> Path:
    """Write a minimal valid secondary-capture DICOM of ``pixels`` ([h, w] or [frames, h, w] uint).

    ``preamble=False`` writes the file without the 128-byte preamble and ``DICM`` (as some
    scanners export); several frames make a multi-frame object.
    """
    import numpy as np
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    arr = np.asarray(pixels, dtype=np.uint16 if bits > 8 else np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["series", str(path.parent)])
    ds.PatientID, ds.PatientName, ds.Modality = "TEST", "Test^Patient", "OT"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.Rows, ds.Columns = int(arr.shape[-2]), int(arr.shape[-1])
    if arr.ndim == 3:
        ds.NumberOfFrames = int(arr.shape[0])
    ds.BitsAllocated = 16 if bits > 8 else 8
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    ds.PixelSpacing = [1.0, 1.0]
    if slope is not None or intercept is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope if slope is not None else 1, intercept or 0
    ds.PixelData = arr.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=preamble)
    return path


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five smooth 40x48 grayscale PNGs (one becomes the validation file), for training runs."""
    return write_smooth_images(tmp_path_factory.mktemp("tiny"), count=5)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init Meta-SRGAN checkpoint (paper architecture)."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="session")
def tiny_export_dir(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ONNX export (``metasr.export.export_model``) of :func:`tiny_checkpoint`. Treat as read-only."""
    from metasr.export import export_model

    return export_model(tiny_checkpoint, tmp_path_factory.mktemp("export") / "tiny", verify=False).out_dir


@pytest.fixture(scope="session")
def tiny_srgan_export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fixed-scale (x2) SRGAN export of a random-init checkpoint. Treat as read-only."""
    from metasr.export import export_model

    ckpt = make_checkpoint(tmp_path_factory.mktemp("ckpt-srgan") / "srgan.pt", "srgan")
    return export_model(ckpt, tmp_path_factory.mktemp("export") / "srgan", verify=False).out_dir
