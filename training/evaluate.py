"""Evaluation protocol of the paper: PSNR/SSIM per scale, model(s) against bicubic.

For every held-out image (its maximal-information crop) of size ``H x W`` and scale ``r``: the LR
image has ``floor(H/r) x floor(W/r)`` pixels, the HR reference is cropped to ``floor(h*r)``, and
LR is the bicubic-antialias resize of that crop (:func:`metasr.training.data.make_pair`). Outputs
are clipped to [0, 1]; PSNR and SSIM come from scikit-image with ``data_range=1``.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from metasr.core.atomic import atomic_write_bytes
from metasr.core.errors import InputError, OutputError, ScaleError
from metasr.core.scale import DEFAULT_SCALE_RANGE
from metasr.training.checkpoint import load_checkpoint, read_checkpoint
from metasr.training.data import Axis, build_index, load_slice, make_pair
from metasr.training.models import Bicubic

__all__ = ["Predictor", "EvalRow", "EvalReport", "load_predictor", "bicubic_predictor", "evaluate", "write_report"]

#: ``predict(lr [h, w] float32, scale) -> sr [H, W]``
PredictFn = Callable[[np.ndarray, Fraction], np.ndarray]


@dataclass
class Predictor:
    """A named model for evaluation and the scales it supports."""

    name: str
    predict: PredictFn
    scale_range: tuple[float, float]
    fixed_scale: int | None = None

    def supports(self, scale: Fraction) -> bool:
        if self.fixed_scale is not None:
            return scale == self.fixed_scale
        lo, hi = self.scale_range
        return (lo == float("-inf") or Fraction(repr(float(lo))) <= scale) and (
            hi == float("inf") or scale <= Fraction(repr(float(hi)))
        )


def bicubic_predictor() -> Predictor:
    """Bicubic interpolation (the paper's baseline)."""
    model = Bicubic()

    def predict(lr: np.ndarray, scale: Fraction) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(lr)[None, None], scale)[0, 0].numpy()

    return Predictor("bicubic", predict, (1.0, float("inf")))


def load_predictor(source: str | os.PathLike, device: str = "cpu") -> Predictor:
    """A checkpoint (``.pt``) through torch, or an exported model folder through the runtime.

    Raises:
        CheckpointError / ModelError: unusable source.
        InputError: the path does not exist.
    """
    path = Path(source)
    if path.is_dir():
        from metasr.runtime import Upscaler

        up = Upscaler(path, device="cpu" if device == "cpu" else "auto")
        fixed = getattr(up, "fixed_scale", None)
        return Predictor(
            f"{getattr(up, 'arch', 'model')} (onnx)", lambda lr, s: up.upscale(lr, s), tuple(up.scale_range), fixed
        )
    if not path.exists():
        raise InputError(f"model {path} does not exist; pass a checkpoint (.pt) or an exported model folder")
    ckpt = read_checkpoint(path)
    model = load_checkpoint(path, device)
    config = ckpt["config"]
    fixed = getattr(model, "upscale_factor", None)
    scale_range = tuple(config.get("scale_range") or ([fixed] * 2 if fixed else list(DEFAULT_SCALE_RANGE)))
    dev = torch.device(device)

    def predict(lr: np.ndarray, scale: Fraction) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(lr)[None, None].to(dev), scale)[0, 0].float().cpu().numpy()

    return Predictor(str(config["arch"]), predict, (float(scale_range[0]), float(scale_range[1])), fixed)


@dataclass
class EvalRow:
    """Mean metrics of one model at one scale."""

    scale: Fraction
    model: str
    psnr: float
    ssim: float
    images: int


@dataclass
class EvalReport:
    """All rows, plus what the plots need."""

    rows: list[EvalRow] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    scales: list[Fraction] = field(default_factory=list)
    images: int = 0
    samples: dict[Fraction, dict[str, np.ndarray]] = field(default_factory=dict)

    def get(self, model: str, scale: Fraction) -> EvalRow | None:
        for r in self.rows:
            if r.model == model and r.scale == scale:
                return r
        return None


def _unique_names(predictors: Sequence[Predictor]) -> None:
    seen: dict[str, int] = {}
    for p in predictors:
        if p.name in seen:
            seen[p.name] += 1
            p.name = f"{p.name} #{seen[p.name]}"
        else:
            seen[p.name] = 1


