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


def make_checkpoint(path: Path, arch: str = "metasrgan", seed: int = 0) -> Path:
    """Write a small random-init checkpoint of ``arch`` whose outputs look like an image.

    Batch-norm running statistics are perturbed (so folding them into convolutions is exercised)
    and the last layer is damped so outputs stay mostly inside [0, 1], where clipping does not
    hide differences between implementations.
    """
    import torch
    from torch import nn

    from metasr.training import build_model, model_config, save_checkpoint

    torch.manual_seed(seed)
    model = build_model(arch)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        last = model.upscale.wpn[2] if arch == "metasrgan" else getattr(model, "out", None)
        if last is not None:
            last.weight.mul_(0.2)
    return save_checkpoint(path, model, model_config(arch, model, {}))


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
