"""Exact addition of JSON numbers and their canonical text.

Integers add as Python ints (exact at any size). Any operand written with a fraction or an
exponent makes the sum a :class:`decimal.Decimal`, computed in a context wide enough that no
digit is ever rounded away (``Inexact`` and ``Rounded`` trap, so a lost digit would be an error,
not a silent change).
"""

from __future__ import annotations

import decimal
import math
from decimal import Decimal

from core.errors import InvalidTaskError

MAX_DIGITS = 1000
"""Most digits a number may have when written out in plain notation (no exponent)."""

Number = int | Decimal


class NonFiniteToken(str):
    """A ``NaN``/``Infinity`` token (not JSON), kept so the number check can name its field."""

    __slots__ = ()


class IntegerText(str):
    """An integer literal kept as text because it is too long to convert safely."""

    __slots__ = ()


# Two operands of at most MAX_DIGITS plain digits each: the exact sum needs at most
# 2 * MAX_DIGITS + 1 significant digits, so this precision never rounds.
_EXACT = decimal.Context(
    prec=2 * MAX_DIGITS + 8,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[decimal.Inexact, decimal.Rounded, decimal.InvalidOperation, decimal.Overflow],
)
_SMALL_INT = 10**18


def _too_long(field: str, digits: int) -> InvalidTaskError:
    return InvalidTaskError(
        "number_too_long",
        f"{field} has {digits} digits; at most {MAX_DIGITS} are allowed",
    )


def plain_digit_count(value: Decimal) -> int:
    """Digits of ``value`` written in plain notation: ``1E+3`` has 4, ``0.001`` has 4."""
    if value.is_zero():
        return 1
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite numbers only
    return max(len(digits) + exponent, 1) + max(-exponent, 0)


def check_number(value: object, field: str) -> Number:
    """Return ``value`` as an exact number, or raise ``InvalidTaskError`` saying why not."""
    kind = type(value)
    if kind is int:
        assert isinstance(value, int)
        if -_SMALL_INT < value < _SMALL_INT:
            return value
        digits = len(str(abs(value)))
        if digits > MAX_DIGITS:
            raise _too_long(field, digits)
        return value
    if kind is Decimal:
        assert isinstance(value, Decimal)
        if not value.is_finite():
            raise InvalidTaskError("invalid_number", f"{field} must be a finite number")
        digits = plain_digit_count(value)
        if digits > MAX_DIGITS:
            raise _too_long(field, digits)
        return value
    if kind is NonFiniteToken:
        raise InvalidTaskError(
            "invalid_number", f"{field} must be a finite JSON number, not the token {value}"
        )
    if kind is IntegerText:
        assert isinstance(value, IntegerText)
        digits = len(value.lstrip("-"))
        if digits > MAX_DIGITS:
            raise _too_long(field, digits)
        return int(value)
    if kind is float:  # only from tasks built in Python; JSON input never yields floats
        assert isinstance(value, float)
        if not math.isfinite(value):
            raise InvalidTaskError("invalid_number", f"{field} must be a finite number")
        return check_number(Decimal(repr(value)), field)
    raise InvalidTaskError("invalid_number", f"{field} must be a JSON number, not {_kind(value)}")


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if value is None:
        return "null"
    if isinstance(value, str):
        shown = value if len(value) <= 20 else value[:20] + "..."
        return f"a string ({shown!r})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def add_exact(a: Number, b: Number) -> Number:
    """Add two checked numbers without losing a digit."""
    if type(a) is int and type(b) is int:
        return a + b
    return _EXACT.add(Decimal(a), Decimal(b))


def canonical_text(value: Number) -> str:
    """The shortest plain decimal string equal to ``value``.

    No exponent, no trailing fractional zeros, no decimal point for whole numbers, and no
    negative zero: ``100``, ``0.3``, ``-1.25``, ``1000000000000000000000000000001``.
    """
    if type(value) is int:
        return str(value)
    assert isinstance(value, Decimal)
    if value.is_zero():
        return "0"
    return format(value.normalize(_EXACT), "f")
