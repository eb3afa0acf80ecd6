"""The mapping workflow: list-clients, search-accounts, map (and --from-csv), unmap,
list-mappings [--check], against an in-memory Autotask and INFIMA behind requests-mock."""

from __future__ import annotations

import json
import os
import re
import stat
from datetime import date
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from conftest import API_KEY, BASE, INFIMA, SECRET, make_config, write_config

from infima_autotask import mapping as lib
from infima_autotask.config import load_config
from infima_autotask.history import History, ItemRecord

TODAY = date(2026, 11, 15)

# Accounts
ACME, BIRCH, COBALT, DELTA, HOLDINGS, FOXTROT = (
    29683501,
    29683502,
    29683503,
    29683504,
    29683506,
    29683507,
)
# Contracts
ACME_RS, ACME_BLOCK, ACME_INACTIVE = 29684001, 29684009, 29684012
BIRCH_RS, COBALT_A, COBALT_B = 29684002, 29684003, 29684013
DELTA_OLD, DELTA_NEW = 29684004, 29690011
# Contract services
ACME_CS, ACME_BACKUP_CS, BIRCH_CS = 29685100, 29685101, 29685200
COBALT_A_CS, COBALT_B_CS, DELTA_OLD_CS, DELTA_NEW_CS = 29685300, 29685310, 29685400, 29690450
SAT, BACKUP = 30012, 30020
# contractPeriodType values (tenants number them differently: only the labels count)
MONTHLY, QUARTERLY, YEARLY = 3, 4, 6


def _company(cid, name, *, kind=1, active=True):
    return {"id": cid, "companyName": name, "companyType": kind, "isActive": active}


def _contract(
    cid, account, name, *, kind=7, status=1, start="2026-01-01", end="2026-12-31", period=MONTHLY
):
    return {
        "id": cid,
        "companyID": account,
        "contractName": name,
        "contractType": kind,
        "status": status,
        "startDate": f"{start}T00:00:00",
        "endDate": f"{end}T00:00:00",
        "contractPeriodType": period,
    }


def _cs(cid, contract, service, *, price=4.5, cost=2.25):
    """A contract service with its per-unit unitPrice/unitCost."""
    return {"id": cid, "contractID": contract, "serviceID": service, "unitPrice": price,
            "unitCost": cost}  # fmt: skip


def _units(rid, cs, contract, units, *, price=4.5, cost=2.25, start="2026-11-01",
           end="2026-11-30"):  # fmt: skip
    """A units row: ``price`` and ``cost`` are the per-unit rates, the row shows them extended."""
    return {
        "id": rid,
        "contractServiceID": cs,
        "contractID": contract,
        "serviceID": SAT,
        "startDate": f"{start}T00:00:00",
        "endDate": f"{end}T00:00:00",
        "units": units,
        "price": None if price is None else round(units * price, 2),
        "cost": None if cost is None else round(units * cost, 2),
        "approveAndPostDate": None,
    }


def _seed():
    return {
        "Companies": [
            _company(ACME, "Acme Dental LLC"),
            _company(BIRCH, "Birch & Co Legal"),
            _company(COBALT, "Cobalt Logistics"),
            _company(DELTA, "Delta Veterinary Group"),
            _company(HOLDINGS, "Acme Holdings", active=False),
            _company(FOXTROT, "Foxtrot Supplies", kind=6),
        ],
        "Contracts": [
            _contract(ACME_RS, ACME, "Managed Services 2026"),
            _contract(ACME_BLOCK, ACME, "Block Hours", kind=3),
            _contract(ACME_INACTIVE, ACME, "Old Managed Services", status=0),
            _contract(BIRCH_RS, BIRCH, "Birch Managed 2026"),
            _contract(COBALT_A, COBALT, "Cobalt Main", start="2026-01-01"),
            _contract(COBALT_B, COBALT, "Cobalt Warehouse", start="2026-03-01"),
            _contract(DELTA_OLD, DELTA, "Delta 2025", start="2025-11-01", end="2026-10-31"),
            _contract(DELTA_NEW, DELTA, "Delta 2026", start="2026-11-01", end="2027-10-31"),
        ],
        "ContractServices": [
            _cs(ACME_CS, ACME_RS, SAT),
            _cs(ACME_BACKUP_CS, ACME_RS, BACKUP, price=12.0, cost=7.5),
            _cs(BIRCH_CS, BIRCH_RS, SAT),
            _cs(COBALT_A_CS, COBALT_A, SAT),
            _cs(COBALT_B_CS, COBALT_B, SAT),
            _cs(DELTA_OLD_CS, DELTA_OLD, SAT),
            _cs(DELTA_NEW_CS, DELTA_NEW, SAT),
        ],
        "Services": [
            {"id": SAT, "name": "INFIMA Security Awareness Training"},
            {"id": BACKUP, "name": "Managed Backup"},
        ],
        "ContractServiceUnits": [
            _units(1, ACME_CS, ACME_RS, 10),
            _units(2, ACME_BACKUP_CS, ACME_RS, 3, price=12.0, cost=7.5),
            _units(3, BIRCH_CS, BIRCH_RS, 25),
        ],
    }


PICKLISTS = {
    ("Companies", "companyType"): {1: "Customer", 2: "Lead", 6: "Vendor"},
    ("Contracts", "status"): {0: "Inactive", 1: "Active"},
    ("Contracts", "contractPeriodType"): {
        MONTHLY: "Monthly",
        QUARTERLY: "Quarterly",
        5: "Semi-Annual",
        YEARLY: "Yearly",
    },
}


def _matches(record, flt):
    op = flt["op"].lower()
    if op in ("and", "or"):
        results = [_matches(record, item) for item in flt["items"]]
        return all(results) if op == "and" else any(results)
    key = next((k for k in record if k.lower() == flt["field"].lower()), None)
    value = record.get(key) if key else None
    wanted = flt.get("value")
    if op == "eq":
        return value == wanted
    if op == "in":
        return value in wanted
    if op == "contains":
        return wanted.lower() in (value or "").lower()
    if op == "gte":
        return value is not None and value >= wanted
    if op == "lte":
        return value is not None and value <= wanted
    raise AssertionError(f"operator {op} not simulated")


class FakeAutotask:
    """Autotask's query, get and entityInformation endpoints over in-memory records."""

    def __init__(self, requests_mock):
        self.data = _seed()
        self.mock = requests_mock
        query = re.compile(re.escape(BASE) + r"(\w+)/query(/next)?(\?.*)?$", re.I)
        requests_mock.post(query, json=self._query)
        requests_mock.get(
            re.compile(re.escape(BASE) + r"(\w+)/entityInformation/fields$", re.I),
            json=self._fields,
        )
        requests_mock.get(re.compile(re.escape(BASE) + r"(\w+)/(\d+)$", re.I), json=self._get)

    @staticmethod
    def _entity(request):
        return urlsplit(request.url).path.split("/v1.0/")[1].split("/")[0]

    def _query(self, request, context):
        assert request.headers["Secret"] == SECRET
        body = request.json()
        assert body["maxRecords"] == 500
        entity = self._entity(request)
        found = [r for r in self.data[entity] if all(_matches(r, f) for f in body["filter"])]
        offset = int(parse_qs(urlsplit(request.url).query).get("offset", ["0"])[0])
        page = found[offset : offset + 500]
        more = offset + 500 < len(found)
        next_url = f"{BASE}{entity}/query/next?offset={offset + 500}" if more else None
        return {"items": page, "pageDetails": {"count": len(page), "nextPageUrl": next_url}}

    def _get(self, request, context):
        entity, record_id = urlsplit(request.url).path.split("/v1.0/")[1].split("/")
        item = next((r for r in self.data[entity] if r["id"] == int(record_id)), None)
        return {"item": item}

    def _fields(self, request, context):
        entity = self._entity(request)
        fields = []
        for (owner, name), values in PICKLISTS.items():
            if owner == entity:
                picks = [{"value": str(v), "label": label} for v, label in values.items()]
                fields.append({"name": name, "isPickList": True, "picklistValues": picks})
        return {"fields": fields}

    def calls(self):
        """(method, path after v1.0/) of every Autotask request so far."""
        return [
            (r.method, urlsplit(r.url).path.split("/v1.0/")[1])
            for r in self.mock.request_history
            if r.url.startswith(BASE)
        ]

    def bodies(self, entity):
        return [
            r.json()
            for r in self.mock.request_history
            if r.url.startswith(f"{BASE}{entity}/query") and r.method == "POST"
        ]


