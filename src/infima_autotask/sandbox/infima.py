"""A loopback simulator of the INFIMA Reporting API (``INFIMA_API.md``).

``X-API-Key`` on every request; ``/v1/partner``, ``/v1/clients`` and
``/v1/clients/{id}/users`` paged by ``limit`` (1-50, default 20) and ``offset``. Users are
made on the fly from each client's counts: the first ``active`` carry ``status: active``,
the rest ``inactive`` (no ``status`` at all when the client's ``no_status`` flag is set).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from ._http import BaseHandler, Reply, fault_reply, json_reply
from .data import InfimaClient

DEFAULT_LIMIT = 20
MAX_LIMIT = 50

_FIRST = ("Alex", "Blake", "Casey", "Dana", "Emery", "Finley", "Gray", "Harper", "Jordan", "Kai")
_LAST = ("Nguyen", "Okafor", "Patel", "Quinn", "Rossi", "Silva", "Tanaka", "Ueda", "Varga", "Weiss")


def make_user(client: InfimaClient, index: int) -> dict[str, Any]:
    """User number ``index`` (0-based) of ``client``."""
    first = _FIRST[index % len(_FIRST)]
    last = _LAST[(index // len(_FIRST)) % len(_LAST)]
    user: dict[str, Any] = {
        "id": client.id * 100_000 + index + 1,
        "email": f"{first.lower()}.{last.lower()}{index + 1}@client{client.id}.example",
        "first_name": first,
        "last_name": last,
        "department": "Operations",
        "role": "User",
        "created_date": client.created_date,
    }
    if not client.no_status:
        user["status"] = "active" if index < client.active else "inactive"
    return user


def client_item(client: InfimaClient) -> dict[str, Any]:
    """A client as ``/v1/clients`` lists it."""
    return {
        "id": client.id,
        "client_name": client.client_name,
        "created_date": client.created_date,
        "phishing_click_rate_total": 4.5,
        "phishing_click_rate_last_year": 3.9,
        "training_on_track_rate": 87.5,
    }


class _BadRequest(Exception):
    pass


def _paging(query: str) -> tuple[int, int]:
    params = parse_qs(query)
    values: list[int] = []
    for name, default in (("limit", DEFAULT_LIMIT), ("offset", 0)):
        given = params.get(name)
        if not given:
            values.append(default)
            continue
        try:
            values.append(int(given[0]))
        except ValueError:
            raise _BadRequest(f"{name} must be an integer") from None
    limit, offset = values
    if not 1 <= limit <= MAX_LIMIT:
        raise _BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    if offset < 0:
        raise _BadRequest("offset must be 0 or more")
    return limit, offset


class InfimaHandler(BaseHandler):
    """Answers INFIMA Reporting API requests from the sandbox state."""

    service = "infima"

    def dispatch(self, method: str, path: str, query: str, body: Any, raw: bytes) -> Reply:
        sandbox = self.sandbox
        self.hold_for(sandbox.latency)
        if sandbox.faults.infima_down:
            return json_reply(503, {"message": "Service Unavailable"})
        if self.header("X-API-Key") != sandbox.api_key:
            return json_reply(401, {"message": "Unauthorized"})
        segments = [s for s in path.split("/") if s]
        if len(segments) < 2 or segments[0] != "v1":
            return json_reply(404, {"message": "Not Found"})
        client_id: int | None = None
        if segments[1:] == ["partner"]:
            endpoint = "infima:partner"
        elif segments[1:] == ["clients"]:
            endpoint = "infima:clients"
        elif len(segments) == 4 and segments[1] == "clients" and segments[3] == "users":
            if not segments[2].isdigit():
                return json_reply(404, {"message": "Client not found"})
            endpoint = "infima:users"
            client_id = int(segments[2])
        else:
            return json_reply(404, {"message": "Not Found"})
        if method != "GET":
            return json_reply(405, {"message": "Method Not Allowed"})
        fault = sandbox.faults.take(endpoint, client_id=client_id)
        if fault is not None:
            if fault.kind != "timeout":
                return fault_reply(fault)
            self.hold_for(fault.retry_after if fault.retry_after is not None else 2.0)
        try:
            return self._answer(endpoint, client_id, query)
        except _BadRequest as exc:
            return json_reply(400, {"message": str(exc)})

    def _answer(self, endpoint: str, client_id: int | None, query: str) -> Reply:
        state = self.sandbox.state
        if endpoint == "infima:partner":
            return json_reply(
                200,
                {
                    "partner_name": state.partner_name,
                    "created_date": "2023-02-04T18:37:01Z",
                    "admins": [],
                },
            )
        limit, offset = _paging(query)
        with state.lock:
            if endpoint == "infima:clients":
                clients = sorted(state.infima_clients.values(), key=lambda c: c.id)
                items = [client_item(c) for c in clients[offset : offset + limit]]
                return json_reply(200, {"items": items, "total": len(clients)})
            client = state.infima_clients.get(client_id or 0)
            if client is None:
                return json_reply(404, {"message": "Client not found"})
            total = client.active + client.inactive
            users = [make_user(client, i) for i in range(offset, min(offset + limit, total))]
        return json_reply(200, {"items": users})
