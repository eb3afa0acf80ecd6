"""The HaloPSA simulator's data: seed clients, subscriptions (``SoftwareLicence``) and
recurring invoices, the API application's credentials, tokens and the rolling rate window.

Records are stored as they travel on the wire (Halo's snake_case names, dates as
``YYYY-MM-DDT00:00:00``). Dates are relative to ``today`` (the sandbox's). Seed IDs (module
constants below):

=====================  ======  =======  =====================================================
client                 client  licence  notes
=====================  ======  =======  =====================================================
Kestrel Law LLP        45      9127     INFIMA Security Awareness, 12: line 501 of recurring
                                        invoice -94 takes its quantity from it; INFIMA client
                                        110 (14 active, 1 inactive): the demo's mapping
                               9128     Microsoft 365 Business Premium, 12 (line 502 of -94)
Osprey Vets            46      9130     INFIMA Security Awareness, 7: on NO recurring-invoice
                                        line (the "will not be billed" warning)
                               9131     Microsoft 365 Business Premium, 7 (line 511 of -95)
Pelican Freight        47      9140     INFIMA Security Awareness, 9: inactive, ended last month
                               9141     the same name, 9, active from this month's 1st (the
                                        successor; line 521 of -96 takes its quantity from it)
Quail Architects       48      9150     INFIMA Security Awareness, 5 } two active INFIMA-named
                               9151     INFIMA Security Awareness, 6 } subscriptions (ambiguity)
Kestrel Law LLP (old)  49      (inactive client, no subscriptions: ``includeinactive`` shows it)
=====================  ======  =======  =====================================================

Line 521 takes its quantity through ``quantity_licences``, the others through
``quantity_subscriptions``; a line's ``qty_order`` is the sum of the counts it takes (Halo
calculates it when invoicing).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from .data import KESTREL_LAW_CLIENT_ID, SandboxState, add_months, month_end

KESTREL_CLIENT_ID = 45
OSPREY_CLIENT_ID = 46
PELICAN_CLIENT_ID = 47
QUAIL_CLIENT_ID = 48
KESTREL_OLD_CLIENT_ID = 49  # inactive

INFIMA_LICENCE_NAME = "INFIMA Security Awareness"
OTHER_LICENCE_NAME = "Microsoft 365 Business Premium"
KESTREL_LICENCE_ID = 9127  # attached to line 501 of recurring invoice -94
KESTREL_M365_LICENCE_ID = 9128
OSPREY_LICENCE_ID = 9130  # on no recurring-invoice line
OSPREY_M365_LICENCE_ID = 9131
PELICAN_OLD_LICENCE_ID = 9140  # inactive, ended last month
PELICAN_LICENCE_ID = 9141  # its successor
QUAIL_FIRST_LICENCE_ID = 9150
QUAIL_SECOND_LICENCE_ID = 9151

KESTREL_INVOICE_ID = -94
OSPREY_INVOICE_ID = -95
PELICAN_INVOICE_ID = -96
KESTREL_LINE_ID = 501

INFIMA_ITEM_CODE = "INFIMA-SAT"
INFIMA_PRICE = 3.5
INFIMA_MONTHLY_COST = 1.25

TENANT = "sandboxmsp"  # the hosted tenant name (``?tenant=`` when ``hosted`` is on)
# What the API application may be granted (INFIMA's setup guide asks for these three).
APPLICATION_SCOPES = frozenset({"read:customers", "read:invoices", "edit:softwarelicensing"})
TOKEN_LIFETIME = 3600
RATE_LIMIT = 300  # requests per rolling window (hosted Halo)
RATE_WINDOW = 300.0  # seconds

_FIRST_NEW_LICENCE_ID = 20_001  # what a POST without id creates
# ``generate``'s ids: far from the seed's and from what a POST would create.
_GEN_CLIENT_BASE = 800_000
_GEN_LICENCE_BASE = 900_000
_GEN_INVOICE_BASE = -800_000
_GEN_LINE_BASE = 1_000_000

# Every field a LICENCE carries on the wire (``client_name`` follows ``client_id``).
LICENCE_FIELDS = (
    "id",
    "client_id",
    "client_name",
    "name",
    "type",
    "count",
    "status",
    "is_active",
    "deleted",
    "start_date",
    "end_date",
    "billing_cycle",
    "price",
    "monthly_cost",
)
CONCURRENT_MOMENTS = ("after-get", "before-post", "after-post")


def wire_date(day: date | None) -> str | None:
    """``day`` as Halo writes a date."""
    return None if day is None else f"{day.isoformat()}T00:00:00"


@dataclass(frozen=True)
class IssuedToken:
    """An access token: the scopes granted and when it expires (``HaloState.clock`` time)."""

    scopes: frozenset[str]
    expires: float


@dataclass
class ConcurrentWrite:
    """Another writer (INFIMA's own nightly sync) setting a subscription's count.

    ``moment``: ``after-get`` (right after the next read showing that licence is answered:
    between the tool's read and its write), ``before-post`` (just before the next POST of it
    is applied) or ``after-post`` (just after it was applied and answered).
    """

    licence_id: int
    count: int
    moment: str


@dataclass
class HaloState:
    """Everything the Halo simulator serves. Hold ``lock`` while reading or changing.

    Knobs: ``client_id``/``client_secret`` (the API application's), ``scopes`` (what the
    application may be granted; ``all`` grants anything asked), ``hosted`` (the token URL
    then needs ``?tenant=`` + ``tenant``), ``token_lifetime`` (seconds), ``limit`` requests
    per ``window`` seconds (None: no limit) measured on ``clock`` (tests move it instead of
    waiting), ``retry_after`` on a 429 (``"window"``: seconds until the oldest counted request
    leaves the window; a number: that; None: no header). Recorded: ``creates`` (every licence
    a POST created: the tool must never), ``updates`` (every POST entry applied, with the
    record before and after).
    """

    today: date
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    scopes: frozenset[str] = APPLICATION_SCOPES
    hosted: bool = False
    tenant: str = TENANT
    token_lifetime: int = TOKEN_LIFETIME
    limit: int | None = RATE_LIMIT
    window: float = RATE_WINDOW
    retry_after: float | Literal["window"] | None = "window"
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    clients: dict[int, dict[str, Any]] = field(default_factory=dict)
    licences: dict[int, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[int, dict[str, Any]] = field(default_factory=dict)
    tokens: dict[str, IssuedToken] = field(default_factory=dict, repr=False)
    creates: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    concurrent: list[ConcurrentWrite] = field(default_factory=list)
    served: deque[float] = field(default_factory=deque, repr=False)
    next_licence_id: int = _FIRST_NEW_LICENCE_ID
    next_invoice_id: int = -101  # recurring invoices carry negative ids
    next_line_id: int = 601
    next_quantity_id: int = 7101
    generated: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def this_month(self) -> date:
        return self.today.replace(day=1)

    # --- tokens and the rate window ---------------------------------------------------------

    def issue_token(self, scopes: frozenset[str]) -> str:
        """A new access token with those scopes, valid for ``token_lifetime`` seconds."""
        with self.lock:
            token = secrets.token_urlsafe(32)
            self.tokens[token] = IssuedToken(scopes, self.clock() + self.token_lifetime)
            return token

    def token_scopes(self, token: str) -> frozenset[str] | None:
        """The scopes of a known, unexpired token; None otherwise."""
        with self.lock:
            issued = self.tokens.get(token)
            if issued is None or issued.expires <= self.clock():
                return None
            return issued.scopes

    def expire_tokens(self) -> None:
        """Make every token issued so far unknown (as a restart of Halo's auth server would)."""
        with self.lock:
            self.tokens.clear()

    def _slide(self, now: float) -> None:
        while self.served and self.served[0] <= now - self.window:
            self.served.popleft()

    def requests_in_window(self) -> int:
        """Requests served in the rolling window ending now (a 429 does not count)."""
        with self.lock:
            self._slide(self.clock())
            return len(self.served)

    def admit(self) -> float | None:
        """Count one request; returns None when served, else the seconds until a slot frees."""
        with self.lock:
            now = self.clock()
            self._slide(now)
            if self.limit is not None and len(self.served) >= self.limit:
                return max(0.0, self.served[0] + self.window - now)
            self.served.append(now)
            return None

    # --- concurrent writer ------------------------------------------------------------------

    def concurrent_write(self, licence_id: int, count: int, moment: str) -> None:
        """Let another writer set a subscription's count once, at ``moment``."""
        if moment not in CONCURRENT_MOMENTS:
            raise ValueError(f"moment must be one of {CONCURRENT_MOMENTS}, not {moment!r}")
        with self.lock:
            if licence_id not in self.licences:
                raise ValueError(f"no licence {licence_id}")
            self.concurrent.append(ConcurrentWrite(licence_id, int(count), moment))

    def take_concurrent(self, licence_id: int, moment: str) -> ConcurrentWrite | None:
        """Consume the first concurrent write of that licence at that moment, if any."""
        with self.lock:
            for write in self.concurrent:
                if write.licence_id == licence_id and write.moment == moment:
                    self.concurrent.remove(write)
                    return write
        return None

    def count(self, licence_id: int) -> int:
        """A subscription's current count (KeyError for an unknown licence)."""
        with self.lock:
            return int(self.licences[licence_id]["count"])

    # --- building records ------------------------------------------------------------------

    def add_client(self, client_id: int, name: str, *, inactive: bool = False) -> dict[str, Any]:
        with self.lock:
            record = {"id": client_id, "name": name, "inactive": inactive, "toplevel_id": 1}
            self.clients[client_id] = record
            return record

    def add_licence(
        self,
        licence_id: int,
        client_id: int,
        name: str,
        count: int,
        *,
        active: bool = True,
        start: date | None = None,
        end: date | None = None,
        price: float = INFIMA_PRICE,
        monthly_cost: float = INFIMA_MONTHLY_COST,
    ) -> dict[str, Any]:
        """Add a subscription (``type`` 1, monthly, as live scripts create them)."""
        with self.lock:
            record: dict[str, Any] = {
                "id": licence_id,
                "client_id": client_id,
                "client_name": self.clients[client_id]["name"],
                "name": name,
                "type": 1,
                "count": count,
                "status": "Active" if active else "Inactive",
                "is_active": active,
                "deleted": False,
                "start_date": wire_date(start or add_months(self.this_month, -12)),
                "end_date": wire_date(end),
                "billing_cycle": "Monthly",
                "price": price,
                "monthly_cost": monthly_cost,
            }
            self.licences[licence_id] = record
            return record

    def add_recurring_invoice(
        self,
        client_id: int,
        *licence_ids: int,
        invoice_id: int | None = None,
        via: str = "subscriptions",
    ) -> dict[str, Any]:
        """Add a recurring invoice (a new negative id unless given) with one line per licence,
        each taking its quantity from that licence (through ``quantity_subscriptions`` or
        ``quantity_licences``)."""
        with self.lock:
            if invoice_id is None:
                invoice_id = self.next_invoice_id
                self.next_invoice_id -= 1
            record: dict[str, Any] = {
                "id": invoice_id,
                "client_id": client_id,
                "client_name": self.clients[client_id]["name"],
                "invoice_date": wire_date(add_months(self.this_month, 1)),
                "lines": [],
            }
            self.invoices[invoice_id] = record
            for licence_id in licence_ids:
                self.add_invoice_line(invoice_id, licence_id, via=via)
            return record

    def add_invoice_line(
        self,
        invoice_id: int,
        licence_id: int | None,
        *,
        via: str = "subscriptions",
        item_code: str | None = None,
        qty: int = 1,
        line_id: int | None = None,
    ) -> dict[str, Any]:
        """Add a line to a recurring invoice; with ``licence_id`` its quantity comes from that
        licence, else it is ``qty``."""
        if via not in ("subscriptions", "licences"):
            raise ValueError("via must be 'subscriptions' or 'licences'")
        with self.lock:
            if line_id is None:
                line_id = self.next_line_id
                self.next_line_id += 1
            sources: list[dict[str, Any]] = []
            if licence_id is not None:
                licence = self.licences[licence_id]
                sources.append(
                    {
                        "id": self.next_quantity_id,
                        "invoice_line_id": line_id,
                        "kind": 0,
                        "type_id": licence_id,
                        "type_name": licence["name"],
                    }
                )
                self.next_quantity_id += 1
                code = item_code or (INFIMA_ITEM_CODE if "INFIMA" in licence["name"] else "M365")
            else:
                code = item_code or "SERVICE"
            line: dict[str, Any] = {
                "id": line_id,
                "item_code": code,
                "qty_order": qty,
                "unit_price": INFIMA_PRICE,
                "isinactive": False,
                "quantity_subscriptions": sources if via == "subscriptions" else [],
                "quantity_licences": sources if via == "licences" else [],
            }
            self.invoices[invoice_id]["lines"].append(line)
            return line

    def wire_invoice(self, invoice: dict[str, Any], *, lines: bool) -> dict[str, Any]:
        """An invoice as served: lines (when asked) with ``qty_order`` calculated."""
        with self.lock:
            answer = {k: v for k, v in invoice.items() if k != "lines"}
            if lines:
                answer["lines"] = [self._wire_line(line) for line in invoice["lines"]]
            return answer

    def _wire_line(self, line: dict[str, Any]) -> dict[str, Any]:
        sources = [*line["quantity_subscriptions"], *line["quantity_licences"]]
        answer = {
            **line,
            "quantity_subscriptions": [dict(s) for s in line["quantity_subscriptions"]],
            "quantity_licences": [dict(s) for s in line["quantity_licences"]],
        }
        if sources:
            answer["qty_order"] = sum(
                self.licences[s["type_id"]]["count"]
                for s in sources
                if s["type_id"] in self.licences
            )
        return answer


def seed(state: HaloState) -> None:
    """Fill ``state`` with the clients, subscriptions and invoices of the module docstring."""
    this = state.this_month
    previous = add_months(this, -1)
    with state.lock:
        state.add_client(KESTREL_CLIENT_ID, "Kestrel Law LLP")
        state.add_client(OSPREY_CLIENT_ID, "Osprey Vets")
        state.add_client(PELICAN_CLIENT_ID, "Pelican Freight")
        state.add_client(QUAIL_CLIENT_ID, "Quail Architects")
        state.add_client(KESTREL_OLD_CLIENT_ID, "Kestrel Law LLP (old)", inactive=True)

        state.add_licence(KESTREL_LICENCE_ID, KESTREL_CLIENT_ID, INFIMA_LICENCE_NAME, 12)
        _other(state, KESTREL_M365_LICENCE_ID, KESTREL_CLIENT_ID, 12)
        state.add_recurring_invoice(KESTREL_CLIENT_ID, invoice_id=KESTREL_INVOICE_ID)
        state.add_invoice_line(KESTREL_INVOICE_ID, KESTREL_LICENCE_ID, line_id=KESTREL_LINE_ID)
        state.add_invoice_line(KESTREL_INVOICE_ID, KESTREL_M365_LICENCE_ID, line_id=502)

        state.add_licence(OSPREY_LICENCE_ID, OSPREY_CLIENT_ID, INFIMA_LICENCE_NAME, 7)
        _other(state, OSPREY_M365_LICENCE_ID, OSPREY_CLIENT_ID, 7)
        state.add_recurring_invoice(OSPREY_CLIENT_ID, invoice_id=OSPREY_INVOICE_ID)
        state.add_invoice_line(OSPREY_INVOICE_ID, OSPREY_M365_LICENCE_ID, line_id=511)

        state.add_licence(
            PELICAN_OLD_LICENCE_ID,
            PELICAN_CLIENT_ID,
            INFIMA_LICENCE_NAME,
            9,
            active=False,
            start=add_months(this, -13),
            end=month_end(previous),
        )
        state.add_licence(PELICAN_LICENCE_ID, PELICAN_CLIENT_ID, INFIMA_LICENCE_NAME, 9, start=this)
        state.add_recurring_invoice(PELICAN_CLIENT_ID, invoice_id=PELICAN_INVOICE_ID)
        state.add_invoice_line(PELICAN_INVOICE_ID, PELICAN_LICENCE_ID, via="licences", line_id=521)

        state.add_licence(QUAIL_FIRST_LICENCE_ID, QUAIL_CLIENT_ID, INFIMA_LICENCE_NAME, 5)
        state.add_licence(QUAIL_SECOND_LICENCE_ID, QUAIL_CLIENT_ID, INFIMA_LICENCE_NAME, 6)


def _other(state: HaloState, licence_id: int, client_id: int, count: int) -> None:
    state.add_licence(
        licence_id, client_id, OTHER_LICENCE_NAME, count, price=22.0, monthly_cost=20.6
    )


def seed_mapping(today: date | None = None) -> dict[str, Any]:
    """The demo's Halo mapping (INFIMA client 110 to Kestrel Law LLP's subscription 9127), in
    SPEC §10's terms. ``today`` is accepted as ``cw_data.seed_mapping`` takes it; Halo's
    names carry no year."""
    del today
    return {
        "client_id": KESTREL_LAW_CLIENT_ID,
        "client_name": "Kestrel Law",
        "psa": "halo",
        "account_id": KESTREL_CLIENT_ID,
        "account_name": "Kestrel Law LLP",
        "subscription_id": KESTREL_LICENCE_ID,
        "subscription_name": INFIMA_LICENCE_NAME,
    }


def generate(
    state: HaloState,
    infima: SandboxState,
    n: int,
    *,
    changes: int | None = None,
    first_client_id: int = 8000,
) -> list[dict[str, Any]]:
    """Add ``n`` Halo clients, each with one INFIMA subscription billed by a recurring-invoice
    line, and a matching INFIMA client in ``infima``; ``changes`` of them (None: 30%, as the
    other generators) have an active count different from the subscription's. Returns their
    SPEC §10 mappings. Raises ValueError for a bad argument or a client id already used.
    """
    changed_total = round(n * 0.3) if changes is None else changes
    if n < 0 or not 0 <= changed_total <= n:
        raise ValueError("n must be >= 0 and changes between 0 and n")
    mappings: list[dict[str, Any]] = []
    with state.lock, infima.lock:
        clashes = set(range(first_client_id, first_client_id + n)) & infima.infima_clients.keys()
        if clashes:
            raise ValueError(f"INFIMA client ids already used: {sorted(clashes)[:5]}")
        for i in range(n):
            k = state.generated + i
            client_id = first_client_id + i
            name = f"Halo Client {k + 1}"
            halo_id = _GEN_CLIENT_BASE + k
            licence_id = _GEN_LICENCE_BASE + k
            count = 1 + (k * 37) % 240
            # Spread the changed clients evenly over the range; small rises only.
            changed = (i + 1) * changed_total // n > i * changed_total // n
            active = count + 1 + k % 3 if changed else count
            state.add_client(halo_id, name)
            state.add_licence(licence_id, halo_id, INFIMA_LICENCE_NAME, count)
            state.add_recurring_invoice(halo_id, invoice_id=_GEN_INVOICE_BASE - k)
            state.add_invoice_line(_GEN_INVOICE_BASE - k, licence_id, line_id=_GEN_LINE_BASE + k)
            infima.add_infima_client(client_id, name, active, k % 3)
            mappings.append(
                {
                    "client_id": client_id,
                    "client_name": name,
                    "psa": "halo",
                    "account_id": halo_id,
                    "account_name": name,
                    "subscription_id": licence_id,
                    "subscription_name": INFIMA_LICENCE_NAME,
                }
            )
        state.generated += n
    return mappings
