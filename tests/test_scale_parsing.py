"""Scale text at the boundary: bounded parsing, exact scales, sizes and spacings that really work."""

from __future__ import annotations

import re
import time
from fractions import Fraction

import pytest

from metasr.core.errors import InputError, ScaleError
from metasr.core.scale import (
    MAX_DENOMINATOR,
    Scale,
    parse_decimal,
    parse_scale,
    parse_scale_exact,
    scale_for_size,
    scale_for_spacing,
)

HUGE = ["1e999999999", "1E+99999", "9" * 5000, "1" + "0" * 45, "1e-999999999", "7/" + "3" * 5000]


@pytest.mark.parametrize("text", HUGE)
@pytest.mark.parametrize("parse", [parse_scale, parse_scale_exact])
def test_huge_scale_text_fails_at_once(parse, text: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ScaleError) as err:
        parse(text)
    assert time.perf_counter() - start < 0.5
    assert len(str(err.value)) < 200 and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "nearest"), [("2.0000000001", "2"), ("8.0001", "8"), ("2.3333333333", "7/3"), ("1.0001", "1")]
)
def test_exact_parsing_refuses_rounding(text: str, nearest: str) -> None:
    with pytest.raises(ScaleError, match=f"q up to {MAX_DENOMINATOR}; use {nearest} "):
        parse_scale_exact(text)
    assert parse_scale(text) == Fraction(nearest)  # the library form rounds, as documented


@pytest.mark.parametrize(
    ("text", "expected"), [("1.8", Fraction(9, 5)), ("7/3", Fraction(7, 3)), ("2.125", Fraction(17, 8)), ("4e0", 4)]
)
def test_exact_parsing_keeps_representable_scales(text: str, expected: Fraction) -> None:
    assert parse_scale_exact(text) == expected


@pytest.mark.parametrize("text", ["0", "0/1", "0.0", "-0", "-7/3"])
def test_messages_show_the_text_not_a_fraction_repr(text: str) -> None:
    with pytest.raises(ScaleError) as err:
        parse_scale_exact(text)
    assert "Fraction(" not in str(err.value)
    with pytest.raises(ScaleError) as err:
        parse_scale(Fraction(0))
    assert "Fraction(" not in str(err.value) and "got 0" in str(err.value)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1_000", "0x10", "٣", "2,5", "1/0", "", " ", "1e", "e5"])
def test_garbage_scale_text(text: str) -> None:
    with pytest.raises(ScaleError):
        parse_scale_exact(text)


@pytest.mark.parametrize("text", ["nan", "inf", "0", "-1", "1/2", "abc", "1e9999"])
def test_parse_decimal_refuses(text: str) -> None:
    with pytest.raises(ScaleError):
        parse_decimal(text, "--spacing", "0.5")


def test_parse_decimal_is_exact() -> None:
    assert parse_decimal("0.15", "--spacing", "0.5") == Fraction(3, 20)


@pytest.mark.parametrize(("h", "w", "out_h", "out_w"), [(412, 512, 300, 512), (100, 100, 200, 300), (37, 53, 60, 60)])
def test_size_hint_suggests_a_size_that_works(h: int, w: int, out_h: int, out_w: int) -> None:
    limits = (Fraction(1), Fraction(8))
    with pytest.raises(ScaleError, match=r"e\.g\. (\d+)x(\d+) \(scale") as err:
        scale_for_size(h, w, out_h, out_w, scale_range=limits)
    sw, sh = (int(v) for v in re.search(r"e\.g\. (\d+)x(\d+)", str(err.value)).groups())
    s = scale_for_size(h, w, sh, sw, scale_range=limits)  # the suggestion itself must work
    assert s.output_size(h, w) == (sh, sw) and 1 <= s.value <= 8


def test_size_outside_the_scale_range_names_the_range() -> None:
    with pytest.raises(ScaleError, match="between 1 and 8: sizes from 100x100 to 800x800"):
        scale_for_size(100, 100, 900, 900, scale_range=(Fraction(1), Fraction(8)))


@pytest.mark.parametrize(
    ("old", "target", "expected"),
    [(0.9, "0.5", Fraction(9, 5)), (1.0, "0.15", Fraction(20, 3)), (2.0, "1.25", Fraction(8, 5))],
)
def test_spacing_gives_exactly_the_target(old: float, target: str, expected: Fraction) -> None:
    s = scale_for_spacing((old, old), target)
    assert s.value == expected
    assert Fraction(repr(old)) / s.value == Fraction(target)  # output spacing is old / r exactly


def test_spacing_that_needs_a_large_denominator_is_the_nearest() -> None:
    s = scale_for_spacing((0.7, 0.7), "0.3001")
    assert s.q <= MAX_DENOMINATOR and abs(float(Fraction(7, 10) / s.value) - 0.3001) < 1e-5


@pytest.mark.parametrize(
    ("spacing", "match"),
    [((float("nan"), 0.9), "not a positive finite"), ((-0.9, -0.9), "not a positive finite"), ((0.9, 0.7), "square")],
)
def test_spacing_from_a_bad_header(spacing: tuple[float, float], match: str) -> None:
    with pytest.raises(InputError, match=match):
        scale_for_spacing(spacing, "0.5")


def test_scale_str_round_trips() -> None:
    for text in ("1.8", "7/3", "2"):
        assert Scale(parse_scale_exact(str(Scale(parse_scale_exact(text))))).value == parse_scale_exact(text)
