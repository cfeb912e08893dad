"""``metasr-serve``: serve an export through Triton Inference Server (HTTP, gRPC, metrics).

Examples::

    metasr-serve                            # shipped model; 127.0.0.1: HTTP 8000, gRPC 8001, metrics 8002
    metasr-serve --host 0.0.0.0 --instances 2 --device cuda --precision tf32
    metasr-serve --write-repository repo/   # for any Triton: tritonserver --model-repository repo/
    metasr-serve --model-repository repo/   # serve a repository written before

Every option is checked and the export is loaded once (hashes verified, the device tried)
before Triton starts, so a bad option or model is one line on stderr and exit code 2. Once the
model is ready one status line says what runs where and the endpoints. SIGTERM (or Ctrl-C) stops
Triton the way it stops itself: no new requests, the requests in flight finish, exit code 0
(130 after Ctrl-C).
"""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import click

from metasr.core.cli import EXIT_INTERRUPTED, Verbosity, common_options, one_line, run_command
from metasr.core.errors import InputError, OutputError, ServerError
from metasr.serve.repository import (
    DEFAULT_QUEUE_DELAY_US,
    RepositoryOptions,
    describe_repository,
    write_repository,
)
from metasr.serve.server import Endpoints, TritonProcess, find_triton, parse_port

__all__ = ["main"]

PROG = "metasr-serve"
#: Seconds the model may take to load in Triton (TensorRT engine builds take minutes).
STARTUP_TIMEOUT_S = 600


def _say(text: str) -> None:
    print(f"{PROG}: {text}", file=sys.stderr, flush=True)


def _check_host(host: str) -> str:
    text = host.strip()
    if not text or len(text) > 253 or any(c.isspace() or c in "/@?#" for c in text):
        raise InputError(f"--host must be an address to listen on, such as 127.0.0.1 or 0.0.0.0, got {host[:60]!r}")
    return text


