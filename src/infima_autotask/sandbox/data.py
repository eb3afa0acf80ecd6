"""The sandbox's data: seed records (dates relative to ``today``) and a bulk generator.

Autotask records are stored as they travel on the wire (camelCase keys, dates as
``YYYY-MM-DDT00:00:00`` strings) so the servers can answer without converting. INFIMA users
are not stored: each client keeps counts and users are made on the fly when a page is read.

Units rows carry EXTENDED amounts, as live tenants show: ``price`` and ``cost`` are units x the
per-unit rate, rounded to cents (``cost`` is None for an API user without cost visibility).
Contract services carry the per-unit ``unitPrice``/``unitCost``. A contract service's units
rows are its contract's billing periods (``contractPeriodType``, from ``startDate``).

Seed IDs (see the module constants below; ``seed_mappings(today)`` returns the SPEC §6
mappings of the five mapped clients, ``seed_mapping(client_id, today)`` any seeded client's):

=====================  ==========  ===========  ===========  =====  ======================
account                account id  contract id  contract     units  INFIMA
                                                service
=====================  ==========  ===========  ===========  =====  ======================
Sandbox MSP (own org)  0           (the tenant's own organization: every tenant has a company 0)
Acme Dental LLC        29683501    29684001     29685100     10     101: 12 active, 3 inactive
Birch & Co Legal       29683502    29684002     29685200     25     102: 25 active
Cobalt Logistics       29683503    29684003     29685300     40     103: 31 active, 2 inactive
Delta Veterinary       29683504    29684004 (ended last month)  8   104: 8 active
                                   29690011     29690450     8      (renewal, from the 1st)
Evergreen Realty       29683505    29684005     29685500     5      105: 6 active (unmapped)
Acme Holdings          29683506    (inactive company, no contract)
Foxtrot Supplies       29683507    (vendor, no contract)
Granite Dental Studio  29683508    29684006     29685600     12     106: 14 active
                                   (monthly from the 17th, 12 months ago)
Harbor Physiotherapy   29683509    29684007     29685700     9      107: 11 active (unmapped)
                                   (quarterly from the 1st of month -13: none starts this month)
Iris Architects        29683510    29684008     29685800     18     108: 20 active (unmapped)
                                   (yearly from the 1st of month -5: none starts this month)
=====================  ==========  ===========  ===========  =====  ======================

INFIMA client 109 (Juniper Dental: 20 active, 1 inactive) is billed in ConnectWise: its
company, agreement and addition are in ``cw_data``. INFIMA client 110 (Kestrel Law: 14
active, 1 inactive) is billed in HaloPSA: its client and subscription are in ``halo_data``.

Acme also has a Block Hours contract 29684009 (no services) and a second service on its
Recurring Service contract (29685101, "Managed Backup" 30020). Contracts of clients 101-105 are
billed monthly from the 1st: units rows exist for the previous month (approved and posted),
this month and next month. Granite, Harbor and Iris have a row per billing period overlapping
the previous month through next month; periods that ended before this month are posted.
The default ``InternalLocations`` record (id 1, "Head Office") shows ``tenant_timezone``.
"""

from __future__ import annotations

import calendar
import re
import threading
from collections import UserDict
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

# Services
SERVICE_ID = 30012
SERVICE_NAME = "INFIMA Security Awareness Training"
SERVICE_UNIT_PRICE = 4.5
SERVICE_UNIT_COST = 2.25
BACKUP_SERVICE_ID = 30020
BACKUP_SERVICE_NAME = "Managed Backup"

# Companies (Autotask accounts)
ACME_ACCOUNT_ID = 29683501
BIRCH_ACCOUNT_ID = 29683502
COBALT_ACCOUNT_ID = 29683503
DELTA_ACCOUNT_ID = 29683504
EVERGREEN_ACCOUNT_ID = 29683505
ACME_HOLDINGS_ACCOUNT_ID = 29683506  # isActive false
FOXTROT_VENDOR_ACCOUNT_ID = 29683507  # companyType 6 (Vendor)
GRANITE_ACCOUNT_ID = 29683508
HARBOR_ACCOUNT_ID = 29683509
IRIS_ACCOUNT_ID = 29683510
# Every tenant's own organization is company 0 (Autotask help: "assigned it the organization
# ID 0"), so a falsy id is a real, active company.
OWN_COMPANY_ID = 0
OWN_COMPANY_NAME = "Sandbox MSP (own organization)"

# Contracts
ACME_CONTRACT_ID = 29684001
BIRCH_CONTRACT_ID = 29684002
COBALT_CONTRACT_ID = 29684003
DELTA_OLD_CONTRACT_ID = 29684004  # ended on the last day of the previous month
EVERGREEN_CONTRACT_ID = 29684005
GRANITE_CONTRACT_ID = 29684006  # monthly from the 17th
HARBOR_CONTRACT_ID = 29684007  # quarterly: no period starts this month
IRIS_CONTRACT_ID = 29684008  # yearly, from the 1st of the month five months ago
ACME_BLOCK_HOURS_CONTRACT_ID = 29684009  # contractType 3: adjustments are refused
DELTA_RENEWAL_CONTRACT_ID = 29690011  # starts on the 1st of this month

