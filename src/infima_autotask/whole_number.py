"""Whole numbers from text and from JSON: the one parser every entry point uses (issue 12).

An operator's whole number is written with the ASCII digits 0-9. ``str.isdigit`` also
accepts ``²`` (which ``int`` then refuses with a traceback) and ``int`` accepts ``١٢``,
``１２`` and ``1_000``: none of them is what anyone typing a count or an ID means, so each
is refused here with an error the caller words for its own input.
"""

from __future__ import annotations

import math

# SQLite's signed 64-bit integer: anything bigger would fail later, in the history, after a write.
MAX_INT = 2**63 - 1

# The ASCII characters ``str.strip`` removes, so entry points that stripped keep doing so
# for ASCII input; non-ASCII spaces (no-break, ideographic) are refused like any other.
_SPACES = "".join(c for c in map(chr, range(128)) if c.isspace())
_DIGITS = frozenset("0123456789")


class WholeNumberError(ValueError):
    """Not a whole number the tool accepts; the message says why."""


class NotWholeNumberError(WholeNumberError):
    """Not written as a whole number (the wrong characters, a fraction, empty, not a number)."""


class OutOfRangeError(WholeNumberError):
    """A whole number, but outside the range the caller allows."""


def strip_spaces(text: str) -> str:
    """``text`` without surrounding ASCII white space (what ``str.strip`` removes of ASCII)."""
    return text.strip(_SPACES)


def parse_whole(
    text: str, *, low: int = 0, high: int = MAX_INT, signs: str = "", spaces: bool = False
) -> int:
    """The whole number ``text`` spells with ASCII digits, between ``low`` and ``high``.

    ``signs`` lists the signs (``"-"``, ``"+-"``) that may come once before the digits;
    ``spaces`` allows surrounding ASCII white space.

    Raises:
        NotWholeNumberError: anything but ASCII digits (and the allowed sign and spaces).
        OutOfRangeError: a whole number below ``low`` or above ``high``.
    """
    body = strip_spaces(text) if spaces else text
    sign = body[:1] if body[:1] in tuple(signs) else ""
    digits = body[len(sign) :]
    if not digits or not _DIGITS.issuperset(digits):
        raise NotWholeNumberError(f"{text!r} is not a whole number (digits 0-9 only)")
    # Without leading zeros and checked before int(): a few thousand digits, even zeros,
    # make int() itself raise (CPython >= 3.11).
    significant = digits.lstrip("0") or "0"
    if len(significant) > len(str(max(abs(low), abs(high)))):
        raise _out_of_range(text, low, high)
    number = -int(significant) if sign == "-" else int(significant)
    if not low <= number <= high:
        raise _out_of_range(text, low, high)
    return number


def whole_from_json(
    value: object,
    *,
    low: int = 0,
    high: int = MAX_INT,
    floats: bool = False,
    text: bool = False,
) -> int:
    """The whole number a parsed JSON value holds: an integer (never ``true``/``false``).

    ``floats`` also takes a float without a fraction (``12.0``, ``1e3``); NaN and infinity,
    which Python's JSON parser lets through, never. ``text`` also takes a string such as
    ``"7"`` or ``" -7 "`` (Autotask sends picklist values so), read by ``parse_whole``.

    Raises:
        NotWholeNumberError: a fraction, NaN, infinity, a bool, anything not a number.
        OutOfRangeError: a whole number below ``low`` or above ``high``.
    """
    if isinstance(value, str) and text:
        return parse_whole(value, low=low, high=high, signs="+-", spaces=True)
    if isinstance(value, float) and floats and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise NotWholeNumberError(f"{value!r} is not a whole number")
    if not low <= value <= high:
        raise _out_of_range(value, low, high)
    return value


def _out_of_range(value: object, low: int, high: int) -> OutOfRangeError:
    # repr() of an integer of thousands of digits raises ValueError itself (CPython >= 3.11).
    shown = "a number" if isinstance(value, int) and value.bit_length() > 64 else repr(value)
    return OutOfRangeError(f"{shown} is not a whole number from {low} to {high}")
