"""metasr-stream end to end, in-process: files, URLs, a lost live source, Ctrl-C, one-line errors."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from _stream_data import FakeCapture, luminance, moving_shapes, read_video, write_video

from metasr.core.errors import InputError
from metasr.video import SourceKind, VideoSource, open_source
from metasr.video.cli import EXIT_SOURCE_LOST, main


@pytest.fixture(scope="module")
def export_dir(tiny_export_dir) -> Path:
    return Path(tiny_export_dir)


@pytest.fixture(scope="module")
def upscaler(export_dir):
    from metasr.runtime.upscaler import Upscaler

    return Upscaler(export_dir, device="cpu", threads=1)


def test_cli_writes_video_with_source_fps_and_stats(tmp_path, export_dir, upscaler, capsys):
    src = write_video(tmp_path / "in.avi", moving_shapes(12, 38, 50, color=True), fps=15.0)
    out, stats = tmp_path / "out.avi", tmp_path / "stats.json"
    rc = main(
        [
            "--input",
            str(src),
            "--scale",
            "2",
            "--output",
            str(out),
            "--model",
            str(export_dir),
            "--device",
            "cpu",
            "--batch",
            "2",
            "--stats",
            str(stats),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0, err
    frames, fps = read_video(out)
    assert len(frames) == 12 and fps == pytest.approx(15.0)
    assert frames[0].shape == (76, 100, 3)
    summary = json.loads(stats.read_text())
    assert summary["frames_out"] == 12 and summary["end_reason"] == "end_of_file"
    assert summary["codec"] == "MJPG" and summary["output_size"] == [100, 76]  # W, H
    assert "MJPG" in err and "100x76)" in err and "12 frames in, 12 out" in err
    assert "metasr-stream: metasr:" not in err, "one program name per line"
    # Content: the written (lossy MJPG) frames are close to the SR of the input's luminance.
    decoded, _ = read_video(src)
    expected = np.clip(np.rint(upscaler.upscale(luminance(decoded[5]), "2") * 255), 0, 255)
    assert np.abs(luminance(frames[5]) * 255 - expected).mean() < 4.0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_unopenable_sources_fail_with_one_line(tmp_path, capsys):
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(os.urandom(2000))
    for source in (str(tmp_path / "missing.mp4"), str(garbage), str(tmp_path)):
        # The model does not exist either: the source is checked first, before any model loads.
        rc = main(
            [
                "--input",
                source,
                "--scale",
                "2",
                "--output",
                str(tmp_path / "o.avi"),
                "--model",
                str(tmp_path / "nomodel"),
            ]
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2
        assert len(err) == 1 and err[0].startswith("metasr-stream: error:") and "nomodel" not in err[0]
    assert not (tmp_path / "o.avi").exists()
    with pytest.raises(InputError, match="missing.mp4"):
        open_source(tmp_path / "missing.mp4")
    with pytest.raises(InputError, match="camera 63"):
        open_source("63")


def test_cli_unwritable_output_exit_2(tmp_path, capsys, export_dir):
    src = write_video(tmp_path / "in.avi", moving_shapes(3, 20, 24, color=True))
    for output in (tmp_path / "nope" / "o.avi", tmp_path / "o.txt"):
        rc = main(["--input", str(src), "--scale", "2", "--output", str(output), "--model", str(export_dir)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and str(output) in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.avi"]


def test_live_source_lost_finalises_output_and_exits_3(tmp_path, capsys, monkeypatch, export_dir):
    frames = moving_shapes(5, 20, 24, color=True)
    # 20 fps: slower than the tiny model, so normally no drop; the check below allows for a busy CPU.
    fake = VideoSource(FakeCapture(frames, fps=10.0, delay_s=0.05), SourceKind.URL, "rtsp://***@camera/stream")
    monkeypatch.setattr("metasr.video.sources.open_source", lambda spec, **kw: fake)
    out = tmp_path / "live.avi"
    rc = main(
        [
            "--input",
            "rtsp://user:pw@camera/stream",
            "--scale",
            "2",
            "--output",
            str(out),
            "--model",
            str(export_dir),
            "--lost-timeout",
            "0.2",
            "--stats",
            "-",
        ]
    )
    captured = capsys.readouterr()
    assert rc == EXIT_SOURCE_LOST
    assert "source lost" in captured.err and "delivered no frame" in captured.err
    summary = json.loads(captured.out)
    assert summary["end_reason"] == "source_lost"
    assert summary["frames_out"] + summary["dropped"] == 5 and summary["frames_out"] >= 1
    frames_out, fps = read_video(out)
    assert len(frames_out) == summary["frames_out"] and fps == pytest.approx(10.0)


def test_http_url_source_through_ffmpeg(tmp_path, capsys, export_dir):
    """A real URL source (HTTP, read by OpenCV/FFmpeg): live policy, then 'source lost' when it ends."""
    import functools

    write_video(tmp_path / "clip.avi", moving_shapes(12, 24, 32, color=True), fps=15.0)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/clip.avi"
        out = tmp_path / "out.avi"
        rc = main(["--input", url, "--scale", "2", "--output", str(out), "--model", str(export_dir),
                   "--lost-timeout", "0.5", "--stats", str(tmp_path / "s.json")])  # fmt: skip
    finally:
        server.shutdown()
    assert rc == EXIT_SOURCE_LOST, capsys.readouterr().err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["source_kind"] == "url" and summary["source_fps"] == pytest.approx(15.0)
    assert summary["frames_in"] == summary["frames_out"] + summary["dropped"] == 12
    written, fps = read_video(out)
    assert len(written) == summary["frames_out"] >= 1 and fps == pytest.approx(15.0)
    assert written[0].shape == (48, 64, 3)


def test_cli_ctrl_c_exit_130_and_playable_output(tmp_path, export_dir, capsys):
    src = write_video(tmp_path / "in.avi", moving_shapes(200, 20, 24, color=True), fps=20.0)
    out = tmp_path / "out.avi"
    timer = threading.Timer(1.5, signal.raise_signal, args=(signal.SIGINT,))
    try:
        timer.start()
        # --max-fps paces the file to 10 s, so the signal lands mid-stream even on a busy machine.
        rc = main(
            [
                "--input",
                str(src),
                "--scale",
                "2",
                "--output",
                str(out),
                "--model",
                str(export_dir),
                "--max-fps",
                "20",
                "--stats",
                str(tmp_path / "s.json"),
            ]
        )
    except KeyboardInterrupt:  # pragma: no cover - would mean Ctrl-C escaped the command
        pytest.fail("KeyboardInterrupt escaped metasr-stream")
    finally:
        timer.join()
    assert rc == 130, capsys.readouterr().err
    written, fps = read_video(out)
    assert 0 < len(written) < 200 and fps == pytest.approx(20.0)
    assert json.loads((tmp_path / "s.json").read_text())["end_reason"] == "interrupted"


def test_streaming_modules_are_torch_free():
    code = "import sys, metasr.video, metasr.video.cli, metasr.video.run; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
