"""metasr.serve without a running server: request handling, repositories, their config.pbtxt."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from metasr.core.errors import InputError, MetaSRError, ModelError, OutputError
from metasr.core.manifest import read_manifest
from metasr.models import default_model_dir
from metasr.runtime.remote import parse_server_address
from metasr.serve import RepositoryOptions, model_config_text, write_repository
from metasr.serve.backend import RequestHandler, check_request
from metasr.serve.cli import main


class _Doubler:
    """A stand-in upscaler: nearest-neighbour x2 for integer scales, and a record of the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, ...], object]] = []

    def upscale(self, batch: np.ndarray, scale: object) -> np.ndarray:
        self.calls.append((batch.shape, scale))
        r = int(scale)
        return batch.repeat(r, axis=1).repeat(r, axis=2)


def _img(n: int, h: int, w: int, value: float = 0.5) -> np.ndarray:
    return np.full((n, h, w), value, dtype=np.float32)


def _text(s: str, n: int = 1) -> np.ndarray:
    return np.full((n, 1), s.encode(), dtype=object)


def test_handler_batches_same_scale_and_size_and_isolates_bad_requests() -> None:
    up = _Doubler()
    requests = [
        (_img(1, 4, 5, 0.1), _text("2")),
        (_img(2, 4, 5, 0.2), _text("2", 2)),
        (_img(1, 4, 5), _text("abc")),  # bad scale text
        (_img(1, 6, 5, 0.3), _text("2")),  # another size: its own run
        (np.full((1, 4, 5), np.nan, np.float32), _text("2")),
        (_img(1, 4, 5, 0.4), _text("3")),  # another scale: its own run
    ]
    results = RequestHandler(up).handle(requests)
    assert [type(r).__name__ for r in results] == [
        "ndarray",
        "ndarray",
        "ScaleError",
        "ndarray",
        "InputError",
        "ndarray",
    ]
    assert sorted(shape for shape, _ in up.calls) == [(1, 4, 5), (1, 6, 5), (3, 4, 5)]
    assert results[0].shape == (1, 8, 10) and np.all(results[0] == np.float32(0.1))
    assert results[1].shape == (2, 8, 10) and np.all(results[1] == np.float32(0.2))
    assert results[5].shape == (1, 12, 15)


@pytest.mark.parametrize(
    ("image", "scale", "message"),
    [
        (np.zeros((1, 4, 4), np.float64), "2", "FP32"),
        (np.zeros((4, 4), np.float32), "2", "[N, h, w]"),
        (np.zeros((1, 1, 4, 4), np.float32), "2", "[N, h, w]"),
        (np.zeros((1, 0, 4), np.float32), "2", "too small"),
        (np.zeros((1, 1, 1), np.float32), "2", "too small"),
        (np.zeros((1, 2, 9000), np.float32), "2", "larger than"),
        (np.full((1, 4, 4), np.inf, np.float32), "2", "NaN or infinite"),
        (np.full((1, 4, 4), 2.0, np.float32), "2", "[0, 1]"),
        (np.zeros((1, 4, 4), np.float32), "9", "between 1 and 8"),
        (np.zeros((1, 4, 4), np.float32), "2.0000000001", "nearest"),
        (np.zeros((1, 4, 4), np.float32), "1e999", "between 1 and 8"),
        (np.zeros((1, 4, 4), np.float32), "x" * 100, "too long"),
        (np.zeros((1, 4, 4), np.float32), "\u00e9", "ASCII"),
    ],
)
def test_check_request_refuses(image: np.ndarray, scale: str, message: str) -> None:
    raw = np.array([[scale.encode("utf-8")]], dtype=object)
    with pytest.raises(MetaSRError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_request(image, raw)


def test_check_request_refuses_before_allocating_a_huge_output(monkeypatch: pytest.MonkeyPatch) -> None:
    # A view with a huge shape but no memory behind it: refused by size before any pixel is read.
    huge = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape=(8, 8000, 8000), strides=(0, 0, 0))
    with pytest.raises(InputError, match="more than"):
        check_request(huge, np.array([[b"4"]], dtype=object))
    with pytest.raises(InputError, match="one scale"):
        check_request(np.zeros((2, 4, 4), np.float32), np.array([[b"2"], [b"3"]], dtype=object))


@pytest.mark.parametrize("text", ["127.0.0.1:8001", "localhost:1", "[::1]:8001", "server.example:65535"])
def test_server_address_accepts(text: str) -> None:
    assert parse_server_address(text) == text


@pytest.mark.parametrize("text", ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "http://x:1", "a b:1", ":80", ""])
def test_server_address_refuses(text: str) -> None:
    with pytest.raises(InputError, match="HOST:PORT"):
        parse_server_address(text)