# Contract services
ACME_CONTRACT_SERVICE_ID = 29685100
ACME_BACKUP_CONTRACT_SERVICE_ID = 29685101  # service 30020 on the Acme contract
BIRCH_CONTRACT_SERVICE_ID = 29685200
COBALT_CONTRACT_SERVICE_ID = 29685300
DELTA_OLD_CONTRACT_SERVICE_ID = 29685400
EVERGREEN_CONTRACT_SERVICE_ID = 29685500
DELTA_RENEWAL_CONTRACT_SERVICE_ID = 29690450
GRANITE_CONTRACT_SERVICE_ID = 29685600
HARBOR_CONTRACT_SERVICE_ID = 29685700
IRIS_CONTRACT_SERVICE_ID = 29685800

# INFIMA clients
ACME_CLIENT_ID = 101
BIRCH_CLIENT_ID = 102
COBALT_CLIENT_ID = 103
DELTA_CLIENT_ID = 104
EVERGREEN_CLIENT_ID = 105  # no mapping in the demo
GRANITE_CLIENT_ID = 106  # mapped: the demo's client billed from another day than the 1st
HARBOR_CLIENT_ID = 107  # not in seed_mappings(): tests map it on purpose
IRIS_CLIENT_ID = 108  # not in seed_mappings(): tests map it on purpose
# Billed in ConnectWise (Juniper Dental, cw_data.JUNIPER_*): not in seed_mappings().
JUNIPER_CLIENT_ID = 109
# Billed in HaloPSA (Kestrel Law LLP, halo_data.KESTREL_*): not in seed_mappings().
KESTREL_LAW_CLIENT_ID = 110

GRANITE_START_DAY = 17  # Granite's billing periods start on the 17th

# Picklists (values are strings on the wire, ints on entities)
COMPANY_TYPES = {
    1: "Customer",
    2: "Lead",
    3: "Prospect",
    4: "Dead",
    5: "Cancelation",
    6: "Vendor",
    7: "Partner",
}
CONTRACT_STATUSES = {0: "Inactive", 1: "Active"}
CONTRACT_TYPES = {
    1: "Time & Materials",
    3: "Block Hours",
    4: "Retainer",
    6: "Per Ticket",
    7: "Recurring Service",
}
# Contracts.contractPeriodType. The numbers deliberately do not follow the obvious order
# (1 monthly, 2 quarterly, ...): the real values are unconfirmed, so the tool must read the
# labels from entityInformation/fields, and this catches one that guesses the numbers.
MONTHLY = 3
QUARTERLY = 4
SEMI_ANNUAL = 5
YEARLY = 6
CONTRACT_PERIOD_TYPES = {
    MONTHLY: "Monthly",
    QUARTERLY: "Quarterly",
    SEMI_ANNUAL: "Semi-Annual",
    YEARLY: "Yearly",
}
PERIOD_MONTHS = {MONTHLY: 1, QUARTERLY: 3, SEMI_ANNUAL: 6, YEARLY: 12}
RECURRING_SERVICE = 7
CUSTOMER = 1

# How an adjustment's effectiveDate becomes a stored date (SandboxState.date_rule):
# "convert" takes the instant's date in the tenant's zone (Autotask's own example stores
# 2023-10-09T02:00:00 sent to a US database as 2023-10-08); "utc" takes its UTC date.
DATE_RULES = ("convert", "utc")
DEFAULT_TENANT_TIMEZONE = "America/New_York"
HEAD_OFFICE_LOCATION_ID = 1

_FIRST_UNITS_ROW_ID = 39_000_001
_FIRST_ADJUSTMENT_ID = 38_000_001
# Generated records live in their own ID ranges so they never meet the seed.
_GEN_ACCOUNT_BASE = 40_000_000
_GEN_CONTRACT_BASE = 41_000_000
_GEN_CONTRACT_SERVICE_BASE = 42_000_000


# --- dates -------------------------------------------------------------------------------


def add_months(day: date, months: int) -> date:
    """The first day of the month ``months`` after ``day``'s month."""
    years, month0 = divmod(day.month - 1 + months, 12)
    return date(day.year + years, month0 + 1, 1)


def month_end(day: date) -> date:
    """The last day of ``day``'s month."""
    return add_months(day, 1) - timedelta(days=1)


def shift_months(day: date, months: int) -> date:
    """``day`` moved by ``months``, its day clamped to the target month's last day."""
    first = add_months(day, months)
    return first.replace(day=min(day.day, calendar.monthrange(first.year, first.month)[1]))