INFIMA_CLIENTS = {
    101: ("Acme Dental", 12),
    102: ("Birch Legal", 25),
    103: ("Cobalt Logistics", 31),
    104: ("Delta Vets", 8),
    105: ("Evergreen Realty", 6),
}


def _page(items, request):
    query = parse_qs(urlsplit(request.url).query)
    offset, limit = int(query["offset"][0]), int(query["limit"][0])
    return {"items": items[offset : offset + limit]}


@pytest.fixture
def infima(requests_mock):
    def clients(request, context):
        assert request.headers["X-API-Key"] == API_KEY
        items = [{"id": cid, "client_name": name} for cid, (name, _) in INFIMA_CLIENTS.items()]
        return _page(items, request)

    requests_mock.get(f"{INFIMA}/v1/clients", json=clients)
    for cid, (_, active) in INFIMA_CLIENTS.items():
        users = [{"id": n, "status": "active"} for n in range(active)]
        users.append({"id": 999, "status": "inactive"})
        requests_mock.get(
            f"{INFIMA}/v1/clients/{cid}/users",
            json=lambda request, context, users=users: _page(users, request),
        )
    return requests_mock


@pytest.fixture
def autotask(requests_mock, infima, stored_creds, monkeypatch):
    monkeypatch.setattr(lib, "local_today", lambda config: TODAY)
    return FakeAutotask(requests_mock)


def _mapping(client_id, account, contract, cs, **extra):
    entry = {
        "client_id": client_id,
        "client_name": INFIMA_CLIENTS.get(client_id, ("x", 0))[0],
        "account_id": account,
        "account_name": "name",
        "contract_id": contract,
        "contract_name": "contract",
        "contract_service_id": cs,
        "service_id": SAT,
        "service_name": "INFIMA Security Awareness Training",
    }
    entry.update(extra)
    return entry


BIRCH_MAPPING = _mapping(102, BIRCH, BIRCH_RS, BIRCH_CS, exclude_users=1, note="keep me")


@pytest.fixture
def cfg(config_path):
    """A config with Birch mapped (and a few non-default keys that must survive)."""
    doc = make_config([dict(BIRCH_MAPPING)], sync={"max_decrease_percent": 30})
    return write_config(config_path, doc)


def _load(path):
    return yaml.safe_load(path.read_text())


def _mappings(path):
    return {m["client_id"]: m for m in _load(path)["mappings"]}


def _error(result):
    return result.stderr.splitlines()[0]


# --- list-clients ----------------------------------------------------------------------


def test_list_clients_counts_each_client_and_shows_the_mapping(invoke, cfg, autotask):
    result = invoke("list-clients", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows[1] == {
        "client_id": 102,
        "client": "Birch Legal",
        "active_users": 25,
        "mapped_to": BIRCH_CS,
        "contract_id": BIRCH_RS,
        "contract": "contract",
        "service": "INFIMA Security Awareness Training",
    }
    assert [row["active_users"] for row in rows] == [12, 25, 31, 8, 6]
    assert {k: rows[0][k] for k in ("mapped_to", "contract_id", "contract", "service")} == (
        dict.fromkeys(("mapped_to", "contract_id", "contract", "service"))
    )
    users_calls = [r for r in autotask.mock.request_history if r.path.endswith("/users")]
    assert len(users_calls) == 5 and autotask.calls() == []
    assert result.stderr == ""


def test_list_clients_table_survives_a_failing_count(invoke, cfg, autotask):
    autotask.mock.get(
        f"{INFIMA}/v1/clients/103/users", status_code=404, json={"message": "no such client"}
    )
    result = invoke("list-clients")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["Client", "ID", "Client", "Active", "users", "Mapped", "to"]
    cobalt = next(line for line in lines if line.startswith("103"))
    assert cobalt.split()[-2:] == ["-", "-"]
    assert "Warning: client 103 (Cobalt Logistics): could not count active users" in (result.stderr)
    assert API_KEY not in result.output


def test_list_clients_from_counts_file_needs_no_infima(invoke, config_path, tmp_path, stored_creds):
    counts = tmp_path / "counts.csv"
    counts.write_text("client_id,active_users,client_name\n7,3,Seven\n9,0,Nine\n")
    write_config(config_path, make_config(infima={"counts_file": str(counts)}))
    result = invoke("list-clients", "--json")
    assert result.exit_code == 0, result.output
    unmapped = {"mapped_to": None, "contract_id": None, "contract": None, "service": None}
    assert json.loads(result.stdout) == [
        {"client_id": 7, "client": "Seven", "active_users": 3, **unmapped},
        {"client_id": 9, "client": "Nine", "active_users": 0, **unmapped},
    ]


def test_list_clients_warns_about_mappings_infima_does_not_know(invoke, config_path, autotask):
    write_config(config_path, make_config([_mapping(777, ACME, ACME_RS, ACME_CS)]))
    result = invoke("list-clients", "--json")
    assert result.exit_code == 0
    assert "mapped client 777 (x) is not known to INFIMA" in result.stderr
    assert "`infima-autotask unmap 777`" in result.stderr


# --- search-accounts -------------------------------------------------------------------


def test_search_accounts_filters_and_labels_types(invoke, cfg, autotask):
    result = invoke("search-accounts", "acme", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"account_id": ACME, "account": "Acme Dental LLC", "type": "Customer", "active": True}
    ]
    (body,) = autotask.bodies("Companies")
    assert body["filter"] == [
        {"op": "contains", "field": "companyName", "value": "acme"},
        {"op": "eq", "field": "isActive", "value": True},
    ]
    assert autotask.calls() == [
        ("POST", "Companies/query"),
        ("GET", "Companies/entityInformation/fields"),
    ]


def test_search_accounts_inactive_and_table(invoke, cfg, autotask):
    result = invoke("search-accounts", "acme", "--inactive")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["Account", "ID", "Account", "Type", "Active"]
    assert lines[2].split() == [str(ACME), "Acme", "Dental", "LLC", "Customer", "yes"]
    assert lines[3].split() == [str(HOLDINGS), "Acme", "Holdings", "Customer", "no"]
    assert "isActive" not in json.dumps([body["filter"] for body in autotask.bodies("Companies")])


