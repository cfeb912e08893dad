"""The comparison table and figure of ``metasr-eval --compare`` (the paper's Table 1, on our data).

Rendering only: the report comes from :func:`metasr.training.evaluate.evaluate`, and what is known
of each model beside its scores (parameters, milliseconds through the runtime) comes in as
:class:`ModelFacts`. Files: ``compare.md``, ``compare.csv`` and ``compare.{png,pdf,svg}``.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from metasr.training.evaluate import EvalReport, EvalRow
from metasr.training.figures import _figure_files, _fmt_scale, _pyplot

__all__ = [
    "ModelFacts",
    "Gain",
    "paired_gain",
    "COMPARE_FILES",
    "compare_markdown",
    "compare_csv",
    "compare_figure",
    "compare_files",
]

#: What ``--compare`` adds to ``--out``.
COMPARE_FILES = ("compare.md", "compare.csv", "compare.png", "compare.pdf", "compare.svg")


@dataclass
class ModelFacts:
    """What the table says of a model beside its scores.

    Attributes:
        name: The model's name in the report.
        parameters: Trainable parameters (None: unknown, e.g. bicubic has none to count).
        ms: Median milliseconds per image through the runtime, by scale (input size in ``size``).
        size: Side of the square input the times were measured on.
        note: Where the model came from (checkpoint or export path, training budget...).
    """

    name: str
    parameters: int | None = None
    ms: dict[Fraction, float] = field(default_factory=dict)
    size: int = 256
    note: str = ""


@dataclass(frozen=True)
class Gain:
    """A model's gain over the baseline (the report's first model) at one scale, paired per image.

    ``psnr``/``ssim``: the mean over the files (groups) of each file's mean gain; ``*_ci95``: the
    half-width of its 95 % interval over the files (Student's t; 0 with one file).
    """

    psnr: float
    ssim: float
    psnr_ci95: float
    ssim_ci95: float


def paired_gain(report: EvalReport, model: str, scale: Fraction) -> Gain | None:
    """The gain of ``model`` over the report's baseline at ``scale`` on the images both were scored on."""
    base = {s.image: s for s in report.scores if s.model == report.models[0] and s.scale == scale}
    per_group: dict[str, list[tuple[float, float]]] = {}
    for s in report.scores:
        b = base.get(s.image)
        if s.model == model and s.scale == scale and b is not None and model != report.models[0]:
            per_group.setdefault(s.group or s.image, []).append((s.psnr - b.psnr, s.ssim - b.ssim))
    if not per_group:
        return None
    means = np.array([np.mean(v, axis=0) for v in per_group.values()])  # [files, 2]
    n = len(means)
    if n < 2 or not np.isfinite(means).all():
        spread = (0.0, 0.0)
    else:
        from scipy.stats import t

        half = t.ppf(0.975, n - 1) * means.std(axis=0, ddof=1) / math.sqrt(n)
        spread = (float(half[0]), float(half[1]))
    mean = means.mean(axis=0)
    return Gain(float(mean[0]), float(mean[1]), *spread)


def _rows(report: EvalReport) -> list[EvalRow]:
    order = {m: i for i, m in enumerate(report.models)}
    return sorted(report.rows, key=lambda r: (r.scale, order.get(r.model, 0)))


#: The baselines that interpolate (no parameters, not timed): bicubic, and zero-fill (``metasr-eval --zero-fill``).
INTERPOLATORS = ("bicubic", "zero-fill")


def _params(facts: ModelFacts | None) -> str:
    if facts is None or facts.parameters is None:
        return "0" if facts is not None and facts.name in INTERPOLATORS else ""
    return f"{facts.parameters / 1e6:.2f}M"


def _ms(facts: ModelFacts | None, scale: Fraction) -> str:
    value = facts.ms.get(scale) if facts is not None else None
    return f"{value:.0f}" if value is not None and math.isfinite(value) else ""


def compare_markdown(report: EvalReport, facts: dict[str, ModelFacts]) -> str:
    """One row per (scale, model): PSNR/SSIM with 95 % intervals, gain over bicubic, size, time."""
    size = next((f.size for f in facts.values() if f.ms), 256)
    head = [
        "scale",
        "model",
        "PSNR (dB)",
        "SSIM",
        "ΔPSNR vs bicubic (paired)",
        "ΔSSIM vs bicubic (paired)",
        "parameters",
        f"ms per {size}x{size} (runtime)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in _rows(report):
        g = paired_gain(report, r.model, r.scale)
        gain = [f"{g.psnr:+.2f} ± {g.psnr_ci95:.2f}", f"{g.ssim:+.4f} ± {g.ssim_ci95:.4f}"] if g else ["", ""]
        f = facts.get(r.model)
        cells = [
            _fmt_scale(r.scale),
            r.model,
            f"{r.psnr:.2f} ± {r.psnr_ci95:.2f}",
            f"{r.ssim:.4f} ± {r.ssim_ci95:.4f}",
            *gain,
            _params(f),
            _ms(f, r.scale),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    groups = max((r.groups for r in report.rows), default=0)
    notes = [
        "",
        f"LR made by: {report.degradation}. {report.images} held-out images from {groups} independent files "
        "(volumes/series); ± is the 95 % interval of the mean over the files' means (Student's t). The gains "
        "are paired: each image against bicubic on the same LR, averaged per file, then over the files; their "
        "intervals are far narrower than those of the absolute scores, which differ from file to file.",
        f"Time: median of the runtime's CPU/GPU run on one {size}x{size} input (bicubic: not timed).",
    ]
    notes += [f"- {f.name}: {f.note}" for f in facts.values() if f.note]
    return "\n".join(lines) + "\n" + "\n".join(notes) + "\n"


def compare_csv(report: EvalReport, facts: dict[str, ModelFacts]) -> str:
    """The same table as numbers: one row per (scale, model)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        ["scale", "model", "psnr", "psnr_ci95", "ssim", "ssim_ci95"]
        + ["dpsnr", "dpsnr_ci95", "dssim", "dssim_ci95", "images", "groups", "parameters", "ms", "size"]
    )
    for r in _rows(report):
        f = facts.get(r.model)
        ms = f.ms.get(r.scale) if f is not None else None
        g = paired_gain(report, r.model, r.scale)
        gain = [f"{g.psnr:.4f}", f"{g.psnr_ci95:.4f}", f"{g.ssim:.5f}", f"{g.ssim_ci95:.5f}"] if g else [""] * 4
        w.writerow(
            [
                _fmt_scale(r.scale),
                r.model,
                f"{r.psnr:.4f}",
                f"{r.psnr_ci95:.4f}",
                f"{r.ssim:.5f}",
                f"{r.ssim_ci95:.5f}",
                *gain,
                r.images,
                r.groups,
                "" if f is None or f.parameters is None else f.parameters,
                "" if ms is None else f"{ms:.2f}",
                "" if f is None else f.size,
            ]
        )
    return buf.getvalue()


def compare_figure(report: EvalReport, facts: dict[str, ModelFacts]):  # noqa: ANN201 - a matplotlib Figure
    """Paired gains over bicubic in PSNR and SSIM of every model at the smallest compared scale
    (bars, 95 % intervals over the files), and the PSNR gain against the time through the runtime
    (marker area ~ parameters)."""
    plt = _pyplot()
    scale = min(report.scales)
    rows = [r for r in _rows(report) if r.scale == scale and r.model != report.models[0]]
    gains = [paired_gain(report, r.model, scale) for r in rows]
    names = [r.model for r in rows]
    colours = [f"C{i % 10}" for i in range(len(rows))]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), constrained_layout=True)
    panels = ((axes[0], "psnr", "PSNR gain over bicubic (dB)"), (axes[1], "ssim", "SSIM gain over bicubic"))
    for ax, key, label in panels:
        values = [getattr(g, key) for g in gains]
        errors = [getattr(g, f"{key}_ci95") for g in gains]
        ax.bar(range(len(rows)), values, yerr=errors, color=colours, capsize=3)
        ax.axhline(0.0, color="0.3", lw=0.8)
        ax.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(label)
        ax.set_title(f"x{_fmt_scale(scale)}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    ax = axes[2]
    for r, g, colour in zip(rows, gains, colours):
        f = facts.get(r.model)
        ms = f.ms.get(scale) if f is not None else None
        if ms is None:
            continue
        area = 30 + 200 * ((f.parameters or 0) / 1e6) ** 0.5
        ax.errorbar(ms, g.psnr, yerr=g.psnr_ci95, fmt="none", ecolor=colour, capsize=2)
        ax.scatter([ms], [g.psnr], s=area, color=colour, label=r.model)
    ax.axhline(0.0, color="0.5", ls="--", lw=1, label="bicubic")
    ax.set_xscale("log")
    ax.set_xlabel("ms per image through the runtime (log)")
    ax.set_ylabel("PSNR gain over bicubic (dB)")
    ax.set_title("quality against time (area ~ parameters)", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    groups = max((r.groups for r in report.rows), default=0)
    fig.suptitle(
        f"{report.images} held-out images from {groups} files, LR: {report.degradation}; gains paired per image, "
        "95 % intervals over files",
        fontsize=9,
    )
    return fig


def compare_files(report: EvalReport, facts: dict[str, ModelFacts]) -> dict[str, bytes]:
    """Every ``--compare`` file by name."""
    plt = _pyplot()
    fig = compare_figure(report, facts)
    files = _figure_files(fig, "compare")
    plt.close(fig)
    return {
        "compare.md": compare_markdown(report, facts).encode(),
        "compare.csv": compare_csv(report, facts).encode(),
        **files,
    }
