"""The ConnectWise PSA records the tool reads, parsed into dataclasses.

Field names are those of ConnectWise's OpenAPI document (``Company``, ``Agreement``,
``Addition``, ``Info``; PSA_CONNECTWISE_HALO.md §1.4). Parsing is defensive: a record the tool
cannot use raises :class:`BadResponseError` (exit 3, "try again later"), never a traceback,
and a field that is present but unreadable never reads as "absent" (a garbled
``cancelledDate`` must not make a cancelled line look active).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from infima_autotask.errors import BadResponseError
from infima_autotask.json_fields import FieldReader, Record, text


@dataclass(frozen=True)
class SystemInfo:
    """``GET /system/info``: the connection test."""

    version: str
    is_cloud: bool | None
    cloud_region: str | None
    server_time_zone: str | None


@dataclass(frozen=True)
class Company:
    id: int
    identifier: str  # the short company id (max 30 characters)
    name: str
    status: str | None  # status/name, e.g. "Active"
    deleted: bool  # deletedFlag: in the recycle bin


@dataclass(frozen=True)
class Agreement:
    id: int
    name: str
    company_id: int
    company_name: str
    type_name: str | None  # type/name (agreement types are the MSP's own)
    status: str | None  # agreementStatus: Active, Cancelled, Expired or Inactive
    cancelled: bool  # cancelledFlag
    start: date | None
    end: date | None
    no_end: bool  # noEndingDateFlag
    next_invoice: date | None  # nextInvoiceDate
    billing_cycle: str | None  # billingCycle/name; None: not a recurring agreement
    parent_id: int | None  # parentAgreement/id

    def ended_before(self, day: date) -> bool:
        return not self.no_end and self.end is not None and self.end < day


@dataclass(frozen=True)
class Addition:
    id: int
    agreement_id: int
    product_id: int
    product_identifier: str
    description: str
    quantity: float | None  # ConnectWise keeps a number; the tool writes whole ones
    unit_price: float | None
    unit_cost: float | None  # None when the API member cannot see costs
    effective: date | None  # effectiveDate
    cancelled: date | None  # cancelledDate
    bill_customer: str | None  # Billable, DoNotBill or NoCharge
    status: str | None  # agreementStatus of the addition
    last_updated: str | None  # _info/lastUpdated: ConnectWise's only version marker

    @property
    def whole_quantity(self) -> int | None:
        """The quantity as a whole number; None when it is null or has a fraction."""
        q = self.quantity
        return int(q) if q is not None and q.is_integer() else None

    def cancelled_on(self, day: date) -> bool:
        """True when the addition's cancelledDate is ``day`` or earlier."""
        return self.cancelled is not None and self.cancelled <= day


# --- field readers -----------------------------------------------------------------------

_fields = FieldReader("ConnectWise")
_bad, _record, _id, _opt_str = _fields.bad, _fields.record, _fields.id, _fields.opt_text
_flag, _number, _money, _date, _list = (
    _fields.flag,
    _fields.number,
    _fields.money,
    _fields.date,
    _fields.list,
)
_str = text


def _ref(record: Record, key: str, what: str, *, required: bool) -> Record | None:
    """A reference object (``company``, ``product``...); None for a missing optional one."""
    value = record.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, dict):
        raise _bad(what, key, f"got {type(value).__name__}")
    return value


def _ref_id(record: Record, key: str, what: str, *, required: bool) -> int | None:
    ref = _ref(record, key, what, required=required)
    if ref is None:
        return None
    if ref.get("id") is None and not required:
        return None
    return _id(ref, "id", what)


def _ref_name(record: Record, key: str, what: str) -> str | None:
    ref = _ref(record, key, what, required=False)
    if ref is None:
        return None
    name = _str(ref, "name")
    return name or None


# --- records -----------------------------------------------------------------------------


def parse_system_info(value: Any) -> SystemInfo:
    record = _record(value, "a system info answer")
    version = _opt_str(record, "version", "a system info answer")
    if not version:
        raise _bad("a system info answer", "version", "missing")
    is_cloud = record.get("isCloud")
    return SystemInfo(
        version=version,
        is_cloud=is_cloud if isinstance(is_cloud, bool) else None,
        cloud_region=_opt_str(record, "cloudRegion", "a system info answer"),
        server_time_zone=_opt_str(record, "serverTimeZone", "a system info answer"),
    )


def parse_company(value: Any) -> Company:
    what = "a company"
    record = _record(value, what)
    return Company(
        id=_id(record, "id", what),
        identifier=_str(record, "identifier"),
        name=_str(record, "name"),
        status=_ref_name(record, "status", what),
        deleted=_flag(record, "deletedFlag", what),
    )


def parse_agreement(value: Any) -> Agreement:
    what = "an agreement"
    record = _record(value, what)
    company = _ref(record, "company", what, required=True) or {}
    return Agreement(
        id=_id(record, "id", what),
        name=_str(record, "name"),
        company_id=_id(company, "id", what),
        company_name=_str(company, "name"),
        type_name=_ref_name(record, "type", what),
        status=_opt_str(record, "agreementStatus", what),
        cancelled=_flag(record, "cancelledFlag", what),
        start=_date(record, "startDate", what),
        end=_date(record, "endDate", what),
        no_end=_flag(record, "noEndingDateFlag", what),
        next_invoice=_date(record, "nextInvoiceDate", what),
        billing_cycle=_ref_name(record, "billingCycle", what),
        parent_id=_ref_id(record, "parentAgreement", what, required=False),
    )


def parse_addition(value: Any, agreement_id: int | None = None) -> Addition:
    """An addition; ``agreement_id`` is the agreement it was read under.

    Raises:
        BadResponseError: an unusable record, or one that names another agreement.
    """
    what = "an agreement addition"
    record = _record(value, what)
    product = _ref(record, "product", what, required=True) or {}
    if record.get("agreementId") is None and agreement_id is not None:
        owner = agreement_id
    else:
        owner = _id(record, "agreementId", what)
    if agreement_id is not None and owner != agreement_id:
        raise BadResponseError(
            f"ConnectWise answered addition {record.get('id')!r} of agreement {agreement_id} "
            f"with one of agreement {owner}; try again later."
        )
    info = record.get("_info")
    updated = info.get("lastUpdated") if isinstance(info, dict) else None
    return Addition(
        id=_id(record, "id", what),
        agreement_id=owner,
        product_id=_id(product, "id", what),
        product_identifier=_str(product, "identifier"),
        description=_str(record, "description"),
        quantity=_number(record, "quantity", what),
        unit_price=_money(record, "unitPrice", what),
        unit_cost=_money(record, "unitCost", what),
        effective=_date(record, "effectiveDate", what),
        cancelled=_date(record, "cancelledDate", what),
        bill_customer=_opt_str(record, "billCustomer", what),
        status=_opt_str(record, "agreementStatus", what),
        last_updated=updated if isinstance(updated, str) else None,
    )
