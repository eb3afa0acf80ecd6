"""A loopback simulator of the parts of the ConnectWise PSA REST API the tool uses.

Behaviour follows ``PSA_CONNECTWISE_HALO.md`` §1 and §4.6: ``GET /login/companyinfo/{company}``
(JSON ``null`` for an unknown company), the API only under ``/{codebase}apis/3.0/`` (404
elsewhere, so a moved codebase is noticed), a ``clientId`` header (400 without it), Basic auth
``company+public:private`` (401), a security-role knob (403), ``conditions`` limited to the
subset the tool uses, navigable (``page``/``pageSize``) and forward-only (``pageId``) paging
with ``Link`` headers, and on additions: PATCH (JSON Patch ``replace`` of ``quantity``,
``unitCost`` or ``unitPrice``, path with or without ``/``), PUT that resets every field not
sent, POST and DELETE. The tool must only ever PATCH: the others are simulated and recorded
(``ConnectWiseState.replaced``/``created``/``deleted``) so tests can show it never sends them.

Anything else answers an error naming it (400 ``InvalidObject`` for an unsupported condition or
parameter), so a new use by the tool is noticed and added here on purpose.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode

from ._http import (
    BaseHandler,
    Fault,
    Reply,
    fault_reply,
    html_reply,
    json_reply,
    retry_after_header,
)
from .cw_data import (
    ADDITION_FIELDS,
    SYSTEM_VERSION,
    ConnectWiseState,
    now_stamp,
    reprice,
    wire_date,
)

API_TAIL = "apis/3.0/"
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 25
LIST_PARAMS = {"conditions", "page", "pagesize", "pageid"}
PATCHABLE = ("quantity", "unitCost", "unitPrice")

# Fields each list may be filtered on, and their types (the subset the tool uses, and a few
# neighbours of it). Names are matched case-insensitively.
FIELDS: dict[str, dict[str, str]] = {
    "companies": {
        "id": "int",
        "identifier": "str",
        "name": "str",
        "deletedFlag": "bool",
        "status/id": "int",
        "status/name": "str",
    },
    "agreements": {
        "id": "int",
        "name": "str",
        "company/id": "int",
        "company/identifier": "str",
        "company/name": "str",
        "agreementStatus": "str",
        "cancelledFlag": "bool",
        "type/id": "int",
        "type/name": "str",
        "parentAgreement/id": "int",
    },
    "additions": {
        "id": "int",
        "agreementId": "int",
        "product/id": "int",
        "product/identifier": "str",
        "quantity": "number",
        "effectiveDate": "date",
        "cancelledDate": "date",
    },
}


class CwError(Exception):
    """A request ConnectWise answers with its error body ``{code, message, errors}``."""

    def __init__(
        self, status: int, code: str, message: str, errors: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors or []

    def reply(self) -> Reply:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.errors:
            body["errors"] = self.errors
        return json_reply(self.status, body)


def _invalid(message: str, field: str | None = None, resource: str = "addition") -> CwError:
    """400 InvalidObject, with one validation error when ``field`` is named."""
    errors = None
    if field is not None:
        errors = [
            {"code": "InvalidField", "message": message, "resource": resource, "field": field}
        ]
    return CwError(
        400, "InvalidObject", message if errors is None else f"{resource} object is invalid", errors
    )


def _not_found(what: str) -> CwError:
    return CwError(404, "NotFound", f"{what} not found")


# --- conditions --------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<lparen>\() | (?P<rparen>\)) |
      (?P<op>!=|<=|>=|=|<|>) |
      (?P<string>"(?:[^"\\]|\\.)*") |
      (?P<date>\[[^\]]*\]) |
      (?P<number>-?\d+(?:\.\d+)?)(?![\w/]) |
      (?P<word>[A-Za-z_][A-Za-z0-9_/]*)
    )""",
    re.VERBOSE,
)
_ESCAPE = re.compile(r"\\(.)")
_DATE_VALUE = re.compile(r"\[(\d{4}-\d{2}-\d{2})(?:T\d{2}:\d{2}:\d{2}Z?)?\]")

