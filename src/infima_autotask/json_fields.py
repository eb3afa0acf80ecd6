"""Reading the fields of a PSA's JSON record, defensively (ConnectWise and HaloPSA).

A record the tool cannot use raises :class:`BadResponseError` (exit 3) naming the PSA, the
record and the field, never a traceback; a field that is present but unreadable never reads
as "absent" (a garbled end date must not make an ended line look active). Prices and costs
are the one exception: one that is not a number reads as None, as a member who cannot see
costs gets, and as Autotask's reader does.
"""

from __future__ import annotations

import math
import re
from datetime import date
from typing import Any

from infima_autotask.errors import BadResponseError
from infima_autotask.whole_number import MAX_INT, WholeNumberError, whole_from_json

Record = dict[str, Any]

_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:$|[T ])")


def parse_date(value: Any) -> date | None:
    """The calendar date of an API date (``2026-07-01T00:00:00Z``, ``2026-07-01T00:00:00``
    or ``2026-07-01``), read as written, never shifted by a time zone; None for anything else.
    """
    if not isinstance(value, str):
        return None
    match = _DATE.match(value.strip())
    if match is None:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def text(record: Record, key: str) -> str:
    """A text field ("" when missing or not text); characters that cannot be written as UTF-8
    become ``?`` (a lone surrogate would break the terminal and the config file)."""
    value = record.get(key)
    if not isinstance(value, str):
        return ""
    return value.encode("utf-8", "replace").decode("utf-8")


class FieldReader:
    """The field readers for one PSA's records; errors name ``psa``."""

    def __init__(self, psa: str) -> None:
        self.psa = psa

    def bad(self, what: str, key: str, detail: str) -> BadResponseError:
        return BadResponseError(f"{self.psa} sent {what} without a usable {key} ({detail}).")

    def record(self, value: Any, what: str) -> Record:
        if not isinstance(value, dict):
            raise BadResponseError(f"{self.psa} sent {what} that is not a record; try again later.")
        return value

    def id(self, record: Record, key: str, what: str, *, low: int = 1) -> int:
        value = record.get(key)
        try:
            return whole_from_json(value, low=low, floats=True)
        except WholeNumberError:
            raise self.bad(what, key, f"got {type(value).__name__}") from None

    def opt_text(self, record: Record, key: str, what: str) -> str | None:
        value = record.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.bad(what, key, f"got {type(value).__name__}")
        return text(record, key)

    def flag(self, record: Record, key: str, what: str, *, default: bool = False) -> bool:
        """A true/false flag; missing or null is ``default``, anything but a bool is refused."""
        value = record.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.bad(what, key, f"got {type(value).__name__}")
        return value

    def number(self, record: Record, key: str, what: str) -> float | None:
        """A number; None when missing or null. NaN, infinity, bools and text are refused."""
        value = record.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.bad(what, key, f"got {type(value).__name__}")
        if isinstance(value, int) and abs(value) > MAX_INT:
            raise self.bad(what, key, "out of range")
        if not math.isfinite(value):
            raise self.bad(what, key, "not a finite number")
        return float(value)

    def money(self, record: Record, key: str, what: str) -> float | None:
        """A price or cost; one that is not a number reads as None. NaN and infinity are
        refused."""
        value = record.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return self.number(record, key, what)

    def date(self, record: Record, key: str, what: str) -> date | None:
        value = record.get(key)
        if value is None or value == "":
            return None
        parsed = parse_date(value)
        if parsed is None:
            raise self.bad(what, key, "not a date")
        return parsed

    def list(self, record: Record, key: str, what: str) -> list[Any]:
        """A list field; [] when missing or null."""
        value = record.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.bad(what, key, f"got {type(value).__name__}")
        return value
