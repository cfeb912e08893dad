"""metasr-stream never loses or corrupts data: SIGTERM, a full disk, native noise, flat memory, CLI habits."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from _stream_data import FakeCapture, ResizeUpscaler, moving_shapes, read_video, write_video

from metasr.core.choices import Device
from metasr.core.devicespec import DeviceSpec, parse_device_spec
from metasr.core.errors import InputError
from metasr.core.jsonio import jsonable
from metasr.video import EndReason, StreamTerminated, VideoFileWriter, VideoSource, VideoStream, run_stream
from metasr.video.cli import main


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from metasr.video.cli import main; sys.exit(main(sys.argv[1:]))", *args]


def _child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}


# -- SIGTERM ------------------------------------------------------------------------------------


def test_sigterm_finalises_output_writes_summary_exit_143(tmp_path, tiny_export_dir):
    src = write_video(tmp_path / "in.avi", moving_shapes(80, 20, 24, color=True), fps=20.0)
    out, stats = tmp_path / "out.avi", tmp_path / "s.json"
    before = src.read_bytes()
    args = ["-i", str(src), "-s", "2", "-o", str(out), "--stats", str(stats), "--max-fps", "20"]
    proc = subprocess.Popen(
        _cli(*args, "--model", str(tiny_export_dir)), stderr=subprocess.PIPE, text=True, env=_child_env()
    )
    partial = tmp_path / f".out.partial-{proc.pid}.avi"
    deadline = time.monotonic() + 60
    while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert partial.exists(), "the stream never started writing"
    time.sleep(0.5)  # a few frames in, well before the 4 s the paced file lasts
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    frames, fps = read_video(out)
    assert 0 < len(frames) < 80 and fps == pytest.approx(20.0)
    summary = json.loads(stats.read_text())
    assert summary["end_reason"] == "terminated" and summary["writer"]["frames_written"] == len(frames)
    assert "terminated (SIGTERM)" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.avi", "out.avi", "s.json"]
    assert src.read_bytes() == before


def test_stream_terminated_is_recorded_as_terminated(tmp_path):
    def on_frame(frame):
        if frame.index == 3:
            raise StreamTerminated

    summary = run_stream(
        VideoSource(FakeCapture(moving_shapes(30, 20, 24, color=False))),
        ResizeUpscaler(),
        "2",
        output=tmp_path / "o.avi",
        on_frame=on_frame,
    )
    assert summary.end_reason is EndReason.TERMINATED and summary.end_detail == "terminated (SIGTERM)"
    assert len(read_video(tmp_path / "o.avi")[0]) == summary.writer["frames_written"] >= 4


# -- a full disk ----------------------------------------------------------------------------------


def _limit_file_size() -> None:  # runs in the child: writes beyond 64 KiB fail (EFBIG), as on a full disk
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def test_full_disk_is_an_error_one_line_nothing_kept(tmp_path, tiny_export_dir):
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(40)]  # incompressible
    src = write_video(tmp_path / "in.avi", noise, fps=10.0)
    assert src.stat().st_size < 64 * 1024 * 4
    args = ["-i", str(src), "-s", "2", "-o", str(tmp_path / "out.avi"), "--stats", str(tmp_path / "s.json")]
    result = subprocess.run(
        _cli(*args, "--model", str(tiny_export_dir)),
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size,
        env=_child_env(),
        timeout=120,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("metasr-stream: error: writing"), result.stderr
    assert "of 40 frames" in lines[0] or "no readable video" in lines[0]
    assert "disk full" in lines[0] and "Failed to write" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.avi"], "no output, no partial file, no summary"


def test_writer_refuses_a_file_missing_frames(tmp_path, monkeypatch):
    writer = VideoFileWriter(tmp_path / "o.avi", 10.0)
    for _ in range(5):
        writer.write(np.zeros((20, 24), np.uint8))
    monkeypatch.setattr(writer, "frames_in_file", lambda: 3)
    with pytest.raises(Exception, match="only 3 of 5 frames"):
        writer.close()
    assert not list(tmp_path.iterdir())


# -- native noise -----------------------------------------------------------------------------------


def test_ffmpeg_noise_never_reaches_stderr(tmp_path, tiny_export_dir):
    """A video with corrupt frames between good ones: FFmpeg complains, the user sees the summary only."""
    src = write_video(tmp_path / "in.avi", moving_shapes(6, 20, 24, color=True))
    data = bytearray(src.read_bytes())
    pos, end, n = data.index(b"movi") + 4, data.rindex(b"idx1"), 0
    while pos < end:
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if data[pos + 2 : pos + 4] == b"dc":
            n += 1
            if n in (2, 4):
                data[pos + 8 + size // 2 : pos + 8 + size] = bytes(size - size // 2)
        pos += 8 + size + (size & 1)
    src.write_bytes(bytes(data))
    result = subprocess.run(
        _cli("-i", str(src), "-s", "2", "-o", str(tmp_path / "o.avi"), "--model", str(tiny_export_dir)),
        capture_output=True,
        text=True,
        env=_child_env(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert all(line.startswith("metasr-stream: ") for line in result.stderr.strip().splitlines()), result.stderr


# -- flat memory, overlap ----------------------------------------------------------------------------


def test_memory_stays_flat_over_a_long_stream():
    frames = moving_shapes(8, 32, 40, color=True)
    cap = FakeCapture([frames[i % 8] for i in range(600)])
    marks = {}
    tracemalloc.start()
    try:
        with VideoStream(VideoSource(cap), ResizeUpscaler(), "2", batch=2) as stream:
            for frame in stream:
                if frame.index in (100, 599):
                    marks[frame.index] = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert set(marks) == {100, 599}
    assert marks[599] - marks[100] < 256 * 1024, marks  # 500 more frames of 80x64 BGR would be ~7.7 MB


def test_encoding_runs_beside_the_consumer(tmp_path, monkeypatch):
    threads = set()
    original = VideoFileWriter.write

    def spy(self, image):
        threads.add(threading.current_thread().name)
        return original(self, image)

    monkeypatch.setattr(VideoFileWriter, "write", spy)
    summary = run_stream(
        VideoSource(FakeCapture(moving_shapes(6, 20, 24, color=True))), ResizeUpscaler(), "2", output=tmp_path / "o.avi"
    )
    assert threads == {"metasr-encode"} and summary.writer["frames_written"] == 6


# -- CLI habits ------------------------------------------------------------------------------------


def test_version_quiet_and_short_options(tmp_path, tiny_export_dir, capfd):
    assert main(["--version"]) == 0
    out, err = capfd.readouterr()
    assert out.startswith("metasr-stream ") and err == ""
    src = write_video(tmp_path / "in.avi", moving_shapes(4, 20, 24, color=False))
    rc = main(["-q", "-i", str(src), "-s", "2", "-o", str(tmp_path / "o.avi"), "--model", str(tiny_export_dir)])
    out, err = capfd.readouterr()
    assert rc == 0 and out == "" and err == ""
    assert len(read_video(tmp_path / "o.avi")[0]) == 4


def test_normal_run_off_a_terminal_has_no_carriage_returns(tmp_path, tiny_export_dir, capfd):
    src = write_video(tmp_path / "in.avi", moving_shapes(4, 20, 24, color=True))
    rc = main(["-v", "-i", str(src), "-s", "2", "-o", str(tmp_path / "o.avi"), "--model", str(tiny_export_dir)])
    err = capfd.readouterr().err
    assert rc == 0 and "\r" not in err
    lines = err.strip().splitlines()
    assert all(line.startswith("metasr-stream: ") and not line.startswith("metasr-stream: metasr:") for line in lines)
    assert any("wrote" in line and "48x40" in line for line in lines), err  # W x H


def test_device_gpu_is_parsed_like_metasr_run(tmp_path, tiny_export_dir, capfd):
    src = write_video(tmp_path / "in.avi", moving_shapes(2, 20, 24, color=True))
    rc = main(["-i", str(src), "-s", "2", "--device", "GPU", "--model", str(tiny_export_dir)])
    err = capfd.readouterr().err
    assert "unknown device" not in err and "invalid choice" not in err.lower()
    if rc == 2:  # no usable GPU here: one line about CUDA, as metasr-run says it
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "cuda" in lines[0].lower(), err
    else:
        assert rc == 0, err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cuda", DeviceSpec(Device.CUDA)),
        ("gpu:1", DeviceSpec(Device.CUDA, 1)),
        ("CUDA:0", DeviceSpec(Device.CUDA, 0)),
        ("trt:2", DeviceSpec(Device.TENSORRT, 2)),
        ("cpu", DeviceSpec(Device.CPU)),
    ],
)
def test_device_spec_parsing(text, expected):
    assert parse_device_spec(text) == expected


@pytest.mark.parametrize("text", ["cuda:", "cuda:-1", "cuda:x", "cpu:0", "auto:1", "cuda:1:2", "npu"])
def test_device_spec_refusals(text):
    with pytest.raises(InputError):
        parse_device_spec(text)


def test_jsonable_makes_standard_json():
    data = jsonable({"a": (1, np.float32(2.5)), "e": EndReason.STOPPED, 3: float("nan"), "p": Path("x")})
    assert data == {"a": [1, 2.5], "e": "stopped", "3": None, "p": "x"}
    json.dumps(data, allow_nan=False)


def test_opencv_errors_while_reading_become_input_errors(tmp_path):
    import cv2

    cap = FakeCapture(moving_shapes(6, 20, 24, color=True), raise_at=(3, cv2.error("decoder exploded")))
    with pytest.raises(InputError, match="reading <capture> failed in OpenCV: decoder exploded"):
        run_stream(VideoSource(cap), ResizeUpscaler(), "2", output=tmp_path / "o.avi")
    assert not list(tmp_path.iterdir()), "nothing kept after a failed run"


@pytest.mark.parametrize(
    ("scale", "size", "tolerance"), [("2", (40, 52), 0), ("9/5", (40, 50), 1), ("1.7", (38, 50), 0)]
)
def test_chroma_is_resampled_on_the_network_grid(scale, size, tolerance):
    from fractions import Fraction

    from metasr.core.resample import resize_on_grid
    from metasr.core.scale import Scale
    from metasr.video.colour import resample_chroma

    rng = np.random.default_rng(1)
    chroma = rng.integers(0, 256, (*size, 2), dtype=np.uint8)
    out = Scale.parse(scale).output_size(*size)
    got = resample_chroma(chroma, *out, Fraction(scale))
    want = resize_on_grid(chroma, *out, Fraction(scale))
    assert got.shape == want.shape == (*out, 2)
    assert np.abs(got.astype(int) - want).max() <= tolerance
