"""What accelerator software this machine has, asked without importing CUDA or TensorRT."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["gpu_free_memory_mb", "gpu_name", "tensorrt_version"]

# Every name TensorRT's Python packages are published under (meta package, per-CUDA builds, libs).
_TENSORRT_DISTRIBUTIONS = (
    "tensorrt",
    "tensorrt-cu13",
    "tensorrt-cu12",
    "tensorrt_cu13",
    "tensorrt_cu12",
    "tensorrt_libs",
    "tensorrt-cu13-libs",
    "tensorrt-cu12-libs",
)


def gpu_name() -> str | None:
    """Name of the first NVIDIA GPU from the driver's /proc entry (no CUDA import), or None."""
    root = Path("/proc/driver/nvidia/gpus")
    try:
        for info in sorted(root.glob("*/information")):
            for line in info.read_text().splitlines():
                if line.startswith("Model:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def tensorrt_version() -> str | None:
    """Installed TensorRT version (the Python package's metadata), or None."""
    from importlib import metadata

    for dist in _TENSORRT_DISTRIBUTIONS:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def gpu_free_memory_mb(index: int = 0) -> float | None:
    """Free memory of NVIDIA GPU ``index`` in MiB (``nvidia-smi``, no CUDA import), or None.

    ``index`` counts the GPUs this process sees (``CUDA_VISIBLE_DEVICES`` honoured).
    """
    import shutil
    import subprocess

    tool = shutil.which("nvidia-smi")
    if tool is None:
        return None
    try:
        done = subprocess.run(
            [tool, f"--id={_visible_gpu_id(index)}", "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return float(done.stdout.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def _visible_gpu_id(index: int) -> str:
    # nvidia-smi numbers every GPU; CUDA numbers the visible ones
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[index] if index < len(visible) else str(index)
