"""Bad-input corpus (issue 7, part 2): generated configs and malformed API answers.

Property-based: hypothesis generates config documents (valid YAML of wrong shapes and types,
huge numbers, unicode, duplicate keys, deep nesting, truncated text) and malformed answers
for every Autotask and INFIMA read the commands make (HTML pages, truncated JSON, missing and
mistyped fields, ``{"item": null}``, empty pages, non-list items, a ``nextPageUrl`` on another
host, huge and negative numbers, null prices). Each example runs the real CLI (click's
CliRunner with ``catch_exceptions=False``, so an unexpected exception fails the test) against
requests-mock and checks: only ``Error:`` blocks and SPEC §3 exit codes, never a traceback,
and never a ``ContractServiceAdjustments`` POST for a client whose data was bad.

Examples per property: 200 by default (profile ``ci``, a quick run); the deep run is
``HYPOTHESIS_PROFILE=local`` (1,000).
"""

from __future__ import annotations

import ast
import copy
import json
import math
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import requests_mock as rm
import yaml
from click.testing import CliRunner
from conftest import API_KEY, API_URL, BASE, CODE, INFIMA, SECRET, USERNAME
from hypothesis import given, settings
from hypothesis import strategies as st

from infima_autotask.autotask import DEFAULT_ZONE_URL
from infima_autotask.cli import cli

MONTH = "2026-12"
ADJUSTMENTS = BASE + "ContractServiceAdjustments"
ACCOUNT, CONTRACT, SERVICE = 5001, 6001, 30012
CLIENTS = {101: 7101, 102: 7102}  # INFIMA client -> contract service
UNITS = {7101: 10, 7102: 5}  # this month's units: 101 has 12 users (+2), 102 is unchanged
USERS = {101: 12, 102: 5}
ANY = re.compile(r".*")


# --- the CLI ---------------------------------------------------------------------------


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


def run_cli(config: Path, *args: str, env: dict[str, str], stdin: str | None = None) -> Outcome:
    """The real CLI; any exception escapes (a traceback fails the example)."""
    runner = CliRunner()
    # Retries of 5xx/429 answers would sleep for real otherwise.
    with mock.patch.object(time, "sleep", lambda seconds: None):
        result = runner.invoke(
            cli,
            ["--config", str(config), *args],
            env=env,
            input=stdin,
            catch_exceptions=False,
        )
    return Outcome(result.exit_code, result.stdout, result.stderr)


def check_error_format(out: Outcome) -> None:
    """SPEC §3: no traceback; an error exit ends with one ``Error:`` line and indented lines."""
    text = out.stdout + out.stderr
    assert "Traceback" not in text, text
    if out.code in (2, 3):
        lines = out.stderr.rstrip("\n").split("\n")
        starts = [i for i, line in enumerate(lines) if line.startswith("Error: ")]
        assert starts, out.stderr
        assert all(line.startswith("  ") for line in lines[starts[-1] + 1 :]), out.stderr


def adjustment_posts(m: rm.Mocker) -> list[dict[str, Any]]:
    return [
        r.json()
        for r in m.request_history
        if r.method == "POST" and r.url.split("?")[0].rstrip("/") == ADJUSTMENTS
    ]


# --- (a) generated config documents ----------------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=10**30, max_value=10**300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", " ", "1", "0x10", "1e3", "true", "null", "~", "Europe/Nowhere", "é✓🙂"]),
)
KEYS = st.one_of(
    st.sampled_from(
        [
            "version",
            "state_dir",
            "autotask",
            "infima",
            "sync",
            "mappings",
            "client_id",
            "contract_service_id",
            "unit_cost",
            "overwrite_cost",
            "min_units",
            "max_units",
            "timezone",
            "api_url",
        ]
    ),
    st.text(max_size=10),
    st.integers(),
    st.booleans(),
    st.none(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)


def valid_mapping(client_id: int) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "client_name": f"Client {client_id}",
        "account_id": ACCOUNT,
        "account_name": "Acme Dental LLC",
        "contract_id": CONTRACT,
        "contract_name": "Managed Services",
        "contract_service_id": CLIENTS.get(client_id, 8000 + client_id),
        "service_id": SERVICE,
        "service_name": "INFIMA SAT",
    }


