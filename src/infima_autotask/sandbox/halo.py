"""A loopback simulator of the parts of the HaloPSA API the tool uses.

It serves the wire protocol the tool's client speaks (facts: ``PSA_CONNECTWISE_HALO.md``
§2 and §4.6): ``GET /api/authinfo``; ``POST /auth/token`` with a client-credentials form
(``?tenant=`` when ``hosted``), scopes granted as the application allows; a bearer token on
every ``/api`` call (401 when missing, unknown or expired) and the scope each call needs (403);
``Client``, ``SoftwareLicence`` and ``RecurringInvoice`` reads with ``pageinate``/
``page_size``/``page_no`` paging and ``record_count``; ``POST /api/SoftwareLicence`` with a
JSON array whose entries with ``id`` update only the fields sent and whose entries without
one create a licence (recorded in ``HaloState.creates``: the tool must never send one); and
the hosted limit of ``limit`` requests per rolling ``window`` (429 with ``Retry-After``).

Anything else (an unknown path, parameter, form field, licence field or scope) answers an
error naming it, so a new use by the tool is noticed and added here on purpose. Neither the
client secret nor a token is ever written to a log; the request log keeps the token form
with the secret masked.
"""

from __future__ import annotations

import hmac
import math
from typing import Any
from urllib.parse import parse_qs, unquote

from ._http import BaseHandler, Reply, fault_reply, html_reply, json_reply
from .halo_data import LICENCE_FIELDS, HaloState

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50  # UNCONFIRMED: Halo's own default
PAGE_PARAMS = {"pageinate", "page_size", "page_no"}
SECRET_MASK = "********"  # noqa: S105 - what the request log shows instead of the secret
# Scope names Halo knows (HaloAPI's list, PSA_CONNECTWISE_HALO.md §2.1).
_AREAS = (
    "tickets", "calendar", "customers", "crm", "timesheets", "contracts", "suppliers", "items",
    "projects", "sales", "quotes", "sos", "pos", "invoices", "reporting", "software",
    "softwarelicensing", "kb", "assets",
)  # fmt: skip
KNOWN_SCOPES = frozenset(
    {"all", "all:standard", "admin", "editMine:timesheets", "access:chat"}
    | {"access:adpasswordreset"}
    | {f"{verb}:{area}" for verb in ("read", "edit") for area in _AREAS}
)
TOKEN_FIELDS = {"grant_type", "client_id", "client_secret", "scope"}
# Licence fields a POST may set (``id`` picks the record; ``client_name`` follows client_id).
_SETTABLE: dict[str, tuple[type, ...]] = {
    "client_id": (int,),
    "name": (str,),
    "type": (int,),
    "count": (int,),
    "status": (str,),
    "is_active": (bool,),
    "deleted": (bool,),
    "start_date": (str, type(None)),
    "end_date": (str, type(None)),
    "billing_cycle": (str, type(None)),
    "price": (int, float, type(None)),
    "monthly_cost": (int, float, type(None)),
}


