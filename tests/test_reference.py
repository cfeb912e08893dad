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
    grid_from_spectrum,
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


# --- the spectrum: zero-filling read from the pixels where the header is silent ---------------


def _textured(shape: tuple[int, int], seed: int = 0, noise: float = 0.01) -> np.ndarray:
    """Anatomy-like texture: a 1/f random field in [0.2, 0.8] plus white noise up to Nyquist."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    field = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=shape)) / np.maximum(np.hypot(fy, fx), 1 / 64)))
    field = 0.2 + 0.6 * (field - field.min()) / np.ptp(field)
    return field + rng.normal(0, noise, shape)


def _zero_filled(image: np.ndarray, fy: Fraction, fx: Fraction, window: bool = False) -> np.ndarray:
    """``image`` stored on a grid ``fy`` x ``fx`` finer, as an MR scanner zero-fills k-space (magnitude, 12 bits)."""
    h, w = image.shape
    big = (int(h * fy), int(w * fx))
    spectrum = np.fft.fftshift(np.fft.fft2(image))
    if window:  # apodised, as scanners filter the outer k-space
        spectrum *= np.outer(np.hamming(h), np.hamming(w)) ** 0.5
    padded = np.zeros(big, complex)
    top, left = (big[0] - h) // 2, (big[1] - w) // 2
    padded[top : top + h, left : left + w] = spectrum
    out = np.abs(np.fft.ifft2(np.fft.ifftshift(padded))) * float(fy * fx)
    return np.round(np.clip(out, 0.0, 1.0) * 4095) / 4095


@pytest.mark.parametrize("factor", [Fraction(3, 2), Fraction(2), Fraction(7, 3), Fraction(5, 2), Fraction(3)])
def test_the_spectrum_gives_the_zero_filling_factor(factor: Fraction) -> None:
    stored = _zero_filled(_textured((120, 96), seed=int(factor * 6)), factor, factor)
    grid = grid_from_spectrum(stored)
    assert grid.factor == factor, grid
    assert "zero-filled" in grid.source and "cycles per pixel" in grid.source


def test_the_spectrum_finds_one_zero_filled_axis_and_an_apodised_edge() -> None:
    texture = _textured((160, 160), seed=5)
    grid = grid_from_spectrum(_zero_filled(texture, Fraction(2), Fraction(1)))
    assert grid.factor == 2 and "vertically" in grid.source
    grid = grid_from_spectrum(_zero_filled(texture, Fraction(1), Fraction(5, 2)))
    assert grid.factor == Fraction(5, 2) and "horizontally" in grid.source
    # a Hamming-filtered edge reads a little early; the tolerance brings it back to 2
    assert grid_from_spectrum(_zero_filled(texture, Fraction(2), Fraction(2), window=True)).factor == 2
    # frames of a volume: one mean spectrum over them
    stack = np.stack([_zero_filled(_textured((100, 100), seed=s), Fraction(2), Fraction(2)) for s in range(3)])
    assert grid_from_spectrum(stack).factor == 2
    # a long float32 series, mostly empty background: the constant frames are left out, the input is untouched
    series = np.zeros((40, 200, 200), np.float32)
    series[5:40:2] = np.resize(stack, (18, 200, 200))
    before = series.copy()
    assert grid_from_spectrum(series).factor == 2
    assert np.array_equal(series, before)


@pytest.mark.parametrize("blur", [0.0, 0.7, 1.5, 3.0])
@pytest.mark.parametrize("noise", [0.0, 0.02])
def test_images_acquired_at_their_grid_show_no_zero_filling(blur: float, noise: float) -> None:
    """Texture to Nyquist, and smooth roll-offs as steep as a soft CT kernel's, are not cliffs."""
    image = _textured((256, 240), seed=11, noise=0.0)
    if blur:
        fy = np.fft.fftfreq(256)[:, None]
        fx = np.fft.fftfreq(240)[None, :]
        image = np.real(np.fft.ifft2(np.fft.fft2(image) * np.exp(-2 * (np.pi * blur) ** 2 * (fy**2 + fx**2))))
    image = image + np.random.default_rng(2).normal(0, noise, image.shape)
    grid = grid_from_spectrum(np.round(np.clip(image, 0, 1) * 4095) / 4095)
    assert grid.factor == 1 and grid.source == "as stored (its spectrum shows no zero-filling)", grid