def valid_doc(mappings: int = 2) -> dict[str, Any]:
    return {
        "version": 1,
        "state_dir": None,
        "autotask": {"username": USERNAME, "integration_code": CODE, "api_url": API_URL},
        "infima": {"api_url": INFIMA, "counts_file": None, "count_users_without_status": False},
        "sync": {
            "timezone": None,
            "overwrite_cost": False,
            "unit_cost": None,
            "max_decrease_percent": 50,
            "max_increase_percent": None,
            "allow_zero": False,
            "max_api_usage_percent": 80,
        },
        "mappings": [valid_mapping(101 + i) for i in range(mappings)],
    }


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def mutated_doc(draw: st.DrawFn) -> Any:
    """A valid config with 1-4 edits: replace, delete, add a key, duplicate a mapping."""
    doc: Any = valid_doc(draw(st.integers(0, 3)))
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(doc) if p]
        action = draw(st.sampled_from(["replace", "delete", "add", "duplicate"]))
        if action == "duplicate" and isinstance(doc, dict) and doc.get("mappings"):
            if isinstance(doc["mappings"], list):
                doc["mappings"].append(copy.deepcopy(draw(st.sampled_from(doc["mappings"]))))
            continue
        if not paths:
            return draw(VALUES)
        path = draw(st.sampled_from(paths))
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        if action == "delete" and isinstance(parent, dict):
            del parent[last]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(KEYS)] = draw(VALUES)
        else:
            parent[last] = draw(VALUES)
    return doc


def _dump(doc: Any) -> str:
    try:
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    except (yaml.YAMLError, ValueError):  # e.g. keys PyYAML cannot represent
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=False, default_style='"')


@st.composite
def config_bytes(draw: st.DrawFn) -> bytes:
    """Config file contents: YAML documents of every shape, plus text-level damage."""
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "random", "text", "raw"]))
    if kind == "random":
        return _dump(draw(VALUES)).encode()
    if kind == "raw":
        return draw(
            st.one_of(
                st.binary(max_size=200),
                st.sampled_from(
                    [
                        b"",
                        b"\xef\xbb\xbf",
                        b"version: 1\n\xff\xfe\n",
                        b"[" * 5000 + b"]" * 5000,
                        b"a: &a [1]\nb: &b [*a, *a, *a]\nc: &c [*b, *b, *b]\nd: [*c, *c, *c]\n",
                        b"version: 1\nversion: 1\nmappings: []\n",
                        b"version: !!python/object:os.system ls\n",
                        b"version: 1\nmappings:\n  - client_id: " + b"9" * 5000 + b"\n",
                        b"version: 2001-13-45\n",
                        b"version: 1\nsync:\n  timezone: ../../../etc/passwd\n",
                        b"--- 1\n--- 2\n",
                        b"<<: {version: 1}\n",
                        b"version: 1\nmappings: [{<<: {client_id: 1}, client_id: 1}]\n",
                    ]
                ),
            )
        )
    text = _dump(draw(mutated_doc()))
    if kind == "text":
        lines = text.split("\n")
        edit = draw(st.sampled_from(["truncate", "duplicate-line", "insert", "indent"]))
        at = draw(st.integers(0, max(0, len(lines) - 1)))
        if edit == "truncate":
            text = text[: draw(st.integers(0, len(text)))]
        elif edit == "duplicate-line":
            lines.insert(at, lines[at])
            text = "\n".join(lines)
        elif edit == "insert":
            lines.insert(at, draw(st.text(max_size=20)))
            text = "\n".join(lines)
        else:
            lines[at] = "   " + lines[at]
            text = "\n".join(lines)
    return text.encode("utf-8", "surrogatepass")


