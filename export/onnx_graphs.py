"""The ONNX graphs of an export built by tracing: feature extractor and fixed-scale model.

* ``feature_extractor.onnx``: ``lr`` float32 [N, 1, h, w] in [0, 1] -> ``features`` float32
  [N, C, h, w]. Normalisation is inside; batch norm is folded into the convolutions.
* ``model.onnx`` (SRGAN/EDSR): ``lr`` -> ``sr`` [N, 1, f*h, f*w] at the model's own factor.

The Meta-Upscale stage is built node by node in :mod:`metasr.export.upscale_graphs`.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn

from metasr.training.models import EDSR, SRGAN, MetaSRGAN, MetaUpscale

__all__ = [
    "MAX_OPSET",
    "FeatureExtractor",
    "FixedScaleModel",
    "conv_flops",
    "export_feature_extractor",
    "export_fixed",
    "receptive_radius",
]

#: Highest opset written (TensorRT's GridSample/Resize issues start at 20; 18 is safe for 10 and 11).
MAX_OPSET = 18
_MIN_OPSET = 13  # the upscale graphs need 13 (axes as inputs)


def _check_opset(opset: int) -> None:
    if not _MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be between {_MIN_OPSET} and {MAX_OPSET}, got {opset}")


class FeatureExtractor(nn.Module):
    """Traceable wrapper of :meth:`MetaSRGAN.extract_features` (normalisation + trunk)."""

    def __init__(self, model: MetaSRGAN) -> None:
        super().__init__()
        self.model = model

    def forward(self, lr: Tensor) -> Tensor:
        # extract_features minus its Python shape check, which the tracer would freeze anyway
        return self.model.trunk(self.model.normalize(lr))


class FixedScaleModel(nn.Module):
    """Traceable wrapper of a fixed-scale generator (SRGAN/EDSR): ``lr -> sr`` at its own factor."""

    def __init__(self, model: SRGAN | EDSR) -> None:
        super().__init__()
        self.model = model

    def forward(self, lr: Tensor) -> Tensor:
        return self.model(lr, self.model.upscale_factor)


def _torch_export(
    module: nn.Module, path: Path, input_name: str, output_name: str, out_dims: tuple[str, str], opset: int
) -> None:
    """TorchScript-based export (fast, no torch.export tracing) with dynamic N, h, w."""
    _check_opset(opset)
    module = module.eval()
    example = torch.rand(1, 1, 16, 16)
    with warnings.catch_warnings(), torch.no_grad():
        # the legacy exporter announces its deprecation; the shape checks in forward() are
        # Python-level and hold for every input that matches the declared [N, 1, h, w]
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[input_name],
            output_names=[output_name],
            do_constant_folding=True,
            dynamic_axes={input_name: {0: "N", 2: "h", 3: "w"}, output_name: {0: "N", 2: out_dims[0], 3: out_dims[1]}},
        )
    _strip_doc_strings(path)


def _strip_doc_strings(path: Path) -> None:
    # the TorchScript exporter stores source locations (local paths) in doc strings; drop them so
    # graphs are reproducible and do not leak the build machine's layout
    model = onnx.load(str(path))
    for node in model.graph.node:
        node.doc_string = ""
    model.producer_name = "metasr"
    onnx.save(model, str(path))


def export_feature_extractor(model: MetaSRGAN, path: str | Path, opset: int = 17) -> Path:
    """Write ``feature_extractor.onnx``: ``lr`` [N,1,h,w] -> ``features`` [N,C,h,w]."""
    path = Path(path)
    _torch_export(FeatureExtractor(model), path, "lr", "features", ("h", "w"), opset)
    return path


def export_fixed(model: SRGAN | EDSR, path: str | Path, opset: int = 17) -> Path:
    """Write ``model.onnx`` of a fixed-scale arch: ``lr`` [N,1,h,w] -> ``sr`` [N,1,f*h,f*w]."""
    path = Path(path)
    _torch_export(FixedScaleModel(model), path, "lr", "sr", ("H", "W"), opset)
    return path


def receptive_radius(model: nn.Module) -> int:
    """LR pixels of context one output pixel depends on (the halo needed for exact tiling).

    Sums the radius ``(k // 2) * dilation`` of every convolution on the longest path, which for
    these chain-with-skips networks is every convolution in registration (= forward) order;
    convolutions after a PixelShuffle run at HR resolution and count ``1/factor`` LR pixels.
    Meta-SRGAN: 9x9 head 4 + 2 per residual block + 1 (trunk tail) + 1 (upscale 3x3) = 16.
    """
    radius = 0.0
    factor = 1
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            dh, dw = module.dilation
            radius += max((kh // 2) * dh, (kw // 2) * dw) / factor
        elif isinstance(module, nn.PixelShuffle):
            factor *= module.upscale_factor
        elif isinstance(module, MetaUpscale):
            radius += module.kernel_size // 2
    return int(math.ceil(radius - 1e-9))


def conv_flops(path: str | Path, h: int, w: int) -> float:
    """Floating-point operations (2 per multiply-add) of every Conv of a graph whose convolutions
    keep an ``h x w`` input's size (the feature extractor), from its weight initialisers."""
    model = onnx.load(str(path))
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    total = 0.0
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[1] in shapes:
            cout, cin, kh, kw = shapes[node.input[1]]
            total += 2.0 * cout * cin * kh * kw * h * w
    return total
