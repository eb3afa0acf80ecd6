"""A requests-mock fake of Autotask for ``sync`` tests: contracts, contract services, units rows.

Units rows carry extended amounts (units x rate), as live tenants show (AUTOTASK_API.md §5.5);
adjustments carry per-unit rates. Writes (ContractServiceAdjustments creates) are applied to
the row starting on the effective date's UTC date; ``faults`` scripts the answer to each write
in turn, and ``in_sizes`` records the length of every ``in`` filter of every query, so tests
can check batching (SPEC §9).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import requests
from conftest import BASE, make_config, write_config

from infima_autotask.history import History, ItemRecord

PERIOD = "2026-12"
EFFECTIVE = "2026-12-01T12:00:00Z"  # autotask.timezone unset: noon UTC
CONTRACT = 29684001
ACCOUNT = 29683501
SERVICE = 30012
ADJUSTMENTS = BASE + "ContractServiceAdjustments"
UNITS_QUERY = BASE + "ContractServiceUnits/query"
PICKLIST = 1  # the one Contracts picklist read (status, contractPeriodType; SPEC §9 allows it)
MONTHLY = 3  # contractPeriodType values: the labels count, not the numbers
PERIOD_TYPES = {3: "Monthly", 4: "Quarterly", 5: "Semi-Annual", 6: "Yearly"}
_CS_BASE = 29685000


def cs_id(client_id: int) -> int:
    return _CS_BASE + client_id


def mapping(client_id: int, **overrides: object) -> dict[str, object]:
    """A config mapping of ``client_id`` to its own contract service on CONTRACT."""
    doc: dict[str, object] = {
        "client_id": client_id,
        "client_name": f"Client {client_id}",
        "account_id": ACCOUNT,
        "account_name": "Acme LLC",
        "contract_id": CONTRACT,
        "contract_name": "Managed Services 2026",
        "contract_service_id": cs_id(client_id),
        "service_id": SERVICE,
        "service_name": "INFIMA SAT",
    }
    doc.update(overrides)
    return doc


def _day(value: str) -> date:
    return datetime.fromisoformat(value.rstrip("Z")).date()


def _match(record: dict, flt: dict) -> bool:
    value = record.get(flt["field"])
    if flt["op"] == "in":
        return value in flt["value"]
    if flt["op"] == "eq":
        return value == flt["value"]
    if flt["op"] == "lte":
        return _day(value) <= _day(flt["value"])
    if flt["op"] == "gte":
        return _day(value) >= _day(flt["value"])
    raise AssertionError(flt)


def _contract(contract: int) -> dict:
    return {
        "id": contract,
        "companyID": ACCOUNT,
        "contractName": "Managed Services 2026",
        "contractType": 7,
        "status": 1,
        "startDate": "2026-01-01T00:00:00",
        "endDate": "2027-12-31T00:00:00",
        "contractPeriodType": MONTHLY,
    }


def amount(units: int, rate: float | None) -> float | None:
    """A units row's extended amount, rounded to the cent as Autotask shows it."""
    return None if rate is None else round(units * rate, 2)


