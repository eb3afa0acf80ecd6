"""The Autotask records the tool reads, parsed into dataclasses, and the batched reads of them.

Mapping, ``list-mappings --check``, ``doctor`` and ``sync`` all read Autotask through these
functions, so the units-row rule (SPEC §8) exists once; which contracts and chains are usable
is ``chain.py``'s.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from infima_autotask.autotask import AutotaskApi, Record, format_date, parse_date
from infima_autotask.errors import BadResponseError
from infima_autotask.whole_number import (
    MAX_INT,
    NotWholeNumberError,
    OutOfRangeError,
    whole_from_json,
)

CONTRACT_FIELDS = (
    "companyID",
    "contractName",
    "contractType",
    "status",
    "startDate",
    "endDate",
    "contractPeriodType",
)
CONTRACT_SERVICE_FIELDS = ("contractID", "serviceID", "unitPrice", "unitCost")
UNITS_FIELDS = (
    "contractID",
    "contractServiceID",
    "serviceID",
    "startDate",
    "endDate",
    "units",
    "price",
    "cost",
    "approveAndPostDate",
)
ACTIVE_CONTRACT_STATUS = 1  # used only when the status picklist cannot be read


@dataclass(frozen=True)
class Account:
    id: int
    name: str
    company_type: int | None
    active: bool


@dataclass(frozen=True)
class Contract:
    id: int
    account_id: int
    name: str
    contract_type: int | None
    status: int | None
    start: date | None
    end: date | None
    period_type: int | None = None  # contractPeriodType (a picklist value)

    def ended_before(self, day: date) -> bool:
        return self.end is not None and self.end < day


@dataclass(frozen=True)
class ContractService:
    id: int
    contract_id: int
    service_id: int
    unit_price: float | None = None  # per-unit, unlike a units row's extended amounts
    unit_cost: float | None = None


@dataclass(frozen=True)
class Service:
    id: int
    name: str


@dataclass(frozen=True)
class UnitsRow:
    id: int
    contract_id: int
    contract_service_id: int
    service_id: int | None
    start: date
    end: date
    units: int
    price: float | None  # extended: units x the per-unit price (billing.unit_rates)
    cost: float | None  # extended, like price; None when the API user cannot see costs
    posted: bool  # approveAndPostDate is set: the period is billed


def _int(record: Record, key: str, *, required: bool = True) -> Any:
    """An integer field; ``None`` for a missing optional one.

    Outside SQLite's signed 64-bit range counts as unusable: such a value would fail later,
    in the history, after a write.
    """
    value = record.get(key)
    try:
        return whole_from_json(value, low=-MAX_INT, floats=True)
    except OutOfRangeError:
        problem = "a number out of range"
    except NotWholeNumberError:
        problem = type(value).__name__
    if required:
        raise BadResponseError(f"Autotask sent a record without a usable {key} (got {problem}).")
    return None


def _id(record: Record, key: str, *, lowest: int = 1) -> int:
    """A record id: Autotask numbers records from 1 (companies from 0: the tenant's own)."""
    value: int = _int(record, key)
    if value < lowest:
        raise BadResponseError(f"Autotask sent a record with {key} {value}.")
    return value


def _float(record: Record, key: str) -> float | None:
    """A money field; ``None`` when missing or not a number (the API user cannot see costs).

    Raises:
        BadResponseError: NaN or infinity, which Python's JSON parser lets through.
    """
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int) and abs(value) > MAX_INT:
        raise BadResponseError(f"Autotask sent a {key} out of range.")
    if not math.isfinite(value):
        raise BadResponseError(f"Autotask sent a {key} that is not a finite number.")
    return float(value)


def _str(record: Record, key: str) -> str:
    """A text field; characters that cannot be written as UTF-8 become ``?``."""
    value = record.get(key)
    if not isinstance(value, str):
        return ""
    # A lone surrogate ("\ud800" in JSON) would break the terminal and the config file.
    return value.encode("utf-8", "replace").decode("utf-8")


def parse_account(record: Record) -> Account:
    return Account(
        id=_id(record, "id", lowest=0),
        name=_str(record, "companyName"),
        company_type=_int(record, "companyType", required=False),
        active=record.get("isActive") is True,
    )


def parse_contract(record: Record) -> Contract:
    return Contract(
        id=_id(record, "id"),
        account_id=_id(record, "companyID", lowest=0),
        name=_str(record, "contractName"),
        contract_type=_int(record, "contractType", required=False),
        status=_int(record, "status", required=False),
        start=parse_date(record.get("startDate")),
        end=_required_date(record, "endDate", "contract"),
        period_type=_int(record, "contractPeriodType", required=False),
    )


def _required_date(record: Record, key: str, what: str) -> date:
    """Autotask requires these dates; a missing or unreadable one must not read as "none"."""
    parsed = parse_date(record.get(key))
    if parsed is None:
        raise BadResponseError(f"Autotask sent a {what} without a usable {key}.")
    return parsed


