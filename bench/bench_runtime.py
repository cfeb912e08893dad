"""Figures for the runtime on the CPU, all in one run on the same input. Prints Markdown tables.

    python bench/bench_runtime.py [--ckpt models/metasrgan-mri/best.pt] [--threads 2] [--repeats 3] [--no-rss]

1. ORT runtime (``Upscaler``) vs PyTorch eager (``load_checkpoint``) at 1.5/1.8/2/3/4 on 256x256.
2. The cost of arbitrary scale: Meta-SRGAN x2 vs SRGAN x2, both through the same runtime.
3. First call at a new scale vs the second call (cached index/offset arrays and tile plan).
4. Achieved GFLOP/s of the feature extractor vs this machine's large-matmul peak (numpy and ORT).
5. Peak RSS and wall time of ``metasr-run`` (a subprocess) at 4x on 512x512 and 1024x1024 PNGs.

Without ``--ckpt`` it uses the shipped checkpoint when there is one, else random-init weights
(same architecture, so the costs are the same). Timings are the fastest of ``--repeats`` runs after
one warm-up (best of N: on a shared machine the least disturbed run); say which machine they come
from (and whether it was shared).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metasr.export import export_model
from metasr.export.onnx_graphs import conv_flops
from metasr.models import default_model_dir
from metasr.runtime import Upscaler
from metasr.training import build_model, load_checkpoint, model_config, save_checkpoint

SCALES = ["1.5", "1.8", "2", "3", "4"]


def _best_time(fn, repeats: int) -> float:
    """Fastest of ``repeats`` runs after a warm-up: on a shared machine the minimum is the run least
    disturbed by other jobs, so it compares implementations more fairly than the median."""
    fn()  # warm-up: first-run allocations, plan cache
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _checkpoint(arch: str, arg: str | None, tmp: Path) -> tuple[Path, str]:
    if arg:
        return Path(arg), "given checkpoint"
    shipped = default_model_dir() / "best.pt"
    if arch == "metasrgan" and shipped.is_file():
        return shipped, "shipped checkpoint"
    torch.manual_seed(0)
    model = build_model(arch)
    return save_checkpoint(tmp / f"{arch}.pt", model, model_config(arch, model, {})), "random-init weights"


def _phantom(n: int) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n] / n
    img = 0.45 + 0.3 * np.sin(9 * x) * np.cos(7 * y) * np.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) * 4)
    return np.clip(img, 0, 1).astype(np.float32)


def _matmul_peak(threads: int) -> tuple[float, float]:
    """GFLOP/s of a 2048^3 float32 matmul in numpy (BLAS) and in ONNX Runtime."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    n = 2048
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = np.random.default_rng(1).random((n, n), dtype=np.float32)
    t_np = _best_time(lambda: a @ b, 3)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "mm",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    t_ort = _best_time(lambda: sess.run(None, {"a": a, "b": b}), 3)
    return 2 * n**3 / t_np / 1e9, 2 * n**3 / t_ort / 1e9


def _rss_run(args: list[str]) -> tuple[float, float, int]:
    """Peak RSS (MiB) and wall time of one metasr-run in a fresh process (children's max RSS)."""
    probe = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t, r.returncode)"
    )
    runner = [sys.executable, "-c", "from metasr.runtime.cli import main; import sys; sys.exit(main())"]
    out = subprocess.run([sys.executable, "-c", probe] + runner + args, capture_output=True, text=True, check=True)
    rss_kb, seconds, code = out.stdout.split()
    return int(rss_kb) / 1024, float(seconds), int(code)


@dataclass
class _Bench:
    """What every table of one run shares: the exports, the input and the settings."""

    args: argparse.Namespace
    meta_dir: Path
    srgan_dir: Path
    ckpt: Path
    image: np.ndarray
    tmp: Path

    def upscaler(self, folder: Path | None = None, **kwargs: Any) -> Upscaler:
        return Upscaler(folder or self.meta_dir, device="cpu", threads=self.args.threads, **kwargs)

    def best(self, fn: Any) -> float:
        return _best_time(fn, self.args.repeats)


