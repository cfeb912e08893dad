#!/usr/bin/env bash
# The paper's comparison (Table 1) on held-out real MR: bicubic, SRGAN x2, EDSR x2 and Meta-SRGAN
# (L1 and GAN stages) at x2, and Meta-SRGAN against fixed-scale SRGAN x4 at its scale; every
# network scored and timed through the runtime (metasr-eval --compare).
# Usage: scripts/compare_paper.sh CORPUS RUNS OUT
#   CORPUS: scripts/build_corpus.py's folder; RUNS: scripts/train_comparison.sh's folder.
# Writes OUT/bicubic (the paper's protocol: antialiased bicubic LR, no noise) and
# OUT/psf-rician2 (Gaussian PSF + area sampling, 2 % Rician noise), each with compare.md,
# compare.csv, compare.{png,pdf,svg} and the usual table/per-image/crops files.
set -euo pipefail
corpus=$1 runs=$2 out=$3
models=(
  "srgan-x2=$runs/srgan-x2/best.pt"
  "srgan-x4=$runs/srgan-x4/best.pt"
  "edsr-baseline-x2=$runs/edsr-baseline-x2/best.pt"
  "metasrgan-l1=$runs/metasrgan-l1/best.pt"
  "metasrgan-mri=models/metasrgan-mri"
  "metasrgan-mri-robust=models/metasrgan-mri-robust"
  "metasrgan-mri-gan=models/metasrgan-mri-gan"
)
common=(--compare "${models[@]}" --data "folder:$corpus/test/mr" --axes axial --scales 2,4 --crop-scales 2,4
  --crop "${CROP:-MR-SIEMENS-DICOM-WithOverlays.dcm:150,150,160}" --threads "${THREADS:-2}" --no-progress)
metasr-eval "${common[@]}" --degradation bicubic --noise none --out "$out/bicubic"
metasr-eval "${common[@]}" --degradation gauss --noise rician:0.02 --out "$out/psf-rician2"
