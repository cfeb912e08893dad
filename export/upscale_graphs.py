"""The Meta-Upscale stage as ONNX graphs in the class-kernel form (one formulation for every device).

At a scale ``p/q`` the offset of an HR row or column takes only ``p`` values (``residue / p``), so
the weight-prediction network (WPN) predicts only ``p * p`` distinct 3x3 kernels. The export
therefore splits the Meta-Upscale stage into a tiny graph run once per scale and an upscale graph
that applies its kernels:

* ``kernels.onnx``: ``inv_scale`` float32 [1], ``row_offset`` float32 [P], ``col_offset`` float32
  [Q] -> ``kernels`` float32 [P*Q, 9*C]. Row ``a*Q + b`` is the kernel of row class ``a`` and column
  class ``b``; column ``(dy*3 + dx)*C + c`` weighs feature channel ``c`` at tap ``(dy, dx)``.
  Denormalisation is folded in (weights times ``std``; the ``mean`` is the upscale graphs' bias).
  The runtime feeds ``P = Q = p`` offsets ``arange(p) / p``.
* ``upscale.onnx`` (form ``classes``): ``features`` [N, C, h, w], ``kernels`` [K, 9*C],
  ``row_index`` [H], ``row_kernel`` [H], ``col_index`` [W], ``col_kernel`` [W] (all indices
  :data:`INDEX_DTYPE`) -> ``sr`` float32 [N, 1, H, W], not clipped. HR pixel ``(i, j)`` uses
  kernel ``row_kernel[i] + col_kernel[j]`` (the runtime feeds ``residue_r * p`` and
  ``residue_c``) at LR pixel ``(row_index[i], col_index[j])``::

      U   = the 9 shifted copies of the zero-padded features, stacked  [N, 9C, h*w]
      Y   = MatMul(kernels, U)                                          [N, K, h*w]
      sr  = Gather(Y flattened, k(i, j) * h*w + row_index[i] * w + col_index[j]) + mean

  A MatMul rather than a Conv with fed kernels: TensorRT fixes a Conv's number of output maps at
  build time, while a MatMul's K is an ordinary dynamic dimension; the flat [H, W] index is built
  from two 1-D arrays, so nothing [H, W]-sized crosses the host boundary. Work per HR pixel is
  ``9C * q*q`` multiply-adds (dense, on tensor cores on a GPU) and ``q*q`` floats of memory.
* ``upscale_pixels.onnx`` (form ``pixels``): same inputs and output. Every HR pixel gathers its
  own 3x3 patch [9C] and its own kernel and takes their dot product: ``9C`` multiply-adds per HR
  pixel whatever ``q`` is, for ``2 * 9C`` floats of memory per HR pixel (the runtime tiles to
  bound it). This is the form for scales with a large denominator (x1.51 = 151/100: 22801 kernels),
  where the class form's ``q*q`` waste would dominate.

Which form runs at which scale is the runtime's choice (:func:`metasr.runtime.kernels.choose_form`).
Both forms read features within 1 LR pixel of the rows and columns their indices name and
zero-pad at the border of the ``features`` they are given, so a caller may feed a tile of the
features with indices relative to it; the whole network's halo is the manifest's ``receptive_radius``.
Operators: MatMul, Gather, Pad, Slice, Concat, Reshape, Shape, Transpose, Unsqueeze, Mul, Add,
Relu, ReduceSum, all with static attributes and shape-only output sizes (TensorRT-buildable).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from metasr.training.models import MetaSRGAN, MetaUpscale

__all__ = [
    "INDEX_DTYPE",
    "UPSCALE_FORM",
    "build_kernels_graph",
    "build_class_graph",
    "build_pixel_graph",
    "export_upscale_graphs",
]

#: Dtype of the index/kernel-number inputs: what ``axis_mapping`` returns, so callers feed it as is.
INDEX_DTYPE = "int64"
#: Name of this formulation in the manifest (``upscale_form``).
UPSCALE_FORM = "class-kernel"
_MIN_OPSET = 13  # Pad/Slice/ReduceSum/Unsqueeze take their parameters as inputs from 13 on
_MAX_OPSET = 18
_TAPS = 9


def _check(upscale: MetaUpscale, opset: int) -> None:
    if not _MIN_OPSET <= opset <= _MAX_OPSET:
        raise ValueError(f"opset must be between {_MIN_OPSET} and {_MAX_OPSET}, got {opset}")
    if upscale.out_channels != 1 or upscale.kernel_size != 3:
        raise ValueError(
            f"the export contract has one output channel and 3x3 kernels, the module has "
            f"{upscale.out_channels} and {upscale.kernel_size}x{upscale.kernel_size}"
        )


def _init(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array), name)


def _model(nodes: list, name: str, inputs: list, outputs: list, inits: list, opset: int) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="metasr")
    model.ir_version = min(model.ir_version, 8)  # readable by onnxruntime >= 1.14 and TensorRT 10's parser
    return model


def build_kernels_graph(upscale: MetaUpscale, std: float, opset: int = 17) -> onnx.ModelProto:
    """``kernels.onnx``: the WPN evaluated on a grid of row x column offset classes.

    The hidden pre-activation is summed in the order of :meth:`MetaUpscale.hidden_terms`
    (``(W1[:,0] * inv + b1) + W1[:,1] * row_off + W1[:,2] * col_off``) so it matches PyTorch.
    With the flat-field constraint (:class:`MetaUpscale`) the last layer is the zero-DC part
    ``A0`` applied to each class's hidden layer plus the tap mean ``A_dc`` applied to the
    zero-offset class's (``ReLU(W1[:,0] * inv + b1)``), so every class has the same DC gain.
    """
    _check(upscale, opset)
    c, m = upscale.in_channels, upscale.hidden

    def tap_major(weight: torch.Tensor) -> np.ndarray:
        # last layer rows are c*9 + tap; reorder to tap*C + c and fold std in float64, rounded once
        w = weight.double().numpy().reshape(c, _TAPS, m).transpose(1, 0, 2).reshape(_TAPS * c, m)
        return (w.T * std).astype(np.float32)  # [hidden, 9C]

    with torch.no_grad():
        first, last = upscale.wpn[0], upscale.wpn[2]
        w1 = first.weight.float().numpy()  # [hidden, 3]
        b1 = first.bias.float().numpy()
        w2 = tap_major(upscale.class_weight())
        b2 = last.bias.double().numpy().reshape(c, _TAPS).T.reshape(_TAPS * c)
        dc = tap_major(upscale.dc_weight()[:, None, 0, :].expand(c, _TAPS, m)) if upscale.flat_field else None
    inits = [
        _init("w1_scale", w1[:, 0].copy()),
        _init("b1", b1),
        _init("w1_row", w1[:, 1].copy()),
        _init("w1_col", w1[:, 2].copy()),
        _init("w2", w2),  # [hidden, 9C]
        _init("b2", (b2 * std).astype(np.float32)),
        _init("axes_last", np.array([-1], np.int64)),
        _init("axes_1", np.array([1], np.int64)),
        _init("flat_shape", np.array([-1, _TAPS * c], np.int64)),
    ]
    nodes = [
        helper.make_node("Mul", ["w1_scale", "inv_scale"], ["scale_term"]),
        helper.make_node("Add", ["scale_term", "b1"], ["base"]),  # [hidden]
        helper.make_node("Unsqueeze", ["row_offset", "axes_last"], ["row_off_2d"]),  # [P, 1]
        helper.make_node("Mul", ["w1_row", "row_off_2d"], ["row_w"]),  # [P, hidden]
        helper.make_node("Add", ["base", "row_w"], ["row_term_2d"]),
        helper.make_node("Unsqueeze", ["row_term_2d", "axes_1"], ["row_term"]),  # [P, 1, hidden]
        helper.make_node("Unsqueeze", ["col_offset", "axes_last"], ["col_off_2d"]),  # [Q, 1]
        helper.make_node("Mul", ["w1_col", "col_off_2d"], ["col_term"]),  # [Q, hidden]
        helper.make_node("Add", ["row_term", "col_term"], ["pre_act"]),  # [P, Q, hidden]
        helper.make_node("Relu", ["pre_act"], ["act"]),
        helper.make_node("MatMul", ["act", "w2"], ["k_raw"]),  # [P, Q, 9C]
    ]
    if dc is None:
        nodes.append(helper.make_node("Add", ["k_raw", "b2"], ["k_grid"]))
    else:
        inits += [_init("w2_dc", dc), _init("axes_0", np.array([0], np.int64))]
        nodes += [
            helper.make_node("Relu", ["base"], ["ref_act"]),  # [hidden]: the zero-offset class
            helper.make_node("Unsqueeze", ["ref_act", "axes_0"], ["ref_act_2d"]),  # [1, hidden]
            helper.make_node("MatMul", ["ref_act_2d", "w2_dc"], ["k_dc"]),  # [1, 9C]: same DC for all
            helper.make_node("Add", ["k_dc", "b2"], ["k_common"]),
            helper.make_node("Add", ["k_raw", "k_common"], ["k_grid"]),
        ]
    nodes.append(helper.make_node("Reshape", ["k_grid", "flat_shape"], ["kernels"]))  # [P*Q, 9C]
    f32 = TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("inv_scale", f32, [1]),
        helper.make_tensor_value_info("row_offset", f32, ["P"]),
        helper.make_tensor_value_info("col_offset", f32, ["Q"]),
    ]
    outputs = [helper.make_tensor_value_info("kernels", f32, ["K", _TAPS * c])]
    return _model(nodes, "metasr_kernels", inputs, outputs, inits, opset)


def _upscale_io(c: int) -> tuple[list, list]:
    f32, idx = TensorProto.FLOAT, TensorProto.INT64
    inputs = [
        helper.make_tensor_value_info("features", f32, ["N", c, "h", "w"]),
        helper.make_tensor_value_info("kernels", f32, ["K", _TAPS * c]),
        helper.make_tensor_value_info("row_index", idx, ["H"]),
        helper.make_tensor_value_info("row_kernel", idx, ["H"]),
        helper.make_tensor_value_info("col_index", idx, ["W"]),
        helper.make_tensor_value_info("col_kernel", idx, ["W"]),
    ]
    return inputs, [helper.make_tensor_value_info("sr", f32, ["N", 1, "H", "W"])]


def _shifted_stack(inits: list) -> list:
    """Nodes: ``features`` -> ``stack`` [N, 9C, h, w], tap-major (tap*C + c), zero-padded by 1."""
    big = np.iinfo(np.int64).max
    inits += [
        _init("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)),
        _init("slice_axes", np.array([2, 3], np.int64)),
    ]
    nodes = [helper.make_node("Pad", ["features", "pads"], ["padded"], mode="constant")]
    ends = {0: -2, 1: -1, 2: big}  # static ends relative to the padded size: no Shape needed
    taps = []
    for dy in range(3):
        for dx in range(3):
            t = f"tap{dy}{dx}"
            inits += [
                _init(f"{t}_starts", np.array([dy, dx], np.int64)),
                _init(f"{t}_ends", np.array([ends[dy], ends[dx]], np.int64)),
            ]
            nodes.append(helper.make_node("Slice", ["padded", f"{t}_starts", f"{t}_ends", "slice_axes"], [t]))
            taps.append(t)
    nodes.append(helper.make_node("Concat", taps, ["stack"], axis=1))
    return nodes


def _kernel_number(inits: list) -> list:
    """Nodes: ``row_kernel`` [H] + ``col_kernel`` [W] -> ``kernel_number`` [H, W]."""
    inits.append(_init("axes_last", np.array([-1], np.int64)))
    return [
        helper.make_node("Unsqueeze", ["row_kernel", "axes_last"], ["row_kernel_2d"]),
        helper.make_node("Add", ["row_kernel_2d", "col_kernel"], ["kernel_number"]),
    ]


def build_class_graph(channels: int, mean: float, opset: int = 17) -> onnx.ModelProto:
    """``upscale.onnx`` (form ``classes``): one MatMul of all kernels with the shifted features,
    then one Gather of every HR pixel's (kernel, LR pixel) product (see the module docstring)."""
    inits: list = [
        _init("bias_out", np.array([mean], np.float32)),
        _init("stack_shape", np.array([0, _TAPS * channels, -1], np.int64)),
        _init("flat_shape", np.array([0, -1], np.int64)),
        _init("dim_h_start", np.array([2], np.int64)),
        _init("dim_w_start", np.array([3], np.int64)),
        _init("dim_w_stop", np.array([4], np.int64)),
        _init("axes_1", np.array([1], np.int64)),
    ]
    nodes = _shifted_stack(inits) + _kernel_number(inits)
    nodes += [
        helper.make_node("Reshape", ["stack", "stack_shape"], ["stack_flat"]),  # [N, 9C, h*w]
        helper.make_node("MatMul", ["kernels", "stack_flat"], ["products"]),  # [N, K, h*w]
        helper.make_node("Reshape", ["products", "flat_shape"], ["products_flat"]),  # [N, K*h*w]
        # flat position of (kernel k, LR pixel (y, x)): k*h*w + y*w + x, from the features' shape
        helper.make_node("Shape", ["features"], ["fshape"]),
        helper.make_node("Slice", ["fshape", "dim_h_start", "dim_w_start"], ["dim_h"]),
        helper.make_node("Slice", ["fshape", "dim_w_start", "dim_w_stop"], ["dim_w"]),
        helper.make_node("Mul", ["dim_h", "dim_w"], ["plane"]),
        helper.make_node("Mul", ["kernel_number", "plane"], ["kernel_base"]),  # [H, W]
        helper.make_node("Mul", ["row_index", "dim_w"], ["row_base"]),  # [H]
        helper.make_node("Unsqueeze", ["row_base", "axes_last"], ["row_base_2d"]),  # [H, 1]
        helper.make_node("Add", ["row_base_2d", "col_index"], ["pixel_base"]),  # [H, W]
        helper.make_node("Add", ["kernel_base", "pixel_base"], ["position"]),
        helper.make_node("Gather", ["products_flat", "position"], ["picked"], axis=1),  # [N, H, W]
        helper.make_node("Unsqueeze", ["picked", "axes_1"], ["sum"]),  # [N, 1, H, W]
        helper.make_node("Add", ["sum", "bias_out"], ["sr"]),
    ]
    inputs, outputs = _upscale_io(channels)
    return _model(nodes, "metasr_upscale_classes", inputs, outputs, inits, opset)


