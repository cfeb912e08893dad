#!/usr/bin/env bash
# Held-out real-scan evaluation of the shipped model's card (scripts/build_corpus.py makes CORPUS).
# Usage: scripts/eval_real.sh CORPUS OUT CKPT [CKPT ...]
# One metasr-eval report per (modality, degradation) under OUT; noise seeded per image, so every
# checkpoint sees the same noisy LR. Summarise with scripts/summarise_eval.py OUT.
set -euo pipefail
corpus=$1 out=$2
shift 2
ckpts=()
for c in "$@"; do ckpts+=(--ckpt "$c"); done
scales=${SCALES:-1.5,2,2.5,3,3.5,4}
common=(--scales "$scales" --crop-scales 2,4 --no-progress --threads "${THREADS:-1}")
run() {  # name data degradation noise [extra...]
  local name=$1 data=$2 deg=$3 noise=$4
  shift 4
  metasr-eval "${ckpts[@]}" --data "folder:$corpus/test/$data" --axes axial --degradation "$deg" --noise "$noise" \
    --out "$out/$name" "${common[@]}" "$@"
}
run mr-bicubic mr bicubic none
run mr-gauss mr gauss none
run mr-kspace mr kspace none
run mr-gauss-rician2 mr gauss rician:0.02
run mr-kspace-rician2 mr kspace rician:0.02
run ct-gauss ct gauss none --window 0.45,0.5
run ct-gauss-gaussian2 ct gauss gaussian:0.02 --window 0.45,0.5
run nm-gauss nm gauss none
run nm-gauss-gaussian2 nm gauss gaussian:0.02
