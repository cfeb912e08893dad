"""Summarise the reports of scripts/eval_real.sh: gain over bicubic per report, scale and model.

For every report folder under ROOT (one metasr-eval run each) prints a Markdown table: per scale
and model, the PSNR gain over bicubic as the mean of the independent files' mean gains (a volume
counts once, like a single slice) with its 95% interval (Student's t over the files), and each
file's own mean gain (an "image set" below bicubic shows as a negative entry).

Several ROOTs (``LABEL=ROOT``) holding the same reports for different models are joined on
(image, scale), so models evaluated in separate runs share one table; their bicubic scores must
agree (the LR and its noise are seeded).

``--against LABEL`` then compares every other model with LABEL cell by cell (report x scale, the
mean of files): the cells where it is not better, with the margins, and a count. The exit status
is 0 only when every other model is better than LABEL in every one of LABEL's cells (the rule by which
a new default replaces the shipped one), 1 otherwise, so a release script can gate on it.

Usage: ``python scripts/summarise_eval.py [LABEL=]ROOT [[LABEL=]ROOT ...] [--against LABEL]``
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy.stats import t


class Cell(NamedTuple):
    """One report's gain over bicubic at one scale for one model, dB."""

    mean: float  #: the mean of the files' mean gains (a volume counts once)
    ci: float  #: half-width of its 95% interval (Student's t over the files)
    files: dict[str, float]  #: each file's mean gain


def _rows(per_images: list[tuple[str, Path]]) -> list[dict[str, str]]:
    """The rows of several per_image.csv of one report, models renamed ``LABEL`` (or ``LABEL:model``)."""
    rows: list[dict[str, str]] = []
    base: dict[tuple[str, str], str] = {}
    for label, path in per_images:
        mine = list(csv.DictReader(open(path)))
        models = {r["model"] for r in mine if r["model"] != "bicubic"}
        for r in mine:
            if r["model"] == "bicubic":
                key = (r["image"], r["scale"])
                if base.setdefault(key, r["psnr"]) != r["psnr"]:
                    raise ValueError(f"{path}: bicubic differs from the first report at {key}: not the same LR")
                if len(rows) and label != per_images[0][0]:
                    continue
            elif label:
                r["model"] = label if len(models) == 1 else f"{label}:{r['model']}"
            rows.append(r)
    return rows


def _gains(rows: list[dict[str, str]]) -> dict[tuple[str, str], dict[str, list[float]]]:
    """``(scale, model) -> {file: [gain per image]}``."""
    base = {(r["image"], r["scale"]): float(r["psnr"]) for r in rows if r["model"] == "bicubic"}
    out: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["model"] == "bicubic":
            continue
        group = r.get("group") or r["image"]
        out[(r["scale"], r["model"])][group].append(float(r["psnr"]) - base[(r["image"], r["scale"])])
    return out


def _figures(gains: dict[tuple[str, str], dict[str, list[float]]]) -> dict[tuple[str, str], Cell]:
    out = {}
    for key, groups in gains.items():
        files = {f: float(np.mean(v)) for f, v in groups.items()}
        means = np.array(list(files.values()))
        ci = t.ppf(0.975, len(means) - 1) * means.std(ddof=1) / math.sqrt(len(means)) if len(means) > 1 else 0.0
        out[key] = Cell(float(means.mean()), float(ci), files)
    return out


def cell_figures(per_images: list[tuple[str, Path]]) -> dict[tuple[str, str], Cell]:
    """``(scale, model) ->`` the gain over bicubic of one report: its mean of files, interval, each file."""
    return _figures(_gains(_rows(per_images)))


def compare(cells: dict[str, dict[tuple[str, str], Cell]], against: str) -> tuple[list[str], bool]:
    """Every other model against ``against``, cell by cell; the lines to print and whether all are better.

    ``cells`` maps each report's name to its :func:`cell_figures`. A tie (equal to the printed 0.01
    dB) is not better, and a cell of ``against`` the other model was not evaluated in fails it.
    """
    models = sorted({m for report in cells.values() for (_, m) in report} - {against})
    lines, everywhere = [f"### against {against}", ""], True
    for model in models:
        shared, worse, missing = 0, [], 0
        for name, report in sorted(cells.items()):
            for scale in sorted({s for (s, m) in report if m == against}, key=float):
                if (scale, model) not in report:
                    missing += 1
                    continue
                shared += 1
                margin = report[(scale, model)].mean - report[(scale, against)].mean
                if not round(margin, 2) > 0:
                    worse.append(f"{name} x{scale} {margin:+.2f}")
        everywhere &= shared > 0 and not worse and not missing
        lines.append(f"- {model}: better in {shared - len(worse)} of {shared} cells")
        lines += [f"  - not better: {cell}" for cell in worse]
        if missing:
            lines.append(f"  - not evaluated in {missing} of {against}'s cells")
    return lines + [""], everywhere


def summarise(name: str, rows: list[dict[str, str]]) -> tuple[list[str], dict[tuple[str, str], Cell]]:
    """The Markdown table of one report's rows, and its :func:`cell_figures`."""
    gains = _gains(rows)
    figures = _figures(gains)
    psnr: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        psnr[(r["scale"], r["model"])].append(float(r["psnr"]))
    files = sorted({g for groups in gains.values() for g in groups})
    head = "| scale | model | bicubic dB | model dB | gain dB, mean of files (95% CI) | " + " | ".join(files) + " |"
    lines = [f"### {name}", "", head, "|---" * (5 + len(files)) + "|"]
    for (scale, model), cell in sorted(figures.items(), key=lambda kv: (float(kv[0][0]), kv[0][1])):
        per_file = " | ".join(f"{cell.files[f]:+.2f}" if f in cell.files else "" for f in files)
        lines.append(
            f"| {scale} | {model} | {np.mean(psnr[(scale, 'bicubic')]):.2f} | "
            f"{np.mean(psnr[(scale, model)]):.2f} | {cell.mean:+.2f} ± {cell.ci:.2f} | {per_file} |"
        )
    return lines + [""], figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", help="[LABEL=]ROOT: a folder of metasr-eval reports")
    parser.add_argument("--against", metavar="LABEL", help="compare every other model with this one, cell by cell")
    args = parser.parse_args(argv)
    roots = [(text.split("=", 1) if "=" in text else ("", text)) for text in args.roots]
    names = sorted({p.parent.name for _, root in roots for p in Path(root).glob("*/per_image.csv")})
    if not names:
        print(f"no metasr-eval reports under {', '.join(r for _, r in roots)}", file=sys.stderr)
        return 2
    cells: dict[str, dict[tuple[str, str], Cell]] = {}
    out: list[str] = []
    try:
        for name in names:
            found = [(label, Path(root) / name / "per_image.csv") for label, root in roots]
            found = [(label, p) for label, p in found if p.is_file()]
            lines, cells[name] = summarise(name, _rows(found))
            out += lines
    except ValueError as e:
        print(f"summarise_eval: {e}", file=sys.stderr)
        return 2
    shown = sorted({m for report in cells.values() for (_, m) in report})
    if args.against is not None and args.against not in shown:
        print(f"summarise_eval: --against {args.against}: no such model; the reports hold {shown}", file=sys.stderr)
        return 2
    everywhere = True
    if args.against is not None:
        lines, everywhere = compare(cells, args.against)
        out += lines
    print("\n".join(out))
    return 0 if everywhere else 1


if __name__ == "__main__":
    raise SystemExit(main())
