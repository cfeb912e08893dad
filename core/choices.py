"""Closed sets of string choices (device, precision, method) as Enums that accept strings."""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from metasr.core.errors import InputError

__all__ = ["ChoiceEnum", "Device", "Precision"]

E = TypeVar("E", bound="ChoiceEnum")


class ChoiceEnum(str, Enum):
    """A string Enum matched in any case (and through :meth:`aliases`); a typo raises.

    ``Cls("CPU")`` works; :meth:`parse` raises :class:`InputError` naming the valid choices.
    """

    @classmethod
    def aliases(cls) -> dict[str, str]:
        """Other spellings accepted for a value (lower case)."""
        return {}

    @classmethod
    def choice_name(cls) -> str:
        """What the choice is, for messages (e.g. ``"device"``)."""
        return cls.__name__.lower()

    @classmethod
    def _missing_(cls, value: object) -> ChoiceEnum | None:
        if isinstance(value, str):
            key = value.strip().lower()
            key = cls.aliases().get(key, key)
            for member in cls:
                if member.value == key:
                    return member
        return None

    @classmethod
    def parse(cls: type[E], value: str | E) -> E:
        """Like ``cls(value)`` but raises :class:`InputError` listing the choices."""
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise InputError(f"unknown {cls.choice_name()} {value!r}; choose one of: {choices}") from None


class Device(ChoiceEnum):
    """Where inference runs. ``AUTO`` picks TensorRT, then CUDA, then CPU.

    Accepts strings in any case (``Device("CUDA")``, also ``"trt"`` and ``"gpu"``); anything
    else raises :class:`ValueError` (:meth:`parse`: :class:`InputError`) listing the choices.
    """

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    TENSORRT = "tensorrt"

    @classmethod
    def aliases(cls) -> dict[str, str]:
        return {"trt": "tensorrt", "gpu": "cuda"}

    @property
    def label(self) -> str:
        return {"auto": "auto", "cpu": "CPU", "cuda": "CUDA", "tensorrt": "TensorRT"}[self.value]


class Precision(ChoiceEnum):
    """Arithmetic of inference on a GPU.

    ``FP32`` is IEEE float32 throughout (on CUDA with TF32 tensor-core rounding off). ``TF32``
    lets convolutions and matrix products round their inputs to TF32 (10-bit mantissa) on CUDA.
    ``FP16`` runs half-precision graphs (CUDA) or engines (TensorRT). The CPU always runs fp32.
    """

    FP32 = "fp32"
    FP16 = "fp16"
    TF32 = "tf32"