def period_start(contract_start: date, period_type: int, k: int) -> date:
    """The start of billing period ``k`` of a contract starting on ``contract_start``.

    Always counted from the contract's start, so a clamped day never drifts (from the 31st:
    28 or 29 February, then 31 March). Raises KeyError for an unknown period type.
    """
    return shift_months(contract_start, k * PERIOD_MONTHS[period_type])


def extended_amount(units: int, rate: float | None) -> float | None:
    """A units row's price or cost: units x the per-unit rate, in cents (None stays None)."""
    return None if rate is None else round(units * rate, 2)


def unit_rate(row: dict[str, Any], which: str, contract_service: dict[str, Any]) -> float | None:
    """The per-unit rate behind a row's ``price`` or ``cost`` (``which``).

    At 0 units the row's amount says nothing about the rate, so the contract service's
    ``unitPrice``/``unitCost`` stands in; a null amount (no cost visibility) stays None.
    """
    amount = row[which]
    if amount is None:
        return None
    if row["units"] > 0:
        return float(amount) / int(row["units"])
    rate: float | None = contract_service["unitPrice" if which == "price" else "unitCost"]
    return None if rate is None else float(rate)


def wire_date(day: date) -> str:
    """``day`` as Autotask writes a date-only value."""
    return f"{day.isoformat()}T00:00:00"


_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?)?"
    r"(Z|[+-]\d{2}:?\d{2})?"
)


@lru_cache(maxsize=8192)
def parse_datetime(text: str) -> datetime:
    """Parse an Autotask date-time leniently (``Z`` or offset optional, 0-7 fraction digits).

    Returns a naive UTC datetime. Raises ValueError when ``text`` is not a date-time.
    """
    match = _DATETIME.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a date-time: {text!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micro = int((fraction or "0").ljust(7, "0")[:6])
    value = datetime(
        int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), micro
    )
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        value = value.replace(tzinfo=timezone(sign * offset))
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def parse_day(text: str) -> date:
    """The calendar day of an Autotask date-time string."""
    return parse_datetime(text).date()


# --- state -------------------------------------------------------------------------------


@dataclass
class InfimaClient:
    """One INFIMA client; its users are generated from the counts when read."""

    id: int
    client_name: str
    active: int = 0
    inactive: int = 0
    no_status: bool = False  # users carry no ``status`` field at all
    created_date: str = "2024-03-01T12:00:00Z"


class UnitsTable(UserDict[int, dict[str, Any]]):
    """Units rows by id, also indexed by contract service so look-ups stay fast at 5,000
    clients. Add, replace and delete rows through the mapping; a row's
    ``contractServiceID`` must not be changed in place."""

    def __init__(self) -> None:
        self.by_service: dict[int, set[int]] = {}
        super().__init__()

    def __setitem__(self, key: int, row: dict[str, Any]) -> None:
        if key in self.data:
            self._unindex(key)
        self.data[key] = row
        self.by_service.setdefault(row["contractServiceID"], set()).add(key)

    def __delitem__(self, key: int) -> None:
        self._unindex(key)
        del self.data[key]

    def _unindex(self, key: int) -> None:
        ids = self.by_service.get(self.data[key]["contractServiceID"])
        if ids is not None:
            ids.discard(key)

    def of_service(self, contract_service_id: int) -> list[dict[str, Any]]:
        """The rows of one contract service, unordered."""
        return [self.data[i] for i in self.by_service.get(contract_service_id, ())]


