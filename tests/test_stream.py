"""Video streaming: metasr.video and metasr-stream.

The tests make their own short videos with OpenCV (moving shapes, colour and grayscale) and
inject fake captures for faults. Pipeline logic is checked with a small cv2.resize "upscaler";
end-to-end behaviour with a tiny random-init export and the real ``Upscaler``.
"""

from __future__ import annotations

import signal
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from _stream_data import (
    FakeCapture,
    ResizeUpscaler,
    luminance,
    moving_shapes,
    read_video,
    write_video,
)
from _stream_data import (
    index_of as _index_of,
)
from _stream_data import (
    tagged as _tagged,
)

from metasr.core.errors import InputError, OutputError, ScaleError
from metasr.core.resample import resize_on_grid
from metasr.video import (
    EndReason,
    SourceKind,
    VideoFileWriter,
    VideoSource,
    VideoStream,
    open_source,
    run_stream,
)
from metasr.video.cli import main


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, request) -> Path:
    """The runtime's tiny export (tests/conftest.py) if present, else a tiny random-init export."""
    try:
        return Path(request.getfixturevalue("tiny_export_dir"))
    except pytest.FixtureLookupError:
        pass
    torch = pytest.importorskip("torch")
    export = pytest.importorskip("metasr.export")
    from metasr.training.checkpoint import model_config, save_checkpoint
    from metasr.training.models import build_model

    torch.manual_seed(0)
    args = dict(features=8, num_blocks=1, wpn_hidden=16)
    model = build_model("metasrgan", **args)
    root = tmp_path_factory.mktemp("stream_export")
    save_checkpoint(root / "tiny.pt", model, model_config("metasrgan", model, args))
    export.export_model(root / "tiny.pt", root / "export", verify=False)
    return root / "export"


@pytest.fixture(scope="module")
def upscaler(export_dir):
    from metasr.runtime.upscaler import Upscaler

    return Upscaler(export_dir, device="cpu", threads=1)


# --------------------------------------------------------------------------------------------
# iterator: frames equal Upscaler.upscale of the luminance


@pytest.mark.parametrize("color", [True, False], ids=["colour", "gray"])
@pytest.mark.parametrize(
    ("batch", "scale", "out_size"), [(1, "1.5", (57, 75)), (3, "1.5", (57, 75)), (1, "1.7", (64, 85))]
)
def test_iterator_frames_are_upscaled_luminance(tmp_path, upscaler, color, batch, scale, out_size):
    src = write_video(tmp_path / "in.avi", moving_shapes(6, 38, 50, color=color))
    decoded, _ = read_video(src)
    with VideoStream(open_source(src), upscaler, scale, batch=batch) as stream:
        frames = list(stream)
    assert stream.end_reason is EndReason.END_OF_FILE
    assert len(frames) == len(decoded) == 6
    for f, d in zip(frames, decoded, strict=True):
        expected = upscaler.upscale(luminance(d), scale)
        assert f.luma.shape == out_size and f.input_size == (38, 50)
        assert np.abs(f.luma - expected).max() <= 1e-5
        y = np.clip(np.rint(expected * 255), 0, 255).astype(np.uint8)
        if color:
            # chroma on the luma's grid: at 1.7, 38 x 1.7 = 64.6, so a resize to 64x85 would drift
            crcb = resize_on_grid(cv2.cvtColor(d, cv2.COLOR_BGR2YCrCb)[:, :, 1:], *out_size, Fraction(scale))
            want = cv2.cvtColor(np.dstack([y, crcb]), cv2.COLOR_YCrCb2BGR)
            assert f.image.shape == (*out_size, 3)
            # At 1.5 (57 = 38 x 1.5 exactly) the chroma takes cv2.resize on the same grid, within one
            # level of the reference; YCrCb -> BGR scales a one-level Cr/Cb step up to about two.
            assert np.abs(f.image.astype(int) - want).max() <= (3 if scale == "1.5" else 1)
        else:
            assert f.image.ndim == 2, "a grayscale source must stay grayscale"
            assert np.abs(f.image.astype(int) - y).max() <= 1
    stats = stream.stats.snapshot()
    assert stats["frames_in"] == stats["frames_out"] == 6 and stats["dropped"] == 0
    assert stats["latency_ms"]["p95"] >= stats["latency_ms"]["p50"] > 0


