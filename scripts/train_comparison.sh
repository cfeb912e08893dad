#!/usr/bin/env bash
# The paper's comparison under one budget: SRGAN x2, EDSR (published small configuration) x2 and
# Meta-SRGAN trained from scratch with the same data, degradations and number of updates, plus the
# GAN stage of Meta-SRGAN on top of the shipped robust L1 model.
# Usage: scripts/train_comparison.sh CORPUS OUT NET [NET ...]
#   NET: srgan (x2) | srgan3 | srgan4 (fixed-scale references at x3/x4) | edsr | meta | gan
# Every run resumes where its last.pt stopped (rerun the same line after an interruption).
# Budget knobs (the shipped comparison used the defaults): STEPS, PATCH, BATCH, GAN_STEPS, THREADS.
set -euo pipefail
corpus=$1 out=$2
shift 2
steps=${STEPS:-1500} patch=${PATCH:-64} batch=${BATCH:-16}
common=(--data "folder:$corpus/train" --val "folder:$corpus/val" --axes axial,coronal,sagittal
  --batch-size "$batch" --lr 1e-4 --lr-gamma 0.5 --seed 7 --val-images 16
  --checkpoint-every 100 --no-progress --threads "${THREADS:-1}")
train() {  # name [metasr-train options...]
  local dir=$out/$1
  shift
  local again=()
  [[ -f $dir/last.pt ]] && again=(--resume)
  metasr-train "${common[@]}" --out "$dir" "${again[@]}" "$@"
}
for net in "$@"; do
  case $net in
    srgan) train srgan-x2 --arch srgan --scales 2 --val-scales 2 --steps "$steps" --patch-size "$patch" \
      --lr-step $((steps * 2 / 3)) --val-every 250 ;;
    srgan3 | srgan4) train "srgan-x${net#srgan}" --arch "srgan-x${net#srgan}" --scales "${net#srgan}" \
      --val-scales "${net#srgan}" --steps "$steps" --patch-size "$patch" --lr-step $((steps * 2 / 3)) --val-every 250 ;;
    edsr) train edsr-baseline-x2 --arch edsr-baseline --scales 2 --val-scales 2 --steps "$steps" \
      --patch-size "$patch" --lr-step $((steps * 2 / 3)) --val-every 250 ;;
    meta) train metasrgan-l1 --arch metasrgan --scales 1.1:4.0:0.1 --val-scales 1.5,2,3,4 --steps "$steps" \
      --patch-size "$patch" --lr-step $((steps * 2 / 3)) --val-every 250 ;;
    gan) train metasrgan-gan --arch metasrgan --stage gan --init "${GAN_INIT:-models/metasrgan-mri-robust/best.pt}" \
      --scales 1.1:4.0:0.1 --val-scales 1.5,2,3,4 --steps "${GAN_STEPS:-300}" --patch-size 96 \
      --lr-step 100000 --val-every 50 ;;
    *) echo "train_comparison.sh: unknown network $net; choose srgan, srgan3, srgan4, edsr, meta or gan" >&2; exit 2 ;;
  esac
done