def test_search_accounts_follows_pages_past_500(invoke, cfg, autotask):
    autotask.data["Companies"] += [
        _company(40000000 + n, f"Zeta Client {n:04d}", kind=2) for n in range(1200)
    ]
    result = invoke("search-accounts", "zeta", "--limit", "0", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 1200 and {row["type"] for row in rows} == {"Lead"}
    assert autotask.calls().count(("POST", "Companies/query")) == 1
    assert autotask.calls().count(("POST", "Companies/query/next")) == 2
    assert len(autotask.calls()) == 4  # three pages and one picklist
    # the next pages are POSTed with the same body
    assert len({json.dumps(body) for body in autotask.bodies("Companies")}) == 1


def test_search_accounts_limit_stops_paging(invoke, cfg, autotask):
    autotask.data["Companies"] += [_company(40000000 + n, f"Zeta {n}") for n in range(700)]
    result = invoke("search-accounts", "zeta")
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 52  # header, rule, 50 rows
    assert "Showing the first 50 accounts" in result.stderr
    assert autotask.calls().count(("POST", "Companies/query/next")) == 0


def test_search_accounts_no_match(invoke, cfg, autotask):
    result = invoke("search-accounts", "nothing-like-this")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "No active account name contains 'nothing-like-this'." in result.stderr
    assert autotask.calls() == [("POST", "Companies/query")]


def test_search_accounts_contracts_batched(invoke, cfg, autotask):
    result = invoke("search-accounts", "a", "--contracts", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    acme = [row for row in rows if row["account_id"] == ACME]
    assert acme == [
        {
            "account_id": ACME,
            "account": "Acme Dental LLC",
            "type": "Customer",
            "active": True,
            "contract_id": ACME_RS,
            "contract": "Managed Services 2026",
            "contract_service_id": cs,
            "service": service,
            "units": units,
            "unit_price": price,
            "unit_cost": cost,
        }
        for cs, service, units, price, cost in (
            (ACME_CS, "INFIMA Security Awareness Training", 10, 4.5, 2.25),
            (ACME_BACKUP_CS, "Managed Backup", 3, 12.0, 7.5),
        )
    ]
    delta = [row for row in rows if row["account_id"] == DELTA]
    assert [(r["contract_id"], r["contract_service_id"], r["units"]) for r in delta] == [
        (DELTA_NEW, DELTA_NEW_CS, None)  # ended contract left out; no units row this month
    ]
    # no row: the contract service's own per-unit rates
    assert (delta[0]["unit_price"], delta[0]["unit_cost"]) == (4.5, 2.25)
    assert [r["contract_id"] for r in rows if r["account_id"] == COBALT] == [COBALT_A, COBALT_B]
    assert sorted(autotask.calls()) == sorted(
        [
            ("POST", "Companies/query"),
            ("GET", "Companies/entityInformation/fields"),
            ("GET", "Contracts/entityInformation/fields"),
            ("POST", "Contracts/query"),
            ("POST", "ContractServices/query"),
            ("POST", "Services/query"),
            ("POST", "ContractServiceUnits/query"),
        ]
    )
    (contracts,) = autotask.bodies("Contracts")
    assert contracts["filter"][0]["op"] == "in" and ACME in contracts["filter"][0]["value"]
    assert {"op": "eq", "field": "contractType", "value": 7} in contracts["filter"]
    (units,) = autotask.bodies("ContractServiceUnits")
    # the whole month: a period may start on the 17th
    assert {"op": "lte", "field": "startDate", "value": "2026-11-30T00:00:00"} in units["filter"]
    assert {"op": "gte", "field": "endDate", "value": "2026-11-01T00:00:00"} in units["filter"]


def test_search_accounts_contracts_account_without_contract(invoke, cfg, autotask):
    result = invoke("search-accounts", "foxtrot", "--contracts", "--inactive")
    assert result.exit_code == 0, result.output
    row = result.stdout.splitlines()[2].split()
    assert row == [str(FOXTROT), "Foxtrot", "Supplies", "Vendor", "yes", *["-"] * 7]


def test_search_accounts_empty_query(invoke, cfg, autotask):
    result = invoke("search-accounts", "  ")
    assert result.exit_code == 2
    assert _error(result) == "Error: QUERY is empty; give part of the account name, e.g. `acme`."
    assert autotask.calls() == []


# --- map -------------------------------------------------------------------------------


def test_map_full_chain(invoke, cfg, autotask, config_path):
    before = load_config(config_path)
    result = invoke(
        "map", "101", "--account", str(ACME), "--contract", str(ACME_RS),
        "--contract-service", str(ACME_CS),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"Mapped client 101 (Acme Dental) to account {ACME} Acme Dental LLC, contract "
        f"{ACME_RS} Managed Services 2026, contract service {ACME_CS} INFIMA Security "
        "Awareness Training\n"
        "  Billing period: monthly from the 1st\n"
    )
    after = load_config(config_path)
    new = after.mapping_for(101)
    assert (new.account_id, new.contract_id, new.contract_service_id, new.service_id) == (
        ACME, ACME_RS, ACME_CS, SAT,
    )  # fmt: skip
    assert (new.client_name, new.account_name, new.contract_name, new.service_name) == (
        "Acme Dental", "Acme Dental LLC", "Managed Services 2026",
        "INFIMA Security Awareness Training",
    )  # fmt: skip
    assert (new.exclude_users, new.enabled, new.overwrite_cost) == (0, True, None)
    # everything else is unchanged
    assert after.mappings[0] == before.mappings[0]
    assert (after.sync, after.autotask, after.infima) == (
        before.sync,
        before.autotask,
        before.infima,
    )
    assert stat.S_IMODE(os.stat(config_path).st_mode) == 0o600
    assert autotask.calls() == [
        ("GET", f"Companies/{ACME}"),
        ("GET", "Contracts/entityInformation/fields"),
        ("GET", f"Contracts/{ACME_RS}"),
        ("GET", f"ContractServices/{ACME_CS}"),
        ("GET", f"Services/{SAT}"),
    ]
    assert SECRET not in config_path.read_text()


def test_map_json_document(invoke, cfg, autotask):
    result = invoke("map", "101", "--account", str(ACME), "--contract-service", str(ACME_CS),
                    "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {
            "client_id": 101,
            "client": "Acme Dental",
            "account_id": ACME,
            "account": "Acme Dental LLC",
            "contract_id": ACME_RS,
            "contract": "Managed Services 2026",
            "contract_service_id": ACME_CS,
            "service_id": SAT,
            "service": "INFIMA Security Awareness Training",
            "writes_dated": "2026-11-01",
            "billing_period": "monthly from the 1st",
            "next_period_start": None,
            "prorate": False,
            "prorated": False,
            "effective_date": "2026-11-01",
            "previous": None,
        }
    ]
    assert "Taking the only contract: 29684001  Managed Services 2026" in result.stderr


def test_map_without_terminal_takes_single_candidates(invoke, config_path, autotask):
    write_config(config_path, make_config())
    result = invoke("map", "102", "--account", str(BIRCH))
    assert result.exit_code == 0, result.output
    assert f"Taking the only contract: {BIRCH_RS}  Birch Managed 2026 " in result.stderr
    assert f"Taking the only contract service: {BIRCH_CS}  INFIMA" in result.stderr
    assert _mappings(config_path)[102]["contract_service_id"] == BIRCH_CS
    (body,) = autotask.bodies("Contracts")
    assert {"op": "in", "field": "companyID", "value": [BIRCH]} in body["filter"]
    assert {"op": "in", "field": "status", "value": [1]} in body["filter"]


def test_map_without_terminal_lists_candidates(invoke, cfg, autotask, config_path):
    raw = config_path.read_bytes()
    result = invoke("map", "101", "--account", str(ACME))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"Error: Contract {ACME_RS} (Managed Services 2026) has 2 services; pass "
        "--contract-service with one of these IDs (no terminal to choose on):",
        f"  {ACME_CS}  INFIMA Security Awareness Training",
        f"  {ACME_BACKUP_CS}  Managed Backup",
    ]
    assert result.stdout == ""
    assert config_path.read_bytes() == raw


