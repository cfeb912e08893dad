"""Issue 21: H.264/FFV1 through PyAV, audio copied, grey and 16-bit kept, crop, clips, deinterlace, display.

Outputs are checked as a video tool sees them: codec, pixel format, frame count (demuxed),
frame rate and audio streams, through FFmpeg's own probe (PyAV; ``ffprobe`` too where installed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from _stream_data import FakeCapture, ResizeUpscaler, moving_shapes

from metasr.core.errors import InputError, OutputError
from metasr.video import EndReason, SourceKind, VideoSource, VideoStream, open_source, run_stream
from metasr.video.clip import parse_time
from metasr.video.crop import CropRegion, detect_field_of_view, parse_crop
from metasr.video.deinterlace import deinterlace
from metasr.video.display import display_problem

av = pytest.importorskip("av", reason="PyAV (a runtime dependency) is needed for H.264/FFV1 and audio")

ROOT = Path(__file__).resolve().parents[1]


def probe(path: Path) -> dict:
    """What FFmpeg reports: video codec, pixel format, demuxed frame count, fps; audio codecs and span."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = {
            "codec": v.codec_context.name,
            "pix_fmt": v.codec_context.pix_fmt,
            "fps": float(v.average_rate),
            "audio": [a.codec_context.name for a in c.streams.audio],
        }
        frames, audio_t = 0, []
        for packet in c.demux():
            if packet.size == 0:
                continue
            if packet.stream.type == "video":
                frames += 1
            elif packet.pts is not None:
                audio_t.append((float(packet.pts * packet.time_base), float(packet.duration * packet.time_base)))
        info["frames"] = frames
        if audio_t:
            info["audio_start"], info["audio_end"] = audio_t[0][0], audio_t[-1][0] + audio_t[-1][1]
    return info


def decode(path: Path, fmt: str = "bgr24") -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format=fmt) for f in c.decode(video=0)]


def write_av(path: Path, frames: list[np.ndarray], fps: int, codec: str, pix_fmt: str, fmt: str, audio=None) -> Path:
    """A test video through PyAV; ``audio``: (codec, seconds) of a 440 Hz tone, mono 48 kHz."""
    with av.open(str(path), "w") as out:
        v = out.add_stream(codec, rate=fps)
        v.height, v.width = frames[0].shape[:2]
        v.pix_fmt = pix_fmt
        a = out.add_stream(audio[0], rate=48000, layout="mono") if audio else None
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format=fmt)
            vf.pts = i
            out.mux(v.encode(vf))
        out.mux(v.encode(None))
        if a is not None:
            fmt_a = {"aac": "fltp", "pcm_s16le": "s16", "pcm_u8": "u8"}[audio[0]]
            for start in range(0, int(audio[1] * 48000), 1024):
                tone = np.sin(2 * np.pi * 440 * (np.arange(1024) + start) / 48000)[None] * 0.3
                data = {
                    "fltp": tone.astype(np.float32), "s16": (tone * 32767).astype(np.int16),
                    "u8": (tone * 127 + 128).astype(np.uint8),
                }[fmt_a]  # fmt: skip
                af = av.AudioFrame.from_ndarray(data, format=fmt_a, layout="mono")
                af.sample_rate, af.pts = 48000, start
                out.mux(a.encode(af))
            out.mux(a.encode(None))
    return path


def colour_source(n: int = 6, fps: float = 10.0) -> VideoSource:
    return VideoSource(FakeCapture(moving_shapes(n, 30, 40, color=True), fps=fps))


# -- encoders -------------------------------------------------------------------------------


