#!/usr/bin/env bash
# The noise-conditioning experiment: a blind Meta-SRGAN and a noise-conditioned one (metasrgan-nc)
# continued from the same weights for the same number of updates, on held-out real MR.
# Usage: scripts/eval_noise_conditioning.sh CORPUS OUT START.pt BLIND.pt NC.pt
# OUT/estimate/<report>: start, blind and nc told the sigma estimated from each LR image;
# OUT/oracle/<report>: nc told the true sigma. Join with:
#   python scripts/summarise_eval.py OUT/estimate oracle=OUT/oracle
set -euo pipefail
corpus=$1 out=$2 start=$3 blind=$4 nc=$5
scales=${SCALES:-1.5,2,3,4}
for spec in "mr-gauss-rician2 gauss rician:0.02" "mr-gauss gauss none" "mr-bicubic bicubic none" \
  "mr-kspace-rician2 kspace rician:0.02"; do
  set -- $spec
  common=(--data "folder:$corpus/test/mr" --axes axial --degradation "$2" --noise "$3" --scales "$scales"
    --crop-scales 2 --threads "${THREADS:-2}" --no-progress)
  metasr-eval --ckpt "start=$start" --ckpt "blind=$blind" --ckpt "nc=$nc" "${common[@]}" --noise-level estimate \
    --out "$out/estimate/$1"
  metasr-eval --ckpt "nc=$nc" "${common[@]}" --noise-level oracle --out "$out/oracle/$1"
done