def test_the_spectrum_reads_only_what_it_can_tell() -> None:
    # zero-filled by 5: a cliff at 0.1 cycles per pixel, outside the factors read (1.25 to 4)
    assert grid_from_spectrum(_zero_filled(_textured((60, 60)), Fraction(5), Fraction(5))).factor == 1
    small = grid_from_spectrum(_zero_filled(_textured((50, 50)), Fraction(2), Fraction(2)))
    assert small.factor == 1 and "too small" in small.source
    bad = _zero_filled(_textured((100, 100)), Fraction(2), Fraction(2))
    bad[3, 3] = np.nan
    assert grid_from_spectrum(bad).factor == 1 and "finite" in grid_from_spectrum(bad).source
    assert grid_from_spectrum(np.full((2, 200, 200), 0.5)).factor == 1  # constant frames are left out


def _silent_file(path: Path, modality: str, **extra: object) -> Path:
    """A 200x200 DICOM holding a texture zero-filled by 2, with no AcquisitionMatrix unless given."""
    stored = _zero_filled(_textured((100, 100), seed=7), Fraction(2), Fraction(2))
    return write_ct(path, (stored - 0.5) * 2000 + 40, Modality=modality, **extra)


def test_native_grid_reads_the_spectrum_of_silent_mr_and_nifti_files(tmp_path: Path) -> None:
    import nibabel as nib

    calls: list[str] = []

    def frames_of(path: Path) -> object:
        from metasr.training.data import read_file

        def read() -> np.ndarray:
            calls.append(path.name)
            return read_file(str(path), "auto").frames

        return read

    mr = _silent_file(tmp_path / "mr.dcm", "MR")
    grid = native_grid(mr, frames=frames_of(mr))
    assert grid.factor == 2 and grid.source.startswith("its spectrum: nothing above 0.2")
    assert native_grid(mr).source == "as stored (its header states no acquired matrix)"  # pixels not given
    assert native_grid(mr, {"mr.dcm": Fraction(3)}, frames=frames_of(mr)).factor == 3
    # a CT kernel is not zero-filling: a CT's pixels are not read
    ct = _silent_file(tmp_path / "ct.dcm", "CT")
    assert not native_grid(ct, frames=frames_of(ct)).reduces
    # the header wins over the spectrum, and then the pixels are not read
    stated = _silent_file(
        tmp_path / "stated.dcm", "MR", AcquisitionMatrix=[200, 0, 0, 200], InPlanePhaseEncodingDirection="COL"
    )
    assert native_grid(stated, frames=frames_of(stated)).factor == 1
    assert calls == ["mr.dcm"]
    volume = np.stack([_zero_filled(_textured((80, 80), seed=s), Fraction(2), Fraction(2)) for s in range(4)], -1)
    nib.save(nib.Nifti1Image((volume * 1000).astype(np.int16), np.eye(4)), tmp_path / "v.nii.gz")
    grid = native_grid(tmp_path / "v.nii.gz", frames=frames_of(tmp_path / "v.nii.gz"))
    assert grid.factor == 2 and "zero-filled" in grid.source
    plain = tmp_path / "plain.dcm"
    write_ct(plain, (_textured((200, 200)) - 0.5) * 2000 + 40, Modality="MR")
    said = native_grid(plain, frames=frames_of(plain)).source
    assert said == "as stored (its header states no acquired matrix; its spectrum shows no zero-filling)"


def test_evaluation_reduces_a_silent_zero_filled_mr_by_its_spectrum(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _silent_file(data / "mr.dcm", "MR")
    grids: dict = {}
    assert load_named_images([f"folder:{data}"], grids=grids)[0][1].shape == (200, 200)
    assert grids["mr.dcm"].factor == 2  # named for the stored-mode warning, nothing reduced
    native = load_named_images([f"folder:{data}"], native={})
    assert native[0][1].shape == (100, 100)