def test_mp4_default_is_h264_yuv420p_and_keeps_grey_levels(tmp_path):
    yielded = []
    s = run_stream(
        colour_source(), ResizeUpscaler(), "2", output=tmp_path / "o.mp4", on_frame=lambda f: yielded.append(f)
    )
    assert s.codec == "h264" and "libx264" in s.encoder and "PyAV" in s.encoder
    info = probe(tmp_path / "o.mp4")
    assert (info["codec"], info["pix_fmt"], info["frames"], info["fps"], info["audio"]) == (
        "h264",
        "yuv420p",
        6,
        10.0,
        [],
    )
    # The stored luma is the frame's BT.601 Y, rounded: no grey-level shift (mp4v through OpenCV: about -2).
    with av.open(str(tmp_path / "o.mp4")) as c:
        planes = [f.to_ndarray() for f in c.decode(video=0)]
    h = yielded[0].image.shape[0]
    shift = np.mean(
        [
            (p[:h].astype(float) - cv2.cvtColor(y.image, cv2.COLOR_BGR2YUV_I420)[:h]).mean()
            for p, y in zip(planes, yielded)
        ]
    )
    assert abs(shift) < 0.3, shift


@pytest.mark.parametrize(
    ("name", "codec", "pix_fmt"),
    [("o.mkv", None, "bgr0"), ("o.mp4", "h264-lossless", "gbrp"), ("o.avi", "ffv1", "bgr0")],
)
def test_lossless_options_hold_exactly_the_frames(tmp_path, name, codec, pix_fmt):
    yielded = []
    s = run_stream(
        colour_source(),
        ResizeUpscaler(),
        "2",
        output=tmp_path / name,
        codec=codec,
        on_frame=lambda f: yielded.append(f.image),
    )
    assert "lossless" in s.encoder
    info = probe(tmp_path / name)
    assert info["pix_fmt"] == pix_fmt and info["frames"] == 6 and info["fps"] == 10.0
    for got, want in zip(decode(tmp_path / name), yielded, strict=True):
        np.testing.assert_array_equal(got, want)


def test_grey_stays_grey_in_ffv1_and_h264(tmp_path):
    grey = VideoSource(FakeCapture(moving_shapes(5, 30, 40, color=False), fps=10.0))
    run_stream(grey, ResizeUpscaler(), "2", output=tmp_path / "g.mkv")
    assert probe(tmp_path / "g.mkv")["pix_fmt"] == "gray"
    grey = VideoSource(FakeCapture(moving_shapes(5, 30, 40, color=False), fps=10.0))
    run_stream(grey, ResizeUpscaler(), "2", output=tmp_path / "g.mp4")
    frame = decode(tmp_path / "g.mp4")[2]
    assert probe(tmp_path / "g.mp4")["pix_fmt"] == "yuv420p"
    assert np.array_equal(frame[:, :, 0], frame[:, :, 1]) and np.array_equal(frame[:, :, 1], frame[:, :, 2])


def test_16bit_grey_ffv1_stays_16bit(tmp_path):
    ramp = (np.arange(24 * 32, dtype=np.uint32).reshape(24, 32) * 85).astype(np.uint16)
    src = write_av(tmp_path / "in16.mkv", [ramp + i for i in range(4)], 10, "ffv1", "gray16le", "gray16le")
    yielded = []
    run_stream(src, ResizeUpscaler(), "2", output=tmp_path / "o16.mkv", on_frame=lambda f: yielded.append(f.image))
    assert yielded[0].dtype == np.uint16 and probe(tmp_path / "o16.mkv")["pix_fmt"] == "gray16le"
    got = decode(tmp_path / "o16.mkv", "gray16le")
    np.testing.assert_array_equal(got[1], yielded[1])
    assert len(np.unique(got[1])) > 1000, "16-bit precision was lost"


def test_unknown_codec_and_wrong_container_fail_up_front(tmp_path):
    with pytest.raises(OutputError, match="mkv"):
        run_stream(colour_source(), ResizeUpscaler(), "2", output=tmp_path / "o.mp4", codec="ffv1")
    with pytest.raises(OutputError, match="h264, h264-lossless, ffv1"):
        run_stream(colour_source(), ResizeUpscaler(), "2", output=tmp_path / "o.mp4", codec="h265x")
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe not installed (apt-get install ffmpeg)")
def test_ffprobe_agrees(tmp_path):
    run_stream(colour_source(), ResizeUpscaler(), "2", output=tmp_path / "o.mp4")
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_packets", "-show_streams", "-of", "json", str(tmp_path / "o.mp4")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    (stream,) = json.loads(out.stdout)["streams"]
    assert (stream["codec_name"], stream["pix_fmt"], stream["nb_read_packets"]) == ("h264", "yuv420p", "6")
    assert stream["avg_frame_rate"] == "10/1"


