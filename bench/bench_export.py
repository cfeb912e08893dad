"""Figures for the export: export time, graph sizes, parity per scale band, ORT CPU latency.

    python bench/bench_export.py [--ckpt models/metasrgan-mri/best.pt] [--threads 2] [--repeats 3]

Without ``--ckpt`` it uses the shipped checkpoint when there is one, else a random-init
Meta-SRGAN (same architecture, so sizes and latencies are the same; parity errors are then those
of an untrained network). Prints markdown tables; say which machine they come from.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from metasr.core.scale import Scale
from metasr.export import export_model
from metasr.export.verify import UpscaleSessions, ort_session, phantom, upscale_feeds
from metasr.models import default_model_dir
from metasr.training import build_model, load_checkpoint, model_config, save_checkpoint

BANDS = {"1.1-2.0": range(11, 21), "2.1-3.0": range(21, 31), "3.1-4.0": range(31, 41)}


def _checkpoint(arg: str | None, tmp: Path) -> Path:
    if arg:
        return Path(arg)
    shipped = default_model_dir() / "best.pt"
    if shipped.is_file():
        return shipped
    torch.manual_seed(0)
    model = build_model("metasrgan")
    return save_checkpoint(tmp / "random.pt", model, model_config("metasrgan", model, {}))


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, thread pool)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = _checkpoint(args.ckpt, tmp)
        out = tmp / "export"
        t = time.perf_counter()
        export_model(ckpt, out, verify=False)
        t_write = time.perf_counter() - t
        t = time.perf_counter()
        result = export_model(ckpt, out, verify=True)
        t_full = time.perf_counter() - t
        print(
            f"# metasr export figures ({ckpt}; {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPUs, torch/ORT threads {args.threads})\n"
        )
        print("| what | value |\n|---|---|")
        print(f"| export, graphs + checker only (--no-verify) | {t_write:.1f} s |")
        print(f"| export with self-verification ({result.parity.cases} cases) | {t_full:.1f} s |")
        for p in result.files:
            print(f"| {p.name} | {p.stat().st_size / 1e3:,.1f} kB |")

        # parity per scale band: random 2x37x50 and phantom 1x64x64, every 0.1 step (PyTorch on one
        # thread: small inputs, and oversubscribed threads crawl on a shared machine)
        torch.set_num_threads(1)
        model = load_checkpoint(ckpt)
        fe = ort_session(out / "feature_extractor.onnx", args.threads)
        up = UpscaleSessions.load(out, args.threads)
        rng = np.random.default_rng(0)
        inputs = [rng.random((2, 1, 37, 50), dtype=np.float32), phantom(1, 64, 64, seed=1)]
        feats = [fe.run(["features"], {"lr": x})[0] for x in inputs]
        print(
            "\n| scale band | worst max abs error (ORT CPU vs PyTorch, [0,1] output, both upscale forms) | at scale |"
            "\n|---|---|---|"
        )
        for band, steps in BANDS.items():
            worst, where = 0.0, ""
            for k in steps:
                scale = f"{k / 10:.1f}"
                for x, f in zip(inputs, feats):
                    with torch.no_grad():
                        ref = model(torch.from_numpy(x), scale).numpy()
                    for form in up.forms:
                        err = float(np.abs(up.run(f, scale, form) - ref).max())
                        if err >= worst:
                            worst, where = err, f"{scale} ({form})"
            print(f"| {band} | {worst:.2e} | {where} |")

        # ORT CPU latency at 256x256
        lr = phantom(1, 256, 256)
        f256 = fe.run(["features"], {"lr": lr})[0]
        print(
            f"\n| graph (ORT CPU, {args.threads} threads, 256x256 LR, batch 1) | median of {args.repeats} |\n|---|---|"
        )
        print(f"| feature_extractor | {_median_time(lambda: fe.run(['features'], {'lr': lr}), args.repeats):.3f} s |")
        for scale in ("2", "4", "1.51"):
            feeds = upscale_feeds(up.kernels, f256, scale)
            h, w = Scale.parse(scale).output_size(256, 256)
            for form, session in up.forms.items():
                if form == "classes" and Scale.parse(scale).q > 10:
                    continue  # q*q = 10000 products per HR pixel: the runtime never runs it there
                secs = _median_time(lambda feeds=feeds, session=session: session.run(["sr"], feeds), args.repeats)
                print(f"| upscale x{scale} (-> {h}x{w}), {form} form | {secs:.3f} s |")


if __name__ == "__main__":
    main()
