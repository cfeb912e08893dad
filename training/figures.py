"""Tables and figures of ``metasr-eval``, ready for a paper.

* ``table.md`` / ``table.csv``: per model and scale, mean PSNR/SSIM with the per-image standard
  deviation and the 95% confidence interval of the mean; the gain of each model over bicubic.
* ``per_image.csv``: one row per (image, scale, model), for paired tests between models.
* ``metrics.{png,pdf,svg}``: PSNR and SSIM against scale, a marker at every evaluated scale, the
  mean as a line with a band of +-1 per-image standard deviation (error bars for a model
  evaluated at one scale).
* ``crops.{png,pdf,svg}``: for each shown scale, crops of LR (nearest-neighbour enlarged), every
  model and HR, each titled with the PSNR/SSIM of the crop shown, and a row of absolute-error maps.

Matplotlib runs on its Agg backend and every file is written without time stamps, so the same
report gives the same bytes.
"""

from __future__ import annotations

import csv
import io
import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from metasr.core.atomic import atomic_write_bytes
from metasr.core.errors import InputError, OutputError
from metasr.training.evaluate import EvalReport

__all__ = [
    "FIGURE_FORMATS",
    "table_markdown",
    "table_csv",
    "per_image_csv",
    "plot_metrics",
    "metrics_figure",
    "plot_crops",
    "report_files",
    "write_files",
]

#: Formats every figure is written in: a raster for quick viewing, vectors for print.
FIGURE_FORMATS = ("png", "pdf", "svg")
_METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None}, "svg": {"Date": None}}


def _fmt_scale(s: Fraction) -> str:
    return f"{float(s):g}"


def table_markdown(report: EvalReport) -> str:
    """One row per scale: mean +- std of every model (bicubic first) and the others' gains."""
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
            cells += [f"{r.psnr:.2f} ± {r.psnr_std:.2f}", f"{r.ssim:.4f} ± {r.ssim_std:.4f}"] if r else ["", ""]
        b = report.get(base, s)
        for m in report.models[1:]:
            r = report.get(m, s)
            cells += [f"{r.psnr - b.psnr:+.2f}", f"{r.ssim - b.ssim:+.4f}"] if (r and b) else ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    groups = max((r.groups for r in report.rows), default=0)
    note = (
        f"\nLR made by: {report.degradation}. Mean ± per-image standard deviation over {report.images} images "
        f"from {groups} independent files (volumes/series); 95% intervals of the mean, over the files' means, "
        f"in table.csv.\n"
    )
    if report.references:
        note += "\nReferences at the acquired resolution (`--reference native`; metasr.training.reference):\n"
        note += "".join(f"- {name}: {how}\n" for name, how in sorted(report.references.items()))
    return "\n".join(lines) + "\n" + note


def table_csv(report: EvalReport) -> str:
    """``scale, model, psnr, ssim, images`` and the spreads (std, 95% interval half-width)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["scale", "model", "psnr", "ssim", "images", "psnr_std", "ssim_std", "psnr_ci95", "ssim_ci95", "groups"])
    for r in report.rows:
        w.writerow(
            [
                _fmt_scale(r.scale),
                r.model,
                f"{r.psnr:.4f}",
                f"{r.ssim:.5f}",
                r.images,
                f"{r.psnr_std:.4f}",
                f"{r.ssim_std:.5f}",
                f"{r.psnr_ci95:.4f}",
                f"{r.ssim_ci95:.5f}",
                r.groups,
            ]
        )
    return buf.getvalue()


def per_image_csv(report: EvalReport) -> str:
    """One row per (image, scale, model): ``image, scale, model, psnr, ssim, group``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "scale", "model", "psnr", "ssim", "group"])
    for s in report.scores:
        w.writerow([s.image, _fmt_scale(s.scale), s.model, f"{s.psnr:.4f}", f"{s.ssim:.5f}", s.group])
    return buf.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    matplotlib.rcParams["svg.hashsalt"] = "metasr"  # stable element ids in SVG output
    import matplotlib.pyplot as plt

    return plt


def _figure_files(fig, stem: str) -> dict[str, bytes]:  # noqa: ANN001 - matplotlib figure
    out = {}
    for fmt in FIGURE_FORMATS:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=150, bbox_inches="tight", metadata=_METADATA[fmt])
        out[f"{stem}.{fmt}"] = buf.getvalue()
    return out


def plot_metrics(report: EvalReport) -> dict[str, bytes]:
    """``metrics.{png,pdf,svg}``: PSNR and SSIM against scale with markers and spread."""
    plt = _pyplot()
    fig = metrics_figure(report)
    files = _figure_files(fig, "metrics")
    plt.close(fig)
    return files