# -- audio ----------------------------------------------------------------------------------


def _av_source(tmp_path: Path, audio=("aac", 2.0), name: str = "in.mp4") -> Path:
    frames = moving_shapes(50, 32, 48, color=True)  # 2 s at 25 fps
    return write_av(tmp_path / name, frames, 25, "libx264", "yuv420p", "bgr24", audio=audio)


def test_audio_is_copied_cut_to_the_clip_and_aligned(tmp_path):
    src = _av_source(tmp_path)
    s = run_stream(src, ResizeUpscaler(), "2", output=tmp_path / "o.mp4", start_s=0.5, duration_s=1.0)
    info = probe(tmp_path / "o.mp4")
    assert info["frames"] == 25 and info["audio"] == ["aac"] and s.writer["audio"] == ["aac"]
    assert abs(info["audio_start"]) < 0.03 and abs(info["audio_end"] - 1.0) < 0.03, info  # one AAC packet: 21 ms
    assert s.end_reason is EndReason.LIMIT
    run_stream(src, ResizeUpscaler(), "2", output=tmp_path / "n.mp4", audio=False)
    assert probe(tmp_path / "n.mp4")["audio"] == []


def test_audio_a_container_cannot_hold_is_a_warning_not_a_loss_of_video(tmp_path):
    src = _av_source(tmp_path, audio=("pcm_u8", 2.0), name="in.mkv")
    s = run_stream(src, ResizeUpscaler(), "2", output=tmp_path / "o.mkv", max_frames=10)
    assert probe(tmp_path / "o.mkv")["audio"] == ["pcm_u8"]
    s = run_stream(src, ResizeUpscaler(), "2", output=tmp_path / "o.mp4", max_frames=10)
    assert probe(tmp_path / "o.mp4")["audio"] == [] and probe(tmp_path / "o.mp4")["frames"] == 10
    assert any("audio not copied" in w for w in s.warnings)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv", "o.mkv", "o.mp4"], "temporary files left"


# -- clips, deinterlace ---------------------------------------------------------------------


def _tagged_file(tmp_path: Path, n: int = 20) -> Path:
    frames = [np.full((16, 20), 10 * i, np.uint8) for i in range(n)]
    return write_av(tmp_path / "tagged.mkv", frames, 10, "ffv1", "gray", "gray")


@pytest.mark.parametrize(
    ("kwargs", "tags"),
    [
        ({"start_s": 0.5, "max_frames": 4}, [5, 6, 7, 8]),
        ({"start_s": 1.2, "duration_s": 0.3}, [12, 13, 14]),
        ({"duration_s": 0.2}, [0, 1]),
        ({"start_s": 1.8}, [18, 19]),
    ],
)
def test_clip_options_pick_exact_frames(tmp_path, kwargs, tags):
    out = []
    run_stream(_tagged_file(tmp_path), ResizeUpscaler(), "2", on_frame=lambda f: out.append(f), **kwargs)
    assert [round(float(np.median(f.image)) / 10) for f in out] == tags


def test_start_is_frame_accurate_in_h264_between_keyframes(tmp_path):
    frames = [np.full((16, 24, 3), 8 * i, np.uint8) for i in range(30)]
    with av.open(str(tmp_path / "gop.mp4"), "w") as out:
        v = out.add_stream("libx264", rate=10, options={"g": "12", "bf": "2", "crf": "10"})
        v.height, v.width, v.pix_fmt = 16, 24, "yuv420p"
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="bgr24")
            vf.pts = i
            out.mux(v.encode(vf))
        out.mux(v.encode(None))
    got = []
    run_stream(tmp_path / "gop.mp4", ResizeUpscaler(), "2", start_s=1.7, max_frames=3, on_frame=got.append)
    assert [round(float(np.median(f.image)) / 8) for f in got] == [17, 18, 19]