def test_map_without_terminal_lists_contracts(invoke, cfg, autotask, config_path):
    raw = config_path.read_bytes()
    result = invoke("map", "103", "--account", str(COBALT))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"Error: Account {COBALT} (Cobalt Logistics) has 2 active Recurring Service contracts; "
        "pass --contract with one of these IDs (no terminal to choose on):",
        f"  {COBALT_A}  Cobalt Main (2026-01-01 to 2026-12-31)",
        f"  {COBALT_B}  Cobalt Warehouse (2026-03-01 to 2026-12-31)",
    ]
    assert config_path.read_bytes() == raw


@pytest.fixture
def terminal(monkeypatch):
    monkeypatch.setattr("infima_autotask.cli._common.can_prompt", lambda: True)


def test_map_interactive_contract_pick(invoke, cfg, autotask, config_path, terminal):
    result = invoke("map", "103", "--account", str(COBALT), input="2\n")
    assert result.exit_code == 0, result.output
    assert "Choose the contract:" in result.stderr
    assert f"  2) {COBALT_B}  Cobalt Warehouse (2026-03-01 to 2026-12-31)" in result.stderr
    assert "Contract number [1-2]" not in result.stdout  # prompts go to stderr
    mapping = _mappings(config_path)[103]
    assert (mapping["contract_id"], mapping["contract_service_id"]) == (COBALT_B, COBALT_B_CS)


def test_map_interactive_service_pick_reprompts(invoke, cfg, autotask, config_path, terminal):
    result = invoke("map", "101", "--account", str(ACME), input="7\nx\n2\ny\n")
    assert result.exit_code == 0, result.output
    assert f"  1) {ACME_CS}  INFIMA Security Awareness Training" in result.stderr
    assert result.stderr.count("Contract service number") == 3
    # Another service than the other mapping bills: asked, and answered yes.
    assert "bills Managed Backup (30020), but the other mapping bills" in result.stderr
    assert "Map it anyway? [y/N]" in result.stderr
    mapping = _mappings(config_path)[101]
    assert (mapping["contract_service_id"], mapping["service_id"]) == (ACME_BACKUP_CS, BACKUP)
    assert mapping["service_name"] == "Managed Backup"


def test_map_asks_before_mapping_a_line_of_another_service(
    invoke, cfg, autotask, config_path, terminal
):
    """Acme's Managed Backup for an INFIMA client: a wrong line billed silently, unless asked."""
    raw = config_path.read_bytes()
    result = invoke("map", "101", "--account", str(ACME), input="2\n\n")
    assert result.exit_code == 1
    assert "Map it anyway? [y/N]" in result.stderr
    assert "Not mapped: the config was not changed." in result.stderr
    assert config_path.read_bytes() == raw


def test_map_interactive_marks_taken_services(invoke, config_path, autotask, terminal):
    write_config(config_path, make_config([_mapping(105, ACME, ACME_RS, ACME_CS)]))
    raw = config_path.read_bytes()
    result = invoke("map", "101", "--account", str(ACME), input="1\n")
    assert result.exit_code == 2
    assert f"  1) {ACME_CS}  INFIMA Security Awareness Training (already mapped to another " in (
        result.stderr
    )
    assert _error_line(result) == (
        f"Error: Contract service {ACME_CS} is already mapped to client 105 (Evergreen "
        "Realty). Run `infima-autotask unmap 105` first, or choose another contract service."
    )
    assert config_path.read_bytes() == raw


def _error_line(result):
    return next(line for line in result.stderr.splitlines() if line.startswith("Error: "))


FIND_ACCOUNT = (
    "`infima-autotask search-accounts NAME`, then run `infima-autotask map 101 --account ID`."
)


def _choose_contract(client, account):
    return (
        "choose one of the account's active Recurring Service contracts with "
        f"`infima-autotask map {client} --account {account}`."
    )


def _choose_service(contract):
    return (
        "choose one of the contract's services with "
        f"`infima-autotask map 101 --account {ACME} --contract {contract}`."
    )


REFUSALS = [
    (
        ["999", "--account", str(ACME)],
        "Error: INFIMA does not know client 999. Run `infima-autotask list-clients` to see the "
        "client IDs.",
    ),
    (
        ["101", "--account", "29680000"],
        f"Error: Account 29680000 not found in Autotask; find the account ID with {FIND_ACCOUNT}",
    ),
    (
        ["101", "--account", str(HOLDINGS)],
        f"Error: Account {HOLDINGS} (Acme Holdings) is inactive in Autotask; reactivate it in "
        f"Autotask, or find an active account with {FIND_ACCOUNT}",
    ),
    (
        ["101", "--account", str(FOXTROT)],
        f"Error: Account {FOXTROT} (Foxtrot Supplies) has no active Recurring Service contract. "
        "Create one in Autotask with the INFIMA service on it, then run map again.",
    ),
    (
        ["101", "--account", str(ACME), "--contract", "29689999"],
        f"Error: Contract 29689999 not found in Autotask; {_choose_contract(101, ACME)}",
    ),
    (
        ["101", "--account", str(ACME), "--contract", str(BIRCH_RS)],
        f"Error: Contract {BIRCH_RS} (Birch Managed 2026) belongs to account {BIRCH}, not to "
        f"account {ACME} (Acme Dental LLC); {_choose_contract(101, ACME)}",
    ),
    (
        ["101", "--account", str(ACME), "--contract", str(ACME_BLOCK)],
        f"Error: Contract {ACME_BLOCK} (Block Hours) is not a Recurring Service contract "
        f"(contractType 3); the INFIMA service must be on one; {_choose_contract(101, ACME)}",
    ),
    (
        ["101", "--account", str(ACME), "--contract", str(ACME_INACTIVE)],
        f"Error: Contract {ACME_INACTIVE} (Old Managed Services) is not active in Autotask "
        f"(status 0); activate it in Autotask, or {_choose_contract(101, ACME)}",
    ),
    (
        ["104", "--account", str(DELTA), "--contract", str(DELTA_OLD)],
        f"Error: Contract {DELTA_OLD} (Delta 2025) ended on 2026-10-31; map its renewal: "
        f"{_choose_contract(104, DELTA)}",
    ),
    (
        [
            "101",
            "--account",
            str(ACME),
            "--contract",
            str(ACME_RS),
            "--contract-service",
            str(BIRCH_CS),
        ],  # fmt: skip
        f"Error: Contract service {BIRCH_CS} belongs to contract {BIRCH_RS}, not to contract "
        f"{ACME_RS} (Managed Services 2026); {_choose_service(ACME_RS)}",
    ),
    (
        ["101", "--account", str(ACME), "--contract-service", "29688888"],
        f"Error: Contract service 29688888 not found in Autotask; {_choose_service(ACME_RS)}",
    ),
    (
        ["101", "--account", str(BIRCH), "--contract-service", str(BIRCH_CS)],
        f"Error: Contract service {BIRCH_CS} is already mapped to client 102 (Birch Legal). "
        "Run `infima-autotask unmap 102` first, or choose another contract service.",
    ),
    (
        ["101", "--account", str(ACME), "--min-units", "9", "--max-units", "3"],
        "Error: Minimum units 9 is greater than maximum units 3; fix --min-units or --max-units.",
    ),
    (
        ["102", "--account", str(BIRCH), "--min-units", "9", "--max-units", "3"],
        "Error: Minimum units 9 is greater than maximum units 3; fix --min-units or --max-units.",
    ),
]


