"""Self-verification of an export: ONNX checker, operator allow-list, ORT vs PyTorch parity.

:func:`verify_export` runs after the graphs are written and before they are moved into place,
so an export that does not reproduce its checkpoint is never published.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from metasr.core.errors import ModelError
from metasr.core.scale import Scale, axis_mapping
from metasr.runtime.kernels import FORMS, axis_classes, choose_form, kernel_feeds, upscale_inputs
from metasr.training.models import MetaSRGAN

__all__ = [
    "TRT_SAFE_OPS",
    "DEFAULT_TOLERANCE",
    "DEFAULT_SCALES",
    "DEFAULT_SIZES",
    "ParityError",
    "ParityReport",
    "check_graph",
    "unsupported_ops",
    "ort_session",
    "upscale_feeds",
    "UpscaleSessions",
    "phantom",
    "verify_meta",
    "verify_fixed",
]

#: Operators the exported graphs may use: all imported by TensorRT 10 and 11's ONNX parser with
#: static attributes and shape-only output sizes. Deliberately absent: Col2Im (fold), NonZero,
#: Unique, Loop/If/Scan, Resize (cubic unsupported), GridSample, anything with a data-dependent
#: output shape.
TRT_SAFE_OPS = frozenset(
    {
        "Add",
        "Cast",
        "Concat",
        "Constant",
        "Conv",
        "DepthToSpace",
        "Div",
        "Gather",
        "Identity",
        "MatMul",
        "Mul",
        "Pad",
        "PRelu",
        "ReduceSum",
        "Relu",
        "Reshape",
        "Shape",
        "Slice",
        "Sub",
        "Transpose",
        "Unsqueeze",
    }
)
#: Max abs error of ORT vs PyTorch on [0, 1] outputs (float32 CPU, both sides).
DEFAULT_TOLERANCE = 1e-4
#: Scales checked by the export itself (the tests cover every 0.1 step).
DEFAULT_SCALES: tuple[str, ...] = ("1.1", "1.5", "1.8", "2", "2.3", "2.333", "2.7", "3", "3.7", "4")
#: (N, h, w) inputs checked by the export itself: odd sizes, a batch.
DEFAULT_SIZES: tuple[tuple[int, int, int], ...] = ((1, 23, 31), (2, 40, 33))


class ParityError(ModelError):
    """An exported graph does not reproduce the PyTorch model within tolerance."""


@dataclass
class ParityReport:
    """Worst ORT-vs-PyTorch error of a verification run."""

    max_abs_error: float = 0.0
    tolerance: float = DEFAULT_TOLERANCE
    cases: int = 0
    worst_case: str = ""
    errors: dict[str, float] = field(default_factory=dict)

    def add(self, case: str, error: float) -> None:
        self.cases += 1
        self.errors[case] = error
        if error >= self.max_abs_error or not np.isfinite(error):
            self.max_abs_error, self.worst_case = error, case

    def as_manifest(self) -> dict[str, float | int | str]:
        return {
            "max_abs_error": float(self.max_abs_error),
            "tolerance": float(self.tolerance),
            "cases": self.cases,
            "worst_case": self.worst_case,
        }

    def raise_if_failed(self, what: str) -> None:
        if not (self.max_abs_error <= self.tolerance):  # also catches NaN
            raise ParityError(
                f"{what} does not match the PyTorch model: max abs error {self.max_abs_error:.3g} "
                f"> tolerance {self.tolerance:g} (case {self.worst_case}); nothing was written"
            )


def unsupported_ops(model: onnx.ModelProto, allowed: Iterable[str] = TRT_SAFE_OPS) -> list[str]:
    """Sorted op types of ``model`` (including the domain if not the default) outside ``allowed``."""
    allowed = set(allowed)
    found = {(n.domain + "." if n.domain not in ("", "ai.onnx") else "") + n.op_type for n in model.graph.node}
    return sorted(found - allowed)


def check_graph(path: str | Path, max_opset: int = 18) -> onnx.ModelProto:
    """``onnx.checker`` full check (with shape inference), opset bound and operator allow-list.

    Raises:
        ModelError: naming the first problem.
    """
    path = Path(path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ModelError(f"{path.name} fails the ONNX checker: {str(e).splitlines()[0]}") from e
    model = onnx.load(str(path))
    opsets = {o.domain: o.version for o in model.opset_import}
    if opsets.get("", opsets.get("ai.onnx", 0)) > max_opset:
        raise ModelError(f"{path.name} uses opset {opsets} above {max_opset}, which TensorRT does not import reliably")
    bad = unsupported_ops(model)
    if bad:
        raise ModelError(f"{path.name} uses operators outside the TensorRT-safe allow-list: {', '.join(bad)}")
    return model


def ort_session(path: str | Path, threads: int = 0, providers: Sequence[str] = ("CPUExecutionProvider",)):
    """An ONNX Runtime session on the given providers, with the loader noise silenced.

    Args:
        path: The ONNX file.
        threads: Intra-op threads (0: ORT's default).
        providers: Execution providers, CPU by default (onnxruntime-gpu would try CUDA first).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: onnxruntime-gpu warns about missing CUDA libraries
    # no busy-waiting between ops: on a shared CPU spinning threads slow everyone down
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=list(providers))