class HaloError(Exception):
    """A request Halo refuses; ``payload`` is the JSON body (None: an empty body)."""

    def __init__(self, status: int, payload: Any = None, headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status = status
        self.payload = payload
        self.headers = headers or {}

    def reply(self) -> Reply:
        if self.payload is None:
            return Reply(self.status, b"", self.headers)
        return json_reply(self.status, self.payload, self.headers)


def _bad(message: str) -> HaloError:
    return HaloError(400, message)  # Halo's validation answers are a bare JSON string


def _oauth(status: int, error: str, description: str) -> HaloError:
    return HaloError(status, {"error": error, "error_description": description})


def _grants(granted: frozenset[str], needed: str) -> bool:
    """Whether a token's scopes allow ``needed`` (``edit:x`` includes ``read:x``)."""
    if "all" in granted or needed in granted:
        return True
    verb, _, area = needed.partition(":")
    return verb == "read" and f"edit:{area}" in granted


# (path after /api, lowercased; None: an id) -> {method: (fault endpoint, scope needed)}
_ROUTES: dict[tuple[str | None, ...], dict[str, tuple[str, str]]] = {
    ("client",): {"GET": ("halo:clients", "read:customers")},
    ("client", None): {"GET": ("halo:clients", "read:customers")},
    ("softwarelicence",): {
        "GET": ("halo:licences", "read:softwarelicensing"),
        "POST": ("halo:write", "edit:softwarelicensing"),
    },
    ("softwarelicence", None): {"GET": ("halo:licences", "read:softwarelicensing")},
    ("recurringinvoice",): {"GET": ("halo:invoices", "read:invoices")},
}


def _route_key(seg: list[str]) -> tuple[str | None, ...]:
    if len(seg) == 2 and seg[1].isascii() and seg[1].lstrip("-").isdigit():
        return (seg[0], None)
    return tuple(seg)


class HaloHandler(BaseHandler):
    """Answers HaloPSA requests from ``sandbox.halo``."""

    service = "halo"

    @property
    def halo(self) -> HaloState:
        return self.sandbox.halo

    def dispatch(self, method: str, path: str, query: str, body: Any, raw: bytes) -> Reply:
        self.hold_for(self.sandbox.latency)
        wait = self.halo.admit()
        if wait is not None:
            return self._rate_limited(wait)
        try:
            seg = [unquote(s).lower() for s in path.split("/") if s]
            if seg == ["api", "authinfo"]:
                return self._authinfo(method, query)
            if seg == ["auth", "token"]:
                return self._token(method, query, body, raw)
            if not seg or seg[0] != "api":
                return html_reply(404, "<title>404 - Not Found</title>")
            granted = self._bearer()
            methods = _ROUTES.get(_route_key(seg[1:]))
            if methods is None:
                raise HaloError(404, f"No API resource matches {path!r}.")
            if method not in methods:
                raise HaloError(405, {"errors": [f"Method {method} is not allowed here."]})
            endpoint, scope = methods[method]
            if not _grants(granted, scope):
                raise HaloError(403, {"errors": [f"This token lacks the '{scope}' scope."]})
            fault = self._fault(endpoint)
            if fault is not None:
                return fault
            return self._route(method, seg[1:], _params(query), body)
        except HaloError as exc:
            return exc.reply()

    def logged_body(self, body: Any, raw: bytes) -> Any:
        # Whatever the path: a form (the token request) is kept as its fields, and a client
        # secret, in a form or a JSON object, is masked.
        if body is None and _content_type(self) == "application/x-www-form-urlencoded":
            form = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
            body = {k: v[0] if len(v) == 1 else v for k, v in form.items()}
        if isinstance(body, dict) and "client_secret" in body:
            return {**body, "client_secret": SECRET_MASK}
        return body

    # --- auth --------------------------------------------------------------------------------

    def _fault(self, endpoint: str) -> Reply | None:
        fault = self.sandbox.faults.take(endpoint)
        if fault is None:
            return None
        if fault.kind != "timeout":
            return fault_reply(fault)
        self.hold_for(fault.retry_after if fault.retry_after is not None else 2.0)
        return None

    def _authinfo(self, method: str, query: str) -> Reply:
        fault = self._fault("halo:auth")
        if fault is not None:
            return fault
        _allow(method, "GET")
        _no_params(_params(query))
        with self.halo.lock:
            tenant = self.halo.tenant if self.halo.hosted else None
        return json_reply(200, {"auth_url": f"{self.sandbox.halo_url}/auth", "tenant_id": tenant})

    def _token(self, method: str, query: str, body: Any, raw: bytes) -> Reply:
        fault = self._fault("halo:auth")
        if fault is not None:
            return fault
        _allow(method, "POST")
        state = self.halo
        params = _params(query)
        unknown = set(params) - {"tenant"}
        if unknown:
            names = ", ".join(sorted(unknown))
            raise _oauth(400, "invalid_request", f"unknown parameter(s): {names}")
        with state.lock:
            hosted, tenant = state.hosted, state.tenant
            client_id, client_secret, allowed = state.client_id, state.client_secret, state.scopes
        if hosted and params.get("tenant") != tenant:
            given = "no tenant" if "tenant" not in params else f"tenant {params['tenant']!r}"
            raise _oauth(400, "invalid_request", f"tenant required: {given} is not this instance's")
        if _content_type(self) != "application/x-www-form-urlencoded" or body is not None:
            raise _oauth(
                400,
                "invalid_request",
                "the token request must be a form (application/x-www-form-urlencoded)",
            )
        form = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
        if any(len(values) > 1 for values in form.values()):
            raise _oauth(400, "invalid_request", "a form field is given more than once")
        unknown = set(form) - TOKEN_FIELDS
        if unknown:
            raise _oauth(400, "invalid_request", f"unknown field(s): {', '.join(sorted(unknown))}")
        fields = {key: values[0] for key, values in form.items()}
        if fields.get("grant_type") != "client_credentials":
            raise _oauth(400, "unsupported_grant_type", "grant_type must be client_credentials")
        right_id = hmac.compare_digest(fields.get("client_id", "").encode(), client_id.encode())
        right_secret = hmac.compare_digest(
            fields.get("client_secret", "").encode(), client_secret.encode()
        )
        if not (right_id and right_secret):
            raise _oauth(401, "invalid_client", "The client id or client secret is not valid.")
        requested = fields.get("scope", "").split()
        if not requested:
            raise _oauth(400, "invalid_request", "scope is required")
        strange = [s for s in requested if s not in KNOWN_SCOPES]
        if strange:
            raise _oauth(400, "invalid_scope", f"unknown scope(s): {' '.join(strange)}")
        granted = frozenset(s for s in requested if "all" in allowed or s in allowed)
        token = state.issue_token(granted)
        return json_reply(
            200,
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": state.token_lifetime,
                "scope": " ".join(sorted(granted)),
            },
        )

    def _bearer(self) -> frozenset[str]:
        scheme, _, token = (self.header("Authorization") or "").partition(" ")
        granted = self.halo.token_scopes(token.strip()) if scheme.lower() == "bearer" else None
        if granted is None:
            raise HaloError(401, None, {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return granted

    def _rate_limited(self, wait: float) -> Reply:
        with self.halo.lock:
            knob, limit, window = self.halo.retry_after, self.halo.limit, self.halo.window
        headers: dict[str, str] = {}
        if knob == "window":
            headers["Retry-After"] = str(max(1, math.ceil(wait)))
        elif knob is not None:
            headers["Retry-After"] = str(int(knob)) if knob == int(knob) else str(knob)
        message = f"Rate Limit Reached - {limit} Requests per rolling {window / 60:g} minute window"
        return json_reply(429, message, headers)

    # --- reads -------------------------------------------------------------------------------

    def _route(self, method: str, seg: list[str], params: dict[str, str], body: Any) -> Reply:
        state = self.halo
        if seg[0] == "client":
            with state.lock:
                if len(seg) == 2:
                    _no_params(params)
                    return json_reply(200, dict(_get(state.clients, seg[1], "Client")))
                return self._clients(params)
        if seg[0] == "recurringinvoice":
            return self._invoices(params)
        if method == "POST":
            _no_params(params)
            return self._post(body)
        with state.lock:
            if len(seg) == 2:
                _no_params(params)
                licence = _get(state.licences, seg[1], "SoftwareLicence")
                reply = json_reply(200, dict(licence))
                shown = [licence["id"]]
            else:
                reply, shown = self._licences(params)
        for licence_id in shown:  # another writer right after the tool's read
            self._concurrent(licence_id, "after-get")
        return reply

    def _clients(self, params: dict[str, str]) -> Reply:
        _only(params, PAGE_PARAMS | {"search", "includeinactive"})
        records = sorted(self.halo.clients.values(), key=lambda r: r["id"])
        if not _bool_param(params, "includeinactive"):
            records = [r for r in records if not r["inactive"]]
        search = params.get("search")
        if search:
            wanted = search.casefold()
            records = [r for r in records if wanted in str(r["name"]).casefold()]
        return _page(records, params, "clients")

    def _licences(self, params: dict[str, str]) -> tuple[Reply, list[int]]:
        _only(params, PAGE_PARAMS | {"client_id", "includeinactive"})
        records = sorted(self.halo.licences.values(), key=lambda r: r["id"])
        if not _bool_param(params, "includeinactive"):
            records = [r for r in records if r["is_active"] and not r["deleted"]]
        if "client_id" in params:
            client_id = _int_param(params, "client_id", 0, low=1)
            records = [r for r in records if r["client_id"] == client_id]
        reply = _page(records, params, "licences")
        return reply, [r["id"] for r in _paged(records, params)]

    def _invoices(self, params: dict[str, str]) -> Reply:
        _only(params, PAGE_PARAMS | {"client_id", "includelines"})
        state = self.halo
        with state.lock:
            records = list(state.invoices.values())
            if "client_id" in params:
                client_id = _int_param(params, "client_id", 0, low=1)
                records = [r for r in records if r["client_id"] == client_id]
            lines = _bool_param(params, "includelines")
            records = [state.wire_invoice(r, lines=lines) for r in records]
        return _page(records, params, "invoices")

    # --- the write ---------------------------------------------------------------------------

    def _post(self, body: Any) -> Reply:
        state = self.halo
        if _content_type(self) != "application/json":
            raise HaloError(415, {"errors": ["The body must be application/json."]})
        if not isinstance(body, list) or not body:
            raise _bad("The body must be a non-empty JSON array of licences.")
        with state.lock:
            entries = [self._checked(entry) for entry in body]
            for licence_id, _ in entries:
                if licence_id is not None:
                    self._concurrent(licence_id, "before-post")
            saved = [self._apply(licence_id, fields, entry) for (licence_id, fields), entry
                     in zip(entries, body, strict=True)]  # fmt: skip
        answer = json_reply(200, saved[0] if len(saved) == 1 else saved)
        fault = self.sandbox.faults.take("halo:write", apply=True)
        if fault is not None:
            if fault.kind == "apply-then-hold":
                self.sandbox.faults.hold()
            else:
                return fault_reply(fault)
        for licence_id, _ in entries:
            if licence_id is not None:
                self._concurrent(licence_id, "after-post")
        return answer

    def _checked(self, entry: Any) -> tuple[int | None, dict[str, Any]]:
        """Validate one entry (nothing applied yet): its licence id (None: a create) and the
        fields to set. Raises HaloError (400)."""
        state = self.halo
        if not isinstance(entry, dict):
            raise _bad("Each licence must be a JSON object.")
        unknown = set(entry) - set(LICENCE_FIELDS)
        if unknown:
            raise _bad(f"Unknown licence field(s): {', '.join(sorted(unknown))}.")
        licence_id = entry.get("id")
        if licence_id in (None, 0):
            licence_id = None
        elif isinstance(licence_id, bool) or not isinstance(licence_id, int):
            raise _bad(f"id must be a whole number, not {licence_id!r}.")
        elif licence_id not in state.licences:
            raise _bad(f"SoftwareLicence {licence_id} does not exist.")
        fields = {k: v for k, v in entry.items() if k not in ("id", "client_name")}
        count = fields.get("count", 0)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise _bad(f"count must be a whole number >= 0, not {count!r} (licence {licence_id}).")
        for key, value in fields.items():
            kinds = _SETTABLE[key]
            if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
                raise _bad(f"{key} has an invalid value {value!r} (licence {licence_id}).")
        if "client_id" in fields and fields["client_id"] not in state.clients:
            raise _bad(f"Client {fields['client_id']} does not exist.")
        if licence_id is None and "client_id" not in fields:
            raise _bad("client_id is required to create a licence.")
        return licence_id, fields

    def _apply(self, licence_id: int | None, fields: dict[str, Any], entry: Any) -> dict[str, Any]:
        state = self.halo
        if licence_id is None:
            record = state.add_licence(
                state.next_licence_id,
                fields["client_id"],
                str(fields.get("name", "")),
                0,
                start=state.today,
            )
            state.next_licence_id += 1
            record.update(fields)
            state.creates.append(dict(record))
            return dict(record)
        record = state.licences[licence_id]
        before = dict(record)
        record.update(fields)  # only the fields sent
        record["client_name"] = state.clients[record["client_id"]]["name"]
        state.updates.append(
            {"licence_id": licence_id, "body": entry, "before": before, "after": dict(record)}
        )
        return dict(record)

    def _concurrent(self, licence_id: int, moment: str) -> None:
        state = self.halo
        with state.lock:
            write = state.take_concurrent(licence_id, moment)
            licence = state.licences.get(licence_id)
            if write is not None and licence is not None:
                licence["count"] = write.count


def _content_type(handler: BaseHandler) -> str:
    return (handler.header("Content-Type") or "").split(";")[0].strip().lower()


# --- parameters ------------------------------------------------------------------------------


def _params(query: str) -> dict[str, str]:
    parsed = parse_qs(query, keep_blank_values=True)
    params: dict[str, str] = {}
    for key, values in parsed.items():
        name = key.lower()
        if name in params or len(values) > 1:
            raise _bad(f"Parameter {key!r} is given more than once.")
        params[name] = values[0]
    return params


def _only(params: dict[str, str], allowed: set[str]) -> None:
    unknown = set(params) - allowed
    if unknown:
        raise _bad(f"Parameter(s) not supported by the sandbox: {', '.join(sorted(unknown))}.")


def _no_params(params: dict[str, str]) -> None:
    _only(params, set())


def _bool_param(params: dict[str, str], name: str) -> bool:
    text = params.get(name, "false").lower()
    if text not in ("true", "false"):
        raise _bad(f"{name} must be true or false, not {params[name]!r}.")
    return text == "true"


def _int_param(params: dict[str, str], name: str, default: int, *, low: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or int(text) < low:
        raise _bad(f"{name} must be a whole number from {low}, not {text!r}.")
    return int(text)


def _paged(records: list[dict[str, Any]], params: dict[str, str]) -> list[dict[str, Any]]:
    """The records of the page asked for (all of them without ``pageinate=true``)."""
    if not _bool_param(params, "pageinate"):
        if "page_size" in params or "page_no" in params:
            raise _bad("page_size and page_no need pageinate=true.")
        return records
    size = _int_param(params, "page_size", DEFAULT_PAGE_SIZE, low=1)
    if size > MAX_PAGE_SIZE:
        raise _bad(f"page_size cannot be more than {MAX_PAGE_SIZE} (got {size}).")
    page = _int_param(params, "page_no", 1, low=1)
    return records[(page - 1) * size : page * size]


def _page(records: list[dict[str, Any]], params: dict[str, str], key: str) -> Reply:
    items = _paged(records, params)
    return json_reply(200, {"record_count": len(records), key: [dict(r) for r in items]})


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise HaloError(405, {"errors": [f"Method {method} is not allowed here."]})


def _get(table: dict[int, dict[str, Any]], segment: str, what: str) -> dict[str, Any]:
    text = segment.lstrip("-")
    record = table.get(int(segment)) if text.isascii() and text.isdigit() else None
    if record is None:
        raise HaloError(404, f"{what} {segment} not found.")
    return record
