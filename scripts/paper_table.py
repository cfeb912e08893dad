"""Our comparison beside the paper's Table 1 (x2, BraTS t1ce), from scripts/compare_paper.sh's reports.

Usage: ``python scripts/paper_table.py OUT`` (OUT as given to compare_paper.sh: it reads
``OUT/bicubic/compare.csv`` and ``OUT/psf-rician2/compare.csv``) prints the Markdown table of the
README's "Reproducing the paper" section: per network, the paper's PSNR/SSIM, ours under the
paper's protocol (antialiased bicubic LR) and under a realistic one (PSF + 2 % Rician), each with
the PSNR gain over bicubic paired per image with its 95 % interval over the test files, the
parameters and the time per 256x256 image.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

#: The paper's Table 1: x2 on BraTS t1ce, PSNR dB / SSIM.
PAPER = {
    "bicubic": (17.98, 0.6091),
    "srgan-x2": (18.42, 0.7295),
    "edsr-baseline-x2": (18.93, 0.6885),
    "metasrgan-mri-gan": (18.72, 0.7279),
}
#: How each network of ours is labelled in the table.
NAMES = {
    "bicubic": "bicubic",
    "srgan-x2": "SRGAN x2",
    "srgan-x4": "SRGAN x4 (fixed-scale reference)",
    "edsr-baseline-x2": "EDSR x2 (ours: published small configuration; paper: 40.7M)",
    "metasrgan-l1": "Meta-SRGAN, L1, same budget as the baselines",
    "metasrgan-mri": "Meta-SRGAN, L1, mostly clean pairs (shipped default `metasrgan-mri`)",
    "metasrgan-mri-robust": "Meta-SRGAN, L1, realistic degradations (shipped `metasrgan-mri-robust`)",
    "metasrgan-mri-gan": "Meta-SRGAN, L1 + GAN stage (shipped `metasrgan-mri-gan`)",
}


def _read(path: Path, scale: str) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {r["model"]: r for r in csv.DictReader(f) if r["scale"] == scale}


def _cell(row: dict[str, str] | None) -> str:
    """``PSNR / SSIM (PSNR gain over bicubic ± its paired 95 % interval)``."""
    if row is None:
        return ""
    cell = f"{float(row['psnr']):.2f} / {float(row['ssim']):.4f}"
    if row.get("dpsnr"):
        cell += f" ({float(row['dpsnr']):+.2f} ± {float(row['dpsnr_ci95']):.2f})"
    return cell


def table(out: Path, scale: str = "2") -> str:
    clean = _read(out / "bicubic" / "compare.csv", scale)
    noisy = _read(out / "psf-rician2" / "compare.csv", scale)
    head = [
        "network",
        "parameters",
        f"paper x{scale} (BraTS t1ce) PSNR / SSIM",
        f"ours x{scale}, bicubic LR: PSNR / SSIM (gain ± 95 %)",
        f"ours x{scale}, PSF + 2 % Rician: PSNR / SSIM (gain ± 95 %)",
        "ms per 256x256 (CPU, runtime)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, name in NAMES.items():
        row = clean.get(model)
        if row is None and model not in noisy:
            continue
        paper = PAPER.get(model) if scale == "2" else None  # the paper's table is x2 only
        params = row["parameters"] if row else ""
        ms = row["ms"] if row else ""
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    f"{int(params) / 1e6:.2f}M" if params else ("0" if model == "bicubic" else ""),
                    f"{paper[0]:.2f} / {paper[1]:.4f}" if paper else "",
                    _cell(row),
                    _cell(noisy.get(model)),
                    f"{float(ms):.0f}" if ms else "",
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the OUT folder of scripts/compare_paper.sh")
    parser.add_argument("--scale", default="2")
    args = parser.parse_args()
    print(table(args.out, args.scale), end="")


if __name__ == "__main__":
    main()