def _scale_table(b: _Bench) -> None:
    up, graph, host = b.upscaler(), b.upscaler(method="graph"), b.upscaler(method="kernels")
    model = load_checkpoint(b.ckpt)
    lr = torch.from_numpy(b.image)[None, None]
    n = b.image.shape[0]
    print(
        "| scale | output | PyTorch eager (ms) | runtime, upscale graphs (ms) | runtime, host kernels (ms) "
        "| speed-up vs eager (graphs / host) | default |"
    )
    print("|---|---|---:|---:|---:|---:|---|")
    for scale in SCALES:

        def eager(scale: str = scale) -> None:
            with torch.inference_mode():
                model(lr, scale).clamp_(0, 1)

        t_torch = b.best(eager)
        t_graph = b.best(lambda scale=scale: graph.upscale(b.image, scale))
        t_ort = b.best(lambda scale=scale: host.upscale(b.image, scale))
        h, w = up.check_scale(scale).output_size(n, n)
        print(
            f"| x{scale} | {w}x{h} | {t_torch * 1e3:.0f} | {t_graph * 1e3:.0f} | {t_ort * 1e3:.0f} | "
            f"{t_torch / t_graph:.2f}x / {t_torch / t_ort:.2f}x | {up.plan(scale, (n, n)).mode} |"
        )


def _srgan_table(b: _Bench) -> None:
    up, host, srgan = b.upscaler(), b.upscaler(method="kernels"), b.upscaler(b.srgan_dir)
    t_meta = b.best(lambda: up.upscale(b.image, 2))
    t_host = b.best(lambda: host.upscale(b.image, 2))
    t_srgan = b.best(lambda: srgan.upscale(b.image, 2))
    print("\n| x2 through the same runtime | ms | relative |")
    print("|---|---:|---:|")
    print(f"| SRGAN x2 (fixed scale, PixelShuffle) | {t_srgan * 1e3:.0f} | 1.00x |")
    print(f"| Meta-SRGAN x2 (any scale), default | {t_meta * 1e3:.0f} | {t_meta / t_srgan:.2f}x |")
    print(f"| Meta-SRGAN x2, host kernels | {t_host * 1e3:.0f} | {t_host / t_srgan:.2f}x |")


def _ensemble_table(b: _Bench) -> None:
    """The x8 self-ensemble's cost against one run (8 runs, plus the mirror extension at q > 1)."""
    up, ens = b.upscaler(), b.upscaler(ensemble=True)
    print("\n| scale | one run (ms) | self-ensemble x8 (ms) | ratio |")
    print("|---|---:|---:|---:|")
    for scale in ("2", "1.8", "3.7"):
        t_one = b.best(lambda scale=scale: up.upscale(b.image, scale))
        t_ens = b.best(lambda scale=scale: ens.upscale(b.image, scale))
        print(f"| x{scale} | {t_one * 1e3:.0f} | {t_ens * 1e3:.0f} | {t_ens / t_one:.2f}x |")


def _latency_table(b: _Bench) -> None:
    fresh = b.upscaler()
    fresh.upscale(b.image, "2.5")  # warm the sessions, so the comparison isolates the new scale
    first = _once(lambda: fresh.upscale(b.image, "1.7"))
    second = min(_once(lambda: fresh.upscale(b.image, "1.7")) for _ in range(b.args.repeats))
    t0 = time.perf_counter()
    cold = b.upscaler()
    load_s = time.perf_counter() - t0
    cold_first = _once(lambda: cold.upscale(b.image, "1.7"))
    print("\n| latency at x1.7 | ms |")
    print("|---|---:|")
    print(f"| model load (hash check + ORT sessions) | {load_s * 1e3:.0f} |")
    print(f"| first call after load | {cold_first * 1e3:.0f} |")
    print(f"| first call at a new scale (warm sessions; computes its 17x17 kernels) | {first * 1e3:.0f} |")
    print(f"| second call, cached scale | {second * 1e3:.0f} |")


