"""Exact addition and canonical text, with property-based tests."""

from __future__ import annotations

import decimal
import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import InvalidTaskError
from core.numbers import MAX_DIGITS, add_exact, canonical_text, check_number, plain_digit_count
from core.task import parse_task

CANONICAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?")
big_ints = st.integers(min_value=-(10**300), max_value=10**300)
decimals = st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(
    lambda d: plain_digit_count(d) <= 300
)


def result_of(num1: str, num2: str) -> str:
    return parse_task(f'{{"id": "t", "data": {{"num1": {num1}, "num2": {num2}}}}}').result_text()


@pytest.mark.parametrize(
    ("num1", "num2", "expected"),
    [
        ("42", "58", "100"),
        ("0.1", "0.2", "0.3"),
        (str(10**30), "1", "1" + "0" * 29 + "1"),
        ("1e2", "1", "101"),
        ("1.50", "1.50", "3"),
        ("-0.5", "0.5", "0"),
        ("-0.0", "0", "0"),
        ("1E-20", "0", "0.00000000000000000001"),
        ("123456789012345678901234567890.5", "0.25", "123456789012345678901234567890.75"),
        ("-7", "2", "-5"),
    ],
)
def test_known_sums(num1: str, num2: str, expected: str) -> None:
    assert result_of(num1, num2) == expected


@given(big_ints, big_ints)
def test_integers_add_exactly_at_any_size(a: int, b: int) -> None:
    assert canonical_text(add_exact(a, b)) == str(a + b)


def _exact_sum(a: Decimal, b: Decimal) -> Decimal:
    """Reference sum in a context far wider than any input, trapping any rounding."""
    context = decimal.Context(prec=10_000, traps=[decimal.Inexact, decimal.Rounded])
    return context.add(a, b)


@given(decimals, decimals)
def test_decimals_add_exactly(a: Decimal, b: Decimal) -> None:
    # WHEN two exact decimals are added / THEN no digit is lost
    assert Decimal(canonical_text(add_exact(a, b))) == _exact_sum(a, b)


@given(st.one_of(decimals, big_ints), st.one_of(decimals, big_ints))
def test_canonical_text_is_plain_and_shortest(a: Decimal | int, b: Decimal | int) -> None:
    text = canonical_text(add_exact(a, b))
    # no exponent, no leading zeros, no trailing fractional zeros, no "-0"
    assert CANONICAL.fullmatch(text), text
    assert text != "-0"


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_python_floats_are_taken_at_their_shortest_repr(value: float) -> None:
    number = check_number(value, "num1")
    assert Decimal(repr(value)) == number


@pytest.mark.parametrize("digits", [MAX_DIGITS + 1, 5000])
def test_numbers_longer_than_the_limit_are_rejected(digits: int) -> None:
    with pytest.raises(InvalidTaskError) as caught:
        result_of("1" + "0" * (digits - 1), "1")
    assert caught.value.code == "number_too_long"
    assert f"{digits} digits" in caught.value.message
    assert caught.value.task_id == "t"


def test_number_at_the_limit_is_accepted() -> None:
    assert result_of("9" * MAX_DIGITS, "1") == "1" + "0" * MAX_DIGITS


def test_huge_exponent_is_rejected_not_expanded() -> None:
    with pytest.raises(InvalidTaskError) as caught:
        result_of("1e999999999", "1")
    assert caught.value.code == "number_too_long"


@pytest.mark.parametrize(
    ("literal", "expected_words"),
    [
        ("true", "a boolean (true)"),
        ("false", "a boolean (false)"),
        ('"42"', "a string ('42')"),
        ("null", "null"),
        ("[1]", "an array"),
        ('{"v": 1}', "an object"),
    ],
)
def test_non_numbers_are_rejected_with_their_kind(literal: str, expected_words: str) -> None:
    with pytest.raises(InvalidTaskError) as caught:
        result_of(literal, "1")
    assert caught.value.code == "invalid_number"
    assert caught.value.message == f"data.num1 must be a JSON number, not {expected_words}"


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_tokens_are_rejected(token: str) -> None:
    with pytest.raises(InvalidTaskError) as caught:
        result_of("1", token)
    assert caught.value.code == "invalid_number"
    assert token.lstrip("-") in caught.value.message


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), Decimal("NaN"), Decimal("-Infinity")]
)
def test_non_finite_python_values_are_rejected(value: object) -> None:
    with pytest.raises(InvalidTaskError, match="finite"):
        check_number(value, "num1")


@pytest.mark.parametrize(
    ("value", "digits"), [("1E+3", 4), ("0.001", 4), ("12.5", 3), ("0", 1), ("-45.10", 4)]
)
def test_plain_digit_count(value: str, digits: int) -> None:
    assert plain_digit_count(Decimal(value)) == digits
