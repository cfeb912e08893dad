"""Benchmark metasr-serve: the same requests through a Triton server and through a local Upscaler.

``--clients`` threads each send ``--requests`` images of ``--size`` x ``--size`` pixels at mixed
scales (1.5, 1.8, 2, 2.5, 3, 4 in turn). The same work runs twice in one process, alternately
``--repeat`` times: through ``metasr-serve`` (started here on 127.0.0.1, one instance, the
machine's CPUs; clients are :class:`~metasr.runtime.remote.RemoteUpscaler`) and through one
local :class:`~metasr.runtime.Upscaler` shared by the same client threads. Printed per path:
throughput (images/s), latency p50/p99 (ms), CPU seconds per image (on the server path: Triton,
its backend stub and the clients together) and errors; and the ratios server/local (goal on the
CPU: >= 0.8). Each path keeps its best pass. On a machine shared with other work, throughput
follows each path's share of the contended cores; CPU per image does not.

    python bench/bench_serve.py                                   # 8 clients x 50 requests, 256x256
    python bench/bench_serve.py --clients 4 --requests 10 --size 128

Needs the [serve] extra in a Python whose Triton backend stub works (see the README, "Serving").
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from metasr.runtime import Upscaler
from metasr.runtime.remote import RemoteUpscaler

SCALES = ("1.5", "1.8", "2", "2.5", "3", "4")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_server(threads: int, instances: int) -> tuple[subprocess.Popen, str]:
    http, grpc, metrics = _free_ports(3)
    cmd = [sys.executable, "-m", "metasr.serve.cli", "--http-port", str(http), "--grpc-port", str(grpc)]
    cmd += ["--metrics-port", str(metrics), "--threads", str(threads), "--instances", str(instances)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "gRPC" in line:
            print(line.rstrip())
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, f"127.0.0.1:{grpc}"
    raise SystemExit(f"metasr-serve did not start (exit {proc.wait()})")


def _cpu_seconds(root: int | None) -> float:
    """CPU time (user + system) of the processes under ``root`` (Triton and its backend stub)."""
    if root is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    pids, grew = {root}, True
    while grew:
        more = {pid for pid, (ppid, _) in stats.items() if ppid in pids} - pids
        grew = bool(more)
        pids |= more
    return sum(stats[pid][1] for pid in pids - {root} if pid in stats)


def run(make_upscaler, clients: int, requests: int, size: int, server_pid: int | None = None) -> dict[str, float]:
    """All clients' requests through upscalers from ``make_upscaler()`` (one per client thread)."""
    rng = np.random.default_rng(0)
    images = [rng.random((size, size), dtype=np.float32) for _ in range(4)]
    ups = [make_upscaler() for _ in range(clients)]
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client(c: int) -> None:
        nonlocal errors
        barrier.wait()
        for i in range(requests):
            t0 = time.perf_counter()
            try:
                ups[c].upscale(images[(c + i) % 4], SCALES[(c + i) % len(SCALES)])
            except Exception as e:  # noqa: BLE001 - counted and shown once
                with lock:
                    errors += 1
                    if errors == 1:
                        print(f"  first error: {e}")
                continue
            with lock:
                latencies.append(time.perf_counter() - t0)

    start, cpu0, server0 = time.perf_counter(), time.process_time(), _cpu_seconds(server_pid)
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0 + _cpu_seconds(server_pid) - server0
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {
        "images_per_s": len(latencies) / wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "errors": errors,
        "wall_s": wall,
        "cpu_s_per_image": cpu / max(1, len(latencies)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=50, help="requests per client")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--instances", type=int, default=1)
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cpus // args.instances)
    machine = f"{platform.processor() or platform.machine()}, {cpus} CPUs, load {os.getloadavg()[0]:.1f}"
    work = f"{args.clients} clients x {args.requests} requests, {args.size}x{args.size}, scales {', '.join(SCALES)}"
    print(f"{machine}; {work}")
    server, address = start_server(threads, args.instances)
    local = Upscaler(device="cpu", threads=cpus)
    best: dict[str, dict[str, float]] = {}
    try:
        warm = np.zeros((args.size, args.size), np.float32)
        remote = RemoteUpscaler(address)
        for s in SCALES:  # kernels of every scale computed once on both sides
            remote.upscale(warm, s)
            local.upscale(warm, s)
        for _ in range(args.repeat):
            for name, make in (("server", lambda: RemoteUpscaler(address)), ("local", lambda: local)):
                r = run(make, args.clients, args.requests, args.size, server.pid if name == "server" else None)
                if name not in best or r["images_per_s"] > best[name]["images_per_s"]:
                    best[name] = r
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=120)
    print(f"\nserver: {args.instances} instance(s), {threads} thread(s) each; local: one Upscaler, {cpus} threads")
    print("\n| path | images/s | p50 latency (ms) | p99 latency (ms) | CPU s per image | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in ("server", "local"):
        r = best[name]
        print(
            f"| {name} | {r['images_per_s']:.2f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
            f"{r['cpu_s_per_image']:.2f} | {r['errors']} |"
        )
    ratio = best["server"]["images_per_s"] / best["local"]["images_per_s"]
    cost = best["local"]["cpu_s_per_image"] / best["server"]["cpu_s_per_image"]
    print(
        f"\nserver / local: throughput {ratio:.2f} (goal on the CPU: >= 0.80), CPU efficiency {cost:.2f} "
        f"(local CPU per image / server CPU per image, server + client processes; less sensitive to other "
        f"load); metasr-serve exit code {code}"
    )


if __name__ == "__main__":
    main()
