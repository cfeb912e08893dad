"""GPU figures of the runtime, all in one run on one GPU. Prints Markdown tables; <= 5 minutes.

    python bench/bench_gpu.py [--model models/metasrgan-mri] [--repeats 20] [--precisions fp32,tf32,fp16]

1. Per stage, 960x540 -> 1920x1080 at x2 and x1.8 and 512x512 x4: host->device copy of the frame,
   feature extractor (output kept on the GPU), upscale graph (features and kernels on the GPU),
   device->host copy of the result, and ``Upscaler.upscale`` end to end (host array in, host array
   out) as ms and fps, per precision (fp32 = TF32 off, tf32, fp16), with PyTorch eager CUDA (its
   defaults: TF32 convolutions) on the same frames in the same run.
2. Each precision's PSNR against fp32 (the accuracy the fast modes cost).
3. The feature extractor's achieved TFLOP/s against the GPU's dense peak for that arithmetic.

Exits 0 with ``skipped: <reason>`` where ONNX Runtime has no CUDA provider or no GPU is usable.
Timings are medians of ``--repeats`` runs after warm-up, each synchronised.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

CASES = (("x2", "2", 540, 960), ("x1.8", "1.8", 540, 960), ("x4", "4", 512, 512))
# Dense peak TFLOP/s by GPU name fragment (NVIDIA datasheets, SXM): fp32 (CUDA cores), tf32 and
# fp16 (tensor cores, dense); the feature extractor's share of it is what the table reports.
_PEAKS = {"H200": (67.0, 495.0, 990.0), "H100": (67.0, 495.0, 990.0), "A100": (19.5, 156.0, 312.0)}


def _skip(reason: str) -> None:
    print(f"skipped: {reason}")
    sys.exit(0)


def _median_ms(fn, repeats: int, sync) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def _phantom(h: int, w: int) -> np.ndarray:
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    img = 0.45 + 0.35 * np.sin(9 * xx + 2 * yy) * np.cos(7 * yy) * ((xx**2 + yy**2) < 0.85)
    return np.clip(img + 0.02 * np.random.default_rng(0).standard_normal((h, w)), 0, 1).astype(np.float32)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def _stages(up, scale: str, frame: np.ndarray, repeats: int, sync, device: str = "cuda") -> dict[str, float]:
    """ms per stage of one frame through the Upscaler's own sessions, data kept on the GPU."""
    import onnxruntime as ort

    from metasr.core.scale import Scale

    s = Scale.parse(scale)
    x = frame[None, None]
    plan = up._plan(s, 1, *frame.shape)
    (rb,), (cb,) = plan.rows.blocks[0], plan.cols.blocks[0]
    graph = {"classes": "upscale", "pixels": "upscale_pixels"}.get(plan.mode, "upscale")
    lr_dev = ort.OrtValue.ortvalue_from_numpy(x, device, 0)
    fe = up._sessions["feature_extractor"].io_binding()
    fe.bind_ortvalue_input("lr", lr_dev)
    fe.bind_output("features", device, 0)
    up._sessions["feature_extractor"].run_with_iobinding(fe)
    feats = fe.get_outputs()[0]
    kernels = up._device_kernels_for(s, rb, cb)
    from metasr.runtime.kernels import upscale_inputs

    feeds = {
        **upscale_inputs(rb.index, rb.rank, len(cb.classes), "row"),
        **upscale_inputs(cb.index, cb.rank, len(cb.classes), "col"),
    }
    ub = up._sessions[graph].io_binding()
    ub.bind_ortvalue_input("features", feats)
    ub.bind_ortvalue_input("kernels", kernels)
    for name, value in feeds.items():
        ub.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, device, 0))
    ub.bind_output("sr", device, 0)
    up._sessions[graph].run_with_iobinding(ub)
    sr_dev = ub.get_outputs()[0]
    return {
        "h2d": _median_ms(lambda: ort.OrtValue.ortvalue_from_numpy(x, device, 0), repeats, sync),
        "features": _median_ms(lambda: up._sessions["feature_extractor"].run_with_iobinding(fe), repeats, sync),
        "upscale": _median_ms(lambda: up._sessions[graph].run_with_iobinding(ub), repeats, sync),
        "d2h": _median_ms(lambda: sr_dev.numpy(), repeats, sync),
        "end to end": _median_ms(lambda: up.upscale(frame, scale), repeats, sync),
    }


def _torch_eager(ckpt: Path, repeats: int):
    """ms of PyTorch eager CUDA end to end (host in, host out) per case, or None without torch CUDA."""
    try:
        import torch
    except ImportError:
        return None, "torch not installed"
    if not torch.cuda.is_available():
        return None, "torch has no CUDA here"
    from metasr.training import load_checkpoint

    model = load_checkpoint(ckpt).cuda().eval()
    out = {}
    for label, scale, h, w in CASES:
        frame = torch.from_numpy(_phantom(h, w))[None, None]

        def run(frame=frame, scale=scale) -> None:
            with torch.inference_mode():
                model(frame.cuda(non_blocking=True), scale).clamp_(0, 1).cpu()

        out[label] = _median_ms(run, repeats, torch.cuda.synchronize)
    return out, f"PyTorch {torch.__version__} eager, TF32 convolutions {torch.backends.cudnn.allow_tf32}"


