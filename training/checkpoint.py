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

import math
import os
import pickle
import warnings
import zipfile
from numbers import Real
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metasr.core.atomic import atomic_writer
from metasr.core.errors import CheckpointError
from metasr.training.models import ARCH_SPECS, build_model

__all__ = [
    "CHECKPOINT_FORMAT",
    "ARG_LIMITS",
    "model_config",
    "save_checkpoint",
    "read_checkpoint",
    "check_config",
    "checkpoint_args",
    "FLAG_ARGS",
    "load_checkpoint",
    "average_checkpoints",
]

CHECKPOINT_FORMAT = "metasr-checkpoint"
_FORMAT_VERSION = 1

#: Accepted constructor arguments of a checkpoint's ``config.args``: ``(type, low, high)``.
#: Bounds keep a damaged or hostile file from building a model of absurd size.
ARG_LIMITS: dict[str, tuple[type, float, float]] = {
    "features": (int, 1, 1024),
    "num_blocks": (int, 1, 256),
    "wpn_hidden": (int, 1, 4096),
    "upscale_factor": (int, 2, 8),
    "res_scale": (float, 0.0, 10.0),
    "mean": (float, -10.0, 10.0),
    "std": (float, 1e-6, 10.0),
}
#: Flag arguments of ``config.args`` (booleans) and the value a checkpoint that predates the flag
#: was trained with: a Meta-SRGAN saved before the flat-field constraint loads unconstrained.
FLAG_ARGS: dict[str, dict[str, bool]] = {"flat_field": {"metasrgan": False, "metasrgan-nc": True}}
#: Largest scale a checkpoint's ``scale_range`` may claim.
MAX_SCALE = 16.0
#: Most parameters a checkpoint may describe (EDSR, the largest baseline, has 40.7M): arguments each
#: within :data:`ARG_LIMITS` can still multiply to billions (1024 features x 256 blocks: 4.8G).
MAX_PARAMETERS = 100_000_000


def model_config(arch: str, model: nn.Module, args: dict[str, Any]) -> dict[str, Any]:
    """The ``config`` entry of a checkpoint for ``model`` built as ``build_model(arch, **args)``."""
    config: dict[str, Any] = {"arch": arch, "args": dict(args)}
    upscale = getattr(model, "upscale", None)
    if hasattr(upscale, "flat_field"):  # always recorded: a checkpoint without it predates the constraint
        config["args"]["flat_field"] = bool(upscale.flat_field)
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
        with warnings.catch_warnings():  # torch's notes on pickle protocols are not the user's business
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e) or "global" in str(e):  # a class or function reference: code it would run
            raise CheckpointError(
                f"checkpoint {path} was refused: it contains objects other than tensors and plain "
                f"data (a pickle that could run code); only metasr checkpoints are loaded"
            ) from e
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or not a torch file)") from e
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
    check_config(path, ckpt)
    return ckpt


def _number(value: object, kind: type) -> bool:
    if isinstance(value, bool) or not isinstance(value, Real):
        return False
    if kind is int and not (isinstance(value, int) or float(value).is_integer()):
        return False
    return math.isfinite(float(value))


def _check_range(path: Path, where: str, value: object) -> None:
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(_number(v, float) for v in value)
    if not ok or not 1.0 <= float(value[0]) <= float(value[1]) <= MAX_SCALE:
        raise CheckpointError(
            f"{path}: {where} is {value!r}; expected [low, high] with 1 <= low <= high <= {MAX_SCALE:g} "
            f"(the file is damaged or was not written by metasr)"
        )


