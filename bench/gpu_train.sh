#!/usr/bin/env bash
# Train on a lent GPU in one call (the device tool), resumable across calls and sessions.
#
# Before the call, on the development machine:
#   bash scripts/pack_gpu_training.sh .gpu-train CORPUS START.pt -- --batch-size 16 --patch-size 96 --lr 5e-5
# Then, from the repository root:
#   run(command="bash bench/gpu_train.sh", carry=[".gpu-train"], timeout_s=595)
# What comes back under $OUT/run: last.pt (resume state), best.pt, log.csv, config.json, snapshots/
# (weights every SNAPSHOT_EVERY updates, for scripts/average_checkpoints.py) and train.txt. To go on
# in a later call: scripts/pack_gpu_training.sh .gpu-train CORPUS <that run folder> -- <same arguments>.
#
# Settings (environment): MINUTES of training (default 7: the call's start, install and data loading
# take about a minute), STEPS (the run's total; default 500000: the minutes end it), WORKERS (data
# loader processes; default 12), SNAPSHOT_EVERY (default 2000), DEVICE (default cuda; cpu to try it).
set -uo pipefail
py=${PYTHON:-python3}
root=$(cd "$(dirname "$0")/.." && pwd)
pack=$root/.gpu-train
out=${OUT:-$pack/out}
site=/tmp/metasr-train-site
pp=/tmp/metasr-train-pp
mkdir -p "$out"
log=$out/train.txt
say() { echo "== $*" | tee -a "$log"; }

[ -d "$pack/corpus" ] || { say "no .gpu-train pack carried: run scripts/pack_gpu_training.sh first"; exit 2; }
rm -rf "$site" "$pp" && mkdir -p "$site" "$pp/metasr"
if ! "$py" -m pip install -q --no-index --no-deps --target "$site" "$pack"/wheels/*.whl >>"$log" 2>&1; then
  say "pip could not install the wheels: unpacking them as zip files instead"  # a wheel is a zip of its files
  "$py" -c "import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]" "$site" "$pack"/wheels/*.whl
fi
for pkg in core export models runtime scanners training video; do ln -s "$root/$pkg" "$pp/metasr/$pkg"; done
ln -s "$root/root/__init__.py" "$pp/metasr/__init__.py"
export PYTHONPATH="$site:$pp"
export PYTHONSAFEPATH=1
{ nvidia-smi --query-gpu=name,memory.total --format=csv 2>&1; "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } | tee -a "$log"

run=$out/run
start=()
if [ -f "$pack/run/last.pt" ]; then
  mkdir -p "$run" && cp "$pack"/run/* "$run/" && start=(--resume)
  say "resuming $(ls "$pack"/run)"
else
  start=(--init "$pack/init.pt")
  say "starting from init.pt"
fi
mapfile -t args < <(grep -v '^$' "$pack/args" 2>/dev/null || true)
say "metasr-train ${args[*]}"
"$py" -c "import sys; from metasr.training.cli import train_main; sys.exit(train_main())" \
  --data "folder:$pack/corpus/train" --val "folder:$pack/corpus/val" --axes axial,coronal,sagittal \
  --out "$run" "${start[@]}" --device "${DEVICE:-cuda}" --workers "${WORKERS:-12}" \
  --steps "${STEPS:-500000}" --max-minutes "${MINUTES:-7}" --snapshot-every "${SNAPSHOT_EVERY:-2000}" \
  --checkpoint-every 500 --val-every "${VAL_EVERY:-5000}" --no-tensorboard --no-progress "${args[@]}" 2>&1 | tee -a "$log"
rc=${PIPESTATUS[0]}
say "metasr-train exit $rc; $(tail -n 1 "$run/log.csv" 2>/dev/null)"
exit "$rc"