def parse_contract_service(record: Record) -> ContractService:
    return ContractService(
        id=_id(record, "id"),
        contract_id=_id(record, "contractID"),
        service_id=_id(record, "serviceID"),
        unit_price=_float(record, "unitPrice"),
        unit_cost=_float(record, "unitCost"),
    )


def parse_service(record: Record) -> Service:
    return Service(id=_id(record, "id"), name=_str(record, "name"))


def parse_units_row(record: Record) -> UnitsRow:
    start, end = parse_date(record.get("startDate")), parse_date(record.get("endDate"))
    if start is None or end is None:
        raise BadResponseError("Autotask sent a ContractServiceUnits row without its dates.")
    return UnitsRow(
        id=_id(record, "id"),
        contract_id=_id(record, "contractID"),
        contract_service_id=_id(record, "contractServiceID"),
        service_id=_int(record, "serviceID", required=False),
        start=start,
        end=end,
        units=_units(record),
        price=_float(record, "price"),
        cost=_float(record, "cost"),
        posted=record.get("approveAndPostDate") not in (None, ""),
    )


def _units(record: Record) -> int:
    units = _int(record, "units")
    if units < 0:
        raise BadResponseError(f"Autotask sent a ContractServiceUnits row with {units} units.")
    return int(units)


def choose_row(rows: Iterable[UnitsRow], day: date) -> UnitsRow | None:
    """SPEC §8: of the rows covering ``day``, the latest ``start``; ties: the highest id."""
    covering = [row for row in rows if row.start <= day <= row.end]
    return max(covering, key=lambda row: (row.start, row.id), default=None)


def read_accounts(client: AutotaskApi, ids: Iterable[int]) -> dict[int, Account]:
    records = client.query_in(
        "Companies", "id", ids, fields=("companyName", "companyType", "isActive")
    )
    return {account.id: account for account in map(parse_account, records)}


def read_contracts(client: AutotaskApi, ids: Iterable[int]) -> dict[int, Contract]:
    records = client.query_in("Contracts", "id", ids, fields=CONTRACT_FIELDS)
    return {contract.id: contract for contract in map(parse_contract, records)}


def read_contract_services(client: AutotaskApi, ids: Iterable[int]) -> dict[int, ContractService]:
    records = client.query_in("ContractServices", "id", ids, fields=CONTRACT_SERVICE_FIELDS)
    return {cs.id: cs for cs in map(parse_contract_service, records)}


def read_units_rows(
    client: AutotaskApi,
    contract_service_ids: Iterable[int],
    first: date,
    last: date | None = None,
) -> dict[int, list[UnitsRow]]:
    """The units rows overlapping ``first``..``last`` (one day when ``last`` is None) of every
    given contract service, in batched queries."""
    records = client.query_in(
        "ContractServiceUnits",
        "contractServiceID",
        contract_service_ids,
        filters=[
            {"op": "lte", "field": "startDate", "value": format_date(last or first)},
            {"op": "gte", "field": "endDate", "value": format_date(first)},
        ],
        fields=UNITS_FIELDS,
    )
    rows: dict[int, list[UnitsRow]] = {}
    for row in map(parse_units_row, records):
        rows.setdefault(row.contract_service_id, []).append(row)
    return rows


def read_location_timezone(client: AutotaskApi) -> str | None:
    """The ``timeZone`` text of the default ``InternalLocations`` record, or None.

    Taken as the tenant database's zone (UNCONFIRMED in AUTOTASK_API.md: ``doctor`` shows it
    beside ``autotask.timezone`` and the first write of a run proves it).
    """
    records = client.query(
        "InternalLocations",
        [{"op": "eq", "field": "isDefault", "value": True}],
        fields=("name", "isDefault", "timeZone"),
    )
    for record in records:
        if record.get("isDefault") is True:
            zone = record.get("timeZone")
            return zone.strip() if isinstance(zone, str) and zone.strip() else None
    return None


def read_services(client: AutotaskApi, ids: Iterable[int]) -> dict[int, Service]:
    records = client.query_in("Services", "id", ids, fields=("name",))
    return {service.id: service for service in map(parse_service, records)}


@dataclass(frozen=True)
class ContractPicklists:
    """The contract picklists a run needs, read in one request."""

    active_statuses: set[int]
    period_labels: dict[int, str]


def read_contract_picklists(client: AutotaskApi) -> ContractPicklists:
    """``Contracts.status`` values labelled Active and the ``contractPeriodType`` labels."""
    lists = client.picklists("Contracts", ("status", "contractPeriodType"))
    statuses = lists.get("status", {})
    active = {value for value, label in statuses.items() if label.strip().lower() == "active"}
    return ContractPicklists(
        active_statuses=active or {ACTIVE_CONTRACT_STATUS},
        period_labels=lists.get("contractPeriodType", {}),
    )