Record = dict[str, Any]
Predicate = Callable[[Record], bool]


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise _invalid(f"conditions: cannot read {text[pos : pos + 20].strip()!r}.")
        kind = match.lastgroup or ""
        tokens.append(_Token(kind, match.group(kind)))
        pos = match.end()
    return tokens


def _unquote_string(token: str) -> str:
    def unescape(match: re.Match[str]) -> str:
        if match[1] not in ('"', "\\"):
            raise _invalid(f"conditions: unknown escape \\{match[1]} in a string.")
        return match[1]

    return _ESCAPE.sub(unescape, token[1:-1])


def _value_of(record: Record, path: str) -> Any:
    value: Any = record
    for part in path.split("/"):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _wire_day(value: Any) -> date | None:
    return date.fromisoformat(value[:10]) if isinstance(value, str) and value else None


class _Conditions:
    """Parses the supported subset: ``field op value`` joined by ``and``, with parentheses.

    Operators ``=``, ``!=``, ``contains``, ``like`` (``*`` or ``%`` wildcards); values are
    double-quoted strings (``\\"`` and ``\\\\`` escapes), numbers, ``true``/``false`` and
    ``[date]``. ``or``, ``not``, ``in``, ``<``/``>`` and ``null`` are refused with 400.
    """

    def __init__(self, text: str, resource: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0
        self.fields = {name.lower(): (name, kind) for name, kind in FIELDS[resource].items()}

    def parse(self) -> Predicate:
        if not self.tokens:
            raise _invalid("conditions: empty.")
        predicate = self._conjunction()
        if self.pos < len(self.tokens):
            raise _invalid(f"conditions: unexpected {self.tokens[self.pos].text!r}.")
        return predicate

    def _peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _next(self, what: str) -> _Token:
        token = self._peek()
        if token is None:
            raise _invalid(f"conditions: {what} expected at the end.")
        self.pos += 1
        return token

    def _conjunction(self) -> Predicate:
        parts = [self._atom()]
        while (token := self._peek()) is not None and token.kind == "word":
            word = token.text.lower()
            if word != "and":
                raise _invalid(f"conditions: '{token.text}' is not supported by the sandbox.")
            self.pos += 1
            parts.append(self._atom())
        return lambda record: all(part(record) for part in parts)

    def _atom(self) -> Predicate:
        token = self._next("a condition")
        if token.kind == "lparen":
            inner = self._conjunction()
            if self._next("')'").kind != "rparen":
                raise _invalid("conditions: ')' expected.")
            return inner
        if token.kind != "word" or token.text.lower() in ("not", "and", "or"):
            raise _invalid(f"conditions: a field name expected, not {token.text!r}.")
        known = self.fields.get(token.text.lower())
        if known is None:
            raise _invalid(f"conditions: unknown or unsupported field '{token.text}'.")
        path, kind = known
        op = self._next("an operator")
        operator = op.text.lower()
        if op.kind == "op" and operator in ("=", "!="):
            pass
        elif op.kind == "word" and operator in ("contains", "like"):
            if kind != "str":
                raise _invalid(f"conditions: '{op.text}' needs a text field, not '{path}'.")
        else:
            raise _invalid(f"conditions: operator '{op.text}' is not supported by the sandbox.")
        wanted = self._value(path, kind)
        return _compare(path, kind, operator, wanted)

    def _value(self, path: str, kind: str) -> Any:
        token = self._next("a value")
        if token.kind == "word" and token.text.lower() == "null":
            raise _invalid("conditions: null comparisons are not supported by the sandbox.")
        if kind == "str" and token.kind == "string":
            return _unquote_string(token.text)
        if kind == "int" and token.kind == "number" and "." not in token.text:
            return int(token.text)
        if kind == "number" and token.kind == "number":
            return float(token.text)
        if kind == "bool" and token.kind == "word" and token.text.lower() in ("true", "false"):
            return token.text.lower() == "true"
        if kind == "date" and token.kind == "date":
            match = _DATE_VALUE.fullmatch(token.text)
            if match is not None:
                try:
                    return date.fromisoformat(match[1])
                except ValueError:
                    pass
        raise _invalid(f"conditions: {token.text!r} is not a valid value for '{path}' ({kind}).")


def _compare(path: str, kind: str, operator: str, wanted: Any) -> Predicate:
    def get(record: Record) -> Any:
        value = _value_of(record, path)
        if kind == "str":
            return None if value is None else str(value).casefold()
        if kind == "bool":
            return bool(value)
        if kind == "date":
            return _wire_day(value)
        return value

    if kind == "str":
        wanted = str(wanted).casefold()
    if operator == "contains":
        return lambda record: (value := get(record)) is not None and wanted in value
    if operator == "like":
        pattern = re.compile(
            "".join(".*" if c in "*%" else re.escape(c) for c in wanted), re.DOTALL
        )
        return lambda record: (value := get(record)) is not None and bool(pattern.fullmatch(value))
    if operator == "!=":
        return lambda record: get(record) != wanted
    return lambda record: get(record) == wanted


def compile_conditions(text: str, resource: str) -> Predicate:
    """A predicate for a ``conditions`` text on ``resource`` (companies, agreements, additions).

    Raises CwError (400 InvalidObject) for anything outside the supported subset.
    """
    return _Conditions(text, resource).parse()


# --- PATCH, PUT, POST --------------------------------------------------------------------


def _number(value: Any, field: str, *, whole: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _invalid(f"{field} must be a number, not {value!r}.", field)
    if value < 0:
        raise _invalid(f"{field} cannot be negative ({value!r}).", field)
    if whole and not float(value).is_integer():
        raise _invalid(f"{field} must be a whole number, not {value!r}.", field)
    return float(value)


def parse_patch(body: Any) -> list[tuple[str, float]]:
    """Validate a JSON Patch body; returns (field, value) pairs. Raises CwError (400)."""
    if not isinstance(body, list) or not body:
        raise _invalid("The request body must be a non-empty JSON Patch array.")
    changes: list[tuple[str, float]] = []
    for operation in body:
        if not isinstance(operation, dict):
            raise _invalid("Each patch operation must be an object with op, path and value.")
        unknown = set(operation) - {"op", "path", "value"}
        if unknown:
            raise _invalid(f"Unknown patch operation key(s): {', '.join(sorted(unknown))}.")
        op = operation.get("op")
        if op != "replace":
            raise _invalid(
                f"Patch operation {op!r} is not supported by the sandbox (replace only)."
            )
        path = operation.get("path")
        name = path[1:] if isinstance(path, str) and path.startswith("/") else path
        if name not in PATCHABLE:
            raise _invalid(f"Cannot patch path {path!r} of an addition.", str(path))
        if "value" not in operation:
            raise _invalid(f"Patch operation on {path!r} has no value.", str(name))
        changes.append(
            (str(name), _number(operation["value"], str(name), whole=name == "quantity"))
        )
    return changes


def _product_ref(state: ConnectWiseState, body: Record) -> Record:
    product = body.get("product")
    product_id = product.get("id") if isinstance(product, dict) else None
    if isinstance(product_id, bool) or not isinstance(product_id, int):
        raise _invalid("product is required.", "product")
    known = state.products.get(product_id)
    if known is None:
        raise _invalid(f"product {product_id} does not exist.", "product")
    return {"id": product_id, "identifier": known["identifier"]}


def _check_full_body(state: ConnectWiseState, body: Any) -> Record:
    """A PUT/POST body: an addition object with ``product`` and ``billCustomer``."""
    if not isinstance(body, dict):
        raise _invalid("The request body must be an addition object.")
    unknown = set(body) - set(ADDITION_FIELDS) - {"id", "agreementId", "_info"}
    if unknown:
        raise _invalid(f"Unknown addition field(s): {', '.join(sorted(unknown))}.")
    fields = {key: body[key] for key in ADDITION_FIELDS if key in body}
    fields["product"] = _product_ref(state, body)
    if not isinstance(body.get("billCustomer"), str):
        raise _invalid("billCustomer is required.", "billCustomer")
    for key in ("quantity", "unitPrice", "unitCost"):
        if fields.get(key) is not None:
            fields[key] = _number(fields[key], key, whole=False)
    return fields


# --- HTTP --------------------------------------------------------------------------------


def cw_fault_reply(fault: Fault) -> Reply:
    """A plain fault in ConnectWise's shapes (``timeout`` is handled by the caller)."""
    body: dict[str, Any]
    if fault.kind == "429":
        body = {"code": "TooManyRequests", "message": "Too many requests; retry later."}
        return json_reply(429, body, retry_after_header(fault))
    if fault.kind == "400":
        body = {
            "code": "InvalidObject",
            "message": "addition object is invalid",
            "errors": [
                {
                    "code": "InvalidField",
                    "message": "The quantity is not valid for this addition.",
                    "resource": "addition",
                    "field": "quantity",
                }
            ],
        }
        return json_reply(400, body)
    if fault.kind == "500-errors":
        body = {
            "code": "UnexpectedError",
            "message": "Simulated failure",
            "errors": [
                {"code": "Unexpected", "message": "Simulated failure", "resource": "addition"}
            ],
        }
        return json_reply(500, body)
    return fault_reply(fault)


class ConnectWiseHandler(BaseHandler):
    """Answers ConnectWise REST requests from ``sandbox.cw``."""

    service = "connectwise"

    @property
    def cw(self) -> ConnectWiseState:
        return self.sandbox.cw

    def dispatch(self, method: str, path: str, query: str, body: Any, raw: bytes) -> Reply:
        self.hold_for(self.sandbox.latency)
        try:
            if path.lower().startswith("/login/companyinfo/"):
                return self._companyinfo(method, path)
            with self.cw.lock:
                prefix = f"/{self.cw.codebase}{API_TAIL}".lower()
            if not path.lower().startswith(prefix):
                return html_reply(404, "<title>404 - File or directory not found.</title>")
            self._check_credentials()
            segments = [unquote(s) for s in path[len(prefix) :].split("/") if s]
            endpoint = _endpoint([s.lower() for s in segments])
            if endpoint is None:
                raise CwError(404, "NotFound", f"No resource matches {path!r}.")
            if endpoint == "cw:additions" and method != "GET":
                endpoint = "cw:write"
            if endpoint == "cw:write" and self.cw.role == "read-only":
                raise CwError(403, "Forbidden", "You do not have permission to edit agreements.")
            fault = self.sandbox.faults.take(endpoint)
            if fault is not None:
                if fault.kind != "timeout":
                    return cw_fault_reply(fault)
                self.hold_for(fault.retry_after if fault.retry_after is not None else 2.0)
            return self._route(method, [s.lower() for s in segments], query, body)
        except CwError as exc:
            return exc.reply()

    def _companyinfo(self, method: str, path: str) -> Reply:
        fault = self.sandbox.faults.take("cw:companyinfo")
        if fault is not None:
            if fault.kind != "timeout":
                return cw_fault_reply(fault)
            self.hold_for(fault.retry_after if fault.retry_after is not None else 2.0)
        if method != "GET":
            raise CwError(405, "MethodNotAllowed", f"Method {method} is not allowed here.")
        company = unquote(path[len("/login/companyinfo/") :])
        if company != self.sandbox.cw_company_id:
            return json_reply(200, None)
        with self.cw.lock:
            codebase = self.cw.codebase
        return json_reply(
            200,
            {
                "CompanyName": "Sandbox MSP",
                "Codebase": codebase,
                "VersionCode": "v2025.1",
                "VersionNumber": "v4.6",
                "CompanyID": company,
                "IsCloud": False,
                "SiteUrl": self.headers.get("Host", ""),
            },
        )

    def _check_credentials(self) -> None:
        sandbox = self.sandbox
        if self.header("clientId") != sandbox.cw_client_id:
            raise CwError(
                400,
                "InvalidClientId",
                "A valid clientId header is required on every request "
                "(https://developer.connectwise.com/ClientID).",
            )
        expected = f"{sandbox.cw_company_id}+{sandbox.cw_public_key}:{sandbox.cw_private_key}"
        scheme, _, token = (self.header("Authorization") or "").partition(" ")
        try:
            given = base64.b64decode(token, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            given = ""
        if scheme.lower() != "basic" or given != expected:
            raise CwError(401, "Unauthorized", "Authentication failed.")
        if self.cw.role == "none":
            raise CwError(403, "Forbidden", "You do not have permission to access this resource.")

    # --- routing -------------------------------------------------------------------------

    def _route(self, method: str, seg: list[str], query: str, body: Any) -> Reply:
        params = _params(query)
        if seg == ["system", "info"]:
            _allow(method, "GET")
            _no_params(params)
            return json_reply(
                200,
                {
                    "version": SYSTEM_VERSION,
                    "isCloud": False,
                    "serverTimeZone": "Eastern Standard Time",
                    "licenseBits": [],
                    "cloudRegion": None,
                },
            )
        if seg == ["system", "audittrail"]:
            _allow(method, "GET")
            return self._audit(params)
        if seg[:2] == ["company", "companies"]:
            _allow(method, "GET")
            with self.cw.lock:
                if len(seg) == 2:
                    return self._list("companies", list(self.cw.companies.values()), params)
                _no_params(params)
                return json_reply(200, dict(_get(self.cw.companies, seg[2], "Company")))
        if len(seg) <= 3:  # finance/agreements[/id]
            _allow(method, "GET")
            with self.cw.lock:
                if len(seg) == 2:
                    return self._list("agreements", list(self.cw.agreements.values()), params)
                _no_params(params)
                return json_reply(200, dict(_get(self.cw.agreements, seg[2], "Agreement")))
        return self._additions(method, seg, params, body)

    def _additions(self, method: str, seg: list[str], params: dict[str, str], body: Any) -> Reply:
        state = self.cw
        with state.lock:
            agreement = _get(state.agreements, seg[2], "Agreement")
            mine = [a for a in state.additions.values() if a["agreementId"] == agreement["id"]]
            addition = _get({a["id"]: a for a in mine}, seg[4], "Addition") if len(seg) == 5 else {}
        # Writes take the lock themselves: a held write (apply-then-hold) must not block reads.
        if len(seg) == 4:
            _allow(method, "GET", "POST")
            if method == "POST":
                _no_params(params)
                return self._create(agreement["id"], body)
            with state.lock:
                reply = self._list("additions", mine, params)
            shown = [a["id"] for a in mine]
        else:
            _allow(method, "GET", "PATCH", "PUT", "DELETE")
            _no_params(params)
            if method == "PATCH":
                return self._patch(addition, body)
            if method == "PUT":
                return self._put(addition, body)
            with state.lock:
                if method == "DELETE":
                    state.additions.pop(addition["id"], None)
                    state.deleted.append(dict(addition))
                    self._audit_entry(addition, "deleted", addition["quantity"], None, "api")
                    return Reply(204)
                reply = json_reply(200, dict(addition))
            shown = [addition["id"]]
        for addition_id in shown:  # another writer right after the tool's read
            self._concurrent(addition_id, "after-get")
        return reply

    def _list(self, resource: str, records: list[Record], params: dict[str, str]) -> Reply:
        unknown = set(params) - LIST_PARAMS
        if unknown:
            raise _invalid(
                f"Parameter(s) not supported by the sandbox: {', '.join(sorted(unknown))}."
            )
        conditions = params.get("conditions")
        if conditions is not None:
            predicate = compile_conditions(conditions, resource)
            records = [r for r in records if predicate(r)]
        return self._page(sorted(records, key=lambda r: r["id"]), params)

    def _page(self, records: list[Record], params: dict[str, str]) -> Reply:
        size = _int_param(params, "pagesize", DEFAULT_PAGE_SIZE, low=1)
        if size > MAX_PAGE_SIZE:
            raise _invalid(f"pageSize cannot be more than {MAX_PAGE_SIZE} (got {size}).")
        served = min(size, self.cw.page_cap) if self.cw.page_cap else size
        query = {_WIRE_PARAM.get(k, k): v for k, v in params.items()}
        base = f"{self.sandbox.cw_site}{self.path.split('?', 1)[0]}"

        def link(**changes: Any) -> str:
            return f"<{base}?{urlencode({**query, **changes})}>"

        if (self.header("pagination-type") or "").lower() == "forward-only":
            if "page" in params:
                raise _invalid("page cannot be used with forward-only pagination; use pageId.")
            after = _int_param(params, "pageid", 0, low=0)
            remaining = [r for r in records if r["id"] > after]
            items = remaining[:served]
            headers = {}
            if len(remaining) > served:
                headers["Link"] = f'{link(pageId=items[-1]["id"])}; rel="next"'
            return json_reply(200, [dict(r) for r in items], headers)
        if "pageid" in params:
            raise _invalid("pageId needs the header pagination-type: forward-only.")
        page = _int_param(params, "page", 1, low=1)
        last = max(1, math.ceil(len(records) / served))
        items = records[(page - 1) * served : page * served]
        links = [f'{link(page=1)}; rel="first"']
        if page > 1:
            links.append(f'{link(page=min(page - 1, last))}; rel="prev"')
        if page < last:
            links.append(f'{link(page=page + 1)}; rel="next"')
        links.append(f'{link(page=last)}; rel="last"')
        return json_reply(200, [dict(r) for r in items], {"Link": ", ".join(links)})

    # --- writes ----------------------------------------------------------------------------

    def _patch(self, addition: Record, body: Any) -> Reply:
        state = self.cw
        changes = parse_patch(body)
        with state.lock:
            self._concurrent(addition["id"], "before-patch")
            before = dict(addition)
            for name, value in changes:
                addition[name] = value
            reprice(addition)
            addition["_info"] = {
                **addition.get("_info", {}),
                "lastUpdated": now_stamp(),
                "updatedBy": "api",
            }
            for name, _ in changes:
                self._audit_entry(addition, name, before.get(name), addition[name], "api")
            state.patches.append(
                {
                    "addition_id": addition["id"],
                    "body": body,
                    "before": before,
                    "after": dict(addition),
                }
            )
            answer = json_reply(200, dict(addition))
        fault = self.sandbox.faults.take("cw:write", apply=True)
        if fault is not None:
            if fault.kind == "apply-then-hold":
                self.sandbox.faults.hold()
            else:
                return fault_reply(fault)
        self._concurrent(addition["id"], "after-patch")
        return answer

    def _put(self, addition: Record, body: Any) -> Reply:
        state = self.cw
        fields = _check_full_body(state, body)
        with state.lock:
            before = dict(addition)
            for key in ADDITION_FIELDS:  # PUT replaces: a field not sent is reset
                addition[key] = fields.get(key)
            reprice(addition)
            addition["_info"] = {"lastUpdated": now_stamp(), "updatedBy": "api"}
            state.replaced.append({"addition_id": addition["id"], "body": body, "before": before})
            self._audit_entry(
                addition, "replaced", before.get("quantity"), addition["quantity"], "api"
            )
            return json_reply(200, dict(addition))

    def _create(self, agreement_id: int, body: Any) -> Reply:
        state = self.cw
        fields = _check_full_body(state, body)
        with state.lock:
            record: Record = {key: fields.get(key) for key in ADDITION_FIELDS}
            record.update(id=state.next_addition_id, agreementId=agreement_id)
            record["effectiveDate"] = record["effectiveDate"] or wire_date(state.today)
            record["_info"] = {"lastUpdated": now_stamp(), "updatedBy": "api"}
            reprice(record)
            state.next_addition_id += 1
            state.additions[record["id"]] = record
            state.created.append(dict(record))
            self._audit_entry(record, "created", None, record["quantity"], "api")
            return json_reply(201, dict(record))

    def _concurrent(self, addition_id: int, moment: str) -> None:
        state = self.cw
        with state.lock:
            write = state.take_concurrent(addition_id, moment)
            addition = state.additions.get(addition_id)
            if write is None or addition is None:
                return
            before = addition["quantity"]
            addition["quantity"] = write.quantity
            reprice(addition)
            addition["_info"] = {
                **addition.get("_info", {}),
                "lastUpdated": now_stamp(),
                "updatedBy": "INFIMA",
            }
            self._audit_entry(addition, "quantity", before, write.quantity, "INFIMA")

    def _audit_entry(self, addition: Record, field: str, before: Any, after: Any, by: str) -> None:
        state = self.cw
        with state.lock:
            state.audit.append(
                {
                    "id": len(state.audit) + 1,
                    "agreementId": addition["agreementId"],
                    "additionId": addition["id"],
                    "field": field,
                    "before": before,
                    "after": after,
                    "enteredBy": by,
                    "enteredDate": now_stamp(),
                }
            )

    def _audit(self, params: dict[str, str]) -> Reply:
        unknown = set(params) - {"type", "id", "page", "pagesize"}
        if unknown or params.get("type", "").lower() != "agreement" or "id" not in params:
            raise _invalid("audittrail needs type=Agreement and id (and no other parameters).")
        agreement_id = _int_param(params, "id", 0, low=1)
        with self.cw.lock:
            entries = [
                {
                    "id": entry["id"],
                    "text": (
                        f"Addition {entry['additionId']}: {entry['field']} changed from "
                        f"{entry['before']} to {entry['after']}"
                    ),
                    "enteredDate": entry["enteredDate"],
                    "enteredBy": entry["enteredBy"],
                    "auditType": "Agreement",
                    "auditSubType": "Addition",
                    "auditSource": "API",
                }
                for entry in self.cw.audit
                if entry["agreementId"] == agreement_id
            ]
        return self._page(entries, params)


_WIRE_PARAM = {
    "conditions": "conditions",
    "page": "page",
    "pagesize": "pageSize",
    "pageid": "pageId",
}


def _endpoint(seg: list[str]) -> str | None:
    """The fault endpoint of a route, or None for a path the simulator does not serve."""
    if seg in (["system", "info"], ["system", "audittrail"]):
        return "cw:system"
    if seg[:2] == ["company", "companies"] and len(seg) in (2, 3):
        return "cw:companies"
    if seg[:2] == ["finance", "agreements"]:
        if len(seg) in (2, 3):
            return "cw:agreements"
        if len(seg) in (4, 5) and seg[3] == "additions":
            return "cw:additions"
    return None


def _params(query: str) -> dict[str, str]:
    parsed = parse_qs(query, keep_blank_values=True)
    params: dict[str, str] = {}
    for key, values in parsed.items():
        name = key.lower()
        if name in params or len(values) > 1:
            raise _invalid(f"Parameter {key!r} is given more than once.")
        params[name] = values[0]
    return params


def _no_params(params: dict[str, str]) -> None:
    if params:
        raise _invalid(f"Parameter(s) not supported here: {', '.join(sorted(params))}.")


def _int_param(params: dict[str, str], name: str, default: int, *, low: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or int(text) < low:
        raise _invalid(
            f"{_WIRE_PARAM.get(name, name)} must be a whole number from {low}, not {text!r}."
        )
    return int(text)


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise CwError(
            405,
            "MethodNotAllowed",
            f"The requested resource does not support http method '{method}'.",
        )


def _get(table: dict[int, Record], segment: str, what: str) -> Record:
    record = table.get(int(segment)) if segment.isascii() and segment.isdigit() else None
    if record is None:
        raise _not_found(f"{what} {segment}")
    return record