def generic_api(m: rm.Mocker) -> None:
    """A quiet, valid Autotask and INFIMA: empty lists, a low threshold use."""
    m.post(re.compile(re.escape(BASE) + r".*/query"), json={"items": [], "pageDetails": {}})
    m.get(
        BASE + "ThresholdInformation",
        json={"externalRequestThreshold": 10000, "currentTimeframeRequestCount": 1},
    )
    m.get(re.compile(re.escape(BASE) + r".*/entityInformation/fields"), json={"fields": []})
    m.get(re.compile(re.escape(INFIMA) + r"/v1/clients.*"), json={"items": []})
    m.post(ADJUSTMENTS, status_code=500, json={"errors": ["no write expected"]})


def api_env(state: Path) -> dict[str, str]:
    return {
        "INFIMA_AUTOTASK_API_URL": API_URL,
        "INFIMA_API_URL": INFIMA,
        "INFIMA_AUTOTASK_USERNAME": USERNAME,
        "INFIMA_AUTOTASK_INTEGRATION_CODE": CODE,
        "INFIMA_AUTOTASK_SECRET": SECRET,
        "INFIMA_API_KEY": API_KEY,
        "INFIMA_AUTOTASK_STATE_DIR": str(state),
    }


CONFIG_INPUTS = 0  # counted for the README figures (printed with -s)


