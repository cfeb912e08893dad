"""The exact scale arithmetic of the Meta-Upscale contract (torch-free)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from metasr.core.errors import ScaleError
from metasr.core.scale import Scale, axis_mapping, hr_length, parse_scale

PAPER_SCALES = [f"{k / 10:.1f}" for k in range(11, 41)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.8", Fraction(9, 5)),
        ("2.3", Fraction(23, 10)),
        ("2", Fraction(2)),
        ("7/3", Fraction(7, 3)),
        (2.3, Fraction(23, 10)),
        (3.7, Fraction(37, 10)),
        (4, Fraction(4)),
        (" 1.25 ", Fraction(5, 4)),
    ],
)
def test_parse_scale_is_exact(text, expected):
    assert parse_scale(text) == expected


def test_parse_scale_limits_denominator():
    frac = parse_scale("2.3333333333")
    assert frac.denominator <= 1000
    assert abs(float(frac) - 2.3333333333) < 1e-6


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf", float("nan"), float("inf"), -2.0, "abc", "", True, None, [2]])
def test_parse_scale_rejects(bad):
    with pytest.raises(ScaleError):
        parse_scale(bad)


@pytest.mark.parametrize("scale", PAPER_SCALES + ["1.25", "1.75", "2.333"])
@pytest.mark.parametrize("n", [1, 37, 50, 97])
def test_axis_mapping_matches_exact_fractions(scale, n):
    r = Fraction(scale)
    m = axis_mapping(n, r)
    assert len(m.index) == math.floor(n * r) == hr_length(n, r)
    for i in range(len(m.index)):
        exact = Fraction(i) / r
        assert m.index[i] == math.floor(exact)
        assert m.offset[i] == pytest.approx(float(exact - math.floor(exact)), abs=1e-7)
        assert 0 <= m.index[i] < n
    assert m.offset.dtype == np.float32 and m.index.dtype == np.int64
    assert (m.offset >= 0).all() and (m.offset < 1).all()


def test_known_pitfalls_of_float_arithmetic():
    # int(2.3 * 50) == 114 in floating point; the contract gives 115.
    assert int(2.3 * 50) == 114
    assert hr_length(50, parse_scale("2.3")) == 115
    # i * float32(1/r) puts some rows on the wrong LR row; exact arithmetic does not.
    for text in ["2.3", "2.7", "3.7"]:
        r = parse_scale(text)
        m = axis_mapping(200, r)
        naive = np.floor(np.arange(len(m.index), dtype=np.float32) * np.float32(1 / float(r))).astype(np.int64)
        wrong = np.nonzero(naive != m.index)[0]
        for i in wrong:  # wherever the float version disagrees, the exact one is right
            assert m.index[i] == (i * r.denominator) // r.numerator


def test_offsets_take_p_distinct_values():
    r = parse_scale("1.8")
    m = axis_mapping(90, r)
    assert len(set(m.residue.tolist())) == r.numerator == 9


def test_axis_mapping_subrange_equals_slice():
    r = parse_scale("2.7")
    full = axis_mapping(41, r)
    part = axis_mapping(41, r, 17, 60)
    np.testing.assert_array_equal(part.index, full.index[17:60])
    np.testing.assert_array_equal(part.offset, full.offset[17:60])
    with pytest.raises(ScaleError):
        axis_mapping(41, r, 0, 1000)


def test_scale_object():
    s = Scale.parse("1.8")
    assert s.output_size(50, 37) == (90, 66)
    assert s.inv == pytest.approx(5 / 9)
    assert str(s) == "1.8" and str(Scale.parse("7/3")) == "7/3"
    assert Scale.parse(s) is s