@pytest.mark.parametrize(("args", "error"), REFUSALS, ids=lambda v: str(v)[:40])
def test_map_refusals(invoke, cfg, autotask, config_path, args, error):
    raw = config_path.read_bytes()
    result = invoke("map", *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [error]
    assert result.stdout == ""
    assert config_path.read_bytes() == raw


def test_map_account_without_usable_contract_but_with_others(invoke, cfg, autotask):
    # Acme Holdings reactivated with only an ended and a Block Hours contract: no candidate.
    autotask.data["Companies"][4]["isActive"] = True
    autotask.data["Contracts"] += [
        _contract(1, HOLDINGS, "Old", end="2026-01-31"),
        _contract(2, HOLDINGS, "Hours", kind=3),
    ]
    result = invoke("map", "101", "--account", str(HOLDINGS))
    assert result.exit_code == 2
    assert "has no active Recurring Service contract" in _error(result)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["abc", "--account", "1"],
            "Invalid value for '[CLIENT_ID]': 'abc' is not a whole number.",
        ),
        (["101", "--account", "x1"], "Invalid value for '--account': 'x1' is not a whole number."),
        (["101", "--account", "-1"], "Invalid value for '--account': '-1' is not a whole number"),
        (["101", "--account", "1", "--contract", "0"], "'0' is not a positive whole number."),
        (["101", "--account", "1", "--contract-service", "0"], "'0' is not a positive whole"),
        (["0", "--account", "1"], "Invalid value for '[CLIENT_ID]': '0' is not a positive"),
        (["101", "--account", "1", "--contract", "1.5"], "'1.5' is not a whole number."),
        (["101", "--account", "1", "--exclude-users", "-1"], "'-1' is not a whole number of 0"),
        (["101"], "Give CLIENT_ID and --account (or --from-csv FILE)."),
        (["--account", "1"], "Give CLIENT_ID and --account (or --from-csv FILE)."),
    ],
)
def test_map_bad_options_are_click_usage_errors(invoke, cfg, autotask, config_path, args, message):
    raw = config_path.read_bytes()
    result = invoke("map", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stderr.startswith("Usage: ") and " map [OPTIONS] [CLIENT_ID]" in result.stderr
    assert autotask.calls() == [] and config_path.read_bytes() == raw


def test_map_invalid_config_is_untouched(invoke, config_path, autotask):
    doc = make_config([{**BIRCH_MAPPING, "contract_id": "twelve"}])
    write_config(config_path, doc)
    raw = config_path.read_bytes()
    result = invoke("map", "101", "--account", str(ACME))
    assert result.exit_code == 2
    assert _error(result).startswith(f"Error: Invalid config file {config_path}")
    assert "  mappings[0].contract_id: must be a positive integer, got 'twelve'" in result.stderr
    assert config_path.read_bytes() == raw
    assert autotask.calls() == []


def test_remap_keeps_overrides_and_prints_old_and_new(invoke, config_path, autotask):
    delta = _mapping(
        104, DELTA, DELTA_OLD, DELTA_OLD_CS, contract_name="Delta 2025", account_name="Delta",
        enabled=False, exclude_users=2, min_units=5, max_units=40, unit_cost=1.5,
        overwrite_cost=False, note="billing contact: Dana",
    )  # fmt: skip
    write_config(config_path, make_config([BIRCH_MAPPING, delta]))
    before = load_config(config_path)
    result = invoke("map", "104", "--account", str(DELTA), "--max-units", "50")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "Mapped client 104 (Delta Vets):",
        f"  was: account {DELTA} Delta, contract {DELTA_OLD} Delta 2025, contract service "
        f"{DELTA_OLD_CS} INFIMA Security Awareness Training",
        f"  now: account {DELTA} Delta Veterinary Group, contract {DELTA_NEW} Delta 2026, "
        f"contract service {DELTA_NEW_CS} INFIMA Security Awareness Training",
        "  Billing period: monthly from the 1st",
    ]
    after = load_config(config_path)
    new = after.mapping_for(104)
    assert (new.contract_id, new.contract_service_id, new.contract_name) == (
        DELTA_NEW, DELTA_NEW_CS, "Delta 2026",
    )  # fmt: skip
    assert (new.enabled, new.exclude_users, new.min_units, new.max_units) == (False, 2, 5, 50)
    assert (new.unit_cost, new.overwrite_cost, new.note) == (1.5, False, "billing contact: Dana")
    assert after.mappings[0] == before.mappings[0]
    assert [m.client_id for m in after.mappings] == [102, 104]  # position kept