@dataclass
class UpscaleSessions:
    """ORT sessions of the Meta-Upscale graphs of an export folder (``kernels.onnx`` and both forms)."""

    kernels: object
    forms: dict[str, object]

    @classmethod
    def load(cls, folder: str | Path, threads: int = 0) -> UpscaleSessions:
        folder = Path(folder)
        forms = {form: ort_session(folder / f"{graph}.onnx", threads) for form, graph in FORMS.items()}
        return cls(ort_session(folder / "kernels.onnx", threads), forms)

    def run(self, features: np.ndarray, scale: str | float | Scale, form: str | None = None) -> np.ndarray:
        """``sr`` [N, 1, H, W] of the whole ``features`` at ``scale`` through one form (default: the runtime's)."""
        s = Scale.parse(scale)
        form = form or choose_form(s)
        return self.forms[form].run(["sr"], upscale_feeds(self.kernels, features, s))[0]


def upscale_feeds(kernels_session, features: np.ndarray, scale: str | float | Scale) -> dict[str, np.ndarray]:
    """The inputs of the upscale graphs for ``features`` [N, C, h, w] at ``scale`` (full image),
    with the kernels computed by ``kernels_session`` (``kernels.onnx``)."""
    s = Scale.parse(scale)
    h, w = features.shape[-2:]
    rows, cols = axis_mapping(h, s.value), axis_mapping(w, s.value)
    row_classes, row_rank = axis_classes(rows.residue, s.p)
    col_classes, col_rank = axis_classes(cols.residue, s.p)
    kernels = kernels_session.run(["kernels"], kernel_feeds(s, row_classes, col_classes))[0]
    return {
        "features": features,
        "kernels": kernels,
        **upscale_inputs(rows.index, row_rank, len(col_classes), "row"),
        **upscale_inputs(cols.index, col_rank, len(col_classes), "col"),
    }