@dataclass
class SandboxState:
    """Everything both simulated APIs serve. Hold ``lock`` while reading or changing it.

    ``tenant_timezone`` and ``date_rule`` decide the date an adjustment's effectiveDate is
    stored on (see ``DATE_RULES``). ``refuse_duplicate_dates`` refuses a second adjustment of
    one contract service on the same stored date, and ``null_item_id`` answers a successful
    adjustment create with ``{"itemId": null}``: both were reported by live integrations.
    """

    today: date
    companies: dict[int, dict[str, Any]] = field(default_factory=dict)
    contracts: dict[int, dict[str, Any]] = field(default_factory=dict)
    contract_services: dict[int, dict[str, Any]] = field(default_factory=dict)
    services: dict[int, dict[str, Any]] = field(default_factory=dict)
    units: UnitsTable = field(default_factory=UnitsTable)
    # A record without a "timeZone" key shows tenant_timezone when read; set the key (to a
    # Windows zone name, or None) to override it.
    internal_locations: dict[int, dict[str, Any]] = field(default_factory=dict)
    infima_clients: dict[int, InfimaClient] = field(default_factory=dict)
    partner_name: str = "Sandbox MSP"
    adjustments: list[dict[str, Any]] = field(default_factory=list)
    request_count: int = 0  # authenticated Autotask requests so far
    threshold_used_offset: int = 0  # other integrations' usage of the hourly threshold
    external_request_threshold: int = 10_000
    # An IANA name (zoneinfo reads it); to show a Windows name such as "Eastern Standard
    # Time", override the InternalLocations record's timeZone instead.
    tenant_timezone: str = DEFAULT_TENANT_TIMEZONE
    date_rule: str = "convert"
    refuse_duplicate_dates: bool = False
    null_item_id: bool = False
    next_units_row_id: int = _FIRST_UNITS_ROW_ID
    next_adjustment_id: int = _FIRST_ADJUSTMENT_ID
    generated: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def __post_init__(self) -> None:
        if self.date_rule not in DATE_RULES:
            raise ValueError(f"date_rule must be one of {DATE_RULES}, not {self.date_rule!r}")

    def table(self, entity: str) -> MutableMapping[int, dict[str, Any]]:
        """The records of an Autotask entity by its canonical name (``"Contracts"``).

        InternalLocations come back as a fresh dict (changes to it are lost) because their
        ``timeZone`` follows ``tenant_timezone`` at the time of reading.
        """
        if entity == "InternalLocations":
            return {
                key: {"timeZone": self.tenant_timezone, **record}
                for key, record in self.internal_locations.items()
            }
        tables: dict[str, MutableMapping[int, dict[str, Any]]] = {
            "Companies": self.companies,
            "Contracts": self.contracts,
            "ContractServices": self.contract_services,
            "Services": self.services,
            "ContractServiceUnits": self.units,
        }
        return tables[entity]

    @property
    def this_month(self) -> date:
        """The first day of ``today``'s month."""
        return self.today.replace(day=1)

    def stored_date(self, effective: str) -> date:
        """The date an adjustment's ``effectiveDate`` is stored on, under ``date_rule``.

        The value is an instant (no offset or ``Z``: UTC). Raises ValueError when it is not a
        date-time.
        """
        instant = parse_datetime(effective).replace(tzinfo=timezone.utc)
        if self.date_rule == "utc":
            return instant.date()
        return instant.astimezone(ZoneInfo(self.tenant_timezone)).date()

    def units_rows(self, contract_service_id: int) -> list[dict[str, Any]]:
        """The units rows of a contract service ordered by start date, then id."""
        with self.lock:
            rows = self.units.of_service(contract_service_id)
        return sorted(rows, key=lambda r: (parse_datetime(r["startDate"]), r["id"]))

    def row_covering(self, contract_service_id: int, day: date) -> dict[str, Any] | None:
        """SPEC §8's row: among rows with startDate <= day <= endDate, the latest start
        (ties: highest id)."""
        best: dict[str, Any] | None = None
        for row in self.units_rows(contract_service_id):
            if parse_day(row["startDate"]) <= day <= parse_day(row["endDate"]):
                best = row  # rows are sorted, so the last one wins
        return best

    def add_units_row(
        self,
        *,
        contract_service_id: int,
        start: date,
        end: date,
        units: int,
        unit_price: float | None,
        unit_cost: float | None,
        posted: date | None = None,
    ) -> dict[str, Any]:
        """Add a units row priced at per-unit rates (stored extended); returns the new row.

        A None rate gives a null amount, as for an API user without cost visibility.
        """
        with self.lock:
            service = self.contract_services[contract_service_id]
            row: dict[str, Any] = {
                "id": self.next_units_row_id,
                "contractID": service["contractID"],
                "contractServiceID": contract_service_id,
                "serviceID": service["serviceID"],
                "startDate": wire_date(start),
                "endDate": wire_date(end),
                "units": units,
                "price": extended_amount(units, unit_price),
                "cost": extended_amount(units, unit_cost),
                "approveAndPostDate": wire_date(posted) if posted else None,
            }
            self.next_units_row_id += 1
            self.units[row["id"]] = row
            return row

    def add_company(
        self, company_id: int, name: str, *, company_type: int = CUSTOMER, active: bool = True
    ) -> dict[str, Any]:
        """Add an Autotask company (account)."""
        with self.lock:
            record = {
                "id": company_id,
                "companyName": name,
                "companyType": company_type,
                "isActive": active,
            }
            self.companies[company_id] = record
            return record

    def add_contract(
        self,
        contract_id: int,
        company_id: int,
        name: str,
        *,
        start: date,
        end: date,
        contract_type: int = RECURRING_SERVICE,
        status: int = 1,
        renewed_contract_id: int | None = None,
        period_type: int = MONTHLY,
    ) -> dict[str, Any]:
        """Add an Autotask contract billed every ``period_type`` period from ``start``."""
        if period_type not in PERIOD_MONTHS:
            raise ValueError(f"unknown contractPeriodType {period_type}")
        with self.lock:
            record = {
                "id": contract_id,
                "companyID": company_id,
                "contractName": name,
                "contractType": contract_type,
                "contractPeriodType": period_type,
                "status": status,
                "startDate": wire_date(start),
                "endDate": wire_date(end),
                "renewedContractID": renewed_contract_id,
            }
            self.contracts[contract_id] = record
            return record

    def add_contract_service(
        self, contract_service_id: int, contract_id: int, service_id: int
    ) -> dict[str, Any]:
        """Add a service to a contract, priced as the service."""
        with self.lock:
            service = self.services[service_id]
            record = {
                "id": contract_service_id,
                "contractID": contract_id,
                "serviceID": service_id,
                "unitPrice": service["unitPrice"],
                "unitCost": service["unitCost"],
                "invoiceDescription": service["name"],
            }
            self.contract_services[contract_service_id] = record
            return record

    def add_monthly_rows(self, contract_service_id: int, units: int) -> None:
        """Calendar-month rows for the previous month (posted), this month and next month,
        at the contract service's rates (for contracts billed monthly from the 1st)."""
        service = self.contract_services[contract_service_id]
        previous = add_months(self.this_month, -1)
        for start in (previous, self.this_month, add_months(self.this_month, 1)):
            self.add_units_row(
                contract_service_id=contract_service_id,
                start=start,
                end=month_end(start),
                units=units,
                unit_price=service["unitPrice"],
                unit_cost=service["unitCost"],
                posted=month_end(previous) if start == previous else None,
            )

    def add_period_rows(
        self,
        contract_service_id: int,
        units: int,
        *,
        unit_price: float | None,
        unit_cost: float | None,
        since: date | None = None,
        until: date | None = None,
    ) -> list[dict[str, Any]]:
        """Add a row for every billing period of the contract that overlaps ``since`` through
        ``until`` (default: the previous month's first day to next month's last day).

        Periods follow the contract's ``startDate`` and ``contractPeriodType``; each ends the
        day before the next starts (the last one on the contract's end). Periods that ended
        before this month's first day are approved and posted. Returns the new rows.
        """
        with self.lock:
            contract = self.contracts[self.contract_services[contract_service_id]["contractID"]]
            first = parse_day(contract["startDate"])
            last = parse_day(contract["endDate"])
            period_type = contract["contractPeriodType"]
            since = since or add_months(self.this_month, -1)
            until = until or month_end(add_months(self.this_month, 1))
            rows: list[dict[str, Any]] = []
            k = 0
            start = first
            while start <= min(until, last):
                k += 1
                following = period_start(first, period_type, k)
                end = min(following - timedelta(days=1), last)
                if end >= since:
                    rows.append(
                        self.add_units_row(
                            contract_service_id=contract_service_id,
                            start=start,
                            end=end,
                            units=units,
                            unit_price=unit_price,
                            unit_cost=unit_cost,
                            posted=end if end < self.this_month else None,
                        )
                    )
                start = following
            return rows

    def add_service(
        self, service_id: int, name: str, unit_price: float, unit_cost: float
    ) -> dict[str, Any]:
        """Add a monthly service to the catalogue."""
        with self.lock:
            record = {
                "id": service_id,
                "name": name,
                "unitPrice": unit_price,
                "unitCost": unit_cost,
                "isActive": True,
                "periodType": 1,  # monthly
            }
            self.services[service_id] = record
            return record

    def add_infima_client(
        self, client_id: int, name: str, active: int, inactive: int = 0
    ) -> InfimaClient:
        """Add an INFIMA client with that many active and inactive users."""
        with self.lock:
            client = InfimaClient(client_id, name, active, inactive)
            self.infima_clients[client_id] = client
            return client

    def add_internal_location(
        self, location_id: int, name: str, *, is_default: bool = False
    ) -> dict[str, Any]:
        """Add an InternalLocations record whose timeZone follows ``tenant_timezone``."""
        with self.lock:
            record = {"id": location_id, "name": name, "isDefault": is_default}
            self.internal_locations[location_id] = record
            return record


