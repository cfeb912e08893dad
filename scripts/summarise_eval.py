"""Summarise the reports of scripts/eval_real.sh: gain over bicubic per report, scale and model.

For every report folder under ROOT (one metasr-eval run each) prints a Markdown table: per scale
and model, the PSNR gain over bicubic as the mean of the independent files' mean gains (a volume
counts once, like a single slice) with its 95% interval (Student's t over the files), and each
file's own mean gain (an "image set" below bicubic shows as a negative entry).

Usage: ``python scripts/summarise_eval.py ROOT [--models NAME=LABEL ...]``
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import t


def _gains(per_image: Path) -> dict[tuple[str, str], dict[str, list[float]]]:
    """``(scale, model) -> {file: [gain per image]}`` from a per_image.csv."""
    rows = list(csv.DictReader(open(per_image)))
    base = {(r["image"], r["scale"]): float(r["psnr"]) for r in rows if r["model"] == "bicubic"}
    out: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["model"] == "bicubic":
            continue
        group = r.get("group") or r["image"]
        out[(r["scale"], r["model"])][group].append(float(r["psnr"]) - base[(r["image"], r["scale"])])
    return out


def summarise(folder: Path, labels: dict[str, str]) -> list[str]:
    gains = _gains(folder / "per_image.csv")
    table = {(r["scale"], r["model"]): r for r in csv.DictReader(open(folder / "table.csv"))}
    files = sorted({g for groups in gains.values() for g in groups})
    head = "| scale | model | bicubic dB | model dB | gain dB, mean of files (95% CI) | " + " | ".join(files) + " |"
    lines = [f"### {folder.name}", "", head, "|---" * (5 + len(files)) + "|"]
    for (scale, model), groups in sorted(gains.items(), key=lambda kv: (float(kv[0][0]), kv[0][1])):
        means = np.array([np.mean(v) for v in groups.values()])
        ci = t.ppf(0.975, len(means) - 1) * means.std(ddof=1) / math.sqrt(len(means)) if len(means) > 1 else 0.0
        per_file = " | ".join(f"{np.mean(groups[f]):+.2f}" if f in groups else "" for f in files)
        lines.append(
            f"| {scale} | {labels.get(model, model)} | {float(table[(scale, 'bicubic')]['psnr']):.2f} | "
            f"{float(table[(scale, model)]['psnr']):.2f} | {means.mean():+.2f} ± {ci:.2f} | {per_file} |"
        )
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--models", nargs="*", default=[], help="NAME=LABEL renames a model column")
    args = parser.parse_args(argv)
    labels = dict(m.split("=", 1) for m in args.models)
    folders = sorted(p.parent for p in args.root.glob("*/per_image.csv"))
    if not folders:
        print(f"no metasr-eval reports under {args.root}", file=sys.stderr)
        return 2
    for folder in folders:
        print("\n".join(summarise(folder, labels)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
