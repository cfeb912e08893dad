"""Figures for the networks: parameters, training-step time and peak memory.

Each memory case runs in a fresh subprocess so its peak RSS is its own.

    python bench/bench_models.py [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CASE = r"""
import json, resource, sys, time
import torch, torch.nn.functional as F
from metasr.training import build_model
torch.set_num_threads(int(sys.argv[2]))
kind = sys.argv[1]
torch.manual_seed(0)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
model = build_model("metasrgan")
if kind.startswith("train"):
    scale = int(kind[-1])
    model.train()
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    lr = torch.rand(8, 1, 48, 48); hr = torch.rand(8, 1, 48 * scale, 48 * scale)
    times = []
    for _ in range(6):
        t = time.perf_counter()
        opt.zero_grad(); F.l1_loss(model(lr, scale), hr).backward(); opt.step()
        times.append(time.perf_counter() - t)
    secs = sorted(times[1:])[len(times[1:]) // 2]
else:
    model.eval()
    lr = torch.rand(1, 1, 512, 512)
    t = time.perf_counter()
    with torch.no_grad():
        out = model(lr, 4)
    secs = time.perf_counter() - t
    assert out.shape == (1, 1, 2048, 2048)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"secs": secs, "peak_mb": peak / 1024, "import_mb": base / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from metasr.training import build_model

    print("| arch | parameters |\n|---|---|")
    for arch in ("metasrgan", "srgan", "edsr"):
        print(f"| {arch} | {sum(p.numel() for p in build_model(arch).parameters()):,} |")
    print(f"\n| case ({args.threads} threads) | time | peak RSS |\n|---|---|---|")
    labels = {
        "train2": "train step, batch 8, 48x48 LR, x2 (fwd+bwd+Adam)",
        "train4": "train step, batch 8, 48x48 LR, x4 (fwd+bwd+Adam)",
        "infer4": "inference 512x512 -> 2048x2048 (x4)",
    }
    for kind, label in labels.items():
        out = subprocess.run(
            [sys.executable, "-c", CASE, kind, str(args.threads)], capture_output=True, text=True, check=True
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {label} | {r['secs'] * 1000:.0f} ms | {r['peak_mb']:.0f} MB |")


if __name__ == "__main__":
    main()