def _options(device: str, precision: str, instances: int, threads: int | None, queue_delay: int) -> RepositoryOptions:
    from metasr.runtime.jobs import parse_device

    parse_device(device)
    if threads is None and isinstance(instances, int) and instances >= 1:
        from metasr.runtime.jobs import available_cpus

        threads = max(1, available_cpus() // instances)
    return RepositoryOptions(device, precision, instances, threads, queue_delay).checked()


def _load(model: Path | None, options: RepositoryOptions):  # noqa: ANN202 - an Upscaler
    """Load the export here once: a damaged model or an unusable device fails before Triton starts."""
    from metasr.runtime.upscaler import Upscaler

    return Upscaler(model, device=options.device, precision=options.precision, threads=options.threads)


class _Stop:
    """SIGTERM and SIGINT while serving: remembered, acted on by the main loop."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __enter__(self) -> _Stop:
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: object) -> None:
        self.signal = signum

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _serve(repository: Path, endpoints: Endpoints, workdir: Path, status: str, verbosity: Verbosity) -> int:
    triton = TritonProcess(repository, endpoints, workdir)
    with _Stop() as stop:
        triton.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not triton.ready():
            if triton.process is not None and triton.process.poll() is not None:
                raise ServerError(f"Triton did not start: {triton.failure_reason()}")
            if stop.signal is not None or time.monotonic() > deadline:
                triton.stop()
                if stop.signal is None:
                    raise ServerError(f"the model did not become ready within {STARTUP_TIMEOUT_S} s")
                return EXIT_INTERRUPTED if stop.signal == signal.SIGINT else 0
            time.sleep(0.1)
        if verbosity >= Verbosity.NORMAL:
            e = endpoints
            _say(
                f"{status}; HTTP {e.host}:{e.http_port}, gRPC {e.host}:{e.grpc_port}, "
                f"metrics http://{e.url(e.metrics_port)}/metrics"
            )
        while triton.process is not None and triton.process.poll() is None and stop.signal is None:
            time.sleep(0.1)
        if stop.signal is None:
            code = triton.process.returncode if triton.process is not None else None
            raise ServerError(f"Triton stopped unexpectedly (exit {code}): {triton.failure_reason()}")
        if verbosity >= Verbosity.NORMAL:
            _say("stopping: requests in flight finish, new ones are refused")
        code = triton.stop()
    if code != 0:
        raise ServerError(f"Triton exited with code {code} while stopping: {triton.failure_reason()}")
    if verbosity >= Verbosity.NORMAL:
        _say("stopped")
    return EXIT_INTERRUPTED if stop.signal == signal.SIGINT else 0


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--model", type=click.Path(path_type=Path), help="Export folder (default: the shipped model).")
@click.option(
    "--model-repository",
    "repository",
    type=click.Path(path_type=Path),
    help="Serve this Triton model repository (written by --write-repository) instead of --model.",
)
@click.option(
    "--write-repository",
    "write_to",
    type=click.Path(path_type=Path),
    help="Write a model repository for any Triton to this new folder and exit (nothing is served).",
)
@click.option(
    "--device", default="auto", show_default=True, help="auto (resolved at start), cpu, cuda, tensorrt; cuda:1: GPU 1."
)
@click.option("--precision", default="fp32", show_default=True, help="fp32 (TF32 off), tf32 or fp16 on a GPU.")
@click.option("--instances", default=1, show_default=True, type=int, help="Model instances (1-64).")
@click.option("--threads", type=int, help="CPU threads per instance (default: the CPUs divided among instances).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: all).")
@click.option("--http-port", default="8000", show_default=True, help="HTTP/REST port (KServe v2 protocol).")
@click.option("--grpc-port", default="8001", show_default=True, help="gRPC port (metasr-run --server uses it).")
@click.option("--metrics-port", default="8002", show_default=True, help="Prometheus metrics port.")
@click.option(
    "--queue-delay-us",
    default=DEFAULT_QUEUE_DELAY_US,
    show_default=True,
    type=int,
    help="Dynamic batching: how long a request waits for others of its shape (microseconds).",
)
@common_options(PROG)
def command(
    model: Path | None,
    repository: Path | None,
    write_to: Path | None,
    device: str,
    precision: str,
    instances: int,
    threads: int | None,
    host: str,
    http_port: str,
    grpc_port: str,
    metrics_port: str,
    queue_delay_us: int,
    verbosity: Verbosity,
) -> int:
    """Serve a metasr export through NVIDIA Triton Inference Server (model name: metasr)."""
    options = _options(device, precision, instances, threads, queue_delay_us)
    if repository is not None and (write_to is not None or model is not None):
        raise InputError("--model-repository serves a written repository; it takes no --model or --write-repository")
    if write_to is not None:
        up = _load(model, options)
        written = write_repository(write_to, up.model_dir, _resolved(options, up))
        click.echo(str(written.parent.parent))
        return 0
    endpoints = Endpoints(
        _check_host(host),
        parse_port(http_port, "--http-port"),
        parse_port(grpc_port, "--grpc-port"),
        parse_port(metrics_port, "--metrics-port"),
    )
    find_triton()  # a missing server fails before the model loads
    workdir = Path(tempfile.mkdtemp(prefix="metasr-serve-"))
    try:
        if repository is not None:
            status = describe_repository(repository)
        else:
            up = _load(model, options)
            n = options.instances
            status = f"{up.describe().removeprefix('metasr: ')}; {n} instance{'s' if n != 1 else ''}"
            repository = workdir / "repository"
            write_repository(repository, up.model_dir, _resolved(options, up))
            del up
        return _serve(repository, endpoints, workdir, status, verbosity)
    except OSError as e:
        if isinstance(e, OutputError):
            raise
        raise OutputError(f"cannot run Triton: {one_line(str(e))}") from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _resolved(options: RepositoryOptions, up: object) -> RepositoryOptions:
    """The options with ``auto`` replaced by the device the export really runs on here."""
    from dataclasses import replace

    device = getattr(up, "device", None)
    if options.device != "auto" or device is None:
        return options
    index = getattr(up, "device_index", 0)
    name = device.value if device.value == "cpu" else f"{device.value}:{index}"
    return replace(options, device=name, threads=options.threads or getattr(up, "threads", None))


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``metasr-serve``; returns the exit code."""
    return run_command(command, argv, PROG)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
