"""The ONNX graphs of an export: feature extractor, upscale graph, fixed-scale model.

Meta-SRGAN is exported as two graphs so that any scale runs without re-export:

* ``feature_extractor.onnx``: ``lr`` float32 [N, 1, h, w] in [0, 1] -> ``features`` float32
  [N, C, h, w]. Normalisation is inside; batch norm is folded into the convolutions.
* ``upscale.onnx``: ``features`` [N, C, h, w], ``inv_scale`` float32 [1] (= 1/r), ``row_index``
  [H] and ``col_index`` [W] (:data:`INDEX_DTYPE`), ``row_offset`` float32 [H], ``col_offset``
  float32 [W] -> ``sr`` float32 [N, 1, H, W] in [0, 1] intensity space, not clipped. Index and
  offset values are those of :func:`metasr.core.scale.axis_mapping`.

The upscale graph is the one-hidden-layer identity that :class:`~metasr.training.models.MetaUpscale`
implements (``conv_weights()`` / ``hidden_terms()``)::

    Z   = Conv3x3(features, std * Wz)             [N, hidden, h, w]   (Wz from conv_weights()),
                                                  then channels last [N, h, w, hidden]
    B   = Conv3x3(features, std * Wb) + mean      [N, 1, h, w]
    act = Relu(W1[:,0] * inv_scale + b1 + W1[:,1] * row_offset[i]  +  W1[:,2] * col_offset[j])
    sr  = ReduceSum_m(act[m, i, j] * Z[:, m, row_index[i], col_index[j]]) + B[:, :, row_index[i], col_index[j]]

Denormalisation (``x * std + mean``) is folded into the convolution weights and bias. Operators:
Conv, Transpose, Gather, Unsqueeze, Mul, Add, Relu and ReduceSum only, all with static attributes;
every output shape follows from input shapes (Gather's output takes its index's shape), never
from input values, so TensorRT builds it with ordinary optimisation profiles.

Tiling note for the runtime: the upscale graph reads features within 1 LR pixel of the rows and
columns its indices name (the 3x3 convolutions zero-pad at the border of the ``features`` it is
given). A caller may therefore feed a slice of the features with a 1-pixel halo and indices made
relative to that slice; the whole network's halo is the manifest's ``receptive_radius``.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import Tensor, nn

from metasr.training.models import EDSR, SRGAN, MetaSRGAN, MetaUpscale

__all__ = [
    "INDEX_DTYPE",
    "MAX_OPSET",
    "FeatureExtractor",
    "FixedScaleModel",
    "export_feature_extractor",
    "build_upscale_graph",
    "export_upscale",
    "export_fixed",
    "receptive_radius",
]

#: Dtype of ``row_index`` / ``col_index``: what ``axis_mapping`` returns, so callers feed it as is.
INDEX_DTYPE = "int64"
#: Highest opset written (TensorRT's GridSample/Resize issues start at 20; 18 is safe for 10 and 11).
MAX_OPSET = 18
_MIN_OPSET = 13  # ReduceSum/Unsqueeze take their axes as an input from 13 on


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


def _init(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array), name)


def build_upscale_graph(upscale: MetaUpscale, mean: float, std: float, opset: int = 17) -> onnx.ModelProto:
    """The upscale graph of ``upscale`` (a trained :class:`MetaUpscale`) as an ONNX model.

    Args:
        upscale: The Meta-Upscale module; its WPN weights become initializers.
        mean: Normalisation mean of the model (folded into the output bias).
        std: Normalisation std (folded into the convolution weights).
        opset: ONNX opset, 13..18.
    """
    _check_opset(opset)
    if upscale.out_channels != 1:
        raise ValueError(f"the export contract has one output channel, the module has {upscale.out_channels}")
    c, m, k = upscale.in_channels, upscale.hidden, upscale.kernel_size
    with torch.no_grad():
        wz, wb = upscale.conv_weights()  # [hidden, C, k, k], [1, C, k, k]
        first = upscale.wpn[0]
        w1 = first.weight.double().numpy()  # [hidden, 3]
        b1 = first.bias.double().numpy()
        # fold denormalisation: std * (sum act*Z + B) + mean; weights scaled in float64, rounded once
        wz_np = (wz.double() * std).float().numpy()
        wb_np = (wb.double() * std).float().numpy()
    vec = lambda a: a.astype(np.float32).reshape(m)  # noqa: E731  [hidden] broadcasts over [.., hidden]
    idx = TensorProto.INT64 if INDEX_DTYPE == "int64" else TensorProto.INT32
    pad = k // 2
    inits = [
        _init("wz", wz_np),
        _init("wb", wb_np),
        _init("bias_out", np.array([mean], np.float32)),
        _init("w1_scale", vec(w1[:, 0])),
        _init("b1", vec(b1)),
        _init("w1_row", vec(w1[:, 1])),
        _init("w1_col", vec(w1[:, 2])),
        _init("axes_1", np.array([1], np.int64)),
        _init("axes_last", np.array([-1], np.int64)),
    ]
    conv = dict(kernel_shape=[k, k], pads=[pad] * 4, strides=[1, 1], dilations=[1, 1], group=1)
    nodes = [
        # 3x3 convolutions of the features at LR resolution: Z (hidden channels) and B (1 channel)
        helper.make_node("Conv", ["features", "wz"], ["z"], name="conv_z", **conv),
        helper.make_node("Conv", ["features", "wb", "bias_out"], ["b"], name="conv_b", **conv),
        # channels last, so both gathers move contiguous blocks (hidden floats per pixel, a whole
        # row per row) instead of single floats: 1.7-1.9x faster in ORT CPU than gathering NCHW
        helper.make_node("Transpose", ["z"], ["z_nhwc"], name="z_nhwc", perm=[0, 2, 3, 1]),  # [N, h, w, hidden]
        # pick the LR source pixel of every HR pixel: columns first (fewer rows to move), then rows
        helper.make_node("Gather", ["z_nhwc", "col_index"], ["z_c"], name="z_cols", axis=2),
        helper.make_node("Gather", ["z_c", "row_index"], ["z_rc"], name="z_rows", axis=1),  # [N, H, W, hidden]
        helper.make_node("Gather", ["b", "col_index"], ["b_c"], name="b_cols", axis=3),
        helper.make_node("Gather", ["b_c", "row_index"], ["b_rc"], name="b_rows", axis=2),  # [N, 1, H, W]
        # hidden pre-activation, separable: base[m] + row_term[i, m] + col_term[j, m]
        # (same operation order as MetaUpscale.hidden_terms, so the values match PyTorch bit for bit)
        helper.make_node("Mul", ["w1_scale", "inv_scale"], ["scale_term"], name="scale_term"),
        helper.make_node("Add", ["scale_term", "b1"], ["base"], name="base"),  # [hidden]
        helper.make_node("Unsqueeze", ["row_offset", "axes_last"], ["row_off_2d"], name="row_off_2d"),  # [H, 1]
        helper.make_node("Mul", ["w1_row", "row_off_2d"], ["row_w"], name="row_w"),  # [H, hidden]
        helper.make_node("Add", ["base", "row_w"], ["row_term_2d"], name="row_term_2d"),
        helper.make_node("Unsqueeze", ["row_term_2d", "axes_1"], ["row_term"], name="row_term"),  # [H, 1, hidden]
        helper.make_node("Unsqueeze", ["col_offset", "axes_last"], ["col_off_2d"], name="col_off_2d"),  # [W, 1]
        helper.make_node("Mul", ["w1_col", "col_off_2d"], ["col_term"], name="col_term"),  # [W, hidden]
        helper.make_node("Add", ["row_term", "col_term"], ["pre_act"], name="pre_act"),  # [H, W, hidden]
        helper.make_node("Relu", ["pre_act"], ["act"], name="act"),
        # 256 multiply-adds per HR pixel (a contiguous reduction), then the (denormalising) bias
        helper.make_node("Mul", ["z_rc", "act"], ["weighted"], name="weighted"),  # [N, H, W, hidden]
        helper.make_node("ReduceSum", ["weighted", "axes_last"], ["sum_nhwc"], name="sum", keepdims=1),
        helper.make_node("Transpose", ["sum_nhwc"], ["sum"], name="sum_nchw", perm=[0, 3, 1, 2]),  # [N, 1, H, W]
        helper.make_node("Add", ["sum", "b_rc"], ["sr"], name="sr"),
    ]
    f32 = TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("features", f32, ["N", c, "h", "w"]),
        helper.make_tensor_value_info("inv_scale", f32, [1]),
        helper.make_tensor_value_info("row_index", idx, ["H"]),
        helper.make_tensor_value_info("row_offset", f32, ["H"]),
        helper.make_tensor_value_info("col_index", idx, ["W"]),
        helper.make_tensor_value_info("col_offset", f32, ["W"]),
    ]
    outputs = [helper.make_tensor_value_info("sr", f32, ["N", 1, "H", "W"])]
    graph = helper.make_graph(nodes, "metasr_upscale", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="metasr")
    model.ir_version = min(model.ir_version, 8)  # readable by onnxruntime >= 1.14 and TensorRT 10's parser
    return model


def export_upscale(model: MetaSRGAN, path: str | Path, opset: int = 17) -> Path:
    """Write ``upscale.onnx`` for ``model``'s Meta-Upscale module (see the module docstring)."""
    path = Path(path)
    onnx.save(build_upscale_graph(model.upscale, model.mean, model.std, opset), str(path))
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