def evaluate(
    predictors: Sequence[Predictor],
    images: Sequence[np.ndarray],
    scales: Sequence[Fraction],
    sample_scales: Sequence[Fraction] = (),
    sample_image: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> EvalReport:
    """PSNR/SSIM of each predictor at each scale it supports, averaged over ``images``.

    Args:
        predictors: Models; bicubic is usually the first.
        images: HR images (maximal-information crops), float32 in [0, 1].
        scales: Exact scales.
        sample_scales: Scales at which to keep LR/SR/HR of ``sample_image`` for the crops figure.
        sample_image: Index of that image (default: the middle one).
        progress: Called with the number of (image, scale) pairs done since the last call.
    """
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if not images:
        raise InputError("no images to evaluate")
    _unique_names(predictors)
    report = EvalReport(models=[p.name for p in predictors], scales=list(scales), images=len(images))
    sample_image = len(images) // 2 if sample_image is None else sample_image
    acc: dict[tuple[str, Fraction], list[tuple[float, float]]] = {}
    for idx, image in enumerate(images):
        for s in scales:
            lr_t, hr_t = make_pair(image, s)
            lr, hr = lr_t.numpy(), hr_t.numpy().astype(np.float64)
            if min(hr.shape) < 7:
                raise ScaleError(
                    f"image {idx} ({image.shape[0]}x{image.shape[1]}) is too small for SSIM at scale {float(s):g}"
                )
            keep = idx == sample_image and s in sample_scales
            if keep:
                report.samples[s] = {"LR": lr, "HR": hr.astype(np.float32)}
            for p in predictors:
                if not p.supports(s):
                    continue
                sr = np.clip(np.asarray(p.predict(lr, s), dtype=np.float64), 0.0, 1.0)
                if sr.shape != hr.shape:
                    raise InputError(f"{p.name} returned {sr.shape} at scale {float(s):g}, expected {hr.shape}")
                acc.setdefault((p.name, s), []).append(
                    (peak_signal_noise_ratio(hr, sr, data_range=1.0), structural_similarity(hr, sr, data_range=1.0))
                )
                if keep:
                    report.samples[s][p.name] = sr.astype(np.float32)
            if progress is not None:
                progress(1)
    for s in scales:
        for p in predictors:
            vals = acc.get((p.name, s))
            if vals:
                arr = np.asarray(vals)
                report.rows.append(EvalRow(s, p.name, float(arr[:, 0].mean()), float(arr[:, 1].mean()), len(vals)))
    return report


def load_images(
    specs: Sequence[str], axes: Sequence[str] = ("axial",), max_images: int = 0, min_size: int = 16
) -> list[np.ndarray]:
    """Maximal-information crops of every usable slice of ``specs`` (evenly thinned to ``max_images``)."""
    index = build_index(specs, axes=[Axis(a) for a in axes], min_size=min_size)
    refs = index.slices
    if max_images and len(refs) > max_images:
        picks = sorted(set(np.linspace(0, len(refs) - 1, max_images).round().astype(int).tolist()))
        refs = [refs[i] for i in picks]
    return [load_slice(r) for r in refs]


# --------------------------------------------------------------------------------------------
# Writing


def _fmt_scale(s: Fraction) -> str:
    return f"{float(s):g}"


def table_markdown(report: EvalReport) -> str:
    """One row per scale: PSNR/SSIM of every model (bicubic first) and the gain of the others."""
    base = report.models[0]
    head = ["scale"]
    for m in report.models:
        head += [f"{m} PSNR", f"{m} SSIM"]
    for m in report.models[1:]:
        head += [f"{m} dPSNR", f"{m} dSSIM"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in report.scales:
        cells = [_fmt_scale(s)]
        for m in report.models:
            r = report.get(m, s)
            cells += [f"{r.psnr:.2f}", f"{r.ssim:.4f}"] if r else ["", ""]
        b = report.get(base, s)
        for m in report.models[1:]:
            r = report.get(m, s)
            cells += [f"{r.psnr - b.psnr:+.2f}", f"{r.ssim - b.ssim:+.4f}"] if (r and b) else ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_csv(report: EvalReport) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["scale", "model", "psnr", "ssim", "images"])
    for r in report.rows:
        w.writerow([_fmt_scale(r.scale), r.model, f"{r.psnr:.4f}", f"{r.ssim:.5f}", r.images])
    return buf.getvalue()


def _figure_bytes(fig) -> bytes:  # noqa: ANN001 - matplotlib figure
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def plot_metrics(report: EvalReport) -> bytes:
    """PNG of PSNR and SSIM against scale, one line per model."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for m in report.models:
        rows = [r for r in report.rows if r.model == m]
        xs = [float(r.scale) for r in rows]
        style = "o" if len(rows) == 1 else "-"
        axes[0].plot(xs, [r.psnr for r in rows], style, label=m, markersize=4)
        axes[1].plot(xs, [r.ssim for r in rows], style, label=m, markersize=4)
    for ax, name in zip(axes, ("PSNR (dB)", "SSIM")):
        ax.set_xlabel("scale")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{report.images} held-out images")
    data = _figure_bytes(fig)
    plt.close(fig)
    return data


def plot_crops(report: EvalReport, size: int = 96) -> bytes:
    """PNG of side-by-side crops (LR shown with nearest-neighbour enlargement, bicubic, models, HR)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    scales = sorted(report.samples)
    if not scales:
        raise InputError("no sample crops were kept; pass sample scales the models support")
    cols = ["LR"] + [m for m in report.models] + ["HR"]
    fig, axes = plt.subplots(len(scales), len(cols), figsize=(2.2 * len(cols), 2.3 * len(scales)), squeeze=False)
    for i, s in enumerate(scales):
        sample = report.samples[s]
        hr = sample["HR"]
        top = max(0, (hr.shape[0] - size) // 2)
        left = max(0, (hr.shape[1] - size) // 2)
        for j, name in enumerate(cols):
            ax = axes[i][j]
            ax.axis("off")
            img = sample.get(name)
            if img is None:
                continue
            if name == "LR":  # nearest-neighbour enlargement to the HR grid, to show the input pixels
                rows = (np.arange(hr.shape[0]) * s.denominator) // s.numerator
                cols_idx = (np.arange(hr.shape[1]) * s.denominator) // s.numerator
                img = img[np.minimum(rows, img.shape[0] - 1)][:, np.minimum(cols_idx, img.shape[1] - 1)]
            ax.imshow(img[top : top + size, left : left + size], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"{name} x{_fmt_scale(s)}" if j == 0 else name, fontsize=7)
    data = _figure_bytes(fig)
    plt.close(fig)
    return data


def write_report(report: EvalReport, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``table.md``, ``table.csv``, ``metrics.png`` and ``crops.png`` (atomically) to ``out_dir``."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create output folder {out}: {e.strerror}") from e
    files = {
        "table.md": table_markdown(report).encode(),
        "table.csv": table_csv(report).encode(),
        "metrics.png": plot_metrics(report),
    }
    if report.samples:
        files["crops.png"] = plot_crops(report)
    written = {}
    for name, data in files.items():
        atomic_write_bytes(out / name, data)
        written[name] = out / name
    return written