def first_month_with_day(day: int, latest: date) -> date:
    """``day`` of the latest month at or before ``latest``'s month that has such a day.

    Raises ValueError unless 1 <= ``day`` <= 31.
    """
    if not 1 <= day <= 31:
        raise ValueError(f"day must be between 1 and 31, not {day}")
    month = latest.replace(day=1)
    while calendar.monthrange(month.year, month.month)[1] < day:
        month = add_months(month, -1)
    return month.replace(day=day)


# --- seed --------------------------------------------------------------------------------


def seed(state: SandboxState) -> None:
    """Fill ``state`` with the sample MSP described in the module docstring."""
    this = state.this_month
    start = add_months(this, -12)
    end = month_end(add_months(this, 11))
    year = this.year
    with state.lock:
        state.add_service(SERVICE_ID, SERVICE_NAME, SERVICE_UNIT_PRICE, SERVICE_UNIT_COST)
        state.add_service(BACKUP_SERVICE_ID, BACKUP_SERVICE_NAME, 3.0, 1.0)

        state.add_company(ACME_ACCOUNT_ID, "Acme Dental LLC")
        state.add_company(BIRCH_ACCOUNT_ID, "Birch & Co Legal")
        state.add_company(COBALT_ACCOUNT_ID, "Cobalt Logistics")
        state.add_company(DELTA_ACCOUNT_ID, "Delta Veterinary Group")
        state.add_company(EVERGREEN_ACCOUNT_ID, "Evergreen Realty")
        state.add_company(ACME_HOLDINGS_ACCOUNT_ID, "Acme Holdings (inactive)", active=False)
        state.add_company(FOXTROT_VENDOR_ACCOUNT_ID, "Foxtrot Supplies", company_type=6)
        # The own organization's real companyType label is unconfirmed; Customer is the
        # harder case for the tool, which then meets a customer whose id is the falsy 0.
        state.add_company(OWN_COMPANY_ID, OWN_COMPANY_NAME)
        state.add_company(GRANITE_ACCOUNT_ID, "Granite Dental Studio")
        state.add_company(HARBOR_ACCOUNT_ID, "Harbor Physiotherapy")
        state.add_company(IRIS_ACCOUNT_ID, "Iris Architects")
        state.add_internal_location(HEAD_OFFICE_LOCATION_ID, "Head Office", is_default=True)

        name = f"Managed Services {year}"
        for contract_id, account_id, cs_id, units in (
            (ACME_CONTRACT_ID, ACME_ACCOUNT_ID, ACME_CONTRACT_SERVICE_ID, 10),
            (BIRCH_CONTRACT_ID, BIRCH_ACCOUNT_ID, BIRCH_CONTRACT_SERVICE_ID, 25),
            (COBALT_CONTRACT_ID, COBALT_ACCOUNT_ID, COBALT_CONTRACT_SERVICE_ID, 40),
            (EVERGREEN_CONTRACT_ID, EVERGREEN_ACCOUNT_ID, EVERGREEN_CONTRACT_SERVICE_ID, 5),
        ):
            state.add_contract(contract_id, account_id, name, start=start, end=end)
            state.add_contract_service(cs_id, contract_id, SERVICE_ID)
            state.add_monthly_rows(cs_id, units)
        state.add_contract_service(ACME_BACKUP_CONTRACT_SERVICE_ID, ACME_CONTRACT_ID, 30020)
        state.add_monthly_rows(ACME_BACKUP_CONTRACT_SERVICE_ID, 10)
        state.add_contract(
            ACME_BLOCK_HOURS_CONTRACT_ID,
            ACME_ACCOUNT_ID,
            f"Block Hours {year}",
            start=start,
            end=end,
            contract_type=3,
        )

        # Delta's contract ended last month (still status Active, as Autotask leaves it);
        # its renewal carries the same service from the 1st of this month.
        previous = add_months(this, -1)
        state.add_contract(
            DELTA_OLD_CONTRACT_ID,
            DELTA_ACCOUNT_ID,
            f"Managed Services {year - 1 if this.month == 1 else year} (ended)",
            start=add_months(this, -13),
            end=month_end(previous),
            renewed_contract_id=DELTA_RENEWAL_CONTRACT_ID,
        )
        state.add_contract_service(DELTA_OLD_CONTRACT_SERVICE_ID, DELTA_OLD_CONTRACT_ID, SERVICE_ID)
        state.add_units_row(
            contract_service_id=DELTA_OLD_CONTRACT_SERVICE_ID,
            start=previous,
            end=month_end(previous),
            units=8,
            unit_price=SERVICE_UNIT_PRICE,
            unit_cost=SERVICE_UNIT_COST,
            posted=month_end(previous),
        )
        state.add_contract(
            DELTA_RENEWAL_CONTRACT_ID,
            DELTA_ACCOUNT_ID,
            name,
            start=this,
            end=month_end(add_months(this, 11)),
        )
        state.add_contract_service(
            DELTA_RENEWAL_CONTRACT_SERVICE_ID, DELTA_RENEWAL_CONTRACT_ID, SERVICE_ID
        )
        for month in (this, add_months(this, 1)):
            state.add_units_row(
                contract_service_id=DELTA_RENEWAL_CONTRACT_SERVICE_ID,
                start=month,
                end=month_end(month),
                units=8,
                unit_price=SERVICE_UNIT_PRICE,
                unit_cost=SERVICE_UNIT_COST,
            )

        # Billed from another day than the 1st, quarterly and yearly (SPEC §8 billing periods).
        granite_start = add_months(this, -12).replace(day=GRANITE_START_DAY)
        for contract_id, account_id, cs_id, units, first, period_type in (
            (GRANITE_CONTRACT_ID, GRANITE_ACCOUNT_ID, GRANITE_CONTRACT_SERVICE_ID, 12,
             granite_start, MONTHLY),
            (HARBOR_CONTRACT_ID, HARBOR_ACCOUNT_ID, HARBOR_CONTRACT_SERVICE_ID, 9,
             add_months(this, -13), QUARTERLY),
            (IRIS_CONTRACT_ID, IRIS_ACCOUNT_ID, IRIS_CONTRACT_SERVICE_ID, 18,
             add_months(this, -5), YEARLY),
        ):  # fmt: skip
            state.add_contract(
                contract_id,
                account_id,
                name,
                start=first,
                end=shift_months(first, 24) - timedelta(days=1),
                period_type=period_type,
            )
            state.add_contract_service(cs_id, contract_id, SERVICE_ID)
            state.add_period_rows(
                cs_id, units, unit_price=SERVICE_UNIT_PRICE, unit_cost=SERVICE_UNIT_COST
            )

        state.add_infima_client(ACME_CLIENT_ID, "Acme Dental", 12, 3)
        state.add_infima_client(BIRCH_CLIENT_ID, "Birch Legal", 25)
        state.add_infima_client(COBALT_CLIENT_ID, "Cobalt Logistics", 31, 2)
        state.add_infima_client(DELTA_CLIENT_ID, "Delta Vets", 8)
        state.add_infima_client(EVERGREEN_CLIENT_ID, "Evergreen Realty", 6)
        state.add_infima_client(GRANITE_CLIENT_ID, "Granite Dental", 14)
        state.add_infima_client(HARBOR_CLIENT_ID, "Harbor Physio", 11)
        state.add_infima_client(IRIS_CLIENT_ID, "Iris Architects", 20)
        state.add_infima_client(JUNIPER_CLIENT_ID, "Juniper Dental", 20, 1)
        state.add_infima_client(KESTREL_LAW_CLIENT_ID, "Kestrel Law", 14, 1)


