"""metasr-serve on a real Triton server (the one bundled with nvidia-pytriton), on 127.0.0.1 only.

Needs the ``[serve]`` extra in a Python whose Triton backend stub works (a shared libpython and
numpy<2; .ci/run makes ``.venv-ci-serve`` with Python 3.12); skipped elsewhere. Every request
loop is bounded; every server is stopped by SIGTERM at the end of its test and must exit 0.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from metasr.core.errors import DependencyError, MetaSRError

try:
    from metasr.serve.server import find_triton

    find_triton()
    import tritonclient.grpc as grpcclient
except (DependencyError, ImportError) as e:  # pragma: no cover - depends on the environment
    pytest.skip(
        f"serving tests need the [serve] extra in a Python with numpy<2 (3.12) ({e}); .ci/run runs them",
        allow_module_level=True,
    )

from metasr.runtime import Upscaler
from metasr.runtime.remote import RemoteUpscaler

HOST = "127.0.0.1"


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind((HOST, 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@dataclass
class Server:
    process: subprocess.Popen
    http: int
    grpc: int
    metrics: int
    status: str
    stderr: queue.Queue

    @property
    def address(self) -> str:
        return f"{HOST}:{self.grpc}"

    def stop(self, timeout: float = 90) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def lines(self) -> list[str]:
        out = []
        while not self.stderr.empty():
            out.append(self.stderr.get_nowait())
        return out


#: Every metasr-serve a test started; :func:`_no_server_outlives_the_module` ends those still running.
_STARTED: list[subprocess.Popen] = []


def _reap(proc: subprocess.Popen) -> None:
    """End ``proc`` and everything in its process group, whatever state a failed test left it in."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # Triton and its Python stubs, if anything is left
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(timeout=30)


@pytest.fixture(scope="module", autouse=True)
def _no_server_outlives_the_module() -> Iterator[None]:
    """A failing test can leave a server running (its own teardown never ran): none survives the module."""
    yield
    while _STARTED:
        _reap(_STARTED.pop())


def start_server(*args: str, ports: list[int] | None = None, timeout: float = 120) -> Server:
    http, grpc, metrics = ports or _free_ports(3)
    cmd = [sys.executable, "-m", "metasr.serve.cli", "--host", HOST, "--http-port", str(http)]
    cmd += ["--grpc-port", str(grpc), "--metrics-port", str(metrics), "--threads", "1", *args]
    # its own process group: the reaper below can end metasr-serve, Triton and its stubs together
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, start_new_session=True)
    _STARTED.append(proc)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.rstrip("\n")) for line in proc.stderr], daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        if "gRPC" in line:
            return Server(proc, http, grpc, metrics, line, lines)
    proc.kill()
    rest = []
    while not lines.empty():
        rest.append(lines.get_nowait())
    raise AssertionError(f"metasr-serve did not start: {rest}")


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = start_server()
    yield srv
    assert srv.stop() == 0, srv.lines()


@pytest.fixture(scope="module")
def local() -> Upscaler:
    return Upscaler(device="cpu", threads=1)


