"""Run Triton Inference Server on a metasr model repository.

The ``tritonserver`` binary, its Python backend and the backend stubs (one per Python version)
come from the ``nvidia-pytriton`` wheel (extra ``[serve]``); metasr does not use PyTriton's
Python API, only the server it bundles, so the served model is exactly what a stock Triton
loads from the same repository. The stub embeds the running Python (it needs its shared
libpython), and model instances import metasr from this interpreter's ``sys.path``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from metasr.core.errors import DependencyError, InputError
from metasr.serve.protocol import MODEL_NAME

__all__ = ["Endpoints", "TritonDist", "TritonProcess", "find_triton", "parse_port"]

# Error lines Triton logs on every host without a GPU: not the reason anything failed.
_NOISE = ("CudaDriverHelper", "NVML", "DCGM", "pinned memory")
#: Seconds Triton waits for in-flight requests after SIGTERM before it stops anyway.
EXIT_TIMEOUT_S = 60


def parse_port(text: str | int, what: str) -> int:
    """A TCP port number (1-65535) from an option's text."""
    try:
        port = int(str(text).strip())
    except ValueError:
        raise InputError(f"{what} must be a port number from 1 to 65535, got {str(text)[:40]!r}") from None
    if not 1 <= port <= 65535:
        raise InputError(f"{what} must be a port number from 1 to 65535, got {port}")
    return port


@dataclass(frozen=True)
class Endpoints:
    """Where the server listens."""

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002

    def __post_init__(self) -> None:
        ports = (self.http_port, self.grpc_port, self.metrics_port)
        if len(set(ports)) != 3:
            raise InputError(f"the HTTP, gRPC and metrics ports must differ, got {ports}")

    @property
    def local_host(self) -> str:
        """The address to reach the server from this machine (``0.0.0.0`` is not one)."""
        return {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}.get(self.host, self.host)

    def url(self, port: int) -> str:
        host = self.local_host
        return f"{'[' + host + ']' if ':' in host else host}:{port}"


@dataclass(frozen=True)
class TritonDist:
    """The bundled Triton: the server binary, the Python backend and the libraries it needs."""

    binary: Path
    python_backend: Path
    stub: Path
    libs: Path
    caches: Path


def find_triton() -> TritonDist:
    """Locate the Triton server bundled with ``nvidia-pytriton`` for this Python.

    Raises:
        DependencyError: ``nvidia-pytriton`` is not installed, or has no backend stub for this Python.
    """
    spec = importlib.util.find_spec("pytriton")  # the package is located, never imported
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError(
            'metasr-serve needs the Triton server of the nvidia-pytriton package; run: pip install "metasr[serve]"'
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    dist = root / "tritonserver"
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    libs = root.parent / "nvidia_pytriton.libs"
    if not libs.is_dir():
        libs = dist / "external_libs"
    found = TritonDist(dist / "bin" / "tritonserver", dist / "backends" / "python", stub, libs, dist / "caches")
    if not found.binary.is_file() or not (found.python_backend / "libtriton_python.so").is_file():
        raise DependencyError(f"the nvidia-pytriton installation in {root} has no tritonserver binary; reinstall it")
    if not stub.is_file():
        raise DependencyError(
            f"nvidia-pytriton has no Python backend stub for Python {version}; use Python 3.10-3.13 "
            f"(the stub needs this Python's shared libpython)"
        )
    import numpy

    if int(numpy.__version__.split(".")[0]) >= 2:
        raise DependencyError(
            f"the Python backend of the bundled Triton is built against numpy 1.x, and this Python has numpy "
            f'{numpy.__version__}; serve from an environment with numpy<2 (e.g. Python 3.12: pip install "numpy<2")'
        )
    return found


def _prepare_backends(dist: TritonDist, workdir: Path) -> Path:
    """A backend folder with the Python backend and this Python's stub (Triton looks for the stub
    next to the backend library)."""
    backends = workdir / "backends"
    python = backends / "python"
    python.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copyfile(dist.python_backend / name, python / name)
    shutil.copy2(dist.stub, python / "triton_python_backend_stub")
    return backends


def _environment(dist: TritonDist) -> dict[str, str]:
    env = dict(os.environ)
    libdir = Path(sys.base_prefix) / "lib"  # the shared libpython the stub links against
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(dist.libs), str(libdir), env.get("LD_LIBRARY_PATH")) if p)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # The stub's embedded interpreter imports metasr (and numpy, onnxruntime) from this Python's paths.
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def _stop_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (even by SIGKILL), so no Triton is orphaned."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's own stop() is all there is
        pass


class TritonProcess:
    """``tritonserver --model-repository REPO`` as a child process, its log in ``workdir/triton.log``.

    Args:
        repository: The model repository (see :func:`metasr.serve.write_repository`).
        endpoints: Host and ports.
        workdir: Scratch folder for the backend copy and the log.
    """

    def __init__(self, repository: Path, endpoints: Endpoints, workdir: Path) -> None:
        self.repository = Path(repository)
        self.endpoints = endpoints
        self.workdir = Path(workdir)
        self.log_path = self.workdir / "triton.log"
        self.process: subprocess.Popen | None = None

    def command(self, dist: TritonDist, backends: Path) -> list[str]:
        e = self.endpoints
        return [
            str(dist.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--cache-directory={dist.caches}",
            f"--http-address={e.host}",
            f"--http-port={e.http_port}",
            f"--grpc-address={e.host}",
            f"--grpc-port={e.grpc_port}",
            f"--metrics-address={e.host}",
            f"--metrics-port={e.metrics_port}",
            "--allow-metrics=true",
            "--strict-readiness=true",
            "--disable-auto-complete-config",
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
            "--log-verbose=0",
        ]

    def start(self) -> None:
        dist = find_triton()
        backends = _prepare_backends(dist, self.workdir)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(dist, backends),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_environment(dist),
                cwd=self.workdir,
                start_new_session=True,  # Ctrl-C in a terminal reaches metasr-serve, which stops Triton in order
                preexec_fn=_stop_with_parent,
            )

    def ready(self) -> bool:
        url = f"http://{self.endpoints.url(self.endpoints.http_port)}/v2/models/{MODEL_NAME}/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def failure_reason(self) -> str:
        """The most telling line of Triton's log (its first error), for a one-line message."""
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "no log"
        # glog error lines (E1206 12:00:00.000 pid file:line] "message"), less the GPU probes a CPU host always logs
        errors = [
            " ".join(line.split("] ", 1)[-1].split()).strip('"')
            for line in lines
            if line[:1] == "E" and line[1:2].isdigit() and not any(n in line for n in _NOISE)
        ]
        for preferred in ("metasr", "failed", "Failed"):
            found = [e for e in errors if preferred in e]
            if found:
                return found[-1][:400]
        if errors:
            return errors[-1][:400]
        return " ".join(lines[-1].split())[:400] if lines else "no log"

    def stop(self, timeout_s: float = EXIT_TIMEOUT_S + 10) -> int:
        """SIGTERM: Triton refuses new requests, finishes those in flight and exits; returns its exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def wait(self) -> int:
        assert self.process is not None
        return self.process.wait()