def _model_config_pb2():
    pytest.importorskip("tritonclient.grpc", reason="validating config.pbtxt needs tritonclient (extra [client])")
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def _parse_config(text: str):
    from google.protobuf import text_format

    pb2 = _model_config_pb2()
    return text_format.Parse(text, pb2.ModelConfig())


@pytest.mark.parametrize(
    "options",
    [
        RepositoryOptions(),
        RepositoryOptions(device="cuda:1", precision="tf32", instances=2, threads=4, queue_delay_us=500),
        RepositoryOptions(device="tensorrt", precision="fp16", instances=3),
        RepositoryOptions(device="auto"),  # metasr-export --triton's default
    ],
)
def test_config_pbtxt_is_a_valid_triton_model_config(options: RepositoryOptions) -> None:
    manifest = read_manifest(default_model_dir(), verify=False)
    config = _parse_config(model_config_text(manifest, "ab" * 32, "metasrgan-mri", options))
    pb2 = _model_config_pb2()
    assert config.name == "metasr" and config.backend == "python" and config.max_batch_size == 8
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("image", pb2.TYPE_FP32, [-1, -1]),
        ("scale", pb2.TYPE_STRING, [1]),
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [("sr", pb2.TYPE_FP32, [-1, -1])]
    assert config.dynamic_batching.max_queue_delay_microseconds == options.queue_delay_us
    (group,) = config.instance_group
    assert group.count == options.instances
    gpu = options.device not in ("cpu", "auto")
    kinds = pb2.ModelInstanceGroup
    want = kinds.KIND_AUTO if options.device == "auto" else (kinds.KIND_GPU if gpu else kinds.KIND_CPU)
    assert group.kind == want
    assert list(group.gpus) == ([int(options.device.partition(":")[2] or 0)] if gpu else [])
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["model_id"] == "ab" * 32 and params["precision"] == options.precision
    assert (float(params["scale_min"]), float(params["scale_max"])) == (1.1, 4.0)


def test_write_repository_is_self_contained_and_valid(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "repo"
    assert main(["--write-repository", str(dest), "--instances", "2", "--threads", "1"]) == 0
    assert capfd.readouterr().out.strip() == str(dest)
    config = _parse_config((dest / "metasr" / "config.pbtxt").read_text())
    assert config.instance_group[0].count == 2
    version = dest / "metasr" / "1"
    assert (version / "model.py").read_text().startswith('"""The Triton Python-backend model of metasr')
    copied = read_manifest(version / "export", verify=True)  # every hash checked
    from metasr.runtime import Upscaler

    assert config.parameters["model_id"].string_value == Upscaler.id_of(copied)
    from metasr.serve.repository import describe_repository

    line = describe_repository(dest)
    assert line.startswith(f"model metasrgan-mri ({Upscaler.id_of(copied)[:12]}) from repository {dest}, ")
    assert line.endswith("; 2 instances")
    # never into a folder that holds something
    assert main(["--write-repository", str(dest)]) == 2
    assert "not an empty folder" in capfd.readouterr().err


def test_write_repository_refuses_a_damaged_export(tmp_path: Path) -> None:
    bad = tmp_path / "export"
    bad.mkdir()
    (bad / "manifest.json").write_text("{}")
    with pytest.raises(ModelError):
        write_repository(tmp_path / "repo", bad)
    assert not (tmp_path / "repo").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError):
        write_repository(tmp_path / "file")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--instances", "0"], "instances"),
        (["--http-port", "99999"], "port"),
        (["--http-port", "8001"], "must differ"),
        (["--device", "gpu7x"], "device"),
        (["--precision", "fp8"], "precision"),
        (["--host", "a b"], "--host"),
        (["--model", "/nonexistent/export", "--write-repository", "/nonexistent/repo"], "does not exist"),
        (["--model-repository", "/nonexistent", "--model", "x"], "exclude|no --model"),
    ],
)
def test_bad_options_are_one_line_exit_2(args: list[str], message: str, capfd: pytest.CaptureFixture[str]) -> None:
    capfd.readouterr()
    assert main(args) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("metasr-serve: error:"), err
    assert re.search(message, err, flags=re.IGNORECASE), err


def test_server_option_without_tritonclient_is_one_line(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    if importlib.util.find_spec("tritonclient") is not None:
        pytest.skip("tritonclient is installed here")
    import cv2

    from metasr.runtime.cli import main as run_main

    src = tmp_path / "in.png"
    cv2.imwrite(str(src), np.full((8, 8), 100, np.uint8))
    capfd.readouterr()
    assert run_main(["-i", str(src), "-s", "2", "--server", "127.0.0.1:8001"]) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'pip install "metasr[client]"' in err, err
    assert [p.name for p in tmp_path.iterdir()] == ["in.png"]