# client id: (INFIMA name, account id, account name, contract id, contract service id)
_SEEDED: dict[int, tuple[str, int, str, int, int]] = {
    ACME_CLIENT_ID: ("Acme Dental", ACME_ACCOUNT_ID, "Acme Dental LLC", ACME_CONTRACT_ID,
                     ACME_CONTRACT_SERVICE_ID),
    BIRCH_CLIENT_ID: ("Birch Legal", BIRCH_ACCOUNT_ID, "Birch & Co Legal", BIRCH_CONTRACT_ID,
                      BIRCH_CONTRACT_SERVICE_ID),
    COBALT_CLIENT_ID: ("Cobalt Logistics", COBALT_ACCOUNT_ID, "Cobalt Logistics",
                       COBALT_CONTRACT_ID, COBALT_CONTRACT_SERVICE_ID),
    DELTA_CLIENT_ID: ("Delta Vets", DELTA_ACCOUNT_ID, "Delta Veterinary Group",
                      DELTA_RENEWAL_CONTRACT_ID, DELTA_RENEWAL_CONTRACT_SERVICE_ID),
    EVERGREEN_CLIENT_ID: ("Evergreen Realty", EVERGREEN_ACCOUNT_ID, "Evergreen Realty",
                          EVERGREEN_CONTRACT_ID, EVERGREEN_CONTRACT_SERVICE_ID),
    GRANITE_CLIENT_ID: ("Granite Dental", GRANITE_ACCOUNT_ID, "Granite Dental Studio",
                        GRANITE_CONTRACT_ID, GRANITE_CONTRACT_SERVICE_ID),
    HARBOR_CLIENT_ID: ("Harbor Physio", HARBOR_ACCOUNT_ID, "Harbor Physiotherapy",
                       HARBOR_CONTRACT_ID, HARBOR_CONTRACT_SERVICE_ID),
    IRIS_CLIENT_ID: ("Iris Architects", IRIS_ACCOUNT_ID, "Iris Architects", IRIS_CONTRACT_ID,
                     IRIS_CONTRACT_SERVICE_ID),
}  # fmt: skip
# The demo's mappings: Evergreen stays unmapped (the unmapped-client warning), Harbor and Iris
# are left for tests that map them on purpose.
SEED_MAPPED_CLIENT_IDS = (
    ACME_CLIENT_ID,
    BIRCH_CLIENT_ID,
    COBALT_CLIENT_ID,
    DELTA_CLIENT_ID,
    GRANITE_CLIENT_ID,
)