def test_map_unit_cost_sets_overwrite_cost(invoke, cfg, autotask, config_path):
    result = invoke("map", "102", "--account", str(BIRCH), "--unit-cost", "2.75", "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["previous"]["contract_service_id"] == BIRCH_CS
    mapping = _mappings(config_path)[102]
    assert (mapping["unit_cost"], mapping["overwrite_cost"]) == (2.75, True)
    assert (mapping["exclude_users"], mapping["note"]) == (1, "keep me")
    assert "(unchanged chain)" not in result.stdout


def test_map_same_chain_again(invoke, cfg, autotask):
    result = invoke("map", "102", "--account", str(BIRCH))
    assert result.exit_code == 0
    assert result.stdout.startswith("Mapped client 102 (Birch Legal) (unchanged chain): account")


def test_map_counts_file_is_the_client_list(invoke, config_path, tmp_path, autotask):
    counts = tmp_path / "counts.csv"
    counts.write_text("client_id,active_users\n555,3\n")
    write_config(config_path, make_config(infima={"counts_file": str(counts)}))
    result = invoke("map", "555", "--account", str(BIRCH))
    assert result.exit_code == 0, result.output
    assert _mappings(config_path)[555]["client_name"] is None
    assert not [r for r in autotask.mock.request_history if r.url.startswith(INFIMA)]


# --- map --from-csv --------------------------------------------------------------------


def _csv(tmp_path, *rows, header="client_id,account_id,contract_id,contract_service_id"):
    path = tmp_path / "map.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_from_csv_maps_all_in_batched_reads(invoke, cfg, autotask, config_path, tmp_path):
    before = load_config(config_path)
    path = _csv(
        tmp_path,
        f"101,{ACME},{ACME_RS},{ACME_CS}",
        "",
        f"103,{COBALT},{COBALT_B},{COBALT_B_CS}",
        f"104,{DELTA},{DELTA_NEW},{DELTA_NEW_CS}",
    )
    result = invoke("map", "--from-csv", str(path), "--json")
    assert result.exit_code == 0, result.output
    assert [row["client_id"] for row in json.loads(result.stdout)] == [101, 103, 104]
    after = load_config(config_path)
    assert [m.client_id for m in after.mappings] == [102, 101, 103, 104]
    assert after.mappings[0] == before.mappings[0]
    assert after.mapping_for(104).contract_name == "Delta 2026"
    assert sorted(autotask.calls()) == sorted(
        [
            ("POST", "Companies/query"),
            ("POST", "Contracts/query"),
            ("POST", "ContractServices/query"),
            ("POST", "Services/query"),
            ("GET", "Contracts/entityInformation/fields"),
        ]
    )
    (companies,) = autotask.bodies("Companies")
    assert companies["filter"] == [{"op": "in", "field": "id", "value": [ACME, COBALT, DELTA]}]
    infima_calls = [r for r in autotask.mock.request_history if r.url.startswith(INFIMA)]
    assert len(infima_calls) == 1
    assert "Config saved to" in result.stderr


def test_from_csv_may_swap_contract_services(invoke, cfg, autotask, config_path, tmp_path):
    # Birch's contract service moves to client 101 while 102 gets another one: allowed.
    autotask.data["ContractServices"].append(_cs(29685201, BIRCH_RS, BACKUP))
    path = _csv(
        tmp_path,
        f"101,{BIRCH},{BIRCH_RS},{BIRCH_CS}",
        f"102,{BIRCH},{BIRCH_RS},29685201",
    )
    result = invoke("map", "--from-csv", str(path))
    assert result.exit_code == 0, result.output
    mappings = _mappings(config_path)
    assert (mappings[101]["contract_service_id"], mappings[102]["contract_service_id"]) == (
        BIRCH_CS, 29685201,
    )  # fmt: skip
    assert mappings[102]["note"] == "keep me"
    assert "  was: " in result.stdout


def test_from_csv_lists_every_bad_row_and_writes_nothing(
    invoke, cfg, autotask, config_path, tmp_path
):
    raw = config_path.read_bytes()
    path = _csv(
        tmp_path,
        f"101,{ACME},{ACME_RS},{ACME_CS}",  # good
        f"999,{ACME},{ACME_RS},{ACME_BACKUP_CS}",  # 3: unknown client
        f"103,29680000,{COBALT_A},{COBALT_A_CS}",  # 4: unknown account
        f"104,{DELTA},{DELTA_OLD},{DELTA_OLD_CS}",  # 5: ended
        f"105,{BIRCH},{BIRCH_RS},{BIRCH_CS}",  # 6: taken by 102
        f"101,{COBALT},{COBALT_A},{COBALT_A_CS}",  # 7: client twice
        f"103,abc,{COBALT_A},{COBALT_A_CS}",  # 8: not a number
        "103,1,2",  # 9: too few columns
        f"106,{COBALT},{COBALT_A},{ACME_CS}",  # 10: contract service twice
        f"103,{ACME},{ACME_BLOCK},{ACME_CS}",  # 11: duplicate cs
    )
    result = invoke("map", "--from-csv", str(path))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"Error: 9 bad rows in {path}; nothing was written. Fix them and run again:",
        "  line 3: INFIMA does not know client 999",
        "  line 4: Account 29680000 not found in Autotask",
        f"  line 5: Contract {DELTA_OLD} (Delta 2025) ended on 2026-10-31",
        f"  line 6: Contract service {BIRCH_CS} is already mapped to client 102 (Birch Legal)",
        "  line 7: client 101 is also on line 2",
        "  line 8: account_id must be 0 or a positive integer, got 'abc'",
        "  line 9: expected 4 columns, got 3",
        f"  line 10: contract service {ACME_CS} is also on line 2",
        "  line 11: client 103 is also on line 4",
    ]
    assert result.stdout == ""
    assert config_path.read_bytes() == raw


def test_from_csv_chain_problems(invoke, cfg, autotask, config_path, tmp_path):
    raw = config_path.read_bytes()
    path = _csv(
        tmp_path,
        f"101,{ACME},{BIRCH_RS},29685555",
        f"103,{COBALT},{COBALT_A},{COBALT_B_CS}",
        f"104,{HOLDINGS},{DELTA_NEW},{DELTA_NEW_CS}",
        f"105,{ACME},{ACME_BLOCK},{ACME_BACKUP_CS}",
    )
    result = invoke("map", "--from-csv", str(path))
    assert result.exit_code == 2
    assert result.stderr.splitlines()[1:] == [
        f"  line 2: Contract {BIRCH_RS} (Birch Managed 2026) belongs to account {BIRCH}, not "
        f"to account {ACME} (Acme Dental LLC)",
        f"  line 3: Contract service {COBALT_B_CS} belongs to contract {COBALT_B}, not to "
        f"contract {COBALT_A} (Cobalt Main)",
        f"  line 4: Account {HOLDINGS} (Acme Holdings) is inactive in Autotask",
        f"  line 5: Contract {ACME_BLOCK} (Block Hours) is not a Recurring Service contract "
        "(contractType 3); the INFIMA service must be on one",
    ]
    assert config_path.read_bytes() == raw


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("client,account\n1,2\n", "the first line must be the header"),
        ("", "the first line must be the header"),
        ("client_id,account_id,contract_id,contract_service_id\n\n", "has no rows below"),
    ],
)
def test_from_csv_bad_files(invoke, cfg, autotask, config_path, tmp_path, content, error):
    raw = config_path.read_bytes()
    path = tmp_path / "m.csv"
    path.write_text(content)
    result = invoke("map", "--from-csv", str(path))
    assert result.exit_code == 2
    assert _error(result).startswith(f"Error: Mapping file {path}") and error in result.stderr
    assert autotask.calls() == [] and config_path.read_bytes() == raw


def test_from_csv_refuses_other_options(invoke, cfg, autotask, tmp_path):
    path = _csv(tmp_path, f"101,{ACME},{ACME_RS},{ACME_CS}")
    result = invoke("map", "101", "--from-csv", str(path))
    assert result.exit_code == 2
    assert "--from-csv takes the IDs from the file; give no other option." in result.stderr


# --- unmap -----------------------------------------------------------------------------


def test_unmap_removes_only_that_mapping(invoke, config_path, autotask):
    write_config(
        config_path,
        make_config(
            [_mapping(101, ACME, ACME_RS, ACME_CS), BIRCH_MAPPING], sync={"allow_zero": True}
        ),
    )
    before = load_config(config_path)
    result = invoke("unmap", "101")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Unmapped client 101: was account {ACME} name, contract")
    after = load_config(config_path)
    assert after.mappings == before.mappings[1:]
    assert after.sync == before.sync
    assert stat.S_IMODE(os.stat(config_path).st_mode) == 0o600
    assert autotask.calls() == []


def test_unmap_json(invoke, cfg, autotask):
    result = invoke("unmap", "102", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)[0]["contract_service_id"] == BIRCH_CS


def test_unmap_unknown_client(invoke, cfg, config_path):
    raw = config_path.read_bytes()
    result = invoke("unmap", "101")
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: Client 101 is not mapped. Run `infima-autotask list-mappings` to see the "
        "mapped clients.\n"
    )
    assert config_path.read_bytes() == raw


# --- list-mappings ---------------------------------------------------------------------


def test_list_mappings_without_history(invoke, cfg, config_path, tmp_path):
    result = invoke("list-mappings", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {
            "client_id": 102,
            "client": "Birch Legal",
            "psa": "autotask",
            "account_id": BIRCH,
            "account": "name",
            "contract_id": BIRCH_RS,
            "contract": "contract",
            "contract_service_id": BIRCH_CS,
            "contract_service": "INFIMA Security Awareness Training",
            # offline: only what the config knows
            "writes_dated": None,
            "billing_period": None,
            "next_period_start": None,
            "prorate": False,
            "prorated": None,
            "last_sync": None,
        }
    ]
    assert not (tmp_path / "state-home").exists()  # the state folder is not created to read


