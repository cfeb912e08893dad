"""Summarise the reports of scripts/eval_real.sh: gain over bicubic per report, scale and model.

For every report folder under ROOT (one metasr-eval run each) prints a Markdown table: per scale
and model, the PSNR gain over bicubic as the mean of the independent files' mean gains (a volume
counts once, like a single slice) with its 95% interval (Student's t over the files), and each
file's own mean gain (an "image set" below bicubic shows as a negative entry).

Several ROOTs (``LABEL=ROOT``) holding the same reports for different models are joined on
(image, scale), so models evaluated in separate runs share one table; their bicubic scores must
agree (the LR and its noise are seeded).

Usage: ``python scripts/summarise_eval.py [LABEL=]ROOT [[LABEL=]ROOT ...]``
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
                    raise SystemExit(f"{path}: bicubic differs from the first report at {key}: not the same LR")
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


def summarise(name: str, per_images: list[tuple[str, Path]]) -> list[str]:
    rows = _rows(per_images)
    gains = _gains(rows)
    psnr: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        psnr[(r["scale"], r["model"])].append(float(r["psnr"]))
    files = sorted({g for groups in gains.values() for g in groups})
    head = "| scale | model | bicubic dB | model dB | gain dB, mean of files (95% CI) | " + " | ".join(files) + " |"
    lines = [f"### {name}", "", head, "|---" * (5 + len(files)) + "|"]
    for (scale, model), groups in sorted(gains.items(), key=lambda kv: (float(kv[0][0]), kv[0][1])):
        means = np.array([np.mean(v) for v in groups.values()])
        ci = t.ppf(0.975, len(means) - 1) * means.std(ddof=1) / math.sqrt(len(means)) if len(means) > 1 else 0.0
        per_file = " | ".join(f"{np.mean(groups[f]):+.2f}" if f in groups else "" for f in files)
        lines.append(
            f"| {scale} | {model} | {np.mean(psnr[(scale, 'bicubic')]):.2f} | "
            f"{np.mean(psnr[(scale, model)]):.2f} | {means.mean():+.2f} ± {ci:.2f} | {per_file} |"
        )
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", help="[LABEL=]ROOT: a folder of metasr-eval reports")
    args = parser.parse_args(argv)
    roots = [(text.split("=", 1) if "=" in text else ("", text)) for text in args.roots]
    names = sorted({p.parent.name for _, root in roots for p in Path(root).glob("*/per_image.csv")})
    if not names:
        print(f"no metasr-eval reports under {', '.join(r for _, r in roots)}", file=sys.stderr)
        return 2
    for name in names:
        found = [(label, Path(root) / name / "per_image.csv") for label, root in roots]
        print("\n".join(summarise(name, [(label, p) for label, p in found if p.is_file()])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