def _ensemble_rows(model_dir: Path, repeats: int, sync) -> None:
    """``--ensemble`` on the GPU (fp32): 8 runs, each through host memory, against one run."""
    from metasr.runtime import Upscaler

    one, ens = Upscaler(model_dir, device="cuda"), Upscaler(model_dir, device="cuda", ensemble=True)
    print("\n| self-ensemble, fp32 | one run (ms) | x8 (ms) | ratio |")
    print("|---|---:|---:|---:|")
    for label, scale, h, w in CASES:
        frame = _phantom(h, w)
        t_one = _median_ms(lambda frame=frame, scale=scale: one.upscale(frame, scale), repeats, sync)
        t_ens = _median_ms(lambda frame=frame, scale=scale: ens.upscale(frame, scale), max(3, repeats // 4), sync)
        print(f"| {w}x{h} {label} | {t_one:.2f} | {t_ens:.2f} | {t_ens / t_one:.2f}x |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="export folder (default: the shipped model)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--precisions", default="fp32,tf32,fp16")
    args = parser.parse_args(argv)
    try:
        import onnxruntime as ort
    except ImportError:
        _skip("onnxruntime is not installed")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        _skip("this onnxruntime has no CUDA provider")
    from metasr.core.errors import MetaSRError
    from metasr.core.hardware import gpu_name
    from metasr.models import default_model_dir
    from metasr.runtime import Upscaler

    model_dir = args.model or default_model_dir()
    sync = lambda: None  # noqa: E731  ORT's run_with_iobinding and .numpy() return after the GPU finished
    ups = {}
    for precision in args.precisions.split(","):
        try:
            ups[precision] = Upscaler(model_dir, device="cuda", precision=precision)
        except MetaSRError as e:
            _skip(f"no usable CUDA GPU ({e})")
    print(f"GPU: {gpu_name()}; onnxruntime {ort.__version__}; model {model_dir.name}; median of {args.repeats} runs\n")
    for up in ups.values():
        print(f"- {up.describe()}")
    eager, eager_note = _torch_eager(model_dir / "best.pt", args.repeats)
    print(f"- baseline: {eager_note}\n")
    print("| case | precision | H2D | features | upscale | D2H | end to end (ms) | fps | vs eager |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    exact: dict[str, np.ndarray] = {}
    psnr: dict[tuple[str, str], float] = {}
    fe_ms: dict[str, float] = {}
    for label, scale, h, w in CASES:
        frame = _phantom(h, w)
        for precision, up in ups.items():
            t = _stages(up, scale, frame, args.repeats, sync)
            ref = eager[label] / t["end to end"] if eager else float("nan")
            print(
                f"| {w}x{h} {label} | {precision} | {t['h2d']:.2f} | {t['features']:.2f} | {t['upscale']:.2f} | "
                f"{t['d2h']:.2f} | {t['end to end']:.2f} | {1e3 / t['end to end']:.0f} | {ref:.2f}x |"
            )
            result = up.upscale(frame, scale)
            exact.setdefault(label, result)
            psnr[(label, precision)] = _psnr(result, exact[label])
            if label == "x2":
                fe_ms[precision] = t["features"]
        if eager:
            print(
                f"| {w}x{h} {label} | PyTorch eager | | | | | {eager[label]:.2f} | {1e3 / eager[label]:.0f} | 1.00x |"
            )
    print("\n| precision | PSNR vs fp32 (dB), x2 / x1.8 / x4 |")
    print("|---|---|")
    for precision in ups:
        print(f"| {precision} | {' / '.join(f'{psnr[(c[0], precision)]:.1f}' for c in CASES)} |")
    _ensemble_rows(model_dir, args.repeats, sync)
    from metasr.export.onnx_graphs import conv_flops

    flops = conv_flops(model_dir / "feature_extractor.onnx", 540, 960)
    peaks = next((v for k, v in _PEAKS.items() if k in (gpu_name() or "")), None)
    print("\n| feature extractor 960x540 | GFLOP | ms | TFLOP/s | of dense peak |")
    print("|---|---:|---:|---:|---:|")
    for precision, ms in fe_ms.items():
        tflops = flops / ms / 1e9
        peak = (
            peaks[("fp32", "tf32", "fp16").index(precision)]
            if peaks and precision in ("fp32", "tf32", "fp16")
            else None
        )
        share = f"{100 * tflops / peak:.0f}% of {peak:g}" if peak else "unknown GPU"
        print(f"| {precision} | {flops / 1e9:.1f} | {ms:.2f} | {tflops:.1f} | {share} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