def check_config(path: str | os.PathLike, ckpt: dict[str, Any]) -> None:
    """Check the types and ranges of everything a checkpoint's config and step claim.

    Raises:
        CheckpointError: one line naming the field, what it holds and what was expected.
    """
    config = ckpt["config"]
    arch = config["arch"]
    if not isinstance(arch, str) or arch not in ARCH_SPECS:
        raise CheckpointError(
            f"{path}: architecture {arch!r} is unknown; expected one of {', '.join(ARCH_SPECS)} "
            f"(the file is damaged or from another tool)"
        )
    args = config.get("args", {})
    if not isinstance(args, dict):
        raise CheckpointError(f"{path}: config 'args' is a {type(args).__name__}, expected a dict of arguments")
    for key, value in args.items():
        if key == "scale_range":
            _check_range(path, "args.scale_range", value)
            continue
        if key in FLAG_ARGS:
            if not isinstance(value, bool) or arch not in FLAG_ARGS[key]:
                what = f"model argument {key} is {value!r}; expected true or false for metasrgan"
                raise CheckpointError(f"{path}: {what}")
            continue
        if key not in ARG_LIMITS:
            raise CheckpointError(f"{path}: unknown model argument {key!r} in its config; it was not written by metasr")
        kind, low, high = ARG_LIMITS[key]
        if not _number(value, kind) or not low <= float(value) <= high:
            what = "a whole number" if kind is int else "a number"
            raise CheckpointError(
                f"{path}: model argument {key} is {value!r}; expected {what} from {low:g} to {high:g}"
            )
    if "scale_range" in config:
        _check_range(path, "scale_range", config["scale_range"])
    norm = config.get("normalization")
    if norm is not None:
        ok = isinstance(norm, dict) and _number(norm.get("mean"), float) and _number(norm.get("std"), float)
        if not ok or not float(norm["std"]) > 0:
            raise CheckpointError(f"{path}: normalization {norm!r} is not finite mean and std > 0")
    step = ckpt.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{path}: step is {step!r}; expected a whole number >= 0")
    if not isinstance(ckpt["model"], dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in ckpt["model"].items()
    ):
        raise CheckpointError(f"{path}: 'model' is not a dict of named tensors; the file is damaged")
    _check_model_size(path, args, ckpt["model"])


def _check_model_size(path: str | os.PathLike, args: dict[str, Any], weights: Any) -> None:
    """Bound the model the arguments describe before it is built (nothing is allocated yet).

    The trunk holds about ``num_blocks x 2`` 3x3 convolutions of ``features`` maps and the weight
    prediction a ``wpn_hidden x 9 x features`` layer; the estimate must stay under
    :data:`MAX_PARAMETERS` and must not exceed what the stored weights hold by much (arguments
    that do not match the weights would only fail after allocating the model).
    """
    features, blocks = int(args.get("features", 64)), int(args.get("num_blocks", 32))
    estimate = blocks * 2 * 9 * features * features + int(args.get("wpn_hidden", 256)) * 9 * features
    if estimate > MAX_PARAMETERS:
        raise CheckpointError(
            f"{path}: its arguments describe a model of about {estimate / 1e6:.0f}M parameters ({features} features, "
            f"{blocks} blocks), more than {MAX_PARAMETERS // 1_000_000}M; the file is damaged or not a metasr model"
        )
    stored = sum(v.numel() for v in weights.values() if isinstance(v, torch.Tensor)) if isinstance(weights, dict) else 0
    sized = "features" in args or "num_blocks" in args  # arguments that set the size (not a weightless bicubic)
    if sized and estimate > 4 * stored + 1_000_000:
        raise CheckpointError(
            f"{path}: its arguments describe about {estimate / 1e6:.1f}M parameters but its weights hold "
            f"{stored / 1e6:.1f}M; the file is damaged"
        )