def test_clip_errors(tmp_path):
    with pytest.raises(InputError, match="past the end"):
        run_stream(_tagged_file(tmp_path), ResizeUpscaler(), "2", start_s=5.0)
    with pytest.raises(InputError, match="live source"):
        run_stream(VideoSource(FakeCapture([]), SourceKind.CAMERA), ResizeUpscaler(), "2", start_s=1.0)
    assert parse_time("--start", "1:02.5") == 62.5 and parse_time("--start", "01:00:00") == 3600.0
    for bad in ("-1", "1:-2", "abc", "1::2", "nan", "inf"):
        with pytest.raises(InputError, match="--start"):
            parse_time("--start", bad)


def test_live_duration_is_wall_clock():
    cap = FakeCapture([np.zeros((8, 8), np.uint8)] * 1000, delay_s=0.01)
    s = run_stream(VideoSource(cap, SourceKind.CAMERA), ResizeUpscaler(), "2", duration_s=0.3)
    assert s.end_reason is EndReason.LIMIT and 5 < cap.reads < 60


def test_deinterlace_removes_combing():
    frame = np.zeros((8, 6), np.uint8)
    frame[1::2] = 200  # the second field shows an object the first does not: a comb
    flat = deinterlace(frame)
    assert (flat == 0).all()
    ramp = np.repeat(np.arange(0, 80, 10, dtype=np.uint16)[:, None], 3, axis=1)
    np.testing.assert_array_equal(deinterlace(ramp)[:-1], ramp[:-1])  # smooth content is kept (but the last line)
    out = list(VideoStream(VideoSource(FakeCapture([frame] * 2)), ResizeUpscaler(), "2", deinterlace=True))
    assert out[0].image.max() == 0


# -- crop -----------------------------------------------------------------------------------


