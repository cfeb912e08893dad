"""Device names with an optional GPU index (``cuda:1``, ``gpu:0``, ``tensorrt:2``)."""

from __future__ import annotations

from dataclasses import dataclass

from metasr.core.choices import Device
from metasr.core.errors import InputError

__all__ = ["DeviceSpec", "parse_device_spec"]


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