def _rng_image(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_status_line_names_model_device_and_endpoints(server: Server, local: Upscaler) -> None:
    assert server.status.startswith(f"metasr-serve: model metasrgan-mri ({local.model_id[:12]}) on CPU")
    assert f"gRPC {HOST}:{server.grpc}" in server.status and f"HTTP {HOST}:{server.http}" in server.status


@pytest.mark.parametrize("scale", ["1.8", "2", "2.333", "4"])
def test_served_result_equals_local_upscaler(server: Server, local: Upscaler, scale: str) -> None:
    remote = RemoteUpscaler(server.address)
    image = _rng_image(40, 33, seed=1)
    got, want = remote.upscale(image, scale), local.upscale(image, scale)
    assert got.shape == want.shape and got.dtype == np.float32
    assert float(np.abs(got - want).max()) <= 1e-6


def test_batches_larger_than_the_server_batch_are_split(server: Server, local: Upscaler) -> None:
    remote = RemoteUpscaler(server.address)
    assert remote.max_batch == 8 and remote.model_id == local.model_id
    batch = _rng_image(11, 20, 18, seed=2)
    assert float(np.abs(remote.upscale(batch, "7/3") - local.upscale(batch, "7/3")).max()) <= 1e-6


def _infer(server: Server, image: np.ndarray, scale: object, dtype: str = "FP32", scale_type: str = "BYTES"):
    client = grpcclient.InferenceServerClient(server.address)
    inputs = [grpcclient.InferInput("image", list(image.shape), dtype)]
    inputs[0].set_data_from_numpy(image)
    if scale is not None:
        value = np.asarray(scale)
        inputs.append(grpcclient.InferInput("scale", list(value.shape), scale_type))
        inputs[1].set_data_from_numpy(value)
    try:
        return client.infer("metasr", inputs, client_timeout=60).as_numpy("sr")
    finally:
        client.close()


def _scale(text: str, n: int = 1) -> np.ndarray:
    return np.full((n, 1), text.encode(), dtype=object)


BAD_REQUESTS = {
    "float64 pixels": (np.zeros((1, 8, 8)), _scale("2"), "FP64", "BYTES"),
    "rank 4": (np.zeros((1, 1, 8, 8), np.float32), _scale("2"), "FP32", "BYTES"),
    "empty image": (np.zeros((1, 0, 8), np.float32), _scale("2"), "FP32", "BYTES"),
    "1x1 image": (np.zeros((1, 1, 1), np.float32), _scale("2"), "FP32", "BYTES"),
    "oversized": (np.zeros((1, 2, 9000), np.float32), _scale("2"), "FP32", "BYTES"),
    "NaN": (np.full((1, 8, 8), np.nan, np.float32), _scale("2"), "FP32", "BYTES"),
    "Inf": (np.full((1, 8, 8), np.inf, np.float32), _scale("2"), "FP32", "BYTES"),
    "out of range": (np.full((1, 8, 8), 3.0, np.float32), _scale("2"), "FP32", "BYTES"),
    "scale text": (np.zeros((1, 8, 8), np.float32), _scale("abc"), "FP32", "BYTES"),
    "scale 9": (np.zeros((1, 8, 8), np.float32), _scale("9"), "FP32", "BYTES"),
    "inexact scale": (np.zeros((1, 8, 8), np.float32), _scale("2.0000000001"), "FP32", "BYTES"),
    "two scales": (np.zeros((2, 8, 8), np.float32), np.array([[b"2"], [b"3"]], dtype=object), "FP32", "BYTES"),
    "scale as a number": (np.zeros((1, 8, 8), np.float32), np.array([[2.0]], np.float32), "FP32", "FP32"),
    "no scale": (np.zeros((1, 8, 8), np.float32), None, "FP32", "BYTES"),
}


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_bad_requests_get_an_error_and_the_server_serves_on(server: Server, name: str) -> None:
    image, scale, dtype, scale_type = BAD_REQUESTS[name]
    with pytest.raises(Exception) as info:  # noqa: B017 - tritonclient raises InferenceServerException
        _infer(server, image, scale, dtype, scale_type)
    assert type(info.value).__name__ == "InferenceServerException", info.value
    good = _infer(server, _rng_image(1, 8, 8), _scale("2"))
    assert good.shape == (1, 16, 16)


def test_a_client_that_disconnects_mid_request_does_not_hurt(server: Server) -> None:
    for _ in range(3):
        with socket.create_connection((HOST, server.http), timeout=5) as s:
            body = json.dumps({"inputs": [{"name": "image", "shape": [1, 64, 64], "datatype": "FP32"}]})
            head = f"POST /v2/models/metasr/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body) * 50}\r\n\r\n"
            s.sendall(head.encode() + body.encode())  # a body far shorter than announced, then gone
    with socket.create_connection((HOST, server.grpc), timeout=5) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00")  # a gRPC connection cut mid-frame
    assert _infer(server, _rng_image(1, 8, 8), _scale("2")).shape == (1, 16, 16)


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read().decode()


def _metric(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and 'model="metasr"' in line
    )


def test_health_ready_and_prometheus_metrics(server: Server) -> None:
    assert _get(f"http://{HOST}:{server.http}/v2/health/live")[0] == 200
    assert _get(f"http://{HOST}:{server.http}/v2/health/ready")[0] == 200
    assert _get(f"http://{HOST}:{server.http}/v2/models/metasr/ready")[0] == 200
    _, text = _get(f"http://{HOST}:{server.metrics}/metrics")
    assert "nv_inference_request_success" in text and "nv_inference_queue_duration_us" in text


def test_same_shape_requests_are_batched(server: Server) -> None:
    before = _get(f"http://{HOST}:{server.metrics}/metrics")[1]
    image = _rng_image(1, 160, 160, seed=3)  # ~0.1 s per run: the others queue meanwhile
    remotes = [RemoteUpscaler(server.address) for _ in range(8)]
    start = threading.Barrier(8)

    def two_requests(remote: RemoteUpscaler) -> list[tuple[int, ...]]:
        start.wait(timeout=30)
        return [remote.upscale(image, "2").shape for _ in range(2)]

    with ThreadPoolExecutor(8) as pool:
        shapes = [s for pair in pool.map(two_requests, remotes) for s in pair]
    assert shapes == [(1, 320, 320)] * 16
    # Triton publishes its counters a little after the responses: read until all 16 are counted (bounded)
    deadline = time.monotonic() + 20
    while True:
        after = _get(f"http://{HOST}:{server.metrics}/metrics")[1]
        inferences = _metric(after, "nv_inference_count") - _metric(before, "nv_inference_count")
        executions = _metric(after, "nv_inference_exec_count") - _metric(before, "nv_inference_exec_count")
        if inferences >= 16 or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert inferences == 16 and executions < 16, (inferences, executions)


def _server_rss_kib(server: Server) -> int:
    """Resident memory of metasr-serve's Triton and its backend stub (the processes under it)."""
    total, pids = 0, {server.process.pid}
    for _ in range(3):  # children, grandchildren
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                    ppid = int(stat.rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                if ppid in pids:
                    pids.add(int(entry))
    for pid in pids - {server.process.pid}:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total


def test_server_memory_is_flat_over_1000_requests(server: Server) -> None:
    client = grpcclient.InferenceServerClient(server.address)
    image = _rng_image(1, 16, 16, seed=4)

    def run(n: int) -> None:
        for i in range(n):
            inputs = [
                grpcclient.InferInput("image", [1, 16, 16], "FP32"),
                grpcclient.InferInput("scale", [1, 1], "BYTES"),
            ]
            inputs[0].set_data_from_numpy(image)
            inputs[1].set_data_from_numpy(_scale(("2", "1.8", "3", "7/3")[i % 4]))
            assert client.infer("metasr", inputs, client_timeout=60).as_numpy("sr") is not None

    run(200)
    warm = _server_rss_kib(server)
    run(1000)
    after = _server_rss_kib(server)
    client.close()
    assert warm > 0
    assert after - warm < 20 * 1024, f"server RSS grew from {warm} KiB to {after} KiB over 1000 requests"


# -- the edge clients -----------------------------------------------------------------------


def _png(path: Path, h: int = 24, w: int = 20) -> Path:
    import cv2

    yy, xx = np.mgrid[0:h, 0:w]
    img = ((np.sin(xx / 3.0) + np.cos(yy / 4.0) + 2) / 4 * 65535).astype(np.uint16)
    cv2.imwrite(str(path), img)
    return path


def _read_png(path: Path) -> np.ndarray:
    import cv2

    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_metasr_run_server_equals_local_run(server: Server, tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    from metasr.runtime.cli import main as run_main

    src = _png(tmp_path / "in.png")
    capfd.readouterr()
    assert run_main(["-i", str(src), "-s", "1.8", "-o", str(tmp_path / "remote.png"), "--server", server.address]) == 0
    err = capfd.readouterr().err
    assert f"on Triton server {server.address}" in err
    assert run_main(["-i", str(src), "-s", "1.8", "-o", str(tmp_path / "local.png"), "--device", "cpu"]) == 0
    assert np.array_equal(_read_png(tmp_path / "remote.png"), _read_png(tmp_path / "local.png"))


def test_derived_dicom_records_the_served_model(server: Server, local: Upscaler, tmp_path: Path) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    from metasr.runtime.cli import main as run_main

    src = tmp_path / "frame.dcm"
    shutil.copy(get_testdata_file("MR_small.dcm"), src)
    assert run_main(["-q", "-i", str(src), "-s", "2", "-o", str(tmp_path / "r.dcm"), "--server", server.address]) == 0
    assert run_main(["-q", "-i", str(src), "-s", "2", "-o", str(tmp_path / "l.dcm"), "--device", "cpu"]) == 0
    remote, here = pydicom.dcmread(tmp_path / "r.dcm"), pydicom.dcmread(tmp_path / "l.dcm")
    assert local.model_id in remote.DerivationDescription
    assert remote.DerivationDescription == here.DerivationDescription
    assert np.array_equal(remote.pixel_array, here.pixel_array)


def test_unreachable_server_is_one_line_exit_2_nothing_written(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    from metasr.runtime.cli import main as run_main
    from metasr.video.cli import main as stream_main

    (closed,) = _free_ports(1)
    src = _png(tmp_path / "in.png")
    capfd.readouterr()
    assert run_main(["-i", str(src), "-s", "2", "--server", f"{HOST}:{closed}"]) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "metasr server" in err and "no connection" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]
    video = _video(tmp_path / "in.avi")
    out = tmp_path / "out.avi"
    assert stream_main(["-i", str(video), "-s", "2", "-o", str(out), "--server", f"{HOST}:{closed}"]) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no connection" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.avi", "in.png"]


def _video(path: Path, n: int = 6) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    for i in range(n):
        yy, xx = np.mgrid[0:24, 0:32]
        frame = ((np.sin((xx + i) / 3.0) + 1) * 120).astype(np.uint8)
        writer.write(cv2.merge([frame, frame // 2, 255 - frame]))
    writer.release()
    return path


def test_metasr_stream_server_equals_local_run(server: Server, tmp_path: Path) -> None:
    import cv2

    from metasr.video.cli import main as stream_main

    video = _video(tmp_path / "in.avi")
    common = ["-q", "-i", str(video), "-s", "2", "--codec", "MJPG", "--batch", "3"]
    assert stream_main([*common, "-o", str(tmp_path / "remote.avi"), "--server", server.address]) == 0
    assert stream_main([*common, "-o", str(tmp_path / "local.avi"), "--device", "cpu"]) == 0

    def frames(p: Path) -> list[np.ndarray]:
        cap, out = cv2.VideoCapture(str(p)), []
        ok, f = cap.read()
        while ok:
            out.append(f)
            ok, f = cap.read()
        cap.release()
        return out

    remote, here = frames(tmp_path / "remote.avi"), frames(tmp_path / "local.avi")
    assert len(remote) == len(here) == 6
    assert all(np.array_equal(a, b) for a, b in zip(remote, here))


# -- a server of its own: stopped under load, restarted, lost during a folder run ------------


def test_sigterm_under_load_finishes_in_flight_then_restarts(tmp_path: Path) -> None:
    from metasr.serve.cli import main as serve_main

    repo = tmp_path / "repo"
    assert serve_main(["-q", "--write-repository", str(repo), "--threads", "1"]) == 0
    ports = _free_ports(3)
    srv = start_server("--model-repository", str(repo), ports=ports)  # the repository as a stock Triton loads it
    remote = RemoteUpscaler(srv.address)
    image = _rng_image(4, 128, 128, seed=5)  # a few hundred ms per request on one thread
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(remote.upscale, image[i], "4") for i in range(4)]
        time.sleep(0.5)  # all four are in Triton's queue or running
        srv.process.send_signal(signal.SIGTERM)
        results = [f.result(timeout=120) for f in futures]
    assert [r.shape for r in results] == [(512, 512)] * 4
    assert srv.process.wait(timeout=90) == 0
    assert any("stopping" in line for line in srv.lines())
    with pytest.raises(MetaSRError, match="no connection|lost"):
        remote.upscale(image[0], "2")
    again = start_server("--model-repository", str(repo), ports=ports)
    try:
        assert RemoteUpscaler(again.address).upscale(image[0, :16, :16], "2").shape == (32, 32)
    finally:
        assert again.stop() == 0


def test_server_lost_during_a_folder_run_gives_every_file_a_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    from metasr.runtime.cli import main as run_main

    folder = tmp_path / "study"
    folder.mkdir()
    for i in range(4):
        _png(folder / f"im{i}.png", 20 + i, 18)
    srv = start_server()
    real = RemoteUpscaler.upscale
    calls = []

    def upscale_then_lose(self: RemoteUpscaler, image: np.ndarray, scale: object) -> np.ndarray:
        out = real(self, image, scale)
        calls.append(1)
        if len(calls) == 2:
            assert srv.stop() == 0  # the server goes away after the second file
        return out

    monkeypatch.setattr(RemoteUpscaler, "upscale", upscale_then_lose)
    report = tmp_path / "run.json"
    out = tmp_path / "out"
    capfd.readouterr()
    code = run_main(["-i", str(folder), "-s", "2", "-o", str(out), "--report", str(report), "--server", srv.address])
    err = capfd.readouterr().err
    assert code == 2, err
    rows = json.loads(report.read_text())
    rows = rows["files"] if isinstance(rows, dict) else rows
    assert [r["status"] for r in rows] == ["written", "written", "failed", "failed"], rows
    assert all("metasr server" in r["reason"] for r in rows[2:])
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["im0_sr2.png", "im1_sr2.png"]


def test_a_killed_metasr_serve_leaves_no_triton_behind() -> None:
    srv = start_server()
    children = [
        int(entry) for entry in os.listdir("/proc") if entry.isdigit() and _parent_of(int(entry)) == srv.process.pid
    ]
    assert children, "no Triton process under metasr-serve"
    srv.process.kill()
    srv.process.wait(timeout=30)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(_alive(pid) for pid in children):
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in children), "Triton outlived a killed metasr-serve"


def _parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_numpy_2_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(np, "__version__", "2.1.0")
    with pytest.raises(DependencyError, match="numpy 1.x"):
        find_triton()


def test_server_lost_mid_stream_is_one_line_and_no_output(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    from metasr.core.errors import ServerError
    from metasr.video.cli import main as stream_main

    real = RemoteUpscaler.upscale
    calls = []

    def lost_at_third(self: RemoteUpscaler, image: np.ndarray, scale: object) -> np.ndarray:
        calls.append(1)
        if len(calls) >= 3:
            raise ServerError(f"lost the metasr server at {self.address}: no connection")
        return real(self, image, scale)

    monkeypatch.setattr(RemoteUpscaler, "upscale", lost_at_third)
    video = _video(tmp_path / "in.avi")
    capfd.readouterr()
    assert stream_main(["-i", str(video), "-s", "2", "-o", str(tmp_path / "out.avi"), "--server", server.address]) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("metasr-stream: error: lost the metasr server"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.avi"]


def test_a_port_in_use_is_one_line_exit_2(server: Server) -> None:
    http, metrics = _free_ports(2)
    cmd = [sys.executable, "-m", "metasr.serve.cli", "--host", HOST, "--http-port", str(http), "--threads", "1"]
    cmd += ["--grpc-port", str(server.grpc), "--metrics-port", str(metrics)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert run.returncode == 2
    err = run.stderr.strip()
    assert len(err.splitlines()) == 1 and "already in use" in err, err