def test_list_mappings_last_sync_from_history(invoke, cfg, config_path, tmp_path):
    state = tmp_path / "state"
    with History(state) as history:
        run = history.start_run(period="2026-11", dry_run=False, version="t")
        history.record_item(
            run,
            ItemRecord(102, "Birch", BIRCH_RS, BIRCH_CS, 25, 24, 20, 24, 4, 4.5, 2.25, "updated"),
        )
        dry = history.start_run(period="2026-12", dry_run=True, version="t")
        history.record_item(
            dry,
            ItemRecord(102, "Birch", BIRCH_RS, BIRCH_CS, 30, 29, 24, 29, 5, 4.5, 2.25, "planned"),
        )
    result = invoke("list-mappings", env={"INFIMA_AUTOTASK_STATE_DIR": str(state)})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "Client", "ID", "Client", "PSA", "Account", "Contract", "Contract", "Service", "Writes",
        "dated",
        "Last", "sync",
    ]  # fmt: skip
    assert lines[2].endswith("2026-11 24 updated")


def test_list_mappings_json_is_raw_where_the_table_joins(invoke, cfg, config_path, tmp_path):
    """IDs and names apart, last sync as an object (issue 11); the table is as before."""
    state = tmp_path / "state"
    with History(state) as history:
        run = history.start_run(period="2026-11", dry_run=False, version="t")
        history.record_item(
            run,
            ItemRecord(102, "Birch", BIRCH_RS, BIRCH_CS, 25, 24, 20, 24, 4, 4.5, 2.25, "updated"),
        )
    env = {"INFIMA_AUTOTASK_STATE_DIR": str(state)}
    result = invoke("list-mappings", "--json", env=env)
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert (row["account_id"], row["account"]) == (BIRCH, "name")
    assert (row["contract_service_id"], row["contract_service"]) == (
        BIRCH_CS,
        "INFIMA Security Awareness Training",
    )
    assert row["last_sync"] == {"period": "2026-11", "units": 24, "status": "updated"}
    table = invoke("list-mappings", env=env).stdout.splitlines()
    assert table[2].split() == [
        "102", "Birch", "Legal", "autotask", str(BIRCH), "name", str(BIRCH_RS), "contract",
        str(BIRCH_CS), "INFIMA", "Security", "Awareness", "Training", "billing", "period",
        "start", "2026-11", "24", "updated",
    ]  # fmt: skip


def test_list_clients_table_joins_what_json_keeps_apart(invoke, cfg, autotask):
    result = invoke("list-clients")
    assert result.exit_code == 0, result.output
    birch = next(line for line in result.stdout.splitlines() if line.startswith("102 "))
    assert birch.split()[-9:] == [
        "25", str(BIRCH_CS), "INFIMA", "Security", "Awareness", "Training", "on", str(BIRCH_RS),
        "contract",
    ]  # fmt: skip


def test_list_mappings_empty(invoke, config_path):
    write_config(config_path, make_config())
    result = invoke("list-mappings", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == []


def _check_config(config_path, *extra):
    mappings = [
        _mapping(101, ACME, ACME_RS, ACME_CS, account_name="Acme Dental LLC",
                 contract_name="Managed Services 2026"),
        _mapping(104, DELTA, DELTA_OLD, DELTA_OLD_CS, account_name="Delta Veterinary Group",
                 contract_name="Delta 2025", exclude_users=1),
        *extra,
    ]  # fmt: skip
    write_config(config_path, make_config(mappings, sync={"allow_zero": True}))


def test_check_ended_contract_prints_the_renewal_command(invoke, config_path, autotask):
    _check_config(config_path)
    raw = config_path.read_bytes()
    result = invoke("list-mappings", "--check", "--json")
    assert result.exit_code == 1, result.output
    rows = {row["client_id"]: row for row in json.loads(result.stdout)}
    assert rows[101]["status"] == "ok"
    assert rows[104]["status"] == (
        f"contract {DELTA_OLD} (Delta 2025) ended on 2026-10-31; re-map to its renewal with "
        f"`infima-autotask map 104 --account {DELTA} --contract {DELTA_NEW} "
        f"--contract-service {DELTA_NEW_CS}`"
    )
    assert list(rows[104]) == [
        "client_id", "client", "psa", "account_id", "account", "contract_id", "contract",
        "contract_service_id", "contract_service", "writes_dated", "billing_period",
        "next_period_start", "prorate", "prorated", "last_sync", "status",
    ]  # fmt: skip
    assert rows[101]["writes_dated"] == "2026-11-01"
    assert "2 mapping(s): 1 ok, 1 broken" in result.stderr
    # batched: picklist, 4 reads, 2 for the renewal look-up
    assert sorted(autotask.calls()) == sorted(
        [
            ("GET", "Contracts/entityInformation/fields"),
            ("POST", "Companies/query"),
            ("POST", "Contracts/query"),
            ("POST", "ContractServices/query"),
            ("POST", "Services/query"),
            ("POST", "Contracts/query"),
            ("POST", "ContractServices/query"),
        ]
    )
    assert config_path.read_bytes() == raw  # names were current: nothing rewritten
    # The printed command does what it says.
    command = rows[104]["status"].split("`")[1].split()[1:]
    assert invoke(*command).exit_code == 0
    assert invoke("list-mappings", "--check").exit_code == 0


def test_check_table_and_all_ok_without_renewal_lookup(invoke, config_path, autotask):
    write_config(
        config_path,
        make_config([_mapping(102, BIRCH, BIRCH_RS, BIRCH_CS, account_name="Birch & Co Legal",
                              contract_name="Birch Managed 2026")]),
    )  # fmt: skip
    result = invoke("list-mappings", "--check")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].split()[-1] == "Status"
    assert result.stdout.splitlines()[2].split()[-2:] == ["-", "ok"]
    assert len(autotask.calls()) == 5


def test_check_refreshes_renamed_records(invoke, config_path, autotask):
    _check_config(config_path)
    for record in autotask.data["Companies"]:
        if record["id"] == ACME:
            record["companyName"] = "Acme Dental Group"
    autotask.data["Services"][0]["name"] = "INFIMA SAT"
    before = load_config(config_path)
    result = invoke("list-mappings", "--check")
    assert result.exit_code == 1
    assert f"Refreshed names of 2 mapping(s) in {config_path}." in result.stderr
    after = load_config(config_path)
    acme = after.mapping_for(101)
    assert (acme.account_name, acme.service_name) == ("Acme Dental Group", "INFIMA SAT")
    assert acme == before.mapping_for(101).__class__(
        **{**before.mapping_for(101).__dict__, "account_name": "Acme Dental Group",
           "service_name": "INFIMA SAT"}
    )  # fmt: skip
    assert after.mapping_for(104).exclude_users == 1
    assert after.sync == before.sync
    assert "Acme Dental Group" in result.stdout
    assert stat.S_IMODE(os.stat(config_path).st_mode) == 0o600


CHOOSE_ACME = (
    "choose one of the account's active Recurring Service contracts with "
    f"`infima-autotask map 101 --account {ACME}`"
)


