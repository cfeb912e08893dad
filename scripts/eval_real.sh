#!/usr/bin/env bash
# Held-out real-scan evaluation of the shipped model's card (scripts/build_corpus.py makes CORPUS).
# Usage: [SCALES=...] [JOBS=N] [THREADS=T] [ENSEMBLE=1] [ZERO_FILL=1] [DATA_CONSISTENCY=1]
#        scripts/eval_real.sh CORPUS OUT CKPT [CKPT ...]
# One metasr-eval report per (modality, degradation) under OUT; noise seeded per image, so every
# checkpoint sees the same noisy LR. SCALES defaults to the cards' 1.5,2,3,4, the scales of the
# shipped models' per-image scores (models/*/eval/real), so
#   scripts/summarise_eval.py new=OUT default=models/metasrgan-mri/eval/real --against default
# gates a new model without evaluating the shipped one again. JOBS=N runs the fourteen reports in N
# processes (each with THREADS threads; default 1 and 1); the script fails if any report fails.
# ENSEMBLE=1 scores every model's x8 self-ensemble (metasr-eval --ensemble, 8x the time).
# ZERO_FILL=1 also scores zero-filled interpolation (metasr-eval --zero-fill) in the four k-space
# reports: how MR scanners interpolate, the fair baseline where the LR is a k-space truncation.
# DATA_CONSISTENCY=1 scores every model with metasr-eval --data-consistency (named NAME +dc).
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: scripts/eval_real.sh CORPUS OUT CKPT [CKPT ...]" >&2
  exit 2
fi
corpus=$1 out=$2
shift 2
ckpts=()
for c in "$@"; do ckpts+=(--ckpt "$c"); done
scales=${SCALES:-1.5,2,3,4}
jobs=${JOBS:-1}
if ! [[ $jobs =~ ^[1-9][0-9]*$ ]]; then
  echo "eval_real.sh: JOBS=$jobs is not a whole number >= 1" >&2
  exit 2
fi
common=(--scales "$scales" --crop-scales 2,4 --no-progress --threads "${THREADS:-1}")
case ${ENSEMBLE:-0} in
  0) ;;
  1) common+=(--ensemble) ;;
  *)
    echo "eval_real.sh: ENSEMBLE=$ENSEMBLE is not 0 or 1" >&2
    exit 2
    ;;
esac
case ${DATA_CONSISTENCY:-0} in
  0) ;;
  1) common+=(--data-consistency) ;;
  *)
    echo "eval_real.sh: DATA_CONSISTENCY=$DATA_CONSISTENCY is not 0 or 1" >&2
    exit 2
    ;;
esac
zero_fill=()
case ${ZERO_FILL:-0} in
  0) ;;
  1) zero_fill=(--zero-fill) ;;
  *)
    echo "eval_real.sh: ZERO_FILL=$ZERO_FILL is not 0 or 1" >&2
    exit 2
    ;;
esac
run() {  # name data degradation noise [extra...]
  local name=$1 data=$2 deg=$3 noise=$4
  shift 4
  local extra=()
  if [ "$deg" = kspace ]; then extra=("${zero_fill[@]}"); fi
  metasr-eval "${ckpts[@]}" --data "folder:$corpus/test/$data" --axes axial --degradation "$deg" --noise "$noise" \
    --out "$out/$name" "${common[@]}" "${extra[@]}" "$@"
}
# The mr-native-* reports score the MR files against references at the resolution they were
# acquired at (metasr-eval --reference native): the Siemens head states 256 x 134 samples for its
# 484 x 484 grid in its header; MR2's header does not state its matrix, and metasr-eval reads its
# zero-filling by 2 from its vertical spectrum (nothing above 0.241 cycles per pixel); example4d
# (128 x 96 EPI, no DICOM header) has content up to its Nyquist frequency: kept as stored.
native=(--reference native)
reports=(
  "mr-bicubic mr bicubic none"
  "mr-gauss mr gauss none"
  "mr-kspace mr kspace none"
  "mr-gauss-rician2 mr gauss rician:0.02"
  "mr-kspace-rician2 mr kspace rician:0.02"
  "ct-gauss ct gauss none --window 0.45,0.5"
  "ct-gauss-gaussian2 ct gauss gaussian:0.02 --window 0.45,0.5"
  "nm-gauss nm gauss none"
  "nm-gauss-gaussian2 nm gauss gaussian:0.02"
  "mr-native-bicubic mr bicubic none ${native[*]}"
  "mr-native-gauss mr gauss none ${native[*]}"
  "mr-native-kspace mr kspace none ${native[*]}"
  "mr-native-gauss-rician2 mr gauss rician:0.02 ${native[*]}"
  "mr-native-kspace-rician2 mr kspace rician:0.02 ${native[*]}"
)
group() {  # run every JOBS-th report, starting at $1, one after another
  local i
  for ((i = $1; i < ${#reports[@]}; i += jobs)); do
    # shellcheck disable=SC2086  # each entry is a list of words
    run ${reports[i]}
  done
}
pids=()
for ((g = 0; g < jobs && g < ${#reports[@]}; g++)); do
  group "$g" &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do
  wait "$pid" || failed=1
done
exit "$failed"