def seed_mapping(client_id: int, today: date | None = None) -> dict[str, Any]:
    """The SPEC §6 mapping of any seeded client with a contract (101-108; Delta on its renewal).

    Raises KeyError for another client id.
    """
    name = f"Managed Services {(today or date.today()).year}"
    client_name, account_id, account_name, contract_id, cs_id = _SEEDED[client_id]
    return _mapping(client_id, client_name, account_id, account_name, contract_id, name, cs_id)


def seed_mappings(today: date | None = None) -> list[dict[str, Any]]:
    """The SPEC §6 mappings of the demo's seeded clients 101-104 and 106 (Granite)."""
    return [seed_mapping(client_id, today) for client_id in SEED_MAPPED_CLIENT_IDS]


def map_args(mapping: dict[str, Any]) -> list[str]:
    """The ``infima-autotask map`` arguments that create ``mapping`` (a seed_mappings() entry)."""
    return [
        "map",
        str(mapping["client_id"]),
        "--account",
        str(mapping["account_id"]),
        "--contract",
        str(mapping["contract_id"]),
        "--contract-service",
        str(mapping["contract_service_id"]),
    ]


def _mapping(
    client_id: int,
    client_name: str,
    account_id: int,
    account_name: str,
    contract_id: int,
    contract_name: str,
    contract_service_id: int,
) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "client_name": client_name,
        "account_id": account_id,
        "account_name": account_name,
        "contract_id": contract_id,
        "contract_name": contract_name,
        "contract_service_id": contract_service_id,
        "service_id": SERVICE_ID,
        "service_name": SERVICE_NAME,
    }