@pytest.mark.parametrize(
    ("change", "status"),
    [
        (
            lambda d: d["Companies"][0].update(isActive=False),
            f"account {ACME} (Acme Dental LLC) is inactive in Autotask; reactivate it in "
            "Autotask, or find an active account with `infima-autotask search-accounts NAME`, "
            "then run `infima-autotask map 101 --account ID`",
        ),
        (
            lambda d: d["Companies"].pop(0),
            f"account {ACME} not found in Autotask; find the account ID with `infima-autotask "
            "search-accounts NAME`, then run `infima-autotask map 101 --account ID`",
        ),
        (
            lambda d: d["Contracts"][0].update(status=0),
            f"contract {ACME_RS} (Managed Services 2026) is not active in Autotask (status 0); "
            f"activate it in Autotask, or {CHOOSE_ACME}",
        ),
        (
            lambda d: d["Contracts"][0].update(contractType=3),
            f"contract {ACME_RS} (Managed Services 2026) is not a Recurring Service contract "
            f"(contractType 3); the INFIMA service must be on one; {CHOOSE_ACME}",
        ),
        (
            lambda d: d["Contracts"].pop(0),
            f"contract {ACME_RS} not found in Autotask; {CHOOSE_ACME}",
        ),
        (
            lambda d: d["Contracts"][0].update(companyID=BIRCH),
            f"contract {ACME_RS} (Managed Services 2026) belongs to account {BIRCH}, not to "
            f"account {ACME} (Acme Dental LLC); {CHOOSE_ACME}",
        ),
        (
            lambda d: d["ContractServices"].pop(0),
            f"contract service {ACME_CS} not found in Autotask; choose one of the contract's "
            f"services with `infima-autotask map 101 --account {ACME} --contract {ACME_RS}`",
        ),
        (
            lambda d: d["ContractServices"][0].update(contractID=BIRCH_RS),
            f"contract service {ACME_CS} belongs to contract {BIRCH_RS}, not to contract "
            f"{ACME_RS} (Managed Services 2026); choose one of the contract's services with "
            f"`infima-autotask map 101 --account {ACME} --contract {ACME_RS}`",
        ),
        (
            lambda d: d["Contracts"][0].update(endDate="2026-11-10T00:00:00"),
            f"contract {ACME_RS} (Managed Services 2026) ended on 2026-11-10; no renewal "
            f"carrying service {SAT} was found: renew it in Autotask, then {CHOOSE_ACME}",
        ),
    ],
)
def test_check_broken_statuses(invoke, config_path, autotask, change, status):
    _check_config(config_path)
    change(autotask.data)
    result = invoke("list-mappings", "--check", "--json")
    assert result.exit_code == 1
    rows = {row["client_id"]: row for row in json.loads(result.stdout)}
    assert rows[101]["status"] == status


def test_check_seeks_renewals_only_for_chains_broken_by_the_ended_contract(
    invoke, config_path, autotask
):
    """An inactive account is what the status names: no renewal look-up for its ended contract
    (the two queries used to be sent and their answer never shown)."""
    write_config(
        config_path,
        make_config([_mapping(104, DELTA, DELTA_OLD, DELTA_OLD_CS, contract_name="Delta 2025")]),
    )
    for record in autotask.data["Companies"]:
        if record["id"] == DELTA:
            record["isActive"] = False
    result = invoke("list-mappings", "--check", "--json")
    assert result.exit_code == 1
    (row,) = json.loads(result.stdout)
    assert row["status"].startswith(f"account {DELTA} (Delta Veterinary Group) is inactive")
    assert len(autotask.calls()) == 5  # picklist + 4 batched reads


def test_check_without_mappings_makes_no_request(invoke, config_path, autotask):
    write_config(config_path, make_config())
    result = invoke("list-mappings", "--check", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    assert autotask.calls() == []


def test_check_200_mappings_costs_a_handful_of_requests(invoke, config_path, autotask, tmp_path):
    mappings = []
    for n in range(200):
        account, contract, cs = 50000000 + n, 51000000 + n, 52000000 + n
        autotask.data["Companies"].append(_company(account, f"Client {n}"))
        ended = n % 50 == 0  # four ended contracts, each with a renewal
        end = "2026-10-31" if ended else "2026-12-31"
        autotask.data["Contracts"].append(_contract(contract, account, f"C{n}", end=end))
        autotask.data["ContractServices"].append(_cs(cs, contract, SAT))
        if ended:
            autotask.data["Contracts"].append(
                _contract(53000000 + n, account, f"R{n}", end="2027-10-31")
            )
            autotask.data["ContractServices"].append(_cs(54000000 + n, 53000000 + n, SAT))
        mappings.append(
            _mapping(
                1000 + n, account, contract, cs, account_name=f"Client {n}", contract_name=f"C{n}"
            )
        )
    counts = tmp_path / "counts.csv"  # INFIMA's side of the 200 clients, without the API
    counts.write_text(
        "client_id,active_users\n" + "".join(f"{1000 + n},1\n" for n in range(200)),
        encoding="utf-8",
    )
    write_config(config_path, make_config(mappings, infima={"counts_file": str(counts)}))
    result = invoke("list-mappings", "--check", "--json")
    assert result.exit_code == 1
    broken = [row for row in json.loads(result.stdout) if row["status"] != "ok"]
    assert len(broken) == 4 and all("re-map to its renewal with" in row["status"] for row in broken)
    assert len(autotask.calls()) == 7  # picklist + 4 batched reads + 2 renewal queries


def test_check_marks_a_client_infima_does_not_know(invoke, config_path, autotask, tmp_path):
    counts = tmp_path / "counts.csv"
    counts.write_text("client_id,active_users\n101,12\n", encoding="utf-8")
    write_config(
        config_path,
        make_config([dict(BIRCH_MAPPING)], infima={"counts_file": str(counts)}),
    )
    result = invoke("list-mappings", "--check", "--json")
    assert result.exit_code == 1
    [row] = json.loads(result.stdout)
    assert row["status"].startswith("INFIMA has no client 102; check it in INFIMA, or")


def test_map_warns_when_the_account_shares_no_word_with_the_client(invoke, config_path, autotask):
    """Without a terminal the warning is printed and the mapping made (scripts, CSV)."""
    write_config(config_path, make_config([]))
    result = invoke(
        "map",
        "101",
        "--account",
        str(BIRCH),
        "--contract",
        str(BIRCH_RS),
        "--contract-service",
        str(BIRCH_CS),
    )
    assert result.exit_code == 0, result.output
    assert "shares no word with the INFIMA client 'Acme Dental'" in result.stderr
    assert _mappings(config_path)[101]["account_id"] == BIRCH


def test_a_map_that_changes_nothing_leaves_the_file_alone(invoke, cfg, autotask, config_path):
    args = ["--account", str(BIRCH), "--contract", str(BIRCH_RS), "--contract-service"]
    first = invoke("map", "102", *args, str(BIRCH_CS))  # refreshes the names once
    assert "(1 changed, 1 mapping in all)" in first.stderr
    raw = config_path.read_bytes()
    result = invoke("map", "102", *args, str(BIRCH_CS))
    assert result.exit_code == 0, result.output
    assert "Nothing changed: the config already maps it so" in result.stderr
    assert "changed," not in result.stderr
    assert config_path.read_bytes() == raw


def test_unmap_shows_the_overrides_it_drops(invoke, cfg, config_path):
    result = invoke("unmap", "102")
    assert result.exit_code == 0, result.output
    assert "  its overrides were: exclude_users: 1, note: 'keep me'" in result.stdout
