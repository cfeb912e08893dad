"""Adversarial corpus for metasr-stream: every bad input gives one line, exit 2, nothing written.

Each case builds its files in a fresh folder and returns the arguments. The runner checks that
the command exits with the expected code, that stderr (file descriptor 2 included, so native
FFmpeg/OpenCV messages count) holds exactly one line starting ``metasr-stream: error:`` and
containing the expected words, that no file appeared, and that every file that existed before
is byte-identical afterwards (inputs, the model, files the outputs point at).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest
from _stream_data import moving_shapes, write_video

from metasr.video.cli import main

Case = Callable[[Path, Path], list[str]]


def _video(tmp: Path, name: str = "in.avi") -> Path:
    return write_video(tmp / name, moving_shapes(4, 20, 24, color=True))


def _base(tmp: Path, model: Path, *extra: str, scale: str = "2") -> list[str]:
    return ["-i", str(_video(tmp)), "-s", scale, "--model", str(model), *extra]


def _copy_model(tmp: Path, model: Path) -> Path:
    """A private copy of the model, so a case may point outputs into it safely."""
    return Path(shutil.copytree(model, tmp / "model"))


# -- paths the command writes, against what it reads and each other ---------------------------------


def stats_symlink_to_input(tmp, model):
    (tmp / "s.json").symlink_to(_video(tmp))
    return ["-i", str(tmp / "in.avi"), "-s", "2", "--stats", str(tmp / "s.json"), "--overwrite", "--model", str(model)]


def stats_hard_link_to_input(tmp, model):
    os.link(_video(tmp), tmp / "s.json")
    return ["-i", str(tmp / "in.avi"), "-s", "2", "--stats", str(tmp / "s.json"), "--overwrite", "--model", str(model)]


def output_hard_link_to_input(tmp, model):
    os.link(_video(tmp), tmp / "out.avi")
    return ["-i", str(tmp / "in.avi"), "-s", "2", "-o", str(tmp / "out.avi"), "--overwrite", "--model", str(model)]


def output_symlink_to_input(tmp, model):
    (tmp / "out.avi").symlink_to(_video(tmp))
    return ["-i", str(tmp / "in.avi"), "-s", "2", "-o", str(tmp / "out.avi"), "--overwrite", "--model", str(model)]


def output_dotdot_is_input(tmp, model):
    (tmp / "sub").mkdir()
    return _base(tmp, model, "-o", str(tmp / "sub" / ".." / "in.avi"), "--overwrite")


def stats_through_symlinked_folder_is_input(tmp, model):
    (tmp / "alias").symlink_to(tmp, target_is_directory=True)
    return _base(tmp, model, "--stats", str(tmp / "alias" / "in.avi"), "--overwrite")


def stats_is_output_new_names(tmp, model):
    return _base(tmp, model, "-o", str(tmp / "o.avi"), "--stats", str(tmp / "o.avi"))


def stats_hard_link_to_output(tmp, model):
    (tmp / "o.avi").write_bytes(b"old output")
    os.link(tmp / "o.avi", tmp / "s.json")
    return _base(tmp, model, "-o", str(tmp / "o.avi"), "--stats", str(tmp / "s.json"), "--overwrite")


def stats_is_the_output_temp_file(tmp, model):
    partial = tmp / f".o.partial-{os.getpid()}.avi"
    return _base(tmp, model, "-o", str(tmp / "o.avi"), "--stats", str(partial))


def stats_inside_model_folder(tmp, model):
    own = _copy_model(tmp, model)
    return _base(tmp, own, "--stats", str(own / "manifest.json"), "--overwrite")


def output_inside_model_folder(tmp, model):
    own = _copy_model(tmp, model)
    return _base(tmp, own, "-o", str(own / "sr.avi"))


def stats_existing_without_overwrite(tmp, model):
    (tmp / "s.json").write_text("{}")
    return _base(tmp, model, "--stats", str(tmp / "s.json"))


def output_existing_without_overwrite(tmp, model):
    (tmp / "o.avi").write_bytes(b"someone's video")
    return _base(tmp, model, "-o", str(tmp / "o.avi"))


def stats_missing_folder(tmp, model):
    return _base(tmp, model, "--stats", str(tmp / "nope" / "s.json"))


def stats_parent_is_a_file(tmp, model):
    (tmp / "f.txt").write_text("x")
    return _base(tmp, model, "--stats", str(tmp / "f.txt" / "s.json"))


def stats_is_a_folder(tmp, model):
    (tmp / "d").mkdir()
    return _base(tmp, model, "--stats", str(tmp / "d"))


def stats_is_a_device(tmp, model):
    return _base(tmp, model, "--stats", "/dev/null", "--overwrite")


def stats_empty_name(tmp, model):
    return _base(tmp, model, "--stats", "")


def stats_name_too_long(tmp, model):
    return _base(tmp, model, "--stats", str(tmp / ("s" * 300 + ".json")))


def output_unknown_container(tmp, model):
    return _base(tmp, model, "-o", str(tmp / "o.txt"))


def output_no_extension(tmp, model):
    return _base(tmp, model, "-o", str(tmp / "video"))


def output_is_a_folder(tmp, model):
    (tmp / "d.avi").mkdir()
    return _base(tmp, model, "-o", str(tmp / "d.avi"))


def output_name_too_long(tmp, model):
    return _base(tmp, model, "-o", str(tmp / ("o" * 300 + ".avi")))


def output_missing_folder(tmp, model):
    return _base(tmp, model, "-o", str(tmp / "nope" / "o.avi"))


def output_parent_is_a_file(tmp, model):
    (tmp / "f.txt").write_text("x")
    return _base(tmp, model, "-o", str(tmp / "f.txt" / "o.avi"))


def output_is_a_device(tmp, model):
    return _base(tmp, model, "-o", "/dev/null", "--overwrite")


# -- inputs ------------------------------------------------------------------------------------


def input_empty_string(tmp, model):
    return ["-i", "", "-s", "2", "--model", str(model)]


def input_blank(tmp, model):
    return ["-i", "   ", "-s", "2", "--model", str(model)]


def input_folder(tmp, model):
    return ["-i", str(tmp), "-s", "2", "--model", str(model)]


def input_missing(tmp, model):
    return ["-i", str(tmp / "missing.mp4"), "-s", "2", "--model", str(model)]


def input_dev_zero(tmp, model):
    return ["-i", "/dev/zero", "-s", "2", "--model", str(model)]


def input_fifo(tmp, model):
    os.mkfifo(tmp / "pipe.avi")
    return ["-i", str(tmp / "pipe.avi"), "-s", "2", "--model", str(model)]


def input_socket(tmp, model):
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp / "s.avi"))
    sock.close()
    return ["-i", str(tmp / "s.avi"), "-s", "2", "--model", str(model)]


def input_dangling_symlink(tmp, model):
    (tmp / "link.avi").symlink_to(tmp / "gone.avi")
    return ["-i", str(tmp / "link.avi"), "-s", "2", "--model", str(model)]


def input_empty_file(tmp, model):
    (tmp / "empty.mp4").write_bytes(b"")
    return ["-i", str(tmp / "empty.mp4"), "-s", "2", "--model", str(model)]


def input_random_bytes(tmp, model):
    (tmp / "noise.avi").write_bytes(os.urandom(5000))
    return ["-i", str(tmp / "noise.avi"), "-s", "2", "--model", str(model)]


def input_text_named_mp4(tmp, model):
    (tmp / "notes.mp4").write_text("this is not a video\n" * 50)
    return ["-i", str(tmp / "notes.mp4"), "-s", "2", "--model", str(model)]


def input_truncated_video(tmp, model):
    data = _video(tmp, "full.avi").read_bytes()
    (tmp / "cut.avi").write_bytes(data[:300])
    return ["-i", str(tmp / "cut.avi"), "-s", "2", "--model", str(model)]


def input_all_frames_corrupt(tmp, model):
    """A well-formed AVI whose every JPEG payload is zeroed: it opens, but no frame decodes."""
    data = bytearray(_video(tmp, "good.avi").read_bytes())
    pos, end = data.index(b"movi") + 4, data.rindex(b"idx1")
    while pos < end:
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if data[pos + 2 : pos + 4] == b"dc":
            data[pos + 8 : pos + 8 + size] = bytes(size)
        pos += 8 + size + (size & 1)
    (tmp / "zeroed.avi").write_bytes(bytes(data))
    return ["-i", str(tmp / "zeroed.avi"), "-s", "2", "-o", str(tmp / "o.avi"), "--model", str(model)]


def output_symlink_to_device(tmp, model):
    (tmp / "o.avi").symlink_to("/dev/null")
    return _base(tmp, model, "-o", str(tmp / "o.avi"), "--overwrite")


def input_missing_camera(tmp, model):
    return ["-i", "63", "-s", "2", "--model", str(model)]


def input_unreachable_url_with_credentials(tmp, model):
    return ["-i", "rtsp://user:secret@127.0.0.1:9/live", "-s", "2", "--model", str(model)]


# -- numbers and choices -----------------------------------------------------------------------


def _scale(text):
    return lambda tmp, model: _base(tmp, model, scale=text)


def _opt(*extra):
    return lambda tmp, model: _base(tmp, model, *extra)


def repeated_input(tmp, model):
    other = _video(tmp, "other.avi")
    return _base(tmp, model, "-i", str(other))


def model_missing(tmp, model):
    return ["-i", str(_video(tmp)), "-s", "2", "--model", str(tmp / "nomodel")]


def model_is_a_file(tmp, model):
    (tmp / "m.onnx").write_bytes(b"x")
    return ["-i", str(_video(tmp)), "-s", "2", "--model", str(tmp / "m.onnx")]


CASES: dict[str, tuple[Case, str]] = {
    # name: (setup, words the one error line must contain)
    "stats_symlink_to_input": (stats_symlink_to_input, "is the input"),
    "stats_hard_link_to_input": (stats_hard_link_to_input, "is the input"),
    "output_hard_link_to_input": (output_hard_link_to_input, "is the input"),
    "output_symlink_to_input": (output_symlink_to_input, "is the input"),
    "output_dotdot_is_input": (output_dotdot_is_input, "is the input"),
    "stats_through_symlinked_folder": (stats_through_symlinked_folder_is_input, "is the input"),
    "stats_is_output": (stats_is_output_new_names, "same file"),
    "stats_hard_link_to_output": (stats_hard_link_to_output, "same file"),
    "stats_is_output_temp_file": (stats_is_the_output_temp_file, "same file"),
    "stats_inside_model": (stats_inside_model_folder, "model folder"),
    "output_inside_model": (output_inside_model_folder, "model folder"),
    "stats_exists": (stats_existing_without_overwrite, "--overwrite"),
    "output_exists": (output_existing_without_overwrite, "--overwrite"),
    "stats_missing_folder": (stats_missing_folder, "does not exist"),
    "stats_parent_is_file": (stats_parent_is_a_file, "not a folder"),
    "stats_is_folder": (stats_is_a_folder, "is a folder"),
    "stats_is_device": (stats_is_a_device, "not a regular file"),
    "stats_empty_name": (stats_empty_name, "needs a file name"),
    "stats_name_too_long": (stats_name_too_long, "255 bytes"),
    "output_unknown_container": (output_unknown_container, "unknown container"),
    "output_no_extension": (output_no_extension, "no extension"),
    "output_is_folder": (output_is_a_folder, "is a folder"),
    "output_name_too_long": (output_name_too_long, "255 bytes"),
    "output_missing_folder": (output_missing_folder, "does not exist"),
    "output_parent_is_file": (output_parent_is_a_file, "not a folder"),
    "output_is_device": (output_is_a_device, "container"),
    "input_empty_string": (input_empty_string, "no input given"),
    "input_blank": (input_blank, "no input given"),
    "input_folder": (input_folder, "is a folder"),
    "input_missing": (input_missing, "does not exist"),
    "input_dev_zero": (input_dev_zero, "not a regular file"),
    "input_fifo": (input_fifo, "not a regular file"),
    "input_socket": (input_socket, "not a regular file"),
    "input_dangling_symlink": (input_dangling_symlink, "does not exist"),
    "input_empty_file": (input_empty_file, "empty"),
    "input_random_bytes": (input_random_bytes, "cannot"),
    "input_text_named_mp4": (input_text_named_mp4, "cannot"),
    "input_truncated_video": (input_truncated_video, "video"),
    "input_missing_camera": (input_missing_camera, "camera 63"),
    "input_all_frames_corrupt": (input_all_frames_corrupt, "no decodable video frame"),
    "output_symlink_to_device": (output_symlink_to_device, "not a regular file"),
    "input_url_credentials_hidden": (input_unreachable_url_with_credentials, "***@127.0.0.1"),
    "scale_empty": (_scale(""), "scale"),
    "scale_words": (_scale("abc"), "scale"),
    "scale_huge_exponent": (_scale("1e999999999"), "scale"),
    "scale_float_overflow": (_scale("1e400"), "scale"),
    "scale_negative": (_scale("-2"), "scale"),
    "scale_zero": (_scale("0"), "scale"),
    "scale_nan": (_scale("nan"), "scale"),
    "scale_inf": (_scale("inf"), "scale"),
    "scale_divide_by_zero": (_scale("2/0"), "scale"),
    "scale_very_long_text": (_scale("1" + "0" * 100_000), "scale"),
    "scale_beyond_range": (_scale("9"), "scale"),
    "max_fps_tiny": (_opt("--max-fps", "1e-300"), "--max-fps"),
    "max_fps_inf": (_opt("--max-fps", "inf"), "--max-fps"),
    "max_fps_nan": (_opt("--max-fps", "nan"), "--max-fps"),
    "max_fps_zero": (_opt("--max-fps", "0"), "--max-fps"),
    "max_fps_negative": (_opt("--max-fps", "-5"), "--max-fps"),
    "max_fps_huge": (_opt("--max-fps", "1e300"), "--max-fps"),
    "max_fps_words": (_opt("--max-fps", "fast"), "--max-fps"),
    "lost_timeout_nan": (_opt("--lost-timeout", "nan"), "--lost-timeout"),
    "lost_timeout_inf": (_opt("--lost-timeout", "inf"), "--lost-timeout"),
    "lost_timeout_zero": (_opt("--lost-timeout", "0"), "--lost-timeout"),
    "batch_zero": (_opt("--batch", "0"), "--batch"),
    "batch_huge": (_opt("--batch", "100000"), "--batch"),
    "device_unknown": (_opt("--device", "gpu9"), "unknown device"),
    "device_bad_index": (_opt("--device", "cuda:x"), "GPU index"),
    "device_index_on_cpu": (_opt("--device", "cpu:1"), "GPU index"),
    "precision_unknown": (_opt("--precision", "fp64"), "unknown precision"),
    "codec_wrong_length": (_opt("-o", "OUT", "--codec", "ab"), "FOURCC"),
    "codec_unknown": (_opt("-o", "OUT", "--codec", "ZZZZ"), "codecs"),
    "unknown_option": (_opt("--frobnicate"), "--frobnicate"),
    "quiet_and_verbose": (_opt("-q", "-v"), "either --quiet or --verbose"),
    "model_missing": (model_missing, "nomodel"),
    "repeated_input": (repeated_input, "--input was given 2 times"),
    "repeated_output": (_opt("-o", "OUT", "-o", "OUT"), "--output was given 2 times"),
    "repeated_scale": (_opt("-s", "3"), "--scale was given 2 times"),
    "model_is_a_file": (model_is_a_file, "m.onnx"),
}


def _snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every regular file under ``folder`` (symlinks listed by target, not followed twice)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in files + dirs:
            p = Path(root) / name
            if p.is_symlink():
                out[str(p)] = "-> " + os.readlink(p)
            elif p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
            elif not p.is_dir():
                out[str(p)] = stat.filemode(p.lstat().st_mode)
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_one_line_exit_2_nothing_written(name, tmp_path, tiny_export_dir, capfd):
    setup, words = CASES[name]
    work = tmp_path / "w"
    work.mkdir()
    argv = [a.replace("OUT", str(work / "o.avi")) for a in setup(work, Path(tiny_export_dir))]
    before = _snapshot(tmp_path)
    model_before = _snapshot(Path(tiny_export_dir))
    rc = main(argv)
    out, err = capfd.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("metasr-stream: error: "), err
    assert words in lines[0], lines[0]
    assert "secret" not in err and "Traceback" not in err
    assert _snapshot(tmp_path) == before, "a file was written, changed or removed"
    assert _snapshot(Path(tiny_export_dir)) == model_before
    assert out == ""


def test_corpus_is_large_enough():
    assert len(CASES) >= 60


def test_display_refused_before_model_loads(tmp_path, capfd):
    try:
        cv2.namedWindow("probe")
        cv2.destroyAllWindows()
        pytest.skip("this OpenCV has a GUI; the headless --display error cannot be exercised")
    except cv2.error:
        pass
    src = _video(tmp_path)
    rc = main(["-i", str(src), "-s", "2", "--display", "--model", str(tmp_path / "nomodel")])
    err = capfd.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "GUI" in err[0] and "nomodel" not in err[0]
