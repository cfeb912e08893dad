"""A video whose frames did not all reach the disk is an error, even when its header says otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _stream_data import moving_shapes, write_video

from metasr.core.errors import OutputError
from metasr.video.writer import VideoFileWriter


def test_a_file_cut_short_after_its_header_was_written_is_refused(tmp_path):
    # What a full disk leaves: the container's header (written last, into space it already had)
    # counts every frame, but the frame data stops early.
    out = tmp_path / "out.avi"
    writer = VideoFileWriter(out, fps=10)
    for frame in moving_shapes(40, 48, 64, color=True):
        writer.write(frame)
    writer._writer.release()  # finalise the container as close() would, then lose the tail
    writer._writer = None
    with open(writer.partial, "r+b") as f:
        f.truncate(os.path.getsize(writer.partial) // 3)
    with pytest.raises(OutputError, match=r"the file holds only \d+ of 40 frames"):
        writer.close()
    assert not out.exists() and not writer.partial.exists()


def test_a_complete_file_is_kept(tmp_path):
    out = tmp_path / "out.avi"
    writer = VideoFileWriter(out, fps=10)
    for frame in moving_shapes(12, 48, 64, color=True):
        writer.write(frame)
    assert writer.close() and out.is_file()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a tmpfs needs root")
def test_metasr_stream_on_a_full_disk_fails_in_one_line(tmp_path):
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(tiny)], capture_output=True).returncode:
        pytest.skip("this machine does not let the tests mount a tmpfs")
    try:
        noise = np.random.default_rng(0).integers(0, 256, (40, 48, 64, 3), dtype=np.uint8)  # compresses badly
        src = write_video(tmp_path / "in.avi", list(noise))
        run = subprocess.run(
            [sys.executable, "-c", "import sys; from metasr.video.cli import main; sys.exit(main(sys.argv[1:]))",
             "-i", str(src), "-s", "2", "-o", str(tiny / "out.avi"), "--device", "cpu", "-q"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 2 and len(lines) == 1, run.stderr
        assert "failed" in lines[0] and "disk full" in lines[0]
        assert list(Path(tiny).iterdir()) == []  # nothing partial left behind
    finally:
        subprocess.run(["umount", str(tiny)], check=False)