def build_pixel_graph(channels: int, mean: float, opset: int = 17) -> onnx.ModelProto:
    """``upscale_pixels.onnx`` (form ``pixels``): each HR pixel's patch dotted with its own kernel."""
    inits: list = [_init("bias_out", np.array([mean], np.float32)), _init("axes_1", np.array([1], np.int64))]
    nodes = _shifted_stack(inits) + _kernel_number(inits)
    nodes += [
        # channels last, so both gathers move contiguous 9C-float blocks; columns first (fewer rows)
        helper.make_node("Transpose", ["stack"], ["stack_nhwc"], perm=[0, 2, 3, 1]),  # [N, h, w, 9C]
        helper.make_node("Gather", ["stack_nhwc", "col_index"], ["patch_c"], axis=2),
        helper.make_node("Gather", ["patch_c", "row_index"], ["patches"], axis=1),  # [N, H, W, 9C]
        helper.make_node("Gather", ["kernels", "kernel_number"], ["pixel_kernels"], axis=0),  # [H, W, 9C]
        helper.make_node("Mul", ["patches", "pixel_kernels"], ["weighted"]),
        helper.make_node("ReduceSum", ["weighted", "axes_last"], ["picked"], keepdims=0),  # [N, H, W]
        helper.make_node("Unsqueeze", ["picked", "axes_1"], ["sum"]),
        helper.make_node("Add", ["sum", "bias_out"], ["sr"]),
    ]
    inputs, outputs = _upscale_io(channels)
    return _model(nodes, "metasr_upscale_pixels", inputs, outputs, inits, opset)


#: File of each graph of the Meta-Upscale stage, by manifest graph name.
GRAPH_FILES = {"kernels": "kernels.onnx", "upscale": "upscale.onnx", "upscale_pixels": "upscale_pixels.onnx"}


def export_upscale_graphs(model: MetaSRGAN, out_dir: str | Path, opset: int = 17) -> list[Path]:
    """Write ``kernels.onnx``, ``upscale.onnx`` and ``upscale_pixels.onnx`` of ``model`` to ``out_dir``."""
    out_dir = Path(out_dir)
    c = model.upscale.in_channels
    built = {
        "kernels": build_kernels_graph(model.upscale, float(model.std), opset),
        "upscale": build_class_graph(c, float(model.mean), opset),
        "upscale_pixels": build_pixel_graph(c, float(model.mean), opset),
    }
    paths = []
    for name, graph in built.items():
        path = out_dir / GRAPH_FILES[name]
        onnx.save(graph, str(path))
        paths.append(path)
    return paths