def phantom(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """A real-looking MRI-like slice batch [n, 1, h, w] in [0, 1]: dark background, a bright
    skull ring, grey/white tissue ellipses with soft edges, a lesion, and a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    out = np.empty((n, 1, h, w), np.float32)
    for b in range(n):
        cy, cx = rng.uniform(-0.1, 0.1, 2)
        ry, rx = rng.uniform(0.7, 0.9, 2)
        r = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
        img = 0.9 * np.clip((1.0 - r) * 12, 0, 1)  # head with a soft edge
        img -= 0.35 * np.clip((0.9 - r) * 12, 0, 1)  # inside the skull: tissue level
        img += 0.15 * np.sin(6 * xx + rng.uniform(0, 6)) * np.clip((0.8 - r) * 8, 0, 1)  # grey/white folds
        ly, lx = rng.uniform(-0.3, 0.3, 2)
        img += 0.4 * np.exp(-(((yy - ly) ** 2 + (xx - lx) ** 2) / 0.01))  # a lesion
        img += rng.normal(0, 0.01, img.shape)
        out[b, 0] = np.clip(img, 0, 1)
    return out


@contextmanager
def _single_torch_thread():
    # the verification inputs are small; one thread is as fast as several on an idle machine and
    # far faster on a busy one (oversubscribed OpenMP threads spin), so pin it and restore after
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _inputs(sizes: Sequence[tuple[int, int, int]], seed: int) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    cases = []
    for n, h, w in sizes:
        cases.append((f"random {n}x{h}x{w}", rng.random((n, 1, h, w), dtype=np.float32)))
        cases.append((f"phantom {n}x{h}x{w}", phantom(n, h, w, seed=seed + h * w)))
    return cases


def verify_meta(
    model: MetaSRGAN,
    folder: str | Path,
    *,
    scales: Sequence[str | float] = DEFAULT_SCALES,
    sizes: Sequence[tuple[int, int, int]] = DEFAULT_SIZES,
    tolerance: float = DEFAULT_TOLERANCE,
    seed: int = 0,
    threads: int = 0,
) -> ParityReport:
    """Compare the graphs in ``folder`` with ``model`` on random and phantom inputs, every scale and size.

    Each case runs the feature graph once and, per scale, ``kernels.onnx`` and both upscale forms
    (``classes`` and ``pixels``), and compares each ``sr`` with ``model(lr, scale)`` (float32 PyTorch
    on CPU). The feature graph is also compared on its own, relative to the features' magnitude.

    Raises:
        ParityError: if the worst error exceeds ``tolerance`` (or is NaN).
    """
    model = model.eval()
    folder = Path(folder)
    fe = ort_session(folder / "feature_extractor.onnx", threads)
    upscale = UpscaleSessions.load(folder, threads)
    report = ParityReport(tolerance=tolerance)
    with _single_torch_thread():
        _compare_meta(model, fe, upscale, sizes, scales, seed, report)
    report.raise_if_failed("feature_extractor.onnx + the upscale graphs")
    return report


def _compare_meta(
    model: MetaSRGAN,
    fe,
    upscale: UpscaleSessions,
    sizes: Sequence[tuple[int, int, int]],
    scales: Sequence[str | float],
    seed: int,
    report: ParityReport,
) -> None:
    for name, lr in _inputs(sizes, seed):
        with torch.no_grad():
            feats_ref = model.extract_features(torch.from_numpy(lr))
        feats = fe.run(["features"], {"lr": lr})[0]
        scale_of_features = max(1.0, float(feats_ref.abs().max()))
        report.add(f"{name} features (relative)", float(np.abs(feats - feats_ref.numpy()).max()) / scale_of_features)
        for scale in scales:
            with torch.no_grad():  # end to end: the graphs against model(lr, scale)
                ref_chain = model(torch.from_numpy(lr), scale).numpy()
            for form in FORMS:
                sr = upscale.run(feats, scale, form)
                if sr.shape != ref_chain.shape:
                    raise ParityError(
                        f"the {form} upscale graph gives shape {sr.shape} at scale {scale} for {name}, "
                        f"PyTorch gives {ref_chain.shape}"
                    )
                report.add(f"{name} x{scale} {form}", float(np.abs(sr - ref_chain).max()))


def verify_fixed(
    model: nn.Module,
    path: str | Path,
    *,
    sizes: Sequence[tuple[int, int, int]] = DEFAULT_SIZES,
    tolerance: float = DEFAULT_TOLERANCE,
    seed: int = 0,
    threads: int = 0,
) -> ParityReport:
    """Compare a fixed-scale ``model.onnx`` with its PyTorch model on random and phantom inputs.

    Raises:
        ParityError: if the worst error exceeds ``tolerance`` (or is NaN) or a shape differs.
    """
    model = model.eval()
    factor = int(model.upscale_factor)
    session = ort_session(path, threads)
    report = ParityReport(tolerance=tolerance)
    for name, lr in _inputs(sizes, seed):
        with torch.no_grad(), _single_torch_thread():
            ref = model(torch.from_numpy(lr), factor).numpy()
        sr = session.run(["sr"], {"lr": lr})[0]
        if sr.shape != ref.shape:
            raise ParityError(f"{Path(path).name} gives shape {sr.shape} for {name}, PyTorch gives {ref.shape}")
        report.add(f"{name} x{factor}", float(np.abs(sr - ref).max()))
    report.raise_if_failed(Path(path).name)
    return report
