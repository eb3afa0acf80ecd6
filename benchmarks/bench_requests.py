"""Autotask request counts of `sync` against the SPEC §9 floor, and a naive per-client loop.

Runs the real ``run_sync`` (library, no CLI) against an in-process requests-mock fake of
Autotask, with counts from a CSV file (INFIMA is not what is measured here). For each N
mappings and k changes it prints the requests made, the floor
``1 + 3*ceil(N/500) + k + ceil(k/500)`` plus 1 when k >= 2 (the first write's own read-back),
the one extra picklist read the tool makes (Contracts status and contractPeriodType labels in
one request, allowed by SPEC §9), and what a naive loop (4 reads per client, a write and a
read-back per change) sends against the same fake. Units rows hold extended amounts (units x
rate) as live tenants do.

    .venv/bin/python benchmarks/bench_requests.py
    /usr/bin/time -v .venv/bin/python benchmarks/bench_requests.py --only 5000   # peak memory
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import tempfile
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any

import requests_mock

from infima_autotask.autotask import AutotaskApi
from infima_autotask.config import parse_config, save_config
from infima_autotask.credentials import AutotaskCredentials
from infima_autotask.http import HttpClient
from infima_autotask.model import choose_row, parse_units_row
from infima_autotask.runner import SyncOptions, run_sync
from infima_autotask.runtime import Runtime

API_URL = "https://webservices5.autotask.net/ATServicesRest/"
BASE = API_URL + "v1.0/"
D = date(2026, 12, 1)
CASES = [(10, 1), (10, 10), (100, 10), (1_000, 100), (1_000, 1_000), (5_000, 500), (5_000, 600)]
CONTRACTS_PER = 1  # mappings per contract; SPEC §9 counts one contract per mapping (--shared)


def floor(n: int, k: int) -> int:
    return 1 + 3 * math.ceil(n / 500) + k + math.ceil(k / 500) + (1 if k >= 2 else 0)


def _day(value: str) -> date:
    return datetime.fromisoformat(value.rstrip("Z")).date()


class Fake:
    """Contracts, contract services and units rows indexed by id; applies adjustments."""

    def __init__(self, n: int) -> None:
        self.contracts: dict[int, dict[str, Any]] = {}
        self.services: dict[int, dict[str, Any]] = {}
        self.rows: dict[int, dict[str, Any]] = {}  # by contract service id
        for i in range(n):
            contract_id = 29_000_000 + i // CONTRACTS_PER
            cs = 30_000_000 + i
            self.contracts[contract_id] = {
                "id": contract_id,
                "companyID": 1_000 + i // CONTRACTS_PER,
                "contractType": 7,
                "status": 1,
                "startDate": "2026-01-01T00:00:00",
                "endDate": "2027-12-31T00:00:00",
                "contractPeriodType": 1,
            }
            self.services[cs] = {
                "id": cs,
                "contractID": contract_id,
                "serviceID": 30012,
                "unitPrice": 4.5,
                "unitCost": 2.25,
            }
            self.rows[cs] = {
                "id": 40_000_000 + i,
                "contractID": contract_id,
                "contractServiceID": cs,
                "serviceID": 30012,
                "startDate": "2026-12-01T00:00:00",
                "endDate": "2026-12-31T00:00:00",
                "units": 10,
                "price": 45.0,  # extended: 10 x 4.50
                "cost": 22.5,
                "approveAndPostDate": None,
            }

    def install(self, mocker: requests_mock.Mocker) -> None:
        mocker.post(BASE + "Contracts/query", json=self._in(self.contracts))
        mocker.post(BASE + "ContractServices/query", json=self._in(self.services))
        mocker.post(BASE + "ContractServiceUnits/query", json=self._units)
        mocker.get(
            BASE + "Contracts/entityInformation/fields",
            json={
                "fields": [
                    {"name": "status", "picklistValues": [{"value": "1", "label": "Active"}]},
                    {
                        "name": "contractPeriodType",
                        "picklistValues": [{"value": "1", "label": "Monthly"}],
                    },
                ]
            },
        )
        mocker.get(
            BASE + "ThresholdInformation",
            json={
                "externalRequestThreshold": 10_000,
                "requestThresholdTimeframe": 60,
                "currentTimeframeRequestCount": 100,
            },
        )
        mocker.post(BASE + "ContractServiceAdjustments", json=self._adjust)
        by_id = re.compile(re.escape(BASE) + r"(Contracts|ContractServices|Services)/(\d+)$")
        mocker.get(by_id, json=self._get)

    def _in(self, table: dict[int, dict[str, Any]]) -> Any:
        def answer(request: Any, context: Any) -> dict[str, Any]:
            ids = request.json()["filter"][0]["value"]
            items = [table[i] for i in ids if i in table]
            return {"items": items, "pageDetails": {"count": len(items), "nextPageUrl": None}}

        return answer

    def _units(self, request: Any, context: Any) -> dict[str, Any]:
        filters = request.json()["filter"]
        first = filters[0]
        ids = first["value"] if first["op"] == "in" else [first["value"]]
        items = [self.rows[i] for i in ids if i in self.rows]
        return {"items": items, "pageDetails": {"count": len(items), "nextPageUrl": None}}

    def _get(self, request: Any, context: Any) -> dict[str, Any]:
        entity, record_id = request.path.rsplit("/", 2)[-2:]
        table = {"contracts": self.contracts, "contractservices": self.services}.get(entity, {})
        item = table.get(int(record_id), {"id": int(record_id), "name": "INFIMA SAT"})
        return {"item": item}

    def _adjust(self, request: Any, context: Any) -> dict[str, Any]:
        body = request.json()
        row = self.rows[body["contractServiceID"]]
        assert _day(body["effectiveDate"]) == _day(row["startDate"])
        row["units"] += body["unitChange"]
        row["price"] = round(row["units"] * body["adjustedUnitPrice"], 2)
        row["cost"] = round(row["units"] * body["adjustedUnitCost"], 2)
        return {"itemId": 1}


def users_of(n: int, k: int) -> dict[int, int]:
    """Client i has 10 users (unchanged) except the first k, which have 11."""
    return {100_000 + i: 11 if i < k else 10 for i in range(n)}


def write_setup(folder: Path, n: int, k: int) -> Path:
    counts = folder / "counts.csv"
    users = users_of(n, k)
    counts.write_text(
        "client_id,active_users\n" + "".join(f"{c},{u}\n" for c, u in users.items()),
        encoding="utf-8",
    )
    mappings = [
        {
            "client_id": 100_000 + i,
            "account_id": 1_000 + i // CONTRACTS_PER,
            "contract_id": 29_000_000 + i // CONTRACTS_PER,
            "contract_service_id": 30_000_000 + i,
            "service_id": 30012,
        }
        for i in range(n)
    ]
    config = {
        "version": 1,
        "state_dir": str(folder / "state"),
        "autotask": {"username": "bench@example.com", "integration_code": "X" * 27},
        "infima": {"counts_file": str(counts)},
        "sync": {"max_decrease_percent": 100},
        "mappings": mappings,
    }
    path = folder / "config.yaml"
    # As the tool writes it (SPEC §9): every key of every mapping, nulls included.
    save_config(parse_config(config, "benchmark"), path)
    return path


ENV = {
    "INFIMA_AUTOTASK_USERNAME": "bench@example.com",
    "INFIMA_AUTOTASK_SECRET": "bench-secret-value",
    "INFIMA_AUTOTASK_INTEGRATION_CODE": "X" * 27,
    "INFIMA_AUTOTASK_API_URL": API_URL,
}


def autotask_requests(mocker: requests_mock.Mocker) -> list[Any]:
    return [r for r in mocker.request_history if r.url.startswith(BASE)]


def measure_tool(n: int, k: int) -> tuple[int, int, int, float]:
    """(requests, writes, picklist reads, seconds) of one real sync."""
    with tempfile.TemporaryDirectory() as tmp, requests_mock.Mocker() as mocker:
        fake = Fake(n)
        fake.install(mocker)
        config = write_setup(Path(tmp), n, k)
        runtime = Runtime(config, env=ENV)
        started = time.perf_counter()
        report = run_sync(runtime, SyncOptions(month=D))
        elapsed = time.perf_counter() - started
        runtime.close()
        counts = report.summary
        assert counts["updated"] == k and counts["unchanged"] == n - k, counts
        sent = autotask_requests(mocker)
        writes = sum(1 for r in sent if r.url.endswith("ContractServiceAdjustments"))
        picklist = sum(1 for r in sent if r.url.endswith("entityInformation/fields"))
        return len(sent), writes, picklist, elapsed


def measure_naive(n: int, k: int) -> int:
    """A per-client loop: contract, contract service, service and units row; write; read back."""
    with requests_mock.Mocker() as mocker:
        fake = Fake(n)
        fake.install(mocker)
        creds = AutotaskCredentials("bench@example.com", "bench-secret-value", "X" * 27)
        client = AutotaskApi(HttpClient("Autotask"), API_URL, creds)
        users = users_of(n, k)
        for i in range(n):
            cs_id = 30_000_000 + i
            client.get("Contracts", 29_000_000 + i // CONTRACTS_PER)
            cs = client.get("ContractServices", cs_id) or {}
            client.get("Services", cs.get("serviceID", 0))
            when = "2026-12-01T00:00:00"
            rows = client.query(
                "ContractServiceUnits",
                [
                    {"op": "eq", "field": "contractServiceID", "value": cs_id},
                    {"op": "lte", "field": "startDate", "value": when},
                    {"op": "gte", "field": "endDate", "value": when},
                ],
            )
            row = choose_row(map(parse_units_row, rows), D)
            assert row is not None
            change = users[100_000 + i] - row.units
            if change:
                client.create(
                    "ContractServiceAdjustments",
                    {
                        "contractID": row.contract_id,
                        "contractServiceID": cs_id,
                        "serviceID": row.service_id,
                        "effectiveDate": when,
                        "unitChange": change,
                        "adjustedUnitPrice": (row.price or 0) / row.units,
                        "adjustedUnitCost": (row.cost or 0) / row.units,
                    },
                )
                client.query(
                    "ContractServiceUnits",
                    [{"op": "eq", "field": "contractServiceID", "value": cs_id}],
                )
        return len(autotask_requests(mocker))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=int, help="run only this N (with k = N/10)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive loop")
    parser.add_argument(
        "--shared",
        type=int,
        default=1,
        metavar="M",
        help="M mappings per contract (>1: fewer contract queries than the floor counts)",
    )
    args = parser.parse_args()
    global CONTRACTS_PER
    CONTRACTS_PER = args.shared
    cases = [(args.only, max(1, args.only // 10))] if args.only else CASES
    header = (
        f"{'N':>6} {'k':>5} {'floor':>6} {'tool':>6} {'picklist':>8} {'tool-floor':>10} "
        f"{'naive':>7} {'naive/tool':>10} {'tool s':>7}"
    )
    print(header)
    print("-" * len(header))
    ok = True
    for n, k in cases:
        total, writes, picklist, seconds = measure_tool(n, k)
        expected = floor(n, k)
        exact = total - picklist == expected if CONTRACTS_PER == 1 else total - picklist <= expected
        ok = ok and writes == k and exact and picklist <= 1
        naive = 0 if args.no_naive else measure_naive(n, k)
        ratio = f"{naive / total:.1f}x" if naive else "-"
        print(
            f"{n:>6} {k:>5} {expected:>6} {total:>6} {picklist:>8} {total - expected:>+10} "
            f"{naive or '-':>7} {ratio:>10} {seconds:>7.2f}"
        )
    print("tool = floor + 1 picklist read (Contracts labels)" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