@dataclass
class FakeAutotask:
    """Contracts, contract services and units rows, with scripted write faults.

    ``faults`` holds one entry per write, in order (then "ok"):

    - ``ok``: applied, answered with a new item id;
    - ``reject-400`` / ``reject-500``: refused with an ``errors`` list, not applied;
    - ``bare-500``: a 500 without ``errors`` (an unknown outcome), not applied;
    - ``connect-timeout``: never reached Autotask;
    - ``apply-then-timeout``: applied, but the answer timed out;
    - ``503-other``: a 503, and the row now shows 99 units (someone else's change);
    - ``verify-mismatch``: applied, but the row's cost then differs;
    - ``2xx-not-json`` / ``2xx-applied``: a 2xx whose body is not JSON, not applied / applied.
    """

    contracts: dict[int, dict] = field(default_factory=dict)
    services: dict[int, dict] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    used: int = 124
    limit: int = 10_000
    next_id: int = 900_000
    in_sizes: list[int] = field(default_factory=list)

    def add_client(
        self, client_id: int, units: int, *, contract=CONTRACT, price=4.5, cost=2.25, **row
    ) -> None:
        """A contract service billed monthly from the 1st with ``units`` at these unit rates."""
        cs = cs_id(client_id)
        self.contracts.setdefault(contract, _contract(contract))
        self.services[cs] = {
            "id": cs,
            "contractID": contract,
            "serviceID": SERVICE,
            "unitPrice": price,
            "unitCost": cost,
        }
        self.rows.append(
            {
                "id": 700_000 + client_id,
                "contractID": contract,
                "contractServiceID": cs,
                "serviceID": SERVICE,
                "startDate": "2026-12-01T00:00:00",
                "endDate": "2026-12-31T00:00:00",
                "units": units,
                "price": amount(units, price),
                "cost": amount(units, cost),
                "approveAndPostDate": None,
                **row,
            }
        )

    def row_of(self, client_id: int) -> dict:
        return next(r for r in self.rows if r["contractServiceID"] == cs_id(client_id))

    def install(self, requests_mock) -> FakeAutotask:
        self.contracts.setdefault(CONTRACT, _contract(CONTRACT))
        requests_mock.post(BASE + "Contracts/query", json=self._query(self.contracts.values))
        requests_mock.post(BASE + "ContractServices/query", json=self._query(self.services.values))
        requests_mock.post(UNITS_QUERY, json=self._query(lambda: self.rows))
        requests_mock.get(
            BASE + "Contracts/entityInformation/fields",
            json={
                "fields": [
                    {
                        "name": "status",
                        "picklistValues": [
                            {"value": "0", "label": "Inactive"},
                            {"value": "1", "label": "Active"},
                        ],
                    },
                    {
                        "name": "contractPeriodType",
                        "picklistValues": [
                            {"value": str(value), "label": label}
                            for value, label in PERIOD_TYPES.items()
                        ],
                    },
                ]
            },
        )
        requests_mock.get(
            BASE + "ThresholdInformation",
            json=lambda request, context: {
                "externalRequestThreshold": self.limit,
                "requestThresholdTimeframe": 60,
                "currentTimeframeRequestCount": self.used,
            },
        )
        requests_mock.post(ADJUSTMENTS, content=self._adjust)
        return self

    def _query(self, records):
        def answer(request, context):
            body = request.json()
            self.in_sizes += [len(f["value"]) for f in body["filter"] if f["op"] == "in"]
            found = [dict(r) for r in records() if all(_match(r, f) for f in body["filter"])]
            return {"items": found, "pageDetails": {"count": len(found), "nextPageUrl": None}}

        return answer

    def _apply(self, body: dict) -> None:
        day = _day(body["effectiveDate"])
        row = next(
            r
            for r in self.rows
            if r["contractServiceID"] == body["contractServiceID"] and _day(r["startDate"]) == day
        )
        row["units"] += body["unitChange"]
        row["price"] = amount(row["units"], body["adjustedUnitPrice"])
        row["cost"] = amount(row["units"], body["adjustedUnitCost"])

    def _adjust(self, request, context) -> bytes | None:
        fault = self.faults.pop(0) if self.faults else "ok"
        body = request.json()
        if fault in ("2xx-not-json", "2xx-applied"):
            if fault == "2xx-applied":
                self._apply(body)
            return b"<html>OK</html>"
        answer = self._answer(fault, body, context)
        return None if answer is None else json.dumps(answer).encode()

    def _answer(self, fault: str, body: dict, context) -> object:
        if fault == "ok":
            self._apply(body)
            self.next_id += 1
            return {"itemId": self.next_id}
        if fault == "reject-400":
            context.status_code = 400
            return {"errors": ["effectiveDate is outside the contract period"]}
        if fault == "reject-500":
            context.status_code = 500
            return {"errors": ["Value does not reference an existing entity for serviceID."]}
        if fault == "apply-then-timeout":
            self._apply(body)
            raise requests.exceptions.ReadTimeout("read timed out")
        if fault == "connect-timeout":
            raise requests.exceptions.ConnectTimeout("connect timed out")
        if fault == "bare-500":
            context.status_code = 500
            return {"message": "An error has occurred."}
        if fault == "503-other":
            row = self.row_of(body["contractServiceID"] - _CS_BASE)
            row.update(units=99, price=amount(99, 4.5), cost=amount(99, 2.25))
            context.status_code = 503
            return None
        if fault == "verify-mismatch":
            self._apply(body)
            self.row_of(body["contractServiceID"] - _CS_BASE)["cost"] = 9.99
            return {"itemId": 1}
        raise AssertionError(fault)


def autotask_calls(requests_mock) -> list:
    return [r for r in requests_mock.request_history if r.url.startswith(BASE)]


def writes(requests_mock) -> list[dict]:
    """The bodies of the adjustment creates sent, in order."""
    return [r.json() for r in requests_mock.request_history if r.url == ADJUSTMENTS]


def floor(n: int, k: int) -> int:
    """SPEC §9's Autotask request count for N mappings and k changes (no picklist read), with
    the first write's own verification when k >= 2."""
    return 1 + 3 * math.ceil(n / 500) + k + math.ceil(k / 500) + (1 if k >= 2 else 0)


def write_counts(path: Path, users: dict[int, int]) -> Path:
    """A counts file with one row per client: ``client_id,active_users,client_name``."""
    lines = ["client_id,active_users,client_name"]
    lines += [f"{cid},{n},Client {cid}" for cid, n in users.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_sync_config(
    config_path: Path, counts_file: Path, users: dict[int, int], *, sync=None, mappings=None, **doc
) -> None:
    """A config reading ``counts_file`` and mapping every client of ``users`` (or ``mappings``)."""
    write_config(
        config_path,
        make_config(
            mappings or [mapping(cid) for cid in users],
            infima={"counts_file": str(counts_file)},
            sync=sync or {},
            **doc,
        ),
    )


def record_intent(state_dir: Path, client_id: int, *, before: int, target: int, cost=2.25) -> int:
    """What a run killed right after sending its create leaves behind: a pending intent."""
    with History(state_dir) as history:
        run = history.start_run(period=PERIOD, dry_run=False, version="0.1.0")
        return history.record_intent(
            run,
            ItemRecord(
                client_id=client_id,
                client_name=f"Client {client_id}",
                contract_id=CONTRACT,
                contract_service_id=cs_id(client_id),
                users=target,
                target=target,
                before=before,
                after=target,
                change=target - before,
                price=4.5,
                cost=cost,
                status="planned",
            ),
        )
