"""The degradation module: each way of making an LR image against a case with a known answer."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from conftest import write_smooth_images

from metasr.core.errors import InputError
from metasr.training.data import ImageIndex, SliceRef, build_index, tile_index
from metasr.training.degradations import (
    FWHM_PER_SIGMA,
    Degradation,
    DegradationMix,
    Kind,
    NoiseKind,
    Window,
    add_noise,
    area_gauss_matrix,
    hr_needed,
    kspace_downscale,
    kspace_upscale,
    parse_degradation,
    parse_noise,
)
from metasr.training.pairs import PatchDataset, downscale_exact, make_pair

SCALES = [Fraction(11, 10), Fraction(3, 2), Fraction(2), Fraction(5, 2), Fraction(37, 10), Fraction(4)]


@pytest.mark.parametrize("scale", SCALES)
def test_gauss_area_operator_moments(scale):
    """Rows sum to 1, are centred on HR (k + 0.5) r - 0.5, and have the variance of PSF * box(r) * pixel."""
    r = float(scale)
    n_in = 400
    h = int(n_in / r) - 4
    matrix = area_gauss_matrix(n_in, h, scale, fwhm=1.0)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-12)
    j = np.arange(n_in, dtype=np.float64)
    for k in (h // 3, h // 2):  # interior rows: no mirror folding
        mean = float(matrix[k] @ j)
        var = float(matrix[k] @ (j - mean) ** 2)
        sigma = r / FWHM_PER_SIGMA
        # exact for a continuous image; pixel-constant HR leaves a sawtooth residue of ~1e-4 at small sigma
        assert mean == pytest.approx((k + 0.5) * r - 0.5, abs=1e-3)
        assert var == pytest.approx(sigma**2 + r * r / 12 + 1 / 12, rel=1e-3)


def test_gauss_fwhm_widens_the_psf():
    narrow = area_gauss_matrix(200, 80, Fraction(2), fwhm=0.7)[40]
    wide = area_gauss_matrix(200, 80, Fraction(2), fwhm=1.5)[40]
    j = np.arange(200)
    assert float(wide @ (j - wide @ j) ** 2) > float(narrow @ (j - narrow @ j) ** 2) + 1.0


@pytest.mark.parametrize("scale", SCALES)
def test_kspace_truncation_of_a_band_limited_image_is_exact(scale):
    """A periodic image with no frequency at or above the LR Nyquist is sampled exactly on the LR grid."""
    q = scale.denominator
    h = 12 * q
    n = int(h * scale)
    top = h // 2 - 1

    def f(t: np.ndarray) -> np.ndarray:
        return 0.5 + 0.2 * np.cos(2 * np.pi * 3 * t / n) + 0.1 * np.sin(2 * np.pi * top * t / n + 0.3)

    x = np.arange(n, dtype=np.float64)
    image = f(x)[:, None] * f(x)[None, :]
    lr = kspace_downscale(image, scale, (h, h), periodic=True)
    centres = (np.arange(h) + 0.5) * float(scale) - 0.5
    np.testing.assert_allclose(lr, f(centres)[:, None] * f(centres)[None, :], atol=1e-12)


@pytest.mark.parametrize("scale", SCALES)
def test_zero_filling_is_the_exact_inverse_of_kspace_truncation(scale):
    """What a k-space truncation kept comes back exactly; a band-limited image is read at the HR pixels."""
    q = scale.denominator
    rng = np.random.default_rng(int(scale * 10))
    lr = rng.random((9 * q, 7 * q))
    hr = kspace_upscale(lr, scale)
    assert hr.shape == (int(9 * q * scale), int(7 * q * scale))
    np.testing.assert_allclose(kspace_downscale(hr, scale, lr.shape), lr, atol=1e-12)
    # a cosine series of the mirrored LR line (frequencies below its Nyquist) is evaluated exactly
    # at each HR pixel's LR coordinate (j + 0.5) / r - 0.5: the contract's grid
    n = lr.shape[0]

    def f(t: np.ndarray) -> np.ndarray:
        phase = np.pi * (2 * t + 1) / (2 * n)
        return 0.5 + 0.2 * np.cos(3 * phase) + 0.1 * np.cos((n - 1) * phase)

    up = kspace_upscale(np.repeat(f(np.arange(n, dtype=np.float64))[:, None], 4, axis=1), scale)
    t = (np.arange(up.shape[0]) + 0.5) / float(scale) - 0.5
    np.testing.assert_allclose(up[:, 0], f(t), atol=1e-12)
    np.testing.assert_allclose(kspace_upscale(np.full((5 * q, 3 * q), 0.7), scale), 0.7, atol=1e-12)


def test_kspace_window_attenuates_high_frequencies():
    n, h = 128, 64
    x = np.arange(n)
    image = 0.5 + 0.3 * np.cos(2 * np.pi * 28 * x / n)[:, None] * np.ones((1, n))  # near the LR Nyquist (32)
    plain = kspace_downscale(image, Fraction(2), (h, h), periodic=True)
    hamming = kspace_downscale(image, Fraction(2), (h, h), Window.HAMMING, periodic=True)
    tukey = kspace_downscale(image, Fraction(2), (h, h), Window.TUKEY, periodic=True)
    amplitude = [2 * abs(np.fft.fft(a[:, 0])[28]) / h for a in (plain, hamming, tukey)]
    assert amplitude[0] == pytest.approx(0.3, abs=1e-9)  # unwindowed: kept whole
    assert amplitude[1] < 0.1 and amplitude[2] < 0.1  # 28/32 of the LR Nyquist: mostly tapered away
    for out in (hamming, tukey):  # DC is untouched
        assert float(out.mean()) == pytest.approx(0.5, abs=1e-9)


def test_rician_mean_at_zero_signal():
    sigma = 0.02
    noisy = add_noise(np.zeros((600, 600)), NoiseKind.RICIAN, sigma, np.random.default_rng(0))
    assert float(noisy.mean()) == pytest.approx(sigma * math.sqrt(math.pi / 2), rel=0.01)
    assert float(noisy.min()) >= 0.0
    # at high signal the Rician is nearly Gaussian around the signal
    bright = add_noise(np.full((600, 600), 0.8), NoiseKind.RICIAN, sigma, np.random.default_rng(1))
    assert float(bright.std()) == pytest.approx(sigma, rel=0.02)
    gauss = add_noise(np.full((600, 600), 0.5), NoiseKind.GAUSSIAN, sigma, np.random.default_rng(2))
    assert float(gauss.mean()) == pytest.approx(0.5, abs=5e-4) and float(gauss.std()) == pytest.approx(sigma, rel=0.02)


def test_bicubic_degradation_is_the_classic_pair():
    image = np.random.default_rng(3).random((60, 50)).astype(np.float32)
    lr_classic, hr_classic = make_pair(image, Fraction(5, 2))
    lr, hr = make_pair(image, Fraction(5, 2), Degradation(Kind.BICUBIC))
    assert torch.equal(lr, lr_classic) and torch.equal(hr, hr_classic)


@pytest.mark.parametrize("text", ["gauss", "gauss:1.3", "kspace", "kspace:hamming", "kspace:tukey", "bicubic"])
@pytest.mark.parametrize("scale", [Fraction(11, 10), Fraction(9, 5), Fraction(3)])
def test_pairs_of_every_degradation_have_the_contract_geometry(text, scale):
    image = np.random.default_rng(4).random((97, 83)).astype(np.float32)
    deg = parse_degradation(text).with_noise("rician", 0.02)
    lr, hr = make_pair(image, scale, deg, np.random.default_rng(5))
    assert lr.dtype == torch.float32 and torch.isfinite(lr).all() and 0 <= float(lr.min()) <= float(lr.max()) <= 1
    from metasr.core.scale import hr_length

    assert hr.shape == (hr_length(lr.shape[0], scale), hr_length(lr.shape[1], scale))
    if deg.kind is Kind.KSPACE:  # the HR crop is exactly r times the LR
        assert Fraction(hr.shape[0]) == lr.shape[0] * scale


def test_degradations_keep_a_flat_image_flat():
    image = np.full((90, 90), 0.4)
    for text in ("gauss:0.7", "gauss:1.5", "kspace", "kspace:hamming", "bicubic"):
        lr, _ = make_pair(image.astype(np.float32), Fraction(7, 4), parse_degradation(text))
        np.testing.assert_allclose(lr.numpy(), 0.4, atol=1e-6)


def test_parsers_refuse_bad_text():
    assert parse_noise("rician:0.02") == (NoiseKind.RICIAN, 0.02)
    assert parse_noise("none") == (NoiseKind.NONE, 0.0)
    assert parse_degradation("gauss:1.2").fwhm == 1.2
    for bad in ("rician", "rician:x", "rician:nan", "rician:-0.1", "gaussian:0.9", "poisson:0.1", "none:0.1"):
        with pytest.raises(InputError, match="noise"):
            parse_noise(bad)
    for bad in ("box", "gauss:0", "gauss:inf", "kspace:kaiser", "bicubic:2"):
        with pytest.raises(InputError, match="degradation"):
            parse_degradation(bad)


def test_mix_draws_every_kind_and_keeps_the_clean_case():
    mix = DegradationMix()
    rng = np.random.default_rng(6)
    drawn = [mix.sample(rng) for _ in range(600)]
    kinds = {d.kind for d in drawn}
    assert kinds == {Kind.BICUBIC, Kind.GAUSS, Kind.KSPACE}
    clean = sum(d.noise is NoiseKind.NONE for d in drawn) / len(drawn)
    assert 0.25 < clean < 0.45
    sigmas = [d.sigma for d in drawn if d.noise is not NoiseKind.NONE]
    assert 0 < min(sigmas) and max(sigmas) <= 0.03
    assert all(0.7 <= d.fwhm <= 1.5 for d in drawn if d.kind is Kind.GAUSS)
    assert DegradationMix.bicubic_only().sample(rng) == Degradation()


def test_clean_fraction_sets_the_share_of_noiseless_patches(tmp_path):
    from metasr.training.config import TrainConfig, degradation_mix

    mix = degradation_mix(TrainConfig(out_dir=tmp_path, data=["folder:."], clean_fraction=0.1, max_noise=0.02))
    assert mix.clean == 0.1 and mix.max_sigma == 0.02
    rng = np.random.default_rng(7)
    clean = sum(mix.sample(rng).noise is NoiseKind.NONE for _ in range(1000)) / 1000
    assert 0.06 < clean < 0.14
    assert degradation_mix(TrainConfig(out_dir=tmp_path, data=["folder:."])).clean == 0.35  # the default mix


def test_reduction_mix_sets_the_share_of_each_reduction(tmp_path):
    from metasr.training.config import TrainConfig, degradation_mix

    cfg = TrainConfig(out_dir=tmp_path, data=["folder:."], reduction_mix="bicubic=6, gauss=3,kspace=1")
    mix = degradation_mix(cfg)
    assert dict(mix.kinds) == pytest.approx({Kind.BICUBIC: 0.6, Kind.GAUSS: 0.3, Kind.KSPACE: 0.1})
    rng = np.random.default_rng(3)
    drawn = [mix.sample(rng).kind for _ in range(2000)]
    assert 0.56 < drawn.count(Kind.BICUBIC) / 2000 < 0.64 and 0.07 < drawn.count(Kind.KSPACE) / 2000 < 0.13
    only = degradation_mix(TrainConfig(out_dir=tmp_path, data=["folder:."], reduction_mix="gauss=1,kspace=0"))
    assert only.kinds == ((Kind.GAUSS, 1.0),) and not only.needs_kspace
    assert dict(degradation_mix(TrainConfig(out_dir=tmp_path, data=["folder:."])).kinds) == pytest.approx(
        {Kind.BICUBIC: 0.3, Kind.GAUSS: 0.4, Kind.KSPACE: 0.3}
    )  # the default mix


@pytest.mark.parametrize(
    "text, message",
    [
        ("bicubic=1,sinc=1", "'sinc=1' is not understood"),
        ("bicubic", "'bicubic' is not understood"),
        ("bicubic=inf", "finite number >= 0"),
        ("gauss=-0.5", "finite number >= 0"),
        ("gauss=1,gauss=2", "names gauss twice"),
        ("bicubic=0,gauss=0", "no positive weight"),
        ("", "is not understood"),
    ],
)
def test_reduction_mix_refuses_bad_text_in_one_line(text, message):
    from metasr.training.degradations import parse_reduction_mix

    with pytest.raises(InputError, match=message) as err:
        parse_reduction_mix(text)
    assert "\n" not in str(err.value)


def test_patch_dataset_with_the_mix_gives_batchable_pairs(tmp_path):
    folder = write_smooth_images(tmp_path / "imgs", count=2, shape=(130, 130))

    dataset = PatchDataset(build_index([f"folder:{folder}"]), patch_size=48, degradations=DegradationMix())
    for seed in range(12):
        lr, hr = dataset[(seed % 2, "11/10", seed)]
        assert lr.shape == (1, 43, 43) and hr.shape == (1, 47, 47)
    assert hr_needed(Kind.KSPACE, 43, Fraction(11, 10)) == 55  # LR grid on 50 pixels, HR 55


def test_hr_noise_sets_the_share_of_noisy_targets_and_draws_nothing_when_off(tmp_path):
    from metasr.training.config import TrainConfig, degradation_mix

    assert degradation_mix(TrainConfig(out_dir=tmp_path, data=["folder:."])).hr_noise == 0.0  # off by default
    mix = degradation_mix(TrainConfig(out_dir=tmp_path, data=["folder:."], hr_noise=0.4, max_noise=0.02))
    assert mix.describe()["hr_noise"] == 0.4
    rng = np.random.default_rng(5)
    drawn = [mix.sample_hr_noise(rng) for _ in range(2000)]
    noisy = [s for k, s in drawn if k is not NoiseKind.NONE]
    assert 0.36 < len(noisy) / 2000 < 0.44 and 0 < min(noisy) and max(noisy) <= 0.02
    assert all(s == 0.0 for k, s in drawn if k is NoiseKind.NONE)
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    assert DegradationMix().sample_hr_noise(rng_a) == (NoiseKind.NONE, 0.0)
    assert rng_a.random() == rng_b.random()  # nothing drawn: runs without it see the same stream


def test_hr_noise_is_in_the_target_and_reaches_the_lr_through_the_reduction(tmp_path):
    folder = write_smooth_images(tmp_path / "imgs", count=1, shape=(130, 130))
    index = build_index([f"folder:{folder}"])
    bicubic = ((Kind.BICUBIC, 1.0),)
    clean = PatchDataset(index, patch_size=48, degradations=DegradationMix(kinds=bicubic, clean=1.0), augment=False)
    noisy_mix = DegradationMix(kinds=bicubic, clean=1.0, max_sigma=0.03, hr_noise=1.0, rician=0.0)
    noisy = PatchDataset(index, patch_size=48, degradations=noisy_mix, augment=False)
    lr0, hr0 = clean[(0, "2", 3)]
    lr1, hr1 = noisy[(0, "2", 3)]
    residual = (hr1 - hr0).numpy()
    assert 0.0 < residual.std() <= 0.031  # the target carries the HR's noise (same crop: same seed)
    assert abs(float(np.corrcoef(residual[0, :, 1:].ravel(), residual[0, :, :-1].ravel())[0, 1])) < 0.1  # white
    # no noise is added to the LR (clean=1.0): it is the reduction of the noisy HR (away from the
    # bottom/right, where the LR also sees the HR pixel beyond the target)
    reduced = downscale_exact(hr1[0], Fraction(2), (24, 24))
    torch.testing.assert_close(lr1[0, :20, :20], reduced[:20, :20], atol=1e-5, rtol=0)
    lr_res = (lr1 - lr0).numpy()
    assert 0.0 < lr_res.std() < residual.std()  # the antialiasing filter attenuates it in the LR


def test_tile_index_weights_slices_by_area():
    small = SliceRef("a.png", None, 0, (0, 0, 100, 100), "a")
    big = SliceRef("b.dcm", None, 0, (0, 0, 1000, 1000), "b")
    huge = SliceRef("c.dcm", None, 0, (0, 0, 9000, 9000), "c")
    tiled = tile_index(ImageIndex([small, big, huge]), patch_size=96)
    counts = {s.path: tiled.slices.count(s) for s in (small, big, huge)}
    assert counts == {"a.png": 1, "b.dcm": 1000 * 1000 // (2 * 96 * 96), "c.dcm": 128}