def test_batching_groups_frames_and_matches_single(tmp_path):
    frames = moving_shapes(9, 30, 40, color=True)
    results = {}
    for batch in (1, 4):
        up = ResizeUpscaler(delay_s=0.01)  # slow enough that the inbox fills and batches form
        with VideoStream(VideoSource(FakeCapture(frames)), up, "2", batch=batch) as stream:
            results[batch] = [f.image for f in stream]
        if batch == 1:
            assert all(len(c) == 2 for c in up.calls)
        else:
            assert max(c[0] for c in up.calls if len(c) == 3) > 1, up.calls
            assert all(len(c) == 2 or c[0] <= 4 for c in up.calls)
    assert len(results[1]) == len(results[4]) == 9
    for a, b in zip(results[1], results[4], strict=True):
        np.testing.assert_array_equal(a, b)


def test_odd_frame_size_from_capture(upscaler):
    """37x51 frames (the file writer cannot make them; a capture can deliver them)."""
    frames = moving_shapes(4, 37, 51, color=True)
    with VideoStream(VideoSource(FakeCapture(frames)), upscaler, "1.3") as stream:
        out = list(stream)
    assert [f.image.shape for f in out] == [(48, 66, 3)] * 4  # floor(37*1.3), floor(51*1.3)
    np.testing.assert_allclose(out[2].luma, upscaler.upscale(luminance(frames[2]), "1.3"), atol=1e-5)


# --------------------------------------------------------------------------------------------
# file output and the CLI


def test_written_file_is_the_iterator_output_lossless_and_cropped_to_even(tmp_path):
    """FFV1 (.mkv) is lossless: the file holds exactly what the iterator yielded (odd size cropped)."""
    src = VideoSource(FakeCapture(moving_shapes(6, 38, 50, color=False), fps=10.0))
    yielded = []
    summary = run_stream(
        src, ResizeUpscaler(), "1.5", output=tmp_path / "out.mkv", on_frame=lambda f: yielded.append(f.image)
    )
    assert summary.codec == "ffv1" and summary.output_size == (74, 56)  # W, H
    assert summary.writer["cropped_to_even"] and any("even" in w for w in summary.warnings)
    frames, fps = read_video(tmp_path / "out.mkv")
    assert fps == pytest.approx(10.0) and len(frames) == 6
    for written, image in zip(frames, yielded, strict=True):
        assert image.shape == (57, 75)
        assert (written[:, :, 0] == written[:, :, 1]).all() and (written[:, :, 1] == written[:, :, 2]).all()
        np.testing.assert_array_equal(written[:, :, 0], image[:56, :74])


# --------------------------------------------------------------------------------------------
# faults


def test_url_credentials_are_not_echoed():
    with pytest.raises(InputError) as e:
        open_source("rtsp://user:secret@127.0.0.1:9/stream", open_timeout_s=0.5)
    assert "secret" not in str(e.value) and "***@127.0.0.1" in str(e.value)


@pytest.mark.parametrize("output", ["missing_dir/out.avi", "out.xyz", "."])
def test_unwritable_output_fails_before_reading(tmp_path, output):
    cap = FakeCapture(moving_shapes(3, 20, 24, color=True))
    with pytest.raises(OutputError):
        run_stream(VideoSource(cap), ResizeUpscaler(), "2", output=tmp_path / output if output != "." else tmp_path)
    assert cap.reads == 0, "no frame may be read when the output cannot be written"
    assert cap.released


def test_scale_validation(tmp_path, upscaler, capsys, export_dir):
    cap = FakeCapture(moving_shapes(3, 20, 24, color=True))
    with pytest.raises(ScaleError, match="trained range"):
        VideoStream(VideoSource(cap), upscaler, "8")
    assert cap.reads == 0
    with VideoStream(
        VideoSource(FakeCapture(moving_shapes(2, 20, 24, color=True))), upscaler, "1.05", allow_extrapolation=True
    ) as s:
        assert [f.image.shape[:2] for f in s] == [(21, 25)] * 2
    src = write_video(tmp_path / "in.avi", moving_shapes(3, 20, 24, color=True))
    assert main(["--input", str(src), "--scale", "abc", "--model", str(export_dir)]) == 2
    assert main(["--input", str(src), "--scale", "1.05", "--model", str(export_dir)]) == 2
    assert "allow" in capsys.readouterr().err


