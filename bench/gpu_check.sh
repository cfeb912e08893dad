#!/usr/bin/env bash
# The one prepared GPU check: GPU tests (pytest -m gpu) and bench/bench_gpu.py on a lent H100/H200.
#
# Before the call, on the development machine (needs the network once; ~60 MB, ignored by git):
#   bash /work/shared/offline-gpu/pack-onnxruntime-gpu.sh .gpu      # -> .gpu/onnxruntime-gpu-sm90.tar.xz
# Then, through the device tool, from the repository root (at most ~9.5 minutes):
#   run(command="bash bench/gpu_check.sh", carry=[".gpu"], timeout_s=595)
# Everything it prints is also written under $OUT (environment.txt, gpu_tests.txt, bench_gpu.md,
# bench_stream.md).
#
# It unpacks onnxruntime-gpu into /tmp/metasr-site, points the loader at the CUDA libraries that
# pip packages installed (nvidia/*/lib beside torch), builds a PYTHONPATH folder of symlinks
# metasr/<package> -> <checkout>/<package> (metasr is not pip-installed), then runs the tests and
# the bench. It never fails on the first problem: each step's status is recorded and the script
# exits with the worst one.
set -uo pipefail
py=${PYTHON:-python3}   # an interpreter with numpy, onnx, click, pytest and (for the baseline) torch
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$root/.gpu/out}
mkdir -p "$out"
site=/tmp/metasr-site
pp=/tmp/metasr-pp
status=0

say() { echo "== $*" | tee -a "$out/environment.txt"; }

pack=$(ls "$root"/.gpu/onnxruntime-gpu-*.tar.xz 2>/dev/null | head -n 1)
if [ -n "$pack" ]; then
  rm -rf "$site" && mkdir -p "$site" && tar xJf "$pack" -C "$site" && say "unpacked $(basename "$pack")"
else
  say "no .gpu/onnxruntime-gpu-*.tar.xz carried: using whatever onnxruntime this machine has"
fi

rm -rf "$pp" && mkdir -p "$pp/metasr"
for pkg in core export models runtime scanners training video; do ln -s "$root/$pkg" "$pp/metasr/$pkg"; done
ln -s "$root/root/__init__.py" "$pp/metasr/__init__.py"
export PYTHONPATH="$site:$pp"
export PYTHONSAFEPATH=1

# CUDA/cuDNN libraries from pip packages (nvidia-*), found on the interpreter's own path
libs=$("$py" - <<'PY'
import glob, os, sys
dirs = set()
for base in sys.path:
    for lib in glob.glob(os.path.join(base, "nvidia", "*", "lib")) + glob.glob(os.path.join(base, "nvidia", "cu*", "lib")):
        dirs.add(lib)
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.free --format=csv 2>&1
  "$py" --version
  "$py" - <<'PY'
import importlib
for name in ("numpy", "onnx", "onnxruntime", "torch", "click", "pytest", "tensorrt"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}")
    except Exception as e:  # report and go on: the tests skip what is missing
        print(f"{name}: not importable ({type(e).__name__}: {e})")
try:
    import onnxruntime as ort
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    print("onnxruntime providers:", ort.get_available_providers())
    import torch
    print("torch CUDA:", torch.cuda.is_available(), torch.version.cuda)
except Exception as e:
    print("probe failed:", type(e).__name__, e)
PY
} 2>&1 | tee -a "$out/environment.txt"

say "GPU tests (pytest -m gpu)"
timeout 170 "$py" -m pytest -q -rs -m gpu -p no:cacheprovider \
  tests/test_gpu_runtime.py tests/test_upscaler.py tests/test_tensorrt.py tests/test_gpu_selection.py 2>&1 | tee "$out/gpu_tests.txt"
rc=${PIPESTATUS[0]}; [ "$rc" -ne 0 ] && status=$rc
say "pytest exit $rc"

say "bench/bench_gpu.py"
timeout 290 "$py" bench/bench_gpu.py --repeats 20 2>&1 | tee "$out/bench_gpu.md"
rc=${PIPESTATUS[0]}; [ "$rc" -ne 0 ] && status=$rc
say "bench exit $rc"

say "bench/bench_stream.py (stream fps vs Upscaler fps, same precision)"
timeout 110 "$py" bench/bench_stream.py --device cuda --precision fp16 --frames 60 --batch 1 4 2>&1 | tee "$out/bench_stream.md"
rc=${PIPESTATUS[0]}; [ "$rc" -ne 0 ] && status=$rc
say "stream bench exit $rc"
exit "$status"