@given(raw=config_bytes())
def test_generated_configs_validate_with_error_lines_only(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_bytes(raw)
        out = run_cli(path, "validate", env={})
        check_error_format(out)
        assert out.code in (0, 2), out
        if out.code == 0:
            assert re.fullmatch(r"config OK: \d+ mappings?\n", out.stdout), out.stdout
            parsed = yaml.safe_load(raw.decode("utf-8-sig"))
            assert isinstance(parsed, dict) and parsed.get("version") == 1
        else:
            assert out.stdout == ""
            assert str(path) in out.stderr.split("\n")[0]
        assert path.read_bytes() == raw  # validate never rewrites the file


@given(raw=config_bytes())
def test_generated_configs_dry_run_never_writes(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp, rm.Mocker() as m:
        generic_api(m)
        path = Path(tmp) / "config.yaml"
        path.write_bytes(raw)
        out = run_cli(path, "sync", "--dry-run", "--month", MONTH, env=api_env(Path(tmp) / "st"))
        check_error_format(out)
        # 0: ran; 1: an item failed (the quiet API knows none of the mapped records); 2: config.
        assert out.code in (0, 1, 2), out
        assert adjustment_posts(m) == []
        assert path.read_bytes() == raw


# --- (b) malformed API answers ---------------------------------------------------------


def _units_row(cs: int) -> dict[str, Any]:
    return {
        "id": 900 + cs % 100,
        "contractID": CONTRACT,
        "contractServiceID": cs,
        "serviceID": SERVICE,
        "startDate": "2026-12-01T00:00:00",
        "endDate": "2026-12-31T00:00:00",
        "units": UNITS[cs],
        "price": UNITS[cs] * 4.5,  # extended, as live tenants show
        "cost": UNITS[cs] * 2.25,
        "approveAndPostDate": None,
    }


def world_records() -> dict[str, list[dict[str, Any]]]:
    return {
        "Companies": [
            {"id": ACCOUNT, "companyName": "Acme Dental LLC", "companyType": 1, "isActive": True}
        ],
        "Contracts": [
            {
                "id": CONTRACT,
                "companyID": ACCOUNT,
                "contractName": "Managed Services",
                "contractType": 7,
                "status": 1,
                "startDate": "2020-01-01T00:00:00",
                "endDate": "2099-12-31T00:00:00",
                "contractPeriodType": 1,
            }
        ],
        "ContractServices": [
            {
                "id": cs,
                "contractID": CONTRACT,
                "serviceID": SERVICE,
                "unitPrice": 4.5,
                "unitCost": 2.25,
            }
            for cs in CLIENTS.values()
        ],
        "Services": [{"id": SERVICE, "name": "INFIMA SAT"}],
        "ContractServiceUnits": [_units_row(cs) for cs in CLIENTS.values()],
    }


PICKLISTS = {
    "Contracts": [
        {"name": "status", "picklistValues": [{"value": "1", "label": "Active"}]},
        {"name": "contractPeriodType", "picklistValues": [{"value": "1", "label": "Monthly"}]},
    ],
    "Companies": [
        {"name": "companyType", "picklistValues": [{"value": "1", "label": "Customer"}]},
    ],
}

# Fields a write depends on (a bad value there must never reach Autotask as a write); the
# others (names, companyID for sync) only change what is shown.
WRITE_FIELDS = {
    "Contracts": {"id", "contractType", "status", "startDate", "endDate", "contractPeriodType"},
    "ContractServices": {"id", "contractID", "serviceID", "unitPrice", "unitCost"},
    "ContractServiceUnits": {
        "id",
        "contractID",
        "contractServiceID",
        "startDate",
        "endDate",
        "units",
        "price",
        "cost",
    },
    "infima-clients": {"id"},
    "infima-users": {"status"},
}
INT_FIELDS = {
    "id",
    "companyID",
    "contractID",
    "contractServiceID",
    "serviceID",
    "units",
    "contractType",
    "status",
    "companyType",
    "contractPeriodType",
}
MONEY_FIELDS = {"price", "cost", "unitPrice", "unitCost"}
DATE_FIELDS = {"startDate", "endDate", "approveAndPostDate"}


class Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING = Missing()

NON_INTEGRAL_FLOATS = st.floats(allow_nan=True, allow_infinity=True).filter(
    lambda f: not (math.isfinite(f) and f.is_integer())
)
BAD_INT = st.one_of(
    st.just(MISSING),
    st.none(),
    st.text(max_size=12),
    st.sampled_from(["12", "0x10", "1e3", "１２"]),
    st.booleans(),
    NON_INTEGRAL_FLOATS,
    st.integers(min_value=2**63, max_value=10**40),
    st.integers(min_value=-(10**40), max_value=-1),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
BAD_MONEY = st.one_of(
    st.just(MISSING),
    st.none(),
    st.text(max_size=12),
    st.sampled_from(["4.50", "NaN"]),
    st.booleans(),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.lists(st.integers(), max_size=2),
)
BAD_DATE = st.one_of(
    st.just(MISSING),
    st.none(),
    st.text(max_size=20),
    st.sampled_from(
        ["2026-13-01T00:00:00", "0000-00-00", "12/01/2026", "2026-12-01T25:00:00", "9999999-01-01"]
    ),
    st.integers(),
    st.lists(st.integers(), max_size=2),
)
ANY_BAD = st.one_of(BAD_INT, BAD_MONEY, BAD_DATE, st.text(max_size=40))


def bad_value_for(field: str) -> st.SearchStrategy[Any]:
    if field in INT_FIELDS:
        return BAD_INT
    if field in MONEY_FIELDS:
        return BAD_MONEY
    if field in DATE_FIELDS:
        return BAD_DATE
    return ANY_BAD


def _html(status: int) -> Callable[[Any], Any]:
    return lambda body: Raw(status, "<html><body><h1>Server Error</h1></body></html>", "text/html")


@dataclass(frozen=True)
class Raw:
    """An answer that is not a JSON document the fake built."""

    status: int
    text: str
    content_type: str = "application/json"


WHOLE_BODY: dict[str, Callable[[Any], Any]] = {
    "html-200": _html(200),
    "html-500": _html(500),
    "html-502": _html(502),
    "html-404": _html(404),
    "truncated": lambda body: Raw(200, json.dumps(body)[: max(1, len(json.dumps(body)) // 2)]),
    "empty-body": lambda body: Raw(200, ""),
    "null": lambda body: None,
    "list": lambda body: [body],
    "string": lambda body: "ok",
    "number": lambda body: 10**400,
    "item-null": lambda body: {"item": None},
    "items-null": lambda body: {"items": None},
    "items-object": lambda body: {"items": {"0": body}},
    "items-empty": lambda body: {"items": [], "pageDetails": {"count": 0}},
    "items-scalars": lambda body: {"items": [1, "x", None, True]},
    "items-with-junk": lambda body: _with_junk(body),
    "foreign-next-page": lambda body: _foreign_next(body),
    "nan-json": lambda body: Raw(200, '{"items": [NaN], "item": Infinity}'),
    "errors-200": lambda body: {"errors": ["Something went wrong"]},
}


def _with_junk(body: Any) -> Any:
    if isinstance(body, dict) and isinstance(body.get("items"), list):
        return {**body, "items": [None, *body["items"], "junk", 7]}
    return {"items": [None, "junk", 7]}


def _foreign_next(body: Any) -> Any:
    if isinstance(body, dict) and "items" in body:
        return {
            **body,
            "pageDetails": {"nextPageUrl": "https://evil.example.com/v1.0/Contracts/query?p=2"},
        }
    return {"items": [], "pageDetails": {"nextPageUrl": "https://[broken"}}


@dataclass(frozen=True)
class Mutation:
    """Bad data on one endpoint: a whole-body replacement, or one field of one record."""

    endpoint: str
    whole: str | None = None
    index: int = 0
    field: str = ""
    value: Any = None

    def apply(self, endpoint: str, body: Any, *, client_id: int | None = None) -> Any:
        if endpoint != self.endpoint:
            return body
        if self.whole is not None:
            return WHOLE_BODY[self.whole](copy.deepcopy(body))
        body = copy.deepcopy(body)
        records = body.get("items") if isinstance(body, dict) and "items" in body else None
        if records is None and isinstance(body, dict) and isinstance(body.get("item"), dict):
            records = [body["item"]]
        if not records and isinstance(body, dict) and "items" not in body and "item" not in body:
            records = [body]  # a flat answer: ThresholdInformation, partner, zone
        if not records:
            return body
        record = records[self.index % len(records)]
        if isinstance(self.value, Missing):
            record.pop(self.field, None)
        else:
            record[self.field] = self.value
        return body

    def tainted(self) -> set[int]:
        """Contract services whose write would rest on the bad data (sync's view)."""
        if self.whole == "foreign-next-page" and self.endpoint.startswith("infima-"):
            return set()  # INFIMA pages by offset; a pageDetails link is never followed
        if self.endpoint in ("picklist-Contracts", "picklist-Companies", "Companies"):
            return set()  # the picklist falls back to status 1; sync reads no company
        if self.endpoint == "infima-users":
            client = sorted(CLIENTS)[self.index % len(CLIENTS)]
            if self.whole is None and self.field != "status":
                return set()  # the count reads only the status
            if self.whole is None and (self.value is None or isinstance(self.value, Missing)):
                return set()  # INFIMA_API.md: a user without a status is not active
            return {CLIENTS[client]}
        if self.whole is None and self.field not in WRITE_FIELDS.get(self.endpoint, set()):
            return set()
        if self.endpoint == "ContractServiceUnits" and self.whole is None:
            return {sorted(CLIENTS.values())[self.index % len(CLIENTS)]}
        if self.endpoint == "ContractServices" and self.whole is None:
            return {sorted(CLIENTS.values())[self.index % len(CLIENTS)]}
        if self.endpoint == "infima-clients" and self.whole is None:
            return {sorted(CLIENTS.values())[self.index % len(CLIENTS)]}
        return set(CLIENTS.values())


RECORD_FIELDS = {
    "Companies": ["id", "companyName", "companyType", "isActive"],
    "Contracts": ["id", "companyID", "contractName", "contractType", "status", "startDate"]
    + ["endDate"],
    "ContractServices": ["id", "contractID", "serviceID"],
    "Services": ["id", "name"],
    "ContractServiceUnits": list(_units_row(7101)),
    "get-Companies": ["id", "companyName", "companyType", "isActive"],
    "get-Contracts": ["id", "companyID", "contractName", "contractType", "status", "endDate"],
    "get-ContractServices": ["id", "contractID", "serviceID"],
    "get-Services": ["id", "name"],
    "threshold": ["externalRequestThreshold", "currentTimeframeRequestCount"],
    "zone": ["url", "zoneName"],
    "infima-partner": ["partner_name"],
    "infima-clients": ["id", "client_name"],
    "infima-users": ["status", "id"],
    "picklist-Contracts": ["fields"],
    "picklist-Companies": ["fields"],
}


@st.composite
def mutations(draw: st.DrawFn, endpoints: tuple[str, ...]) -> Mutation:
    endpoint = draw(st.sampled_from(endpoints))
    if draw(st.booleans()):
        return Mutation(endpoint, whole=draw(st.sampled_from(sorted(WHOLE_BODY))))
    field = draw(st.sampled_from(RECORD_FIELDS[endpoint]))
    if endpoint == "zone" and field == "url":
        value = draw(
            st.one_of(
                bad_value_for(field),
                st.sampled_from(
                    [
                        "http://webservices5.autotask.net/ATServicesRest/",
                        "https://evil.example.com/ATServicesRest/",
                        "https://autotask.net.evil.example/",
                        "https://[broken/",
                        "javascript:alert(1)",
                    ]
                ),
            )
        )
    elif endpoint == "infima-users" and field == "status":
        value = draw(
            st.one_of(
                st.just(MISSING),
                st.none(),
                st.integers(),
                st.booleans(),
                st.lists(st.text(max_size=3), max_size=2),
                st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
            )
        )
    else:
        value = draw(bad_value_for(field))
    return Mutation(endpoint, index=draw(st.integers(0, 3)), field=field, value=value)


class World:
    """A consistent Autotask + INFIMA behind requests-mock; one endpoint answers badly."""

    def __init__(self, mutation: Mutation) -> None:
        self.mutation = mutation
        self.records = world_records()

    def _answer(self, endpoint: str, body: Any, context: Any, **kw: Any) -> Any:
        answer = self.mutation.apply(endpoint, body, **kw)
        if isinstance(answer, Raw):
            context.status_code = answer.status
            context.headers["Content-Type"] = answer.content_type
            return answer.text
        context.headers["Content-Type"] = "application/json"
        return json.dumps(answer)

    def install(self, m: rm.Mocker) -> None:
        # Anything else (a foreign next page, say) answers 599; matchers added later win.
        m.register_uri(rm.ANY, ANY, status_code=599, text="unexpected request")
        for entity in self.records:
            m.post(f"{BASE}{entity}/query", text=self._query(entity))
            m.get(re.compile(rf"{re.escape(BASE)}{entity}/(\d+)$"), text=self._get(entity))
            m.get(
                f"{BASE}{entity}/entityInformation/fields",
                text=lambda req, ctx, e=entity: self._answer(
                    f"picklist-{e}", {"fields": PICKLISTS.get(e, [])}, ctx
                ),
            )
        m.get(
            BASE + "ThresholdInformation",
            text=lambda req, ctx: self._answer(
                "threshold",
                {
                    "externalRequestThreshold": 10000,
                    "requestThresholdTimeframe": 60,
                    "currentTimeframeRequestCount": 12,
                },
                ctx,
            ),
        )
        m.get(
            DEFAULT_ZONE_URL,
            text=lambda req, ctx: self._answer("zone", {"zoneName": "AE05", "url": API_URL}, ctx),
        )
        m.post(ADJUSTMENTS, json=self._adjust)
        m.get(
            INFIMA + "/v1/partner",
            text=lambda req, ctx: self._answer("infima-partner", {"partner_name": "MSP"}, ctx),
        )
        m.get(INFIMA + "/v1/clients", text=self._clients)
        m.get(re.compile(re.escape(INFIMA) + r"/v1/clients/(\d+)/users"), text=self._users)

    def _query(self, entity: str) -> Callable[[Any, Any], Any]:
        def answer(request: Any, context: Any) -> Any:
            items = copy.deepcopy(self.records[entity])
            body = {"items": items, "pageDetails": {"count": len(items), "nextPageUrl": None}}
            return self._answer(entity, body, context)

        return answer

    def _get(self, entity: str) -> Callable[[Any, Any], Any]:
        def answer(request: Any, context: Any) -> Any:
            wanted = int(request.path.rstrip("/").rsplit("/", 1)[-1])
            found = next((r for r in self.records[entity] if r["id"] == wanted), None)
            return self._answer(f"get-{entity}", {"item": copy.deepcopy(found)}, context)

        return answer

    def _clients(self, request: Any, context: Any) -> Any:
        offset = int(request.qs.get("offset", ["0"])[0])
        items = [{"id": c, "client_name": f"Client {c}"} for c in CLIENTS] if offset == 0 else []
        return self._answer("infima-clients", {"items": items}, context)

    def _users(self, request: Any, context: Any) -> Any:
        client = int(request.path.split("/")[3])
        offset = int(request.qs.get("offset", ["0"])[0])
        count = USERS.get(client, 0) if offset == 0 else 0
        body = {"items": [{"id": n, "status": "active"} for n in range(count)]}
        # Only the chosen client's users are damaged (index picks the client).
        chosen = sorted(CLIENTS)[self.mutation.index % len(CLIENTS)]
        if self.mutation.endpoint == "infima-users" and client != chosen:
            context.headers["Content-Type"] = "application/json"
            return json.dumps(body)
        return self._answer("infima-users", body, context)

    def _adjust(self, request: Any, context: Any) -> Any:
        body = request.json()
        row = next(
            r
            for r in self.records["ContractServiceUnits"]
            if r["contractServiceID"] == body["contractServiceID"]
        )
        row["units"] += body["unitChange"]
        row["price"] = row["units"] * body["adjustedUnitPrice"]
        row["cost"] = row["units"] * body["adjustedUnitCost"]
        return {"itemId": 424242}


def world_config(path: Path) -> str:
    doc = valid_doc(0)
    doc["mappings"] = [valid_mapping(client) for client in CLIENTS]
    text = yaml.safe_dump(doc, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return text


SYNC_READS = (
    "threshold",
    "Contracts",
    "ContractServices",
    "ContractServiceUnits",
    "picklist-Contracts",
    "infima-clients",
    "infima-users",
)
# command -> (arguments, endpoints it reads, exit codes allowed by SPEC §3)
COMMANDS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...]]] = {
    "sync": (("sync", "--month", MONTH, "--json"), SYNC_READS, (0, 1, 3)),
    "sync --dry-run": (("sync", "--dry-run", "--month", MONTH, "--json"), SYNC_READS, (0, 1, 3)),
    "list-clients": (("list-clients",), ("infima-clients", "infima-users"), (0, 3)),
    "search-accounts": (
        ("search-accounts", "acme", "--contracts"),
        (
            "Companies",
            "picklist-Companies",
            "picklist-Contracts",
            "Contracts",
            "ContractServices",
            "Services",
            "ContractServiceUnits",
        ),
        (0, 3),
    ),
    "map (IDs given)": (
        (
            "map",
            "101",
            "--account",
            str(ACCOUNT),
            "--contract",
            str(CONTRACT),
            "--contract-service",
            "7101",
        ),
        (
            "infima-clients",
            "get-Companies",
            "picklist-Contracts",
            "get-Contracts",
            "get-ContractServices",
            "get-Services",
        ),
        (0, 2, 3),
    ),
    "map (chosen)": (
        ("map", "101", "--account", str(ACCOUNT), "--contract-service", "7101"),
        (
            "infima-clients",
            "get-Companies",
            "picklist-Contracts",
            "Contracts",
            "get-ContractServices",
            "get-Services",
        ),
        (0, 2, 3),
    ),
    "list-mappings --check": (
        ("list-mappings", "--check"),
        ("picklist-Contracts", "Companies", "Contracts", "ContractServices", "Services"),
        (0, 1, 2, 3),
    ),
    "connect": (
        ("connect", "--username", USERNAME, "--integration-code", CODE, "--secret-stdin"),
        ("zone", "threshold"),
        (0, 3),
    ),
    "connect --infima": (("connect", "--infima", "--api-key-stdin"), ("infima-partner",), (0, 3)),
    "status": (("status",), ("threshold", "infima-partner"), (0, 3)),
}


def _stdin(command: str) -> str | None:
    if command == "connect":
        return SECRET + "\n"
    if command == "connect --infima":
        return API_KEY + "\n"
    return None


def check_answer_property(command: str, mutation: Mutation) -> None:
    args, _, allowed = COMMANDS[command]
    with tempfile.TemporaryDirectory() as tmp, rm.Mocker() as m:
        World(mutation).install(m)
        config = Path(tmp) / "config.yaml"
        before = world_config(config)
        env = api_env(Path(tmp) / "state")
        if command.startswith("connect"):
            # connect tests what it is given: no environment credentials, the real zone lookup.
            env = {"INFIMA_AUTOTASK_STATE_DIR": env["INFIMA_AUTOTASK_STATE_DIR"]}
            if command == "connect":
                env["INFIMA_API_URL"] = INFIMA
        out = run_cli(config, *args, env=env, stdin=_stdin(command))
        if command == "status" and out.code == 3:
            # status reports each connection's reason on stdout rather than one Error: line.
            assert "not connected: " in out.stdout and "Traceback" not in out.stderr, out
        else:
            check_error_format(out)
        assert out.code in allowed, (out, mutation)
        assert not [r for r in m.request_history if r.url.startswith("https://evil")]
        unexpected = [r.url for r in m.request_history if "evil" in r.url or "[" in r.url]
        assert not unexpected, unexpected
        posts = adjustment_posts(m)
        if command != "sync":
            assert posts == []
        else:
            if out.code == 3:
                assert posts == [], (posts, mutation)
            written = {post["contractServiceID"] for post in posts}
            assert not written & mutation.tainted(), (posts, mutation, out)
            if out.code != 3:
                items = {i["contract_service_id"]: i for i in json.loads(out.stdout)["items"]}
                for cs in mutation.tainted():
                    assert items[cs]["status"] in ("failed", "held", "unchanged"), items[cs]
        # A failed command leaves the config as it was; any saved config still validates.
        now = config.read_text(encoding="utf-8")
        if out.code not in (0, 1):
            assert now == before
        assert run_cli(config, "validate", env={}).code == 0


@pytest.mark.parametrize("command", sorted(COMMANDS))
@given(data=st.data())
def test_malformed_answers_fail_cleanly(command: str, data: st.DataObject) -> None:
    mutation = data.draw(mutations(COMMANDS[command][1]), label="mutation")
    check_answer_property(command, mutation)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_the_unharmed_world_works(command: str) -> None:
    """The baseline every mutation departs from: each command succeeds; sync writes once."""
    with tempfile.TemporaryDirectory() as tmp, rm.Mocker() as m:
        World(Mutation("none")).install(m)
        config = Path(tmp) / "config.yaml"
        world_config(config)
        env = api_env(Path(tmp) / "state")
        if command.startswith("connect"):
            env = {"INFIMA_AUTOTASK_STATE_DIR": env["INFIMA_AUTOTASK_STATE_DIR"]}
        out = run_cli(config, *COMMANDS[command][0], env=env, stdin=_stdin(command))
        assert out.code == 0, out
        posts = adjustment_posts(m)
        assert len(posts) == (1 if command == "sync" else 0)
        if posts:
            assert posts[0]["contractServiceID"] == 7101 and posts[0]["unitChange"] == 2


def test_one_profile_chosen_by_environment_governs_every_property() -> None:
    """conftest registers the profiles once and loads the one HYPOTHESIS_PROFILE names; no
    test module sets its own number of examples, so the deep run deepens every property."""
    assert settings.get_profile("ci").max_examples == 200
    assert settings.get_profile("local").max_examples == 1000
    chosen = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
    assert settings.default.max_examples == chosen.max_examples
    for module in sorted(Path(__file__).parent.glob("test_*.py")):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                assert "max_examples" not in {k.arg for k in node.keywords}, module.name