def test_frame_size_change_mid_stream(tmp_path):
    """Caches follow the new size; the file keeps its first size (later frames resized, counted)."""
    small, big = moving_shapes(4, 20, 24, color=True), moving_shapes(5, 30, 40, color=True, seed=1)
    up = ResizeUpscaler()
    yielded = []
    summary = run_stream(
        VideoSource(FakeCapture(small + big)), up, "2", batch=3, output=tmp_path / "out.avi", on_frame=yielded.append
    )
    assert [f.image.shape for f in yielded] == [(40, 48, 3)] * 4 + [(60, 80, 3)] * 5
    sizes = [c[-2:] for c in up.calls]
    assert sizes == sorted(sizes) and set(sizes) == {(20, 24), (30, 40)}  # batches follow the size change
    assert sum(1 if len(c) == 2 else c[0] for c in up.calls) == 9
    np.testing.assert_allclose(yielded[6].luma, up.upscale(luminance(big[2]), "2"), atol=1e-6)
    assert summary.stats["size_changes"] == 1 and summary.writer["resized_frames"] == 5
    assert any("resized" in w for w in summary.warnings)
    frames, _ = read_video(tmp_path / "out.avi")
    assert len(frames) == 9 and {f.shape for f in frames} == {(40, 48, 3)}


def test_corrupt_and_empty_frames_are_skipped_and_counted():
    good = [_tagged(i) for i in range(1, 7)]
    items = [
        good[0],
        (True, None),
        good[1],
        (True, np.zeros((0, 0, 3), np.uint8)),
        good[2],
        (False, None),
        good[3],
        (True, np.zeros((20, 24), np.float64)),
        good[4],
        good[5],
    ]
    with VideoStream(VideoSource(FakeCapture(items)), ResizeUpscaler(), "2") as stream:
        out = [_index_of(f) for f in stream]
    assert out == [1, 2, 3, 4, 5, 6]
    stats = stream.stats.snapshot()
    assert stats["corrupt"] == 4 and stats["frames_out"] == 6
    assert stream.end_reason is EndReason.END_OF_FILE


def test_corrupt_frame_inside_a_real_file(tmp_path):
    """An MJPG .avi with one frame's JPEG data overwritten: skipped, counted, the rest kept."""
    src = write_video(tmp_path / "in.avi", [_tagged(20 * i, 24, 32) for i in range(10)])
    data = bytearray(src.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i : i + 3] == b"\xff\xd8\xff"]  # JPEG SOI
    assert len(starts) == 10
    end = starts[5] - 8  # frame 5's AVI chunk header ("00dc" + size) stays intact
    data[starts[4] : end] = b"\x55" * (end - starts[4])  # frame 4 is no JPEG any more
    src.write_bytes(bytes(data))
    summary = run_stream(src, ResizeUpscaler(), "2", output=tmp_path / "out.avi")
    assert summary.end_reason is EndReason.END_OF_FILE
    assert summary.stats["corrupt"] == 1 and summary.stats["frames_out"] == 9
    written, _ = read_video(tmp_path / "out.avi")
    assert len(written) == 9
    assert [round(float(np.median(f)) / 20) for f in written] == [0, 1, 2, 3, 5, 6, 7, 8, 9]


def test_file_with_no_frames_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no decodable"):
        run_stream(VideoSource(FakeCapture([])), ResizeUpscaler(), "2", output=tmp_path / "o.avi")
    assert not list(tmp_path.iterdir())


def test_live_source_drops_oldest_when_inference_is_slow():
    n = 60
    live = VideoSource(FakeCapture([_tagged(i) for i in range(n)], delay_s=0.002), SourceKind.CAMERA)
    with VideoStream(live, ResizeUpscaler(delay_s=0.03), "2", lost_timeout_s=0.3) as stream:
        out = [_index_of(f) for f in stream]
    stats = stream.stats.snapshot()
    assert stream.end_reason is EndReason.SOURCE_LOST
    assert stats["dropped"] > 0 and stats["frames_in"] == n
    assert stats["frames_out"] + stats["dropped"] == n, stats
    assert out == sorted(out) and len(set(out)) == len(out)
    assert out[-1] == n - 1, "the newest frame is kept: drops are of the oldest"
    # Bounded queues (1 waiting + 2 done + 1 in flight, 30 ms each): no frame waits for a backlog.
    assert stats["latency_ms"]["max"] < 400


