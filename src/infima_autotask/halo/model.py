"""The HaloPSA records the tool reads, parsed into dataclasses.

Field names are those of Halo's API (``Client``, ``SoftwareLicence``, ``RecurringInvoice``
lines; PSA_CONNECTWISE_HALO.md §2.2). Parsing is defensive, as for ConnectWise: a record the
tool cannot use raises :class:`BadResponseError` (exit 3), never a traceback, and a field that
is present but unreadable never reads as "absent" (a garbled ``end_date`` must not make an
expired subscription look active).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from infima_autotask.json_fields import FieldReader, text
from infima_autotask.whole_number import MAX_INT

# Subscription statuses that never bill, whatever is_active says (compared case-insensitively).
ENDED_STATUSES = frozenset({"inactive", "cancelled", "expired"})


@dataclass(frozen=True)
class HaloClient:
    id: int
    name: str
    inactive: bool


@dataclass(frozen=True)
class Licence:
    """A ``SoftwareLicence``: the subscription whose ``count`` the tool writes."""

    id: int
    client_id: int
    client_name: str
    name: str
    count: float | None  # Halo keeps a number; the tool writes whole ones
    status: str | None  # "Active", "Inactive", "Cancelled", "Expired"...
    is_active: bool
    deleted: bool
    end_date: date | None
    price: float | None
    monthly_cost: float | None

    @property
    def whole_count(self) -> int | None:
        """The count as a whole number; None when it is null or has a fraction."""
        c = self.count
        return int(c) if c is not None and c.is_integer() else None

    def active_on(self, day: date) -> bool:
        """Active, not deleted, no ended status, and not ended before ``day``."""
        return (
            self.is_active
            and not self.deleted
            and (self.status or "").strip().lower() not in ENDED_STATUSES
            and (self.end_date is None or self.end_date >= day)
        )


@dataclass(frozen=True)
class RecurringLine:
    """A recurring-invoice line and the subscriptions (licences) it takes its quantity from."""

    invoice_id: int  # may be negative (Halo's own example has -94)
    line_id: int
    item_code: str
    licence_ids: frozenset[int]
    inactive: bool


# --- field readers -----------------------------------------------------------------------

_fields = FieldReader("HaloPSA")
_bad, _record, _id, _opt_str = _fields.bad, _fields.record, _fields.id, _fields.opt_text
_flag, _number, _money, _date, _list = (
    _fields.flag,
    _fields.number,
    _fields.money,
    _fields.date,
    _fields.list,
)
_str = text


# --- records -----------------------------------------------------------------------------


def parse_client(value: Any) -> HaloClient:
    what = "a client"
    record = _record(value, what)
    return HaloClient(
        id=_id(record, "id", what),
        name=_str(record, "name"),
        inactive=_flag(record, "inactive", what),
    )


def parse_licence(value: Any) -> Licence:
    what = "a subscription (SoftwareLicence)"
    record = _record(value, what)
    return Licence(
        id=_id(record, "id", what),
        client_id=_id(record, "client_id", what),
        client_name=_str(record, "client_name"),
        name=_str(record, "name"),
        count=_number(record, "count", what),
        status=_opt_str(record, "status", what),
        # A record without is_active is taken as active: the other fields still decide.
        is_active=_flag(record, "is_active", what, default=True),
        deleted=_flag(record, "deleted", what),
        end_date=_date(record, "end_date", what),
        price=_money(record, "price", what),
        monthly_cost=_money(record, "monthly_cost", what),
    )


def parse_recurring_lines(value: Any) -> list[RecurringLine]:
    """The lines of one recurring invoice (``includelines=true``)."""
    what = "a recurring invoice"
    invoice = _record(value, what)
    invoice_id = _id(invoice, "id", what, low=-MAX_INT)
    lines: list[RecurringLine] = []
    for raw in _list(invoice, "lines", what):
        line_what = f"a line of recurring invoice {invoice_id}"
        line = _record(raw, line_what)
        sources: set[int] = set()
        for key in ("quantity_subscriptions", "quantity_licences"):
            for entry in _list(line, key, line_what):
                source = _record(entry, line_what)
                if source.get("type_id") is not None:
                    sources.add(_id(source, "type_id", line_what))
        lines.append(
            RecurringLine(
                invoice_id=invoice_id,
                line_id=_id(line, "id", line_what, low=-MAX_INT),
                item_code=_str(line, "item_code"),
                licence_ids=frozenset(sources),
                inactive=_flag(line, "isinactive", line_what),
            )
        )
    return lines
