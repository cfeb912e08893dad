"""Training throughput of Meta-SRGAN: updates per second at batch 8, 1 process vs 2 DDP processes.

Runs the real training step (forward, L1, backward, Adam) on random patches, with one scale per
mini-batch drawn from 1.1..4.0 step 0.1 (the same draw for every configuration), and prints a
table. ``python bench/bench_train.py [--patch 64] [--steps 20] [--threads 2]``. DDP uses the gloo
backend with the global batch split over the processes and ``threads / processes`` threads each.

``--data-loading`` measures the input side instead: indexing and reading patches through
``metasr.scanners`` from a BraTS-sized NIfTI volume (240x240x155 int16) and a folder of 512x512
16-bit DICOM files, one process, no worker processes.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from fractions import Fraction

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from metasr.training import build_model
from metasr.training.pairs import ScaleBatchSampler, patch_geometry
from metasr.training.specs import parse_scales


def _steps(rank: int, world: int, args: argparse.Namespace, port: int, out: mp.Queue | None) -> float:
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(max(1, args.threads // world))
    torch.manual_seed(0)
    model = build_model("metasrgan")
    if world > 1:
        from metasr.training.distributed import distribute_batchnorm

        model = torch.nn.parallel.DistributedDataParallel(distribute_batchnorm(model))
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    sampler = ScaleBatchSampler(100, args.batch, parse_scales("1.1:4.0:0.1"), seed=0)
    per_rank = args.batch // world
    elapsed = 0.0
    for step in range(args.warmup + args.steps):
        scale = sampler.scale(step)
        h, big = patch_geometry(args.patch, Fraction(scale))
        lr, hr = torch.rand(per_rank, 1, h, h), torch.rand(per_rank, 1, big, big)
        t = time.perf_counter()
        loss = torch.nn.functional.l1_loss(model(lr, scale), hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= args.warmup:
            elapsed += time.perf_counter() - t
    if world > 1:
        dist.destroy_process_group()
    if out is not None and rank == 0:
        out.put(elapsed)
    return elapsed


def _ddp(rank: int, world: int, args: argparse.Namespace, port: int, out: mp.Queue) -> None:
    _steps(rank, world, args, port, out)


def _data_loading(args: argparse.Namespace) -> None:
    import tempfile
    from pathlib import Path

    import nibabel as nib
    import numpy as np

    from metasr.training.data import build_index
    from metasr.training.pairs import PatchDataset

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import write_dicom

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        vol = np.zeros((240, 240, 155), np.int16)
        vol[40:200, 30:210, 10:145] = rng.integers(100, 1200, (160, 180, 135))
        (root / "case0").mkdir()
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(root / "case0" / "case0_t1ce.nii.gz"))
        for i in range(args.dicoms):
            img = np.zeros((512, 512), np.uint16)
            img[64:448, 64:448] = rng.integers(200, 3000, (384, 384))
            write_dicom(root / "series" / f"IM{i + 1:04d}", img)
        print(f"data loading, HR patch {args.patch}, {args.threads} threads, {os.cpu_count()} CPUs")
        for spec in (f"brats:{root}", f"folder:{root / 'series'}"):
            t = time.perf_counter()
            index = build_index([spec], min_size=args.patch // 2)
            t_index = time.perf_counter() - t
            dataset = PatchDataset(index, args.patch)
            scales = [str(Fraction(k, 10)) for k in range(11, 41)]
            items = [(i % len(index), scales[i % len(scales)], i) for i in range(args.items)]
            t = time.perf_counter()
            for item in items:
                dataset[item]
            t_items = time.perf_counter() - t
            print(
                f"{spec.split(':')[0]:<7} {len(index):>4} slices  index {t_index:6.2f} s  "
                f"{args.items / t_items:8.1f} patches/s"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-loading", action="store_true", help="measure indexing and patch reading instead")
    p.add_argument("--dicoms", type=int, default=20, help="--data-loading: DICOM files in the series folder")
    p.add_argument("--items", type=int, default=400, help="--data-loading: patches read per dataset")
    args = p.parse_args()
    if args.data_loading:
        _data_loading(args)
        return
    rows = []
    single = _steps(0, 1, args, 0, None)
    rows.append(("1 process", args.threads, single))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.start_processes(_ddp, args=(2, args, port, queue), nprocs=2, join=True, start_method="spawn")
    rows.append(("2 processes (DDP, gloo)", max(1, args.threads // 2), queue.get()))
    print(
        f"metasrgan, batch {args.batch}, HR patch {args.patch}, scales 1.1..4.0, {args.steps} updates, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"{'configuration':<26} {'threads/proc':>12} {'it/s':>8} {'s/it':>8}")
    for name, threads, seconds in rows:
        print(f"{name:<26} {threads:>12} {args.steps / seconds:>8.2f} {seconds / args.steps:>8.3f}")


if __name__ == "__main__":
    main()