def test_file_source_never_drops():
    n = 25
    src = VideoSource(FakeCapture([_tagged(i) for i in range(n)]), SourceKind.FILE)
    with VideoStream(src, ResizeUpscaler(delay_s=0.01), "2") as stream:
        out = [_index_of(f) for f in stream]
    assert out == list(range(n)) and stream.stats.dropped == 0


def test_stop_ends_the_stream():
    out = []
    with VideoStream(
        VideoSource(FakeCapture([_tagged(i) for i in range(50)], delay_s=0.002)), ResizeUpscaler(delay_s=0.01), "2"
    ) as stream:
        for f in stream:
            out.append(_index_of(f))
            if f.index == 2:
                stream.stop()
    assert stream.end_reason is EndReason.STOPPED
    assert out[:3] == [0, 1, 2] and out == list(range(len(out))) and len(out) < 50
    assert stream.join(timeout=5.0) and stream.source.capture.released


def test_live_max_fps_throttles():
    src = VideoSource(FakeCapture([_tagged(i) for i in range(30)], delay_s=0.005), SourceKind.URL)
    with VideoStream(src, ResizeUpscaler(), "2", max_fps=40, lost_timeout_s=0.2) as stream:
        out = list(stream)
    stats = stream.stats.snapshot()
    assert stats["throttled"] > 0 and stats["frames_in"] + stats["throttled"] == 30
    assert len(out) == stats["frames_out"] <= stats["frames_in"]


def test_keyboard_interrupt_from_source_finalises_output(tmp_path):
    frames = moving_shapes(20, 20, 24, color=True)
    cap = FakeCapture(frames, raise_at=(8, KeyboardInterrupt()))
    summary = run_stream(VideoSource(cap), ResizeUpscaler(), "2", output=tmp_path / "out.avi")
    assert summary.end_reason is EndReason.INTERRUPTED
    written, _ = read_video(tmp_path / "out.avi")
    assert len(written) == summary.stats["frames_out"] == 7 and written[0].shape == (40, 48, 3)


def test_sigint_in_consumer_finalises_output(tmp_path):
    """A real SIGINT (Ctrl-C) delivered while frames are being written.

    The stream is long (about 1 s of work after the signal), so that a busy machine which
    schedules the main thread late still finds it running."""
    frames = moving_shapes(200, 20, 24, color=False)

    def on_frame(f):
        if f.index == 4:
            signal.raise_signal(signal.SIGINT)

    summary = run_stream(
        VideoSource(FakeCapture(frames)),
        ResizeUpscaler(delay_s=0.005),
        "2",
        output=tmp_path / "out.mp4",
        on_frame=on_frame,
    )
    assert summary.end_reason is EndReason.INTERRUPTED and summary.codec == "h264"
    written, _ = read_video(tmp_path / "out.mp4")
    assert 5 <= len(written) == summary.stats["frames_out"] < 200


def test_error_in_inference_surfaces_and_leaves_no_output(tmp_path):
    class Broken(ResizeUpscaler):
        def upscale(self, image, scale):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_stream(
            VideoSource(FakeCapture(moving_shapes(3, 20, 24, color=True))), Broken(), "2", output=tmp_path / "o.avi"
        )
    assert not list(tmp_path.iterdir())


def test_display_needs_a_gui(tmp_path):
    try:
        cv2.namedWindow("probe")
        cv2.destroyAllWindows()
        pytest.skip("this OpenCV has a GUI; the headless error path cannot be exercised")
    except cv2.error:
        pass
    cap = FakeCapture(moving_shapes(3, 20, 24, color=True))
    with pytest.raises(OutputError, match="GUI"):
        run_stream(VideoSource(cap), ResizeUpscaler(), "2", display=True)
    assert cap.reads == 0


def test_writer_codec_fallback_and_atomic_close(tmp_path):
    with pytest.raises(OutputError, match="codecs"):
        VideoFileWriter(tmp_path / "a.avi", 10.0, codec="ZZZZ")
    writer = VideoFileWriter(tmp_path / "b.mp4", 10.0, frame_size=(20, 24))
    assert writer.codec == "h264" and not (tmp_path / "b.mp4").exists()
    writer.write(np.zeros((20, 24), np.uint8))
    assert not (tmp_path / "b.mp4").exists(), "the file appears only when finalised"
    assert writer.close() and (tmp_path / "b.mp4").exists()
    empty = VideoFileWriter(tmp_path / "c.avi", 10.0)
    assert empty.close() is False and not list(p for p in tmp_path.iterdir() if p.name != "b.mp4")