def scope_frames(n: int, h: int = 60, w: int = 90, r: int = 24, centre: tuple[int, int] = (50, 30)) -> list[np.ndarray]:
    """Endoscope-like frames: a textured disc (with a dark lumen) on black, offset from the centre."""
    rng = np.random.default_rng(1)
    frames = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        tex = rng.integers(60, 220, (h, w, 3), dtype=np.uint8)
        disc = np.zeros((h, w), np.uint8)
        cv2.circle(disc, centre, r, 255, -1)
        f[disc > 0] = tex[disc > 0]
        cv2.circle(f, (centre[0] + i % 3, centre[1]), r // 4, (0, 0, 0), -1)  # the lumen is dark
        frames.append(f)
    return frames


def test_crop_auto_finds_the_field_of_view_and_keeps_the_mask_black(tmp_path):
    frames = scope_frames(10)
    region = detect_field_of_view(frames[:8])
    # The disc spans x 26-74, y 6-54; its outermost tips (a pixel or two) may fall to the noise filter.
    assert np.abs(np.subtract((region.x, region.y, region.width, region.height), (26, 6, 49, 49))).max() <= 2
    # Overlay text in the border (a tower's clock, a name) is not part of the field of view.
    overlaid = [cv2.putText(f.copy(), "12:01", (0, 58), cv2.FONT_HERSHEY_PLAIN, 0.8, (255, 255, 255)) for f in frames]
    assert detect_field_of_view(overlaid[:8]).describe() == region.describe()
    yielded = []
    s = run_stream(
        VideoSource(FakeCapture(frames, fps=10.0)), ResizeUpscaler(), "2", output=tmp_path / "o.mkv",
        crop="auto", on_frame=lambda f: yielded.append(f.image),
    )  # fmt: skip
    size = (2 * region.height, 2 * region.width)
    assert s.stats["frames_out"] == 10 and yielded[0].shape == (*size, 3)
    yy, xx = np.mgrid[: size[0], : size[1]]
    r2 = (yy - 2 * (30.5 - region.y) + 0.5) ** 2 + (xx - 2 * (50.5 - region.x) + 0.5) ** 2  # from the disc's centre
    outside, inside = r2 > (2 * 24 + 1.5) ** 2, r2 < (2 * 24 - 3) ** 2
    for image in yielded:
        assert image[outside].max() == 0, "a halo outside the field of view"
        assert (image[inside].max(axis=-1) > 0).mean() > 0.85
    for got, want in zip(decode(tmp_path / "o.mkv"), yielded):
        np.testing.assert_array_equal(got, want)  # lossless: exactly black in the file
    # H.264 (crf 18) codes the black near the edge with the edge's blocks and their motion: exactly black
    # from 24 px (1.5 macroblocks) outside the field of view on; here with a field large enough to have such.
    big, kept = scope_frames(3, 130, 150, 60, (75, 65)), []
    run_stream(
        VideoSource(FakeCapture(big, fps=10.0)), ResizeUpscaler(), "2", output=tmp_path / "o.mp4", crop="auto",
        on_frame=lambda f: kept.append(f.image),
    )  # fmt: skip
    decoded = decode(tmp_path / "o.mp4")
    far = [cv2.distanceTransform((k.max(-1) == 0).astype(np.uint8), cv2.DIST_L2, 5) > 24 for k in kept]
    assert all(f.sum() > 1000 for f in far)
    assert max(int(d[f].max()) for d, f in zip(decoded, far)) == 0


def test_crop_auto_on_an_interlaced_source_sees_the_whole_field():
    combed = []
    for f in scope_frames(4):
        g = f.copy()
        g[1::2] = np.roll(f, 4, axis=1)[1::2]  # the second field, 4 px to the right: a combed edge
        combed.append(g)
    for deinterlaced in (True, False):
        source = VideoSource(FakeCapture(combed))
        stream = VideoStream(source, ResizeUpscaler(), "2", crop="auto", deinterlace=deinterlaced)
        out = list(stream)
        r = stream.cropper.region
        assert len(out) == 4 and abs(r.x - 26) <= 1 and abs(r.y - 6) <= 1, r.describe()
        assert abs(r.width - (49 if deinterlaced else 53)) <= 2, r.describe()  # without: the comb is kept


def test_crop_box_and_errors():
    assert parse_crop("auto") == "auto" and parse_crop(None) is None
    assert parse_crop("4,2,10,8") == CropRegion(4, 2, 10, 8)
    for bad in ("1,2,3", "a,b,c,d", "-1,0,4,4", "0,0,1,4"):
        with pytest.raises(InputError, match="--crop"):
            parse_crop(bad)
    frames = moving_shapes(3, 20, 24, color=True)
    out = list(VideoStream(VideoSource(FakeCapture(frames)), ResizeUpscaler(), "2", crop=CropRegion(4, 2, 10, 8)))
    assert out[0].image.shape == (16, 20, 3)
    with pytest.raises(InputError, match="outside"):
        list(VideoStream(VideoSource(FakeCapture(frames)), ResizeUpscaler(), "2", crop=CropRegion(20, 2, 10, 8)))
    # No black border: auto crops nothing.
    out = list(
        VideoStream(
            VideoSource(FakeCapture([np.full((20, 24), 128, np.uint8)] * 2)), ResizeUpscaler(), "2", crop="auto"
        )
    )
    assert out[0].image.shape == (40, 48)


# -- display --------------------------------------------------------------------------------


def test_display_problem_is_found_without_opening_a_window(monkeypatch):
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:     QT5\n")
    assert "DISPLAY" in display_problem({}, "linux")
    assert "does not answer" in display_problem({"DISPLAY": ":917"}, "linux")
    assert display_problem({}, "darwin") is None
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}, "linux") is None
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:     NONE\n")
    assert "opencv-python" in display_problem({"DISPLAY": ":0"}, "linux")


