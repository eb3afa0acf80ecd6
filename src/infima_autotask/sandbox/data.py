"""The sandbox's data: seed records (dates relative to ``today``) and a bulk generator.

Autotask records are stored as they travel on the wire (camelCase keys, dates as
``YYYY-MM-DDT00:00:00`` strings) so the servers can answer without converting. INFIMA users
are not stored: each client keeps counts and users are made on the fly when a page is read.

Seed IDs (see the module constants below; ``seed_mappings(today)`` returns the SPEC §6
mappings of the four mapped clients):

====================  ==========  ===========  ==================  =====  =======
account               account id  contract id  contract service    units  INFIMA
====================  ==========  ===========  ==================  =====  =======
Acme Dental LLC       29683501    29684001     29685100            10     101: 12 active, 3 inactive
Birch & Co Legal      29683502    29684002     29685200            25     102: 25 active
Cobalt Logistics      29683503    29684003     29685300            40     103: 31 active, 2 inactive
Delta Veterinary      29683504    29684004 (ended last month)      8      104: 8 active
                                  29690011 (renewal) 29690450      8
Evergreen Realty      29683505    29684005     29685500            5      105: 6 active (unmapped)
Acme Holdings         29683506    (inactive company, no contract)
Foxtrot Supplies      29683507    (vendor, no contract)
====================  ==========  ===========  ==================  =====  =======

Acme also has a Block Hours contract 29684009 (no services) and a second service on its
Recurring Service contract (29685101, "Managed Backup" 30020). Units rows exist for the
previous month (approved and posted), this month and next month.
"""

from __future__ import annotations

import re
import threading
from collections import UserDict
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

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

# Contracts
ACME_CONTRACT_ID = 29684001
BIRCH_CONTRACT_ID = 29684002
COBALT_CONTRACT_ID = 29684003
DELTA_OLD_CONTRACT_ID = 29684004  # ended on the last day of the previous month
EVERGREEN_CONTRACT_ID = 29684005
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

# INFIMA clients
ACME_CLIENT_ID = 101
BIRCH_CLIENT_ID = 102
COBALT_CLIENT_ID = 103
DELTA_CLIENT_ID = 104
EVERGREEN_CLIENT_ID = 105  # no mapping in the demo

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
RECURRING_SERVICE = 7
CUSTOMER = 1

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
    """Everything both simulated APIs serve. Hold ``lock`` while reading or changing it."""

    today: date
    companies: dict[int, dict[str, Any]] = field(default_factory=dict)
    contracts: dict[int, dict[str, Any]] = field(default_factory=dict)
    contract_services: dict[int, dict[str, Any]] = field(default_factory=dict)
    services: dict[int, dict[str, Any]] = field(default_factory=dict)
    units: UnitsTable = field(default_factory=UnitsTable)
    infima_clients: dict[int, InfimaClient] = field(default_factory=dict)
    partner_name: str = "Sandbox MSP"
    adjustments: list[dict[str, Any]] = field(default_factory=list)
    request_count: int = 0  # authenticated Autotask requests so far
    threshold_used_offset: int = 0  # other integrations' usage of the hourly threshold
    external_request_threshold: int = 10_000
    next_units_row_id: int = _FIRST_UNITS_ROW_ID
    next_adjustment_id: int = _FIRST_ADJUSTMENT_ID
    generated: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def table(self, entity: str) -> MutableMapping[int, dict[str, Any]]:
        """The records of an Autotask entity by its canonical name (``"Contracts"``)."""
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
        price: float | None,
        cost: float | None,
        posted: date | None = None,
    ) -> dict[str, Any]:
        """Add a units row to a contract service; returns the new row."""
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
                "price": price,
                "cost": cost,
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
    ) -> dict[str, Any]:
        """Add an Autotask contract."""
        with self.lock:
            record = {
                "id": contract_id,
                "companyID": company_id,
                "contractName": name,
                "contractType": contract_type,
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
        """Rows for the previous month (posted), this month and next month."""
        service = self.services[self.contract_services[contract_service_id]["serviceID"]]
        previous = add_months(self.this_month, -1)
        for start in (previous, self.this_month, add_months(self.this_month, 1)):
            self.add_units_row(
                contract_service_id=contract_service_id,
                start=start,
                end=month_end(start),
                units=units,
                price=service["unitPrice"],
                cost=service["unitCost"],
                posted=month_end(previous) if start == previous else None,
            )

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
            price=SERVICE_UNIT_PRICE,
            cost=SERVICE_UNIT_COST,
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
                price=SERVICE_UNIT_PRICE,
                cost=SERVICE_UNIT_COST,
            )

        state.add_infima_client(ACME_CLIENT_ID, "Acme Dental", 12, 3)
        state.add_infima_client(BIRCH_CLIENT_ID, "Birch Legal", 25)
        state.add_infima_client(COBALT_CLIENT_ID, "Cobalt Logistics", 31, 2)
        state.add_infima_client(DELTA_CLIENT_ID, "Delta Vets", 8)
        state.add_infima_client(EVERGREEN_CLIENT_ID, "Evergreen Realty", 6)


def seed_mappings(today: date | None = None) -> list[dict[str, Any]]:
    """The SPEC §6 mappings of the seeded clients 101-104 (Delta on its renewal contract)."""
    name = f"Managed Services {(today or date.today()).year}"
    rows = (
        (ACME_CLIENT_ID, "Acme Dental", ACME_ACCOUNT_ID, "Acme Dental LLC", ACME_CONTRACT_ID,
         ACME_CONTRACT_SERVICE_ID),
        (BIRCH_CLIENT_ID, "Birch Legal", BIRCH_ACCOUNT_ID, "Birch & Co Legal", BIRCH_CONTRACT_ID,
         BIRCH_CONTRACT_SERVICE_ID),
        (COBALT_CLIENT_ID, "Cobalt Logistics", COBALT_ACCOUNT_ID, "Cobalt Logistics",
         COBALT_CONTRACT_ID, COBALT_CONTRACT_SERVICE_ID),
        (DELTA_CLIENT_ID, "Delta Vets", DELTA_ACCOUNT_ID, "Delta Veterinary Group",
         DELTA_RENEWAL_CONTRACT_ID, DELTA_RENEWAL_CONTRACT_SERVICE_ID),
    )  # fmt: skip
    return [
        _mapping(client_id, client_name, account_id, account_name, contract_id, name, cs_id)
        for client_id, client_name, account_id, account_name, contract_id, cs_id in rows
    ]


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
    state: SandboxState, n: int, *, changed_fraction: float = 0.3, first_client_id: int = 1000
) -> list[dict[str, Any]]:
    """Add ``n`` mapped clients; ``round(n * changed_fraction)`` of them have an INFIMA count
    different from this month's units. Returns their SPEC §6 mappings."""
    if n < 0 or not 0.0 <= changed_fraction <= 1.0:
        raise ValueError("n must be >= 0 and changed_fraction between 0 and 1")
    changed_total = round(n * changed_fraction)
    this = state.this_month
    start = add_months(this, -12)
    end = month_end(add_months(this, 11))
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
            state.add_contract(contract_id, account_id, contract_name, start=start, end=end)
            state.add_contract_service(cs_id, contract_id, SERVICE_ID)
            state.add_monthly_rows(cs_id, units)
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
