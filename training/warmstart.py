"""Starting weights of a run: another checkpoint's (``--init``) or nearest-neighbour upsampling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from metasr.core.errors import CheckpointError, InputError
from metasr.training.models import MetaSRGAN, arch_spec

__all__ = ["identity_init", "load_init"]


def load_init(model: nn.Module, ckpt: dict[str, Any], path: Path, arch: str) -> int:
    """Load the weights of a checkpoint read from ``path`` into ``model``; returns its step.

    Raises:
        CheckpointError: another architecture, or weights that do not fit.
    """
    found = ckpt["config"].get("arch")
    state = ckpt["model"]
    if found == "metasrgan" and arch_spec(arch).noise_input:
        state = _with_noise_channel(state)
    elif found != arch:
        raise CheckpointError(
            f"--init checkpoint {path} holds a {found!r} model, not {arch!r}; "
            f"pass a checkpoint of the same architecture"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"--init checkpoint {path} does not fit the model ({str(e).splitlines()[0]})") from e
    return int(ckpt.get("step", 0))


def _with_noise_channel(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Meta-SRGAN's weights for its noise-conditioned variant: the head convolution gains a zero
    input channel for the noise map, so the new model starts as exactly the old one."""
    key = "trunk.head.0.weight"
    state = dict(state)
    weight = state.get(key)
    if weight is not None and weight.dim() == 4 and weight.shape[1] == 1:
        state[key] = torch.cat([weight, torch.zeros_like(weight)], dim=1)
    return state


@torch.no_grad()
def identity_init(model: nn.Module) -> nn.Module:
    """Start Meta-SRGAN as nearest-neighbour upsampling instead of a random mapping.

    Two head channels carry the normalised input (``PReLU(x) - PReLU(-x) = (1 + a) x``), the
    trunk's residual branch starts at zero (zero-gamma tail batch norm), and the Meta-Upscale
    weight-prediction network starts with a zero last layer whose bias reads those two channels
    at the centre tap. The output is then exactly the LR pixel ``(index_row[i], index_col[j])``;
    every other weight keeps its random initialisation and all of them train. With a CPU-sized
    budget this saves the thousands of updates a random network needs to reach bicubic quality.

    Raises:
        InputError: for architectures other than metasrgan.
    """

    if not isinstance(model, MetaSRGAN):
        raise InputError("--identity-init applies to the metasrgan architecture only")
    conv, prelu = model.trunk.head[0], model.trunk.head[1]
    k = conv.kernel_size[0] // 2
    conv.weight[:2].zero_()
    conv.bias[:2].zero_()
    conv.weight[0, 0, k, k] = 1.0
    conv.weight[1, 0, k, k] = -1.0
    bn = model.trunk.tail[1]
    bn.weight.zero_()
    bn.bias.zero_()
    up = model.upscale
    last = up.wpn[2]
    last.weight.zero_()
    last.bias.zero_()
    gain = 1.0 + float(prelu.weight.mean())
    centre = (up.kernel_size * up.kernel_size) // 2
    taps = up.kernel_size * up.kernel_size
    for o in range(up.out_channels):  # element (c*k*k + tap) * Cout + o
        last.bias[(0 * taps + centre) * up.out_channels + o] = 1.0 / gain
        last.bias[(1 * taps + centre) * up.out_channels + o] = -1.0 / gain
    return model
