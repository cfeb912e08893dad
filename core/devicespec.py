"""Device names with an optional GPU index (``cuda:1``, ``gpu:0``, ``tensorrt:2``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from metasr.core.choices import Device
from metasr.core.errors import InputError

__all__ = ["DeviceSpec", "parse_device_spec", "select_visible_gpu"]


@dataclass(frozen=True)
class DeviceSpec:
    """A :class:`Device` and, for GPU devices, the GPU's index (``None``: the default GPU)."""

    device: Device
    index: int | None = None

    def __str__(self) -> str:
        return self.device.value if self.index is None else f"{self.device.value}:{self.index}"


def parse_device_spec(text: str | Device) -> DeviceSpec:
    """Parse ``"cuda"``, ``"gpu:1"``, ``"tensorrt:0"``, ``"cpu"`` ... into a :class:`DeviceSpec`.

    Raises:
        InputError: for an unknown device, a bad index, or an index on ``cpu``/``auto``.
    """
    if isinstance(text, Device):
        return DeviceSpec(text)
    name, sep, index_text = str(text).strip().partition(":")
    device = Device.parse(name)
    if not sep:
        return DeviceSpec(device)
    if device not in (Device.CUDA, Device.TENSORRT):
        raise InputError(f"device {text!r}: only cuda and tensorrt take a GPU index (e.g. cuda:1)")
    if not (index_text.isascii() and index_text.isdigit() and len(index_text) <= 3):
        raise InputError(f"device {text!r}: the GPU index must be a number such as 0 or 1 (e.g. cuda:1)")
    return DeviceSpec(device, int(index_text))


def select_visible_gpu(index: int) -> str:
    """Make GPU ``index`` the only one CUDA shows this process (``CUDA_VISIBLE_DEVICES``); return its id.

    ``index`` counts the GPUs already visible (an existing ``CUDA_VISIBLE_DEVICES`` list is
    honoured). Takes effect only before CUDA is first used in the process.

    Raises:
        InputError: if ``CUDA_VISIBLE_DEVICES`` lists fewer GPUs than ``index + 1``.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None or not visible.strip():
        chosen = str(index)
    else:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        if index >= len(ids):
            raise InputError(
                f"GPU index {index} is not among the {len(ids)} GPU(s) CUDA_VISIBLE_DEVICES={visible!r} shows; "
                f"choose an index below {len(ids)}"
            )
        chosen = ids[index]
    os.environ["CUDA_VISIBLE_DEVICES"] = chosen
    return chosen
