"""Self-describing checkpoints: plain dicts loadable with ``torch.load(weights_only=True)``.

Layout::

    {"format": "metasr-checkpoint", "format_version": 1,
     "model": state_dict,
     "config": {"arch": str, "args": {...constructor arguments...},
                "normalization": {"mean": float, "std": float},
                "scale_range": [min, max]},
     "step": int, "metrics": {...}, ...extra keys (optimiser state, RNG) for resuming}
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metasr.core.atomic import atomic_writer
from metasr.core.errors import CheckpointError
from metasr.training.models import build_model

__all__ = ["CHECKPOINT_FORMAT", "model_config", "save_checkpoint", "read_checkpoint", "load_checkpoint"]

CHECKPOINT_FORMAT = "metasr-checkpoint"
_FORMAT_VERSION = 1


def model_config(arch: str, model: nn.Module, args: dict[str, Any]) -> dict[str, Any]:
    """The ``config`` entry of a checkpoint for ``model`` built as ``build_model(arch, **args)``."""
    config: dict[str, Any] = {"arch": arch, "args": dict(args)}
    if hasattr(model, "mean"):
        config["normalization"] = {"mean": float(model.mean), "std": float(model.std)}
    if hasattr(model, "scale_range"):
        config["scale_range"] = [float(v) for v in model.scale_range]
    elif hasattr(model, "upscale_factor"):
        config["scale_range"] = [float(model.upscale_factor)] * 2
    return config


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    config: dict[str, Any],
    step: int = 0,
    metrics: dict[str, float] | None = None,
    **extra: Any,
) -> Path:
    """Write a checkpoint atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": _FORMAT_VERSION,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": config,
        "step": int(step),
        "metrics": dict(metrics or {}),
        **extra,
    }
    with atomic_writer(path) as f:
        torch.save(payload, f)
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a checkpoint dict without building the model.

    Raises:
        CheckpointError: missing file, not a torch file, truncated, a pickle that would run code,
            or a dict without the metasr layout.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the path of a .pt file written by metasr-train")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); use a complete checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"checkpoint {path} was refused: it contains objects other than tensors and plain "
            f"data (a pickle that could run code); only metasr checkpoints are loaded"
        ) from e
    except (
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        ValueError,
        OSError,
        KeyError,
        IndexError,
        TypeError,
        AttributeError,
    ) as e:  # garbage bytes fail anywhere in the unpickler
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or not a torch file: {reason})") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        found = sorted(ckpt)[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{path} is not a metasr checkpoint: expected a dict with 'model' and 'config', found {found}"
        )
    config = ckpt["config"]
    if not isinstance(config, dict) or "arch" not in config:
        raise CheckpointError(f"{path} has no architecture in its 'config'; it was not written by metasr")
    return ckpt


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Build the model a checkpoint describes, load its weights, and return it in eval mode."""
    ckpt = read_checkpoint(path)
    config = ckpt["config"]
    try:
        model = build_model(config["arch"], **config.get("args", {}))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: cannot build the model it describes ({e})") from e
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CheckpointError(f"{path}: weights do not match architecture {config['arch']!r} ({first})") from e
    return model.to(map_location).eval()