def _compute_row(name: str, gflop: float | None, seconds: float, peak: float | None) -> str:
    if gflop is None:  # the caller ends the row
        return f"| {name} | | {seconds * 1e3:.0f} | |"
    rate = gflop / seconds
    return f"| {name} | {gflop:.1f} | {seconds * 1e3:.0f} | {rate:.0f} | {rate / peak:.0%} |"


def _compute_table(b: _Bench) -> None:
    import onnxruntime as ort

    n = b.image.shape[0]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = b.args.threads
    fe = ort.InferenceSession(str(b.meta_dir / "feature_extractor.onnx"), opts, providers=["CPUExecutionProvider"])
    t_fe = b.best(lambda: fe.run(None, {"lr": b.image[None, None]}))
    gflop = conv_flops(b.meta_dir / "feature_extractor.onnx", n, n) / 1e9
    model, lr = load_checkpoint(b.ckpt), torch.from_numpy(b.image)[None, None]
    with torch.inference_mode():
        t_fe_torch = b.best(lambda: model.extract_features(lr))
    up = b.upscaler()
    up_total = b.best(lambda: up.upscale(b.image, 2))
    peak_np, peak_ort = _matmul_peak(b.args.threads)
    peak, mm = max(peak_np, peak_ort), 2 * 2048**3 / 1e9
    print("\n| compute | GFLOP | ms | GFLOP/s | of matmul peak |")
    print("|---|---:|---:|---:|---:|")
    print(_compute_row("matmul 2048^3, numpy (BLAS)", mm, mm / peak_np, peak))
    print(_compute_row("matmul 2048^3, ONNX Runtime", mm, mm / peak_ort, peak))
    print(_compute_row(f"feature extractor {n}x{n}, ORT", gflop, t_fe, peak))
    print(_compute_row(f"feature extractor {n}x{n}, PyTorch eager", gflop, t_fe_torch, peak))
    print(_compute_row(f"whole x2 upscale {n}x{n}", None, up_total, None) + f" {t_fe / up_total:.0%} in features |")


def _rss_table(b: _Bench) -> None:
    import cv2

    print("\n| metasr-run x4 | output | peak RSS (MiB) | wall (s) |")
    print("|---|---|---:|---:|")
    for size in (512, 1024):
        src = b.tmp / f"in{size}.png"
        cv2.imwrite(str(src), (_phantom(size) * 65535).astype(np.uint16))
        argv = ["--input", str(src), "--scale", "4", "--model", str(b.meta_dir), "--threads", str(b.args.threads)]
        rss, seconds, code = _rss_run([*argv, "-o", str(b.tmp / f"out{size}.png")])
        status = "" if code == 0 else f" (exit {code})"
        print(f"| {size}x{size} PNG 16-bit | {4 * size}x{4 * size} | {rss:.0f}{status} | {seconds:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", help="Meta-SRGAN checkpoint (default: shipped, else random-init)")
    parser.add_argument("--srgan-ckpt", help="SRGAN x2 checkpoint (default: random-init)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--no-rss", action="store_true", help="skip the metasr-run peak-RSS runs (slow)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ckpt, origin = _checkpoint("metasrgan", args.ckpt, tmp)
        srgan_ckpt, srgan_origin = _checkpoint("srgan", args.srgan_ckpt, tmp)
        meta_dir = export_model(ckpt, tmp / "meta", verify=False).out_dir
        srgan_dir = export_model(srgan_ckpt, tmp / "srgan", verify=False).out_dir
        bench = _Bench(args, meta_dir, srgan_dir, ckpt, _phantom(args.size), tmp)
        load = os.getloadavg()
        print(
            f"Machine: {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} CPU cores "
            f"available, {args.threads} threads; load average {load[0]:.1f} (shared with other jobs when > 0). "
            f"Weights: {origin}; SRGAN: {srgan_origin}. Input {args.size}x{args.size}, best of {args.repeats} "
            f"runs after a warm-up.\n"
        )
        _scale_table(bench)
        _srgan_table(bench)
        _ensemble_table(bench)
        _latency_table(bench)
        _compute_table(bench)
        if not args.no_rss:
            _rss_table(bench)


def _once(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
