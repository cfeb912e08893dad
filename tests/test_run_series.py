"""metasr-run maps every slice of one DICOM series through one intensity window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from conftest import write_dicom

from metasr.runtime.cli import main

SIZE = 48
LEFT = 24  # columns identical in both slices
HALO = 17  # receptive radius of the shipped model + 1: HR columns < 2 * (LEFT - HALO) see only the left part


def _slices(folder: Path) -> tuple[Path, Path]:
    folder.mkdir()
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    base = 100 + 1000 * (0.5 + 0.5 * np.sin(xx / 4.0) * np.cos(yy / 5.0))
    base[0, 0] = 50  # both slices share their minimum ...
    base[-2:, -2:] = 4000  # ... and their maximum (outputs stay inside each file's own range)
    a = base.copy()
    b = base.copy()
    b[:, LEFT:] = 4000  # a bright structure over half of slice b moves its own window a lot
    return (
        write_dicom(folder / "a.dcm", np.rint(a).astype(np.uint16)),
        write_dicom(folder / "b.dcm", np.rint(b).astype(np.uint16)),
    )


def _left(path: Path) -> np.ndarray:
    return pydicom.dcmread(path).pixel_array[:, : 2 * (LEFT - HALO)].astype(np.int64)


def test_slices_of_one_series_share_one_window(tmp_path):
    a, b = _slices(tmp_path / "series")
    assert pydicom.dcmread(a).SeriesInstanceUID == pydicom.dcmread(b).SeriesInstanceUID
    out = tmp_path / "out"
    assert main(["-i", str(tmp_path / "series"), "-s", "2", "-o", str(out), "-q", "--device", "cpu"]) == 0
    # identical LR content far from the bright half gives identical stored values: one mapping
    np.testing.assert_array_equal(_left(out / "a_sr2.dcm"), _left(out / "b_sr2.dcm"))


def test_files_run_alone_are_mapped_on_their_own(tmp_path):
    # the counter-check: each file alone gets its own window, so the same region comes out
    # differently - what the series run above avoids
    a, b = _slices(tmp_path / "series")
    outs = []
    for src in (a, b):
        out = tmp_path / f"{src.stem}_alone.dcm"
        assert main(["-i", str(src), "-s", "2", "-o", str(out), "-q", "--device", "cpu"]) == 0
        outs.append(out)
    assert np.abs(_left(outs[0]) - _left(outs[1])).max() > 0


def test_resume_record_names_the_series_window(tmp_path):
    _slices(tmp_path / "series")
    out = tmp_path / "out"
    args = ["-i", str(tmp_path / "series"), "-s", "2", "-o", str(out), "-q", "--device", "cpu"]
    assert main(args) == 0
    journal = (out / ".metasr-run.jsonl").read_text()
    assert journal.count('"window"') == 2
    before = {p.name: p.read_bytes() for p in out.glob("*.dcm")}
    assert main(args) == 0  # a rerun keeps both: same inputs, same settings, same window
    assert {p.name: p.read_bytes() for p in out.glob("*.dcm")} == before
