"""A loopback simulator of the parts of the Autotask REST API the tool uses.

Behaviour follows ``AUTOTASK_API.md``: zone lookup, the three auth headers (401 with an
empty body), ``ThresholdInformation``, ``query`` with filters and 500-item pages whose
``nextPageUrl`` must be POSTed with the same body, ``{"item": null}``, picklists, and
``ContractServiceAdjustments`` creates that split units rows. Units rows carry extended
amounts; adjustments carry per-unit rates and are dated by the tenant's rule
(``SandboxState.date_rule``). Anything outside that answers an error naming it, so a new use
by the tool is noticed and added here on purpose.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import threading
from collections.abc import Callable
from datetime import date
from typing import Any
from urllib.parse import parse_qs

from ._http import BaseHandler, Reply, fault_reply, json_reply
from .data import (
    COMPANY_TYPES,
    CONTRACT_PERIOD_TYPES,
    CONTRACT_STATUSES,
    CONTRACT_TYPES,
    RECURRING_SERVICE,
    SandboxState,
    extended_amount,
    parse_datetime,
    parse_day,
    unit_rate,
    wire_date,
)

log = logging.getLogger(__name__)

PREFIX = "/atservicesrest/v1.0/"
THREAD_LIMIT = 3
MAX_PAGE = 500
MAX_IN_VALUES = 500

# Field types per queryable entity (wire names).
FIELDS: dict[str, dict[str, str]] = {
    "Companies": {
        "id": "long",
        "companyName": "string",
        "companyType": "integer",
        "isActive": "boolean",
    },
    "Contracts": {
        "id": "long",
        "companyID": "integer",
        "contractName": "string",
        "contractType": "integer",
        "contractPeriodType": "integer",
        "status": "integer",
        "startDate": "datetime",
        "endDate": "datetime",
        "renewedContractID": "long",
    },
    "ContractServices": {
        "id": "long",
        "contractID": "integer",
        "serviceID": "integer",
        "unitPrice": "double",
        "unitCost": "double",
        "invoiceDescription": "string",
    },
    "Services": {
        "id": "long",
        "name": "string",
        "unitPrice": "double",
        "unitCost": "double",
        "isActive": "boolean",
        "periodType": "integer",
    },
    "ContractServiceUnits": {
        "id": "long",
        "contractID": "integer",
        "contractServiceID": "integer",
        "serviceID": "integer",
        "startDate": "datetime",
        "endDate": "datetime",
        "units": "integer",
        "price": "double",
        "cost": "double",
        "approveAndPostDate": "datetime",
    },
    "InternalLocations": {
        "id": "long",
        "name": "string",
        "isDefault": "boolean",
        "timeZone": "string",
    },
}
ENTITIES = {name.lower(): name for name in FIELDS}
PICKLISTS: dict[tuple[str, str], dict[int, str]] = {
    ("Companies", "companyType"): COMPANY_TYPES,
    ("Contracts", "status"): CONTRACT_STATUSES,
    ("Contracts", "contractType"): CONTRACT_TYPES,
    ("Contracts", "contractPeriodType"): CONTRACT_PERIOD_TYPES,
}
ADJUSTMENT_KEYS = (
    "id",
    "contractID",
    "contractServiceID",
    "serviceID",
    "effectiveDate",
    "unitChange",
    "adjustedUnitPrice",
    "adjustedUnitCost",
    "allowRepeatService",
    "quoteItemID",
    "userDefinedFields",
)
COMPARISONS = ("eq", "noteq", "gt", "gte", "lt", "lte")
OPERATORS = (*COMPARISONS, "contains", "beginswith", "in")


class AutotaskError(Exception):
    """A request Autotask answers with HTTP 500 and ``{"errors": [message]}``."""


# --- queries -----------------------------------------------------------------------------

Predicate = Callable[[dict[str, Any]], bool]


def _lower_keys(obj: dict[str, Any], what: str) -> dict[str, Any]:
    lowered: dict[str, Any] = {}
    for key, value in obj.items():
        if key.lower() in lowered:
            raise AutotaskError(f"Duplicate key '{key}' in {what}.")
        lowered[key.lower()] = value
    return lowered


def _field(entity: str, name: Any) -> str:
    if isinstance(name, str):
        for field in FIELDS[entity]:
            if field.lower() == name.lower():
                return field
    raise AutotaskError(f"Unable to find field '{name}' in the {entity} entity.")


def _convert(entity: str, field: str, value: Any) -> Any:
    """A filter value as the type of ``field``; AutotaskError when it cannot be."""
    kind = FIELDS[entity][field]
    bad = AutotaskError(f"Invalid value {value!r} for field '{field}' ({kind}).")
    if kind in ("integer", "long"):
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise bad
    if kind == "double":
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int | float):
            return float(value)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad from None
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise bad
    if kind == "datetime":
        if not isinstance(value, str):
            raise bad
        try:
            return parse_datetime(value)
        except ValueError:
            raise bad from None
    if isinstance(value, str):
        return value.casefold()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value).casefold()
    raise bad


def _item_value(entity: str, field: str, record: dict[str, Any]) -> Any:
    value = record.get(field)
    if value is None:
        return None
    kind = FIELDS[entity][field]
    if kind == "datetime":
        return parse_datetime(value)
    if kind == "string":
        return str(value).casefold()
    if kind == "double":
        return float(value)
    return value


def compile_filter(entity: str, item: Any) -> Predicate:
    """Turn one Autotask filter object (or and/or group) into a predicate on records.

    Raises AutotaskError for anything the sandbox does not support, naming it.
    """
    if not isinstance(item, dict):
        raise AutotaskError("Each filter must be an object with op, field and value.")
    spec = _lower_keys(item, "filter")
    op = spec.get("op")
    if not isinstance(op, str):
        raise AutotaskError("Filter is missing 'op'.")
    op = op.lower()
    if spec.get("udf"):
        raise AutotaskError("UDF filters are not supported by the sandbox.")
    if op in ("and", "or"):
        items = spec.get("items")
        if not isinstance(items, list) or not items:
            raise AutotaskError(f"The '{op}' group needs a non-empty 'items' list.")
        parts = [compile_filter(entity, sub) for sub in items]
        if op == "and":
            return lambda record: all(part(record) for part in parts)
        return lambda record: any(part(record) for part in parts)
    if op not in OPERATORS:
        raise AutotaskError(f"Unsupported filter operator '{spec['op']}'.")
    field = _field(entity, spec.get("field"))
    if "value" not in spec:
        raise AutotaskError(f"Filter on '{field}' is missing 'value'.")
    raw = spec["value"]

    def get(record: dict[str, Any]) -> Any:
        return _item_value(entity, field, record)

    if op == "in":
        if not isinstance(raw, list) or not raw:
            raise AutotaskError(f"The 'in' filter on '{field}' needs a non-empty list.")
        if len(raw) > MAX_IN_VALUES:
            raise AutotaskError(
                f"Invalid query syntax. Queries are limited to {MAX_IN_VALUES} or fewer 'in' "
                f"values ({len(raw)} given for '{field}')."
            )
        wanted = {_convert(entity, field, value) for value in raw}
        return lambda record: get(record) in wanted
    if op in ("contains", "beginswith"):
        if FIELDS[entity][field] != "string":
            raise AutotaskError(f"Operator '{spec['op']}' needs a string field, not '{field}'.")
        text = _convert(entity, field, raw)
        if op == "contains":
            return lambda record: (value := get(record)) is not None and text in value
        return lambda record: (value := get(record)) is not None and value.startswith(text)
    if raw is None:
        if op == "eq":
            return lambda record: record.get(field) is None
        if op == "noteq":
            return lambda record: record.get(field) is not None
        raise AutotaskError(f"Operator '{spec['op']}' on '{field}' needs a value.")
    wanted_value = _convert(entity, field, raw)
    compare: Callable[[Any, Any], bool] = {
        "eq": lambda a, b: a == b,
        "noteq": lambda a, b: a != b,
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
    }[op]
    if op == "noteq":
        return lambda record: (value := get(record)) is None or compare(value, wanted_value)
    return lambda record: (value := get(record)) is not None and compare(value, wanted_value)


def parse_query(entity: str, body: Any) -> tuple[int, list[str] | None, Predicate]:
    """Validate a query body; returns (page size, included fields or None, predicate)."""
    if not isinstance(body, dict):
        raise AutotaskError("The query body must be a JSON object.")
    spec = _lower_keys(body, "query")
    unknown = set(spec) - {"maxrecords", "includefields", "filter"}
    if unknown:
        raise AutotaskError(f"Unknown query key(s): {', '.join(sorted(unknown))}.")
    page = spec.get("maxrecords", MAX_PAGE)
    if page is None:
        page = MAX_PAGE
    if isinstance(page, bool) or not isinstance(page, int) or not 1 <= page <= MAX_PAGE:
        raise AutotaskError(f"MaxRecords must be between 1 and {MAX_PAGE}, not {page!r}.")
    include = spec.get("includefields")
    fields: list[str] | None = None
    if include:
        if not isinstance(include, list):
            raise AutotaskError("IncludeFields must be a list of field names.")
        fields = [_field(entity, name) for name in include]
    filters = spec.get("filter")
    if not isinstance(filters, list) or not filters:
        raise AutotaskError("A query needs at least one filter.")
    parts = [compile_filter(entity, item) for item in filters]
    return page, fields, lambda record: all(part(record) for part in parts)


def body_fingerprint(body: Any) -> str:
    """A short hash identifying a query body, carried in the paging token."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode_token(after: int, fingerprint: str) -> str:
    raw = json.dumps({"after": after, "body": fingerprint}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        return int(data["after"]), str(data["body"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise AutotaskError("Invalid paging token.") from None


def run_query(
    state: SandboxState, entity: str, body: Any, after: int | None = None
) -> tuple[list[dict[str, Any]], int, int | None]:
    """One page of a query: (items, page size, last id when more items follow).

    ``after`` is the last id of the previous page (None on the first: company 0 is real).
    """
    page, fields, predicate = parse_query(entity, body)
    with state.lock:
        matched = sorted(
            (
                r
                for r in state.table(entity).values()
                if (after is None or r["id"] > after) and predicate(r)
            ),
            key=lambda r: r["id"],
        )
        chosen = matched[:page]
        if fields is None:
            items = [dict(r) for r in chosen]
        else:
            items = [{"id": r["id"], **{f: r.get(f) for f in fields}} for r in chosen]
    more = chosen[-1]["id"] if len(matched) > page else None
    return items, page, more


def field_information(entity: str) -> list[dict[str, Any]]:
    """The ``entityInformation/fields`` list of an entity, with picklists."""
    result = []
    for name, kind in FIELDS[entity].items():
        picklist = PICKLISTS.get((entity, name))
        values = None
        if picklist is not None:
            values = [
                {
                    "value": str(value),
                    "label": label,
                    "isDefaultValue": False,
                    "sortOrder": order,
                    "parentValue": "",
                    "isActive": True,
                    "isSystem": True,
                }
                for order, (value, label) in enumerate(picklist.items(), start=1)
            ]
        result.append(
            {
                "name": name,
                "dataType": kind,
                "length": 100 if kind == "string" else 0,
                "isRequired": name == "id",
                "isReadOnly": name == "id",
                "isQueryable": True,
                "isReference": name.endswith("ID"),
                "referenceEntityType": "",
                "isPickList": picklist is not None,
                "picklistValues": values,
                "picklistParentValueField": "",
                "isSupportedWebhookField": False,
            }
        )
    return result


# --- adjustments -------------------------------------------------------------------------


def _required_int(body: dict[str, Any], key: str) -> int:
    value = _int_field(body, key)
    if value is None:
        raise AutotaskError(f"Missing required field '{key}'.")
    return value


def _int_field(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise AutotaskError(f"Field '{key}' must be an integer, not {value!r}.")
    return value


def _money_field(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AutotaskError(f"Field '{key}' must be a number, not {value!r}.")
    return float(value)


def apply_adjustment(state: SandboxState, body: Any) -> int:
    """Validate and apply a ContractServiceAdjustments create; returns the new id.

    The effectiveDate is stored as a date by ``state.date_rule``. The units row R covering
    that date D is split at D (changed in place when it starts on D), and every later row of
    the contract service gets the same change. Rows hold extended amounts: each changed row's
    price and cost become its new units x the per-unit ``adjustedUnitPrice``/``Cost`` (when
    omitted, the row's own per-unit rate).
    """
    if not isinstance(body, dict):
        raise AutotaskError("The request body must be a ContractServiceAdjustment object.")
    canonical = {key.lower(): key for key in ADJUSTMENT_KEYS}
    fields: dict[str, Any] = {}
    for key, value in body.items():
        name = canonical.get(key.lower())
        if name is None:
            raise AutotaskError(f"Unknown field '{key}' for ContractServiceAdjustments.")
        if name in fields:
            raise AutotaskError(f"Duplicate field '{key}'.")
        fields[name] = value
    contract_id = _required_int(fields, "contractID")
    service_id = _int_field(fields, "serviceID")
    cs_id = _int_field(fields, "contractServiceID")
    change = _required_int(fields, "unitChange")
    price = _money_field(fields, "adjustedUnitPrice")
    cost = _money_field(fields, "adjustedUnitCost")
    _int_field(fields, "quoteItemID")
    _int_field(fields, "id")
    repeat = fields.get("allowRepeatService")
    if repeat is not None and not isinstance(repeat, bool):
        raise AutotaskError("Field 'allowRepeatService' must be true or false.")
    effective = fields.get("effectiveDate")
    if not isinstance(effective, str):
        raise AutotaskError("Missing required field 'effectiveDate'.")
    try:
        day = state.stored_date(effective)
    except ValueError:
        raise AutotaskError(f"Invalid value {effective!r} for field 'effectiveDate'.") from None
    if service_id is None and cs_id is None:
        raise AutotaskError("Either 'contractServiceID' or 'serviceID' is required.")

    with state.lock:
        contract = state.contracts.get(contract_id)
        if contract is None:
            raise AutotaskError(
                f"Value does not reference an existing entity for contractID {contract_id}."
            )
        if contract["contractType"] != RECURRING_SERVICE:
            raise AutotaskError(
                "ContractServiceAdjustments can only be created on a Recurring Service "
                f"contract (contract {contract_id} has contractType {contract['contractType']})."
            )
        service = _contract_service(state, contract_id, cs_id, service_id)
        if state.refuse_duplicate_dates and any(
            a["contractServiceID"] == service["id"] and a["storedDate"] == day.isoformat()
            for a in state.adjustments
        ):
            # The wording a live integration reported for a second adjustment on one day.
            raise AutotaskError("Attempt to insert duplicate data into contract_service_period.")
        rows = state.units_rows(service["id"])
        row = state.row_covering(service["id"], day)
        if row is None:
            raise AutotaskError(
                f"No contract service units period covers the effective date {day.isoformat()}."
            )
        later = [r for r in rows if parse_day(r["startDate"]) > day]
        for target in (row, *later):
            if target.get("approveAndPostDate"):
                raise AutotaskError(
                    "Unable to make changes as it would result in the deletion/modification "
                    "of an already approved and posted contract period."
                )
            if target["units"] + change < 0:
                raise AutotaskError(
                    f"The adjustment would leave {target['units'] + change} units "
                    f"from {target['startDate']}; units cannot be negative."
                )
        # Every amount is worked out before any row changes: rates come from the old rows.
        changed = {
            id(target): _repriced(target, change, price, cost, service) for target in (row, *later)
        }
        if parse_day(row["startDate"]) == day:
            row.update(changed[id(row)])
        else:
            old_end = parse_day(row["endDate"])
            # Autotask's ContractServiceUnits page: the earlier row's end date becomes "the
            # effective date of that adjustment", so two rows cover that day (SPEC §8's rule
            # picks the later one).
            row["endDate"] = wire_date(day)
            split = state.add_units_row(
                contract_service_id=service["id"],
                start=day,
                end=old_end,
                units=0,
                unit_price=None,
                unit_cost=None,
            )
            split.update(changed[id(row)])
        for target in later:
            target.update(changed[id(target)])
        adjustment_id = state.next_adjustment_id
        state.next_adjustment_id += 1
        state.adjustments.append(
            {
                "id": adjustment_id,
                "contractID": contract_id,
                "contractServiceID": service["id"],
                "serviceID": service["serviceID"],
                "effectiveDate": effective,
                "storedDate": day.isoformat(),
                "unitChange": change,
                "adjustedUnitPrice": price,
                "adjustedUnitCost": cost,
                "body": body,
            }
        )
    log.debug("sandbox adjustment %s: %+d on %s from %s", adjustment_id, change, service["id"], day)
    return adjustment_id


def _repriced(
    row: dict[str, Any],
    change: int,
    price: float | None,
    cost: float | None,
    contract_service: dict[str, Any],
) -> dict[str, Any]:
    """A row's units, price and cost after an adjustment with per-unit ``price``/``cost``."""
    units = row["units"] + change
    unit_price = unit_rate(row, "price", contract_service) if price is None else price
    unit_cost = unit_rate(row, "cost", contract_service) if cost is None else cost
    return {
        "units": units,
        "price": extended_amount(units, unit_price),
        "cost": extended_amount(units, unit_cost),
    }


def _contract_service(
    state: SandboxState, contract_id: int, cs_id: int | None, service_id: int | None
) -> dict[str, Any]:
    if cs_id is not None:
        service = state.contract_services.get(cs_id)
        if service is None or service["contractID"] != contract_id:
            raise AutotaskError(
                f"Contract service {cs_id} does not belong to contract {contract_id}."
            )
        if service_id is not None and service["serviceID"] != service_id:
            raise AutotaskError(f"Contract service {cs_id} is not for service {service_id}.")
        return service
    for service in state.contract_services.values():
        if service["contractID"] == contract_id and service["serviceID"] == service_id:
            return service
    # Real Autotask would add the service to the contract; the tool never relies on that.
    raise AutotaskError(f"Service {service_id} is not on contract {contract_id}.")


# --- HTTP --------------------------------------------------------------------------------


def _not_allowed(method: str) -> Reply:
    message = f"The requested resource does not support http method '{method}'."
    return json_reply(405, {"Message": message})


def _not_found(path: str) -> Reply:
    message = f"No HTTP resource was found that matches the request URI '{path}'."
    return json_reply(404, {"Message": message})


class InFlight:
    """Requests in flight per endpoint, for the thread limit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def enter(self, endpoint: str) -> bool:
        """Count a request in; False when the endpoint is already at the limit."""
        with self._lock:
            count = self._counts.get(endpoint, 0)
            if count >= THREAD_LIMIT:
                return False
            self._counts[endpoint] = count + 1
            return True

    def leave(self, endpoint: str) -> None:
        with self._lock:
            self._counts[endpoint] -= 1


class AutotaskHandler(BaseHandler):
    """Answers Autotask REST requests from the sandbox state."""

    service = "autotask"

    def dispatch(self, method: str, path: str, query: str, body: Any, raw: bytes) -> Reply:
        sandbox = self.sandbox
        if not path.lower().startswith(PREFIX):
            self.hold_for(sandbox.latency)
            return _not_found(path)
        segments = [s for s in path[len(PREFIX) :].split("/") if s]
        endpoint = segments[0].lower() if segments else ""
        if endpoint == "zoneinformation" and len(segments) == 1:
            return self._zone(method, query)
        if not self._authenticated():
            self.hold_for(sandbox.latency)
            return Reply(401)
        with sandbox.state.lock:
            sandbox.state.request_count += 1
        known = endpoint in ENTITIES or endpoint in (
            "thresholdinformation",
            "contractserviceadjustments",
        )
        if not known:
            self.hold_for(sandbox.latency)
            return _not_found(path)
        if not sandbox._in_flight.enter(endpoint):
            self.hold_for(sandbox.latency)
            return json_reply(429, {"errors": ["thread limit"]})
        try:
            self.hold_for(sandbox.latency)
            fault = sandbox.faults.take(endpoint)
            if fault is not None:
                if fault.kind != "timeout":
                    return fault_reply(fault)
                self.hold_for(fault.retry_after if fault.retry_after is not None else 2.0)
            try:
                return self._route(method, segments, query, body)
            except AutotaskError as exc:
                return json_reply(500, {"errors": [str(exc)]})
        finally:
            sandbox._in_flight.leave(endpoint)

    def _authenticated(self) -> bool:
        sandbox = self.sandbox
        user = self.header("UserName") or ""
        return (
            self.header("ApiIntegrationCode") == sandbox.integration_code
            and user.lower() == sandbox.username.lower()
            and self.header("Secret") == sandbox.secret
        )

    def _zone(self, method: str, query: str) -> Reply:
        sandbox = self.sandbox
        self.hold_for(sandbox.latency)
        fault = sandbox.faults.take("zoneinformation")
        if fault is not None:
            if fault.kind != "timeout":
                return fault_reply(fault)
            self.hold_for(fault.retry_after if fault.retry_after is not None else 2.0)
        if method != "GET":
            return _not_allowed(method)
        users = parse_qs(query).get("user") or [""]
        if users[0].strip().lower() != sandbox.username.lower():
            return json_reply(500, {"errors": ["Zone information could not be determined"]})
        return json_reply(
            200,
            {
                "zoneName": "Sandbox",
                "url": sandbox.autotask_url,
                "webUrl": sandbox.autotask_url.split("/atservicesrest/")[0] + "/",
                "ci": 0,
            },
        )

    def _route(self, method: str, segments: list[str], query: str, body: Any) -> Reply:
        state = self.sandbox.state
        first = segments[0].lower()
        rest = [s.lower() for s in segments[1:]]
        if first == "thresholdinformation":
            if rest or method != "GET":
                return _not_allowed(method) if not rest else _not_found(self.path)
            with state.lock:
                used = state.request_count + state.threshold_used_offset
                limit = state.external_request_threshold
            return json_reply(
                200,
                {
                    "externalRequestThreshold": limit,
                    "requestThresholdTimeframe": 60,
                    "currentTimeframeRequestCount": used,
                },
            )
        if first == "contractserviceadjustments":
            if rest or method != "POST":
                return _not_allowed(method)
            return self._adjust(body)
        entity = ENTITIES[first]
        if rest == ["query"]:
            if method == "POST":
                return self._query(entity, body, None)
            if method == "GET":
                search = parse_qs(query).get("search")
                if not search:
                    raise AutotaskError("The 'search' parameter is required.")
                try:
                    parsed = json.loads(search[0])
                except ValueError:
                    raise AutotaskError("The 'search' parameter is not valid JSON.") from None
                return self._query(entity, parsed, None)
            return _not_allowed(method)
        if rest == ["query", "next"]:
            if method != "POST":
                return _not_allowed(method)
            token = parse_qs(query).get("paging")
            if not token:
                raise AutotaskError("The 'paging' parameter is required.")
            after, fingerprint = decode_token(token[0])
            if fingerprint != body_fingerprint(body):
                raise AutotaskError(
                    "The next page must be requested with the same query body as the first."
                )
            return self._query(entity, body, after)
        if rest == ["entityinformation", "fields"]:
            if method != "GET":
                return _not_allowed(method)
            return json_reply(200, {"fields": field_information(entity)})
        if len(rest) == 1 and rest[0].isdigit():
            if method != "GET":
                return _not_allowed(method)
            with state.lock:
                record = state.table(entity).get(int(rest[0]))
                item = dict(record) if record is not None else None
            return json_reply(200, {"item": item})
        if not rest:
            return _not_allowed(method)  # creates and updates are not simulated
        return _not_found(self.path)

    def _query(self, entity: str, body: Any, after: int | None) -> Reply:
        items, page, more = run_query(self.sandbox.state, entity, body, after)
        next_url = None
        if more is not None:
            token = encode_token(more, body_fingerprint(body))
            next_url = f"{self.sandbox.autotask_url}v1.0/{entity}/query/next?paging={token}"
        return json_reply(
            200,
            {
                "items": items,
                "pageDetails": {
                    "count": len(items),
                    "requestCount": page,
                    "prevPageUrl": None,
                    "nextPageUrl": next_url,
                },
            },
        )

    def _adjust(self, body: Any) -> Reply:
        sandbox = self.sandbox
        adjustment_id = apply_adjustment(sandbox.state, body)
        fault = sandbox.faults.take("contractserviceadjustments", apply=True)
        if fault is not None:
            if fault.kind == "apply-then-hold":
                sandbox.faults.hold()
            else:
                return fault_reply(fault)
        # A live integration saw a successful create answer a null id.
        return json_reply(200, {"itemId": None if sandbox.state.null_item_id else adjustment_id})


def units_on(state: SandboxState, contract_service_id: int, day: date) -> int | None:
    """The units of SPEC §8's row covering ``day``, or None."""
    with state.lock:
        row = state.row_covering(contract_service_id, day)
        return None if row is None else int(row["units"])