# --- generator ---------------------------------------------------------------------------

_WORDS = (
    "Alder", "Basalt", "Cedar", "Dune", "Ember", "Fjord", "Granite", "Harbor", "Iris", "Juniper",
    "Kestrel", "Lumen", "Maple", "Nimbus", "Onyx", "Pine", "Quartz", "Raven", "Sage", "Tundra",
)  # fmt: skip
_KINDS = ("Dental", "Legal", "Logistics", "Realty", "Clinic", "Partners", "Builders", "Labs")


def generate(
    state: SandboxState,
    n: int,
    *,
    changed_fraction: float = 0.3,
    first_client_id: int = 1000,
    period_type: int = MONTHLY,
    start_day: int = 1,
) -> list[dict[str, Any]]:
    """Add ``n`` mapped clients; ``round(n * changed_fraction)`` of them have an INFIMA count
    different from their units. Returns their SPEC §6 mappings.

    Their contracts start on ``start_day`` of the latest month at least twelve months ago
    that has that day (31: a 31-day month, so periods then clamp to 28/29 February and come
    back to the 31st), run two years and are billed every ``period_type`` period.
    Raises ValueError for a bad argument or a client id already used.
    """
    if n < 0 or not 0.0 <= changed_fraction <= 1.0:
        raise ValueError("n must be >= 0 and changed_fraction between 0 and 1")
    if period_type not in PERIOD_MONTHS:
        raise ValueError(f"unknown contractPeriodType {period_type}")
    changed_total = round(n * changed_fraction)
    this = state.this_month
    start = first_month_with_day(start_day, add_months(this, -12))
    end = shift_months(start, 24) - timedelta(days=1)
    contract_name = f"Managed Services {this.year}"
    mappings: list[dict[str, Any]] = []
    with state.lock:
        clashes = set(range(first_client_id, first_client_id + n)) & state.infima_clients.keys()
        if clashes:
            raise ValueError(f"INFIMA client ids already used: {sorted(clashes)[:5]}")
        if SERVICE_ID not in state.services:
            state.add_service(SERVICE_ID, SERVICE_NAME, SERVICE_UNIT_PRICE, SERVICE_UNIT_COST)
        for i in range(n):
            k = state.generated + i
            client_id = first_client_id + i
            base_name = f"{_WORDS[k % len(_WORDS)]} {_KINDS[(k // len(_WORDS)) % len(_KINDS)]}"
            client_name = f"{base_name} {k + 1}"
            account_name = f"{client_name} Inc"
            account_id = _GEN_ACCOUNT_BASE + k
            contract_id = _GEN_CONTRACT_BASE + k
            cs_id = _GEN_CONTRACT_SERVICE_BASE + k
            units = 1 + (k * 37) % 240
            # Spread the changed clients evenly over the range.
            changed = (i + 1) * changed_total // n > i * changed_total // n
            active = units
            if changed:
                # Small drops only (never near max_decrease_percent or zero), rises otherwise.
                active = units - 1 if units >= 4 and k % 4 == 0 else units + 1 + k % 3
            state.add_company(account_id, account_name)
            state.add_contract(
                contract_id,
                account_id,
                contract_name,
                start=start,
                end=end,
                period_type=period_type,
            )
            state.add_contract_service(cs_id, contract_id, SERVICE_ID)
            state.add_period_rows(
                cs_id, units, unit_price=SERVICE_UNIT_PRICE, unit_cost=SERVICE_UNIT_COST
            )
            state.add_infima_client(client_id, client_name, active, k % 3)
            mappings.append(
                _mapping(
                    client_id,
                    client_name,
                    account_id,
                    account_name,
                    contract_id,
                    contract_name,
                    cs_id,
                )  # fmt: skip
            )
        state.generated += n
    return mappings