def checkpoint_args(config: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments of a checked config, with the defaults of its own time.

    Whole numbers become ``int``; a flag the checkpoint predates gets the value it was trained
    with (:data:`FLAG_ARGS`), not today's default.
    """
    args = {k: (int(v) if ARG_LIMITS.get(k, (float,))[0] is int else v) for k, v in config.get("args", {}).items()}
    for key, legacy in FLAG_ARGS.items():
        if config["arch"] in legacy:
            args.setdefault(key, legacy[config["arch"]])
    return args


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Build the model a checkpoint describes, load its weights, and return it in eval mode."""
    ckpt = read_checkpoint(path)
    config = ckpt["config"]
    args = checkpoint_args(config)
    try:
        model = build_model(config["arch"], **args)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: cannot build the model it describes ({e})") from e
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CheckpointError(f"{path}: weights do not match architecture {config['arch']!r} ({first})") from e
    return model.to(map_location).eval()


def average_checkpoints(paths: list[str | os.PathLike], weights: list[float] | None = None) -> dict[str, Any]:
    """The average of the weights of several checkpoints of one model (weight averaging).

    Snapshots of one run taken late, at a constant or slowly falling learning rate, wander around a
    minimum from step to step (Adam at a small batch); their uniform mean smooths that wander. It is
    not always better than the best single snapshot: score it like any checkpoint. With ``weights``
    (one per checkpoint, each >= 0, summing to 1) it is a weighted mean: ``weights=[0.7, 0.3]`` of a
    model and a continuation of it trained on another mix is the point 30 % of the way from the one
    to the other (weight-space interpolation), which trades what each was trained for without a
    second network at run time. Both must descend from one start (a continuation, not two
    independent runs) for their mean to be a working model.

    Floating-point tensors (weights, biases, batch-norm running statistics) are averaged in
    float64; integer ones (batch counts) come from the last checkpoint. The result is a shippable
    checkpoint (no optimiser): the last one's config, step, stage and training facts, with
    ``training["averaged"]`` naming the steps that were averaged, and, for a weighted mean,
    ``training["weights"]`` and ``training["sources"]`` (each input's own training facts and step).

    Raises:
        CheckpointError: fewer than two paths, weights that are not one finite non-negative number
            per checkpoint summing to 1, or checkpoints of different architectures, arguments,
            normalisations or weight shapes.
    """
    if len(paths) < 2:
        raise CheckpointError(f"averaging needs at least two checkpoints; got {len(paths)}")
    if weights is not None:
        _check_weights(weights, len(paths))
    ckpts = [read_checkpoint(p) for p in paths]
    first, last = ckpts[0], ckpts[-1]
    for path, ckpt in zip(paths[1:], ckpts[1:]):
        if ckpt["config"] != first["config"]:
            raise CheckpointError(
                f"{path}: its model config differs from {paths[0]}'s; only checkpoints of one run can be averaged"
            )
        shapes = {k: tuple(v.shape) for k, v in ckpt["model"].items()}
        if shapes != {k: tuple(v.shape) for k, v in first["model"].items()}:
            raise CheckpointError(f"{path}: its weights differ in names or shapes from {paths[0]}'s")
    share = torch.tensor(weights if weights is not None else [1.0 / len(ckpts)] * len(ckpts), dtype=torch.float64)
    model: dict[str, torch.Tensor] = {}
    for key, value in last["model"].items():
        if value.is_floating_point():
            stacked = torch.stack([c["model"][key].double() for c in ckpts])
            mean = torch.tensordot(share, stacked, dims=1)
            model[key] = mean.to(value.dtype)
        else:
            model[key] = value.clone()
    training = dict(last.get("training") or {})
    training["averaged"] = [int(c.get("step", 0)) for c in ckpts]
    if weights is not None:
        training["weights"] = [float(w) for w in weights]
        training["sources"] = [
            {"file": Path(p).name, "step": int(c.get("step", 0)), "training": c.get("training") or {}}
            for p, c in zip(paths, ckpts)
        ]
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": _FORMAT_VERSION,
        "model": model,
        "config": last["config"],
        "step": int(last.get("step", 0)),
        "metrics": {},
        "stage": last.get("stage", training.get("stage", "l1")),
        "training": training,
    }


def _check_weights(weights: list[float], count: int) -> None:
    """One finite, non-negative weight per checkpoint, summing to 1 (within 1e-6)."""
    if len(weights) != count:
        raise CheckpointError(f"{len(weights)} weights for {count} checkpoints; give one weight per checkpoint")
    if not all(_number(w, float) and w >= 0 for w in weights):
        raise CheckpointError(f"weights {list(weights)} must be finite numbers >= 0")
    if abs(sum(weights) - 1.0) > 1e-6:
        raise CheckpointError(f"weights {list(weights)} sum to {sum(weights):g}; they must sum to 1")