def metrics_figure(report: EvalReport):  # noqa: ANN201 - a matplotlib Figure
    """The figure of :func:`plot_metrics` (the caller closes it)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for k, m in enumerate(report.models):
        rows = [r for r in report.rows if r.model == m]
        if not rows:
            continue
        color = f"C{k % 10}"
        xs = np.array([float(r.scale) for r in rows])
        for ax, mean, std in (
            (axes[0], [r.psnr for r in rows], [r.psnr_std for r in rows]),
            (axes[1], [r.ssim for r in rows], [r.ssim_std for r in rows]),
        ):
            mean, std = np.array(mean), np.array(std)
            if len(rows) == 1:
                ax.errorbar(xs, mean, yerr=std, fmt="s", color=color, capsize=3, markersize=5, label=m)
                continue
            ax.plot(xs, mean, "-o", color=color, markersize=4, linewidth=1.2, label=m)
            finite = np.isfinite(mean)
            ax.fill_between(xs[finite], (mean - std)[finite], (mean + std)[finite], color=color, alpha=0.18, lw=0)
    for ax, name in zip(axes, ("PSNR (dB)", "SSIM")):
        ax.set_xlabel("scale factor")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{report.images} held-out images: mean ± 1 per-image s.d.", fontsize=10)
    return fig


def _nearest_enlarged(lr: np.ndarray, shape: tuple[int, int], s: Fraction) -> np.ndarray:
    rows = np.minimum((np.arange(shape[0]) * s.denominator) // s.numerator, lr.shape[0] - 1)
    cols = np.minimum((np.arange(shape[1]) * s.denominator) // s.numerator, lr.shape[1] - 1)
    return lr[rows][:, cols]


def _crop_scores(hr: np.ndarray, sr: np.ndarray) -> str:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    hr64, sr64 = hr.astype(np.float64), sr.astype(np.float64)
    mse = float(np.mean((hr64 - sr64) ** 2))
    psnr = float("inf") if mse == 0 else float(peak_signal_noise_ratio(hr64, sr64, data_range=1.0))
    if min(hr.shape) < 7:
        return f"{psnr:.2f} dB"
    return f"{psnr:.2f} dB / {float(structural_similarity(hr64, sr64, data_range=1.0)):.3f}"


def plot_crops(report: EvalReport, size: int = 96) -> dict[str, bytes]:
    """``crops.{png,pdf,svg}``: crops of LR, every model and HR with PSNR/SSIM, and error maps."""
    scales = sorted(report.samples)
    if not scales:
        raise InputError("no sample crops were kept; pass sample scales the models support")
    plt = _pyplot()
    cols = ["LR", *report.models, "HR"]
    fig, axes = plt.subplots(
        2 * len(scales), len(cols), figsize=(2.2 * len(cols), 4.6 * len(scales)), squeeze=False, layout="constrained"
    )
    for i, s in enumerate(scales):
        sample = report.samples[s]
        hr = sample["HR"]
        if report.crop is not None:  # the user's region, in HR pixels of this scale's crop, kept inside it
            top, left, size = report.crop
            size = min(size, *hr.shape)
            top, left = min(max(0, top), hr.shape[0] - size), min(max(0, left), hr.shape[1] - size)
        else:
            top, left = max(0, (hr.shape[0] - size) // 2), max(0, (hr.shape[1] - size) // 2)
        window = (slice(top, top + size), slice(left, left + size))
        centre, width = report.window if report.window is not None else (0.5, 1.0)
        low, high = centre - width / 2, centre + width / 2
        errors = {m: np.abs(sample[m] - hr)[window] for m in report.models if m in sample}
        vmax = max([float(e.max()) for e in errors.values()] + [1e-6])
        for j, name in enumerate(cols):
            ax, err_ax = axes[2 * i][j], axes[2 * i + 1][j]
            ax.axis("off")
            err_ax.axis("off")
            img = sample.get(name)
            if img is None:
                continue
            if name == "LR":  # nearest-neighbour enlargement to the HR grid, to show the input pixels
                img = _nearest_enlarged(img, hr.shape, s)
            ax.imshow(img[window], cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            title = f"LR x{_fmt_scale(s)}" if name == "LR" else name
            if name in errors:
                title += f"\n{_crop_scores(hr[window], img[window])}"
                shown = err_ax.imshow(errors[name], cmap="inferno", vmin=0, vmax=vmax, interpolation="nearest")
                err_ax.set_title(f"|{name} - HR|", fontsize=7)
            ax.set_title(title, fontsize=7)
        fig.colorbar(shown, ax=list(axes[2 * i + 1]), fraction=0.02, pad=0.01, label="absolute error")
    shown_window = "" if report.window is None else f", display window {low:.3g}..{high:.3g}"
    fig.suptitle(
        f"{report.sample_name} (LR: {report.degradation}): crops, PSNR/SSIM of each crop{shown_window}", fontsize=9
    )
    files = _figure_files(fig, "crops")
    plt.close(fig)
    return files


def report_files(report: EvalReport) -> dict[str, bytes]:
    """Every file of a report by name (tables, per-image scores, figures)."""
    files = {
        "table.md": table_markdown(report).encode(),
        "table.csv": table_csv(report).encode(),
        "per_image.csv": per_image_csv(report).encode(),
        **plot_metrics(report),
    }
    if report.samples:
        files.update(plot_crops(report))
    return files


def write_files(files: dict[str, bytes], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write rendered files (name -> bytes), each atomically, to ``out_dir``.

    Raises:
        OutputError: the folder cannot be created or written.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create output folder {out}: {e.strerror}; choose another --out") from e
    written = {}
    for name, data in files.items():
        atomic_write_bytes(out / name, data)
        written[name] = out / name
    return written