def test_cli_display_without_display_is_one_line_exit_2(tmp_path):
    src = tmp_path / "in.mkv"
    write_av(src, moving_shapes(2, 16, 16, color=True), 10, "ffv1", "bgr0", "bgr24")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    run = subprocess.run(
        [sys.executable, "-m", "metasr.video.cli", "-i", str(src), "-s", "2", "--display", "--model", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2, run
    assert len(run.stderr.strip().splitlines()) == 1 and "--display" in run.stderr


# -- a live source this machine can run: a looped MPEG-TS over HTTP -------------------------


def test_live_stand_in_looped_file_over_http(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from serve_loop import serve_in_thread
    finally:
        sys.path.remove(str(ROOT / "bench"))
    ts = write_av(tmp_path / "clip.ts", moving_shapes(25, 32, 48, color=True), 25, "libx264", "yuv420p", "bgr24")
    server, url = serve_in_thread(ts, rate=200_000)
    try:
        source = open_source(url)
        assert source.kind is SourceKind.URL
        s = run_stream(source, ResizeUpscaler(), "2", output=tmp_path / "live.mp4", duration_s=1.5)
    finally:
        server.shutdown()
    assert s.end_reason is EndReason.LIMIT and s.stats["frames_out"] > 3
    assert probe(tmp_path / "live.mp4")["codec"] == "h264"


# -- the command ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def export_dir(tiny_export_dir) -> Path:
    return Path(tiny_export_dir)


def test_cli_clip_with_audio_names_the_encoder(tmp_path, export_dir, capsys):
    from metasr.video.cli import main

    src = _av_source(tmp_path)
    out, stats = tmp_path / "o.mp4", tmp_path / "s.json"
    stale = tmp_path / ".o.partial-4999999-audio.mp4"  # a run killed while it remuxed the audio
    stale.write_bytes(b"x")
    common = ["-i", str(src), "-s", "2", "--model", str(export_dir), "--device", "cpu"]
    rc = main(
        [*common, "-o", str(out), "--start", "0.4", "--duration", "0:00.2", "--deinterlace", "--stats", str(stats)]
    )
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "h264 (libx264 crf 18" in err and "audio aac copied" in err
    info = probe(out)
    assert (info["codec"], info["frames"], info["fps"], info["audio"]) == ("h264", 5, 25.0, ["aac"])
    assert not stale.exists()
    summary = json.loads(stats.read_text())
    assert summary["end_reason"] == "limit" and summary["encoder"].startswith("h264") and summary["writer"]["audio"]
    rc = main([*common, "-o", str(tmp_path / "n.mp4"), "--max-frames", "3", "--no-audio"])
    assert rc == 0 and probe(tmp_path / "n.mp4")["audio"] == [] and probe(tmp_path / "n.mp4")["frames"] == 3


@pytest.mark.parametrize(
    "extra",
    [
        ["--crop", "1,2"],
        ["--crop", "0,0,0,5"],
        ["--start", "soon"],
        ["--duration", "-1"],
        ["--max-frames", "0"],
        ["--codec", "ffv1"],
        ["--codec", "hevc"],
        ["--start", "99"],
    ],
)
def test_cli_bad_clip_crop_codec_is_one_line_exit_2(tmp_path, export_dir, capsys, extra):
    from metasr.video.cli import main

    src = _tagged_file(tmp_path)
    rc = main(["-i", str(src), "-s", "2", "--model", str(export_dir), "-o", str(tmp_path / "o.mp4"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tagged.mkv"]


def test_status_line_names_the_encoder():
    from metasr.video.cli import _status_line

    snapshot = {"frames_in": 3, "frames_out": 2, "dropped": 0, "corrupt": 0, "fps": 1.5}
    line = _status_line({**snapshot, "latency_ms": {"p50": 10.0, "p95": 20.0}, "encoder": "h264 (libx264)"})
    assert line.endswith("| h264 (libx264)")
