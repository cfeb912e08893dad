#!/usr/bin/env bash
# Pack what bench/gpu_train.sh needs on a lent GPU machine (its image has Python 3.12, PyTorch with
# CUDA, OpenCV and SciPy, but no pydicom, nibabel or click, and no network).
# Usage: scripts/pack_gpu_training.sh PACK CORPUS START.pt [-- metasr-train arguments]
#   PACK      the folder to carry (ignored by git when it is .gpu-train), made new
#   CORPUS    a scripts/build_corpus.py folder (train/ and val/ are copied; test/ never is)
#   START.pt  the weights to start from (--init); or a run folder holding last.pt to resume it
#   the rest  the run's own metasr-train arguments (recorded in PACK/args; bench/gpu_train.sh adds
#             the data, --out, --device, --max-minutes and the logging options)
# Needs the network once (pip download of the wheels); keeps the pack under the 64 MiB a call carries.
set -euo pipefail
pack=$1 corpus=$2 start=$3
shift 3
[ "${1:-}" = "--" ] && shift
if [ -e "$pack" ]; then echo "pack_gpu_training: $pack exists; name a new folder" >&2; exit 2; fi
for split in train val; do
  [ -d "$corpus/$split" ] || { echo "pack_gpu_training: $corpus/$split is missing; build the corpus first" >&2; exit 2; }
done
if [ -d "$start" ] && [ ! -f "$start/last.pt" ]; then
  echo "pack_gpu_training: $start holds no last.pt to resume" >&2; exit 2
elif [ ! -d "$start" ] && [ ! -f "$start" ]; then
  echo "pack_gpu_training: $start does not exist; pass a checkpoint or a run folder" >&2; exit 2
fi
mkdir -p "$pack/wheels"
python -m pip download -q --only-binary=:all: --python-version 3.12 --no-deps \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$pack/wheels" pydicom nibabel click tqdm packaging pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pyjpegls
mkdir -p "$pack/corpus"
cp -r "$corpus/train" "$corpus/val" "$pack/corpus/"
if [ -d "$start" ]; then
  mkdir -p "$pack/run" && cp "$start/last.pt" "$start/log.csv" "$start/config.json" "$pack/run/"
  [ -f "$start/best.pt" ] && cp "$start/best.pt" "$pack/run/"
else
  cp "$start" "$pack/init.pt"
fi
printf '%s\n' "$@" > "$pack/args"
size=$(du -sm "$pack" | cut -f1)
echo "pack_gpu_training: $pack ready (${size} MiB; a call carries at most 64)"
[ "$size" -lt 64 ] || { echo "pack_gpu_training: $pack is over 64 MiB; drop photographs from the corpus" >&2; exit 2; }
