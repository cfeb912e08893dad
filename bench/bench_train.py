"""Training throughput of Meta-SRGAN: updates per second at batch 8, 1 process vs 2 DDP processes.

Runs the real training step (forward, L1, backward, Adam) on random patches, with one scale per
mini-batch drawn from 1.1..4.0 step 0.1 (the same draw for every configuration), and prints a
table. ``python bench/bench_train.py [--patch 64] [--steps 20] [--threads 2]``. DDP uses the gloo
backend with the global batch split over the processes and ``threads / processes`` threads each.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from fractions import Fraction

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from metasr.training import build_model
from metasr.training.data import parse_scales
from metasr.training.pairs import ScaleBatchSampler, patch_geometry


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
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
