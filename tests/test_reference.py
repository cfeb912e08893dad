"""Native-resolution references (metasr-eval --reference native): header rules, the reduction, the CLI."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from _scanners_data import write_ct
from conftest import make_checkpoint
from pydicom.dataset import Dataset

from metasr.core.errors import InputError
from metasr.training.cli import eval_main
from metasr.training.evaluate import load_named_images
from metasr.training.reference import (
    grid_from_header,
    native_grid,
    native_size,
    parse_native_factors,
    reduce_to_native,
)


def _header(**fields: object) -> Dataset:
    ds = Dataset()
    for keyword, value in fields.items():
        setattr(ds, keyword, value)
    return ds


def test_a_siemens_header_gives_its_phase_resolution() -> None:
    """256 frequency samples, 134 phase steps over 75 % of 484 rows: 2.71 stored pixels per step."""
    ds = _header(AcquisitionMatrix=[256, 0, 0, 134], InPlanePhaseEncodingDirection="COL", PercentPhaseFieldOfView=75)
    grid = grid_from_header(ds, 484, 484)
    assert grid is not None and grid.factor == Fraction(19, 7)  # 484 * 0.75 / 134 = 2.709
    assert "256 x 134" in grid.source and "COL" in grid.source


def test_row_phase_encoding_uses_the_other_axis() -> None:
    # phase along a row (horizontal): 128 steps over 256 columns = 2; 192 frequency samples over 192 rows = 1
    ds = _header(AcquisitionMatrix=[0, 192, 128, 0], InPlanePhaseEncodingDirection="ROW")
    assert grid_from_header(ds, 192, 256).factor == 2
    # the same matrix phase-encoded along the columns: 128 steps over 192 rows = 1.5, 192 over 256 = 1.33
    ds.InPlanePhaseEncodingDirection = "COL"
    assert grid_from_header(ds, 192, 256).factor == Fraction(3, 2)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"AcquisitionMatrix": [256, 0, 0, 134]},  # no phase direction
        {"AcquisitionMatrix": [0, 0, 0, 0], "InPlanePhaseEncodingDirection": "COL"},
        {"AcquisitionMatrix": [256, 0, 0, 10], "InPlanePhaseEncodingDirection": "COL"},  # 48x: not believable
        {"InPlanePhaseEncodingDirection": "COL"},
    ],
)
def test_a_silent_or_unbelievable_header_states_nothing(fields: dict) -> None:
    assert grid_from_header(_header(**fields), 484, 484) is None


def test_an_image_stored_at_its_acquired_matrix_is_kept() -> None:
    ds = _header(AcquisitionMatrix=[256, 0, 0, 250], InPlanePhaseEncodingDirection="COL")
    grid = grid_from_header(ds, 256, 256)
    assert grid.factor == 1 and not grid.reduces and grid.source.startswith("as stored")


@pytest.mark.parametrize("text", ["MR2.dcm", "MR2.dcm=0.5", "MR2.dcm=nan", "=2", "MR2.dcm=9", "MR2.dcm=two"])
def test_bad_native_factors_are_refused(text: str) -> None:
    with pytest.raises(InputError, match="is not NAME=F"):
        parse_native_factors([text])


def test_native_factors_parse_and_refuse_repeats() -> None:
    assert parse_native_factors(["a.dcm=2", "b=2.5"]) == {"a.dcm": Fraction(2), "b": Fraction(5, 2)}
    with pytest.raises(InputError, match="twice"):
        parse_native_factors(["a=2", "a=3"])


def _band_limited(shape: tuple[int, int], orders: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An image of mirror-symmetric cosines of the first ``orders`` frequencies per axis, sampled on
    the stored grid and on the grid of half the size (pixel k of which sits at stored 2k + 0.5)."""
    rng = np.random.default_rng(seed)
    coef = rng.normal(0, 0.06 / orders, (orders, orders))

    def sample(n: tuple[int, int], step: float, offset: float) -> np.ndarray:
        ty = np.arange(n[0]) * step + offset
        tx = np.arange(n[1]) * step + offset
        cy = np.cos(np.pi * np.outer(np.arange(orders), 2 * ty + 1) / (2 * shape[0]))
        cx = np.cos(np.pi * np.outer(np.arange(orders), 2 * tx + 1) / (2 * shape[1]))
        return 0.5 + cy.T @ coef @ cx

    return sample(shape, 1.0, 0.0), sample((shape[0] // 2, shape[1] // 2), 2.0, 0.5)


def test_reduction_undoes_zero_filling_of_a_band_limited_image() -> None:
    stored, acquired = _band_limited((96, 128), orders=24)
    reduced = reduce_to_native(stored, Fraction(2))
    assert reduced.shape == native_size(stored.shape, Fraction(2)) == (48, 64)
    assert np.abs(reduced - acquired).max() < 1e-5
    assert reduce_to_native(stored, Fraction(1)) is not None and reduce_to_native(stored, Fraction(1)).shape == (
        96,
        128,
    )


def test_native_size_fits_the_k_space_grid() -> None:
    for shape in [(484, 484), (283, 482), (37, 41)]:
        for factor in [Fraction(19, 7), Fraction(5, 2), Fraction(3)]:
            h, w = native_size(shape, factor)
            assert (
                0 < shape[0] / factor - h < 1 + factor.denominator
                and 0 < shape[1] / factor - w < 1 + factor.denominator
            )
            assert reduce_to_native(np.full(shape, 0.5), factor).shape == (h, w)
    with pytest.raises(InputError, match="too small"):
        native_size((3, 40), Fraction(5))


def _siemens_like(path: Path, factor: int = 2) -> Path:
    """A 96x96 DICOM whose header says 48 frequency x 48 phase samples, holding a zero-filled image."""
    stored, _ = _band_limited((96, 96), orders=20, seed=3)
    hu = (stored - 0.5) * 2000 + 40
    return write_ct(
        path,
        hu,
        AcquisitionMatrix=[96 // factor, 0, 0, 96 // factor],
        InPlanePhaseEncodingDirection="COL",
        PercentPhaseFieldOfView=100,
    )


def test_native_grid_reads_the_header_and_a_given_factor_wins(tmp_path: Path) -> None:
    path = _siemens_like(tmp_path / "a.dcm")
    assert native_grid(path).factor == 2
    assert native_grid(path, {"a.dcm": Fraction(3)}).factor == 3
    assert "given" in native_grid(path, {"a.dcm": Fraction(3)}).source
    (tmp_path / "b.nii.gz").write_bytes(b"")
    assert not native_grid(tmp_path / "b.nii.gz").reduces
    (tmp_path / "c.dcm").write_bytes(b"not dicom")
    assert not native_grid(tmp_path / "c.dcm").reduces


def test_evaluation_images_are_reduced_before_cropping(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _siemens_like(data / "a.dcm")
    stored = load_named_images([f"folder:{data}"])
    grids: dict = {}
    native = load_named_images([f"folder:{data}"], native={}, grids=grids)
    assert len(stored) == len(native) == 1
    assert stored[0][1].shape == (96, 96) and native[0][1].shape == (48, 48)
    assert grids["a.dcm"].factor == 2
    with pytest.raises(InputError, match="not an evaluated file"):
        load_named_images([f"folder:{data}"], native={"other.dcm": Fraction(2)})


@pytest.fixture(scope="module")
def eval_argv(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """metasr-eval's model and data: a.dcm (its header: 2 pixels per sample), b.dcm (as acquired)."""
    root = tmp_path_factory.mktemp("reference")
    data = root / "data"
    data.mkdir()
    _siemens_like(data / "a.dcm")
    _siemens_like(data / "b.dcm", factor=1)
    ckpt = make_checkpoint(root / "m.pt", "metasrgan", features=8, num_blocks=1, wpn_hidden=8)
    return ["--ckpt", str(ckpt), "--data", f"folder:{data}", "--scales", "2", "--crop-scales", "2", "--no-progress"]


def test_eval_cli_reports_each_reference(eval_argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "eval"
    argv = [*eval_argv, "--reference", "native", "--native-factor", "b.dcm=1.5", "--out", str(out)]
    assert eval_main(argv) == 0, capsys.readouterr().err
    table = (out / "table.md").read_text()
    assert "- a.dcm: reduced by 2 " in table and "AcquisitionMatrix 48 x 48" in table
    assert "- b.dcm: reduced by 3/2 " in table and "given (--native-factor b.dcm=1.5)" in table


@pytest.mark.parametrize(
    "args, message",
    [
        (["--native-factor", "a.dcm=2"], "--native-factor needs --reference native"),
        (["--reference", "native", "--native-factor", "a.dcm=0.3"], "is not NAME=F"),
        (["--reference", "native", "--native-factor", "z.dcm=2"], "z.dcm, which is not an evaluated file"),
        (["--reference", "acquired"], "Invalid value for '--reference'"),
    ],
)
def test_reference_options_refused_in_one_line(
    args: list[str], message: str, eval_argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rc = eval_main([*eval_argv, "--out", str(tmp_path / "e"), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "e").exists()


def test_stored_references_that_are_interpolated_are_named(
    eval_argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "eval"
    assert eval_main([*eval_argv, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "a.dcm is stored at 2 pixels per acquired sample" in err and "--reference native" in err
    assert "b.dcm is stored" not in err
    assert "References at the acquired resolution" not in (out / "table.md").read_text()
