"""Loopback simulators of the Autotask REST API, the INFIMA Reporting API, ConnectWise PSA
and HaloPSA.

``Sandbox`` runs them on 127.0.0.1 (random ports) for the ``demo`` command, end-to-end
tests and benchmarks::

    with Sandbox() as sandbox:
        requests.get(sandbox.zone_url, params={"user": sandbox.username})
        sandbox.faults.add("ContractServiceAdjustments", "apply-then-drop")
        sandbox.units_on(data.ACME_CONTRACT_SERVICE_ID, date.today().replace(day=1))
        sandbox.faults.add("cw:write", "apply-then-drop")
        sandbox.cw.quantity(cw_data.JUNIPER_ADDITION_ID)

ConnectWise is reached at ``cw_site`` with ``cw_company_id``, ``cw_public_key``,
``cw_private_key`` and ``cw_client_id``; its data and knobs are ``sandbox.cw``
(``ConnectWiseState``; seed IDs in ``infima_autotask.sandbox.cw_data``).

HaloPSA is reached at ``halo_url`` with ``halo_client_id`` and ``halo_client_secret`` (and
``halo_tenant`` when ``sandbox.halo.hosted`` is on); its data and knobs are ``sandbox.halo``
(``HaloState``; seed IDs in ``infima_autotask.sandbox.halo_data``).

Seed IDs are constants in ``infima_autotask.sandbox.data``. Tenant behaviour is switched on
``sandbox.state``: ``tenant_timezone`` and ``date_rule`` (how an adjustment's effectiveDate
becomes a date), ``refuse_duplicate_dates`` and ``null_item_id``.
"""

from __future__ import annotations

import secrets
import string
import threading
import uuid
from datetime import date
from types import TracebackType
from typing import Any

from . import cw_data, data, halo_data
from ._http import Fault, Faults, RequestRecord, SandboxServer
from .autotask import AutotaskHandler, InFlight, units_on
from .connectwise import ConnectWiseHandler
from .cw_data import ConnectWiseState
from .data import InfimaClient, SandboxState
from .halo import HaloHandler
from .halo_data import HaloState
from .infima import InfimaHandler

__all__ = [
    "ConnectWiseState",
    "Fault",
    "Faults",
    "HaloState",
    "InfimaClient",
    "RequestRecord",
    "Sandbox",
    "SandboxState",
    "cw_data",
    "data",
    "halo_data",
]


def _tracking_identifier() -> str:
    # Autotask generates a 27-character code for a custom integration.
    alphabet = string.ascii_uppercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(27))


def _api_member_key() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(16))


class Sandbox:
    """The simulated APIs, their data, injected faults and a request log."""

    username: str = "sync-api@sandbox.example"
    cw_company_id: str = cw_data.COMPANY_ID

    def __init__(
        self, *, today: date | None = None, latency: float = 0.0, seed: bool = True
    ) -> None:
        self.secret = secrets.token_urlsafe(24)
        self.integration_code = _tracking_identifier()
        self.api_key = secrets.token_urlsafe(32)
        self.latency = latency
        self.state = SandboxState(today=today or date.today())
        # ConnectWise: an API member's key pair (16 letters and digits each, as ConnectWise
        # makes them) and the MSP's own clientId (a GUID).
        self.cw_public_key = _api_member_key()
        self.cw_private_key = _api_member_key()
        self.cw_client_id = str(uuid.uuid4())
        self.cw = ConnectWiseState(today=self.state.today)
        # HaloPSA: an API application's client id (a GUID) and secret (48 hex digits; not
        # token_urlsafe, whose values the demo's secret scan hands out in a fixed order).
        self.halo = HaloState(
            today=self.state.today,
            client_id=str(uuid.uuid4()),
            client_secret=secrets.token_hex(24),
        )
        if seed:
            data.seed(self.state)
            cw_data.seed(self.cw)
            halo_data.seed(self.halo)
        self.faults = Faults()
        self.requests: list[RequestRecord] = []
        self.zone_url = ""
        self.autotask_url = ""
        self.infima_url = ""
        self.cw_site = ""
        self.halo_url = ""
        self._log_lock = threading.Lock()
        self._in_flight = InFlight()
        self._servers: list[SandboxServer] = []
        self._threads: list[threading.Thread] = []

    def __repr__(self) -> str:
        return (
            f"Sandbox(autotask_url={self.autotask_url!r}, infima_url={self.infima_url!r}, "
            f"cw_site={self.cw_site!r}, halo_url={self.halo_url!r})"
        )

    @property
    def halo_client_id(self) -> str:
        """The Halo API application's client id."""
        return self.halo.client_id

    @property
    def halo_client_secret(self) -> str:
        """The Halo API application's client secret."""
        return self.halo.client_secret

    @property
    def halo_tenant(self) -> str:
        """The hosted tenant name (the token URL needs it when ``halo.hosted`` is on)."""
        return self.halo.tenant

    @property
    def cw_url(self) -> str:
        """The ConnectWise API base, ``{cw_site}/{codebase}apis/3.0/`` (follows the codebase)."""
        with self.cw.lock:
            return f"{self.cw_site}/{self.cw.codebase}apis/3.0/"

    def start(self) -> Sandbox:
        """Start the servers on random loopback ports; returns self."""
        if self._servers:
            return self
        autotask = SandboxServer(AutotaskHandler, self)
        infima = SandboxServer(InfimaHandler, self)
        connectwise = SandboxServer(ConnectWiseHandler, self)
        halo = SandboxServer(HaloHandler, self)
        self._servers = [autotask, infima, connectwise, halo]
        base = f"http://127.0.0.1:{autotask.port}/atservicesrest/"
        self.autotask_url = base
        self.zone_url = f"{base}v1.0/zoneInformation"
        self.infima_url = f"http://127.0.0.1:{infima.port}"
        self.cw_site = f"http://127.0.0.1:{connectwise.port}"
        self.halo_url = f"http://127.0.0.1:{halo.port}"
        for server in self._servers:
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.02},
                name=f"sandbox-{server.port}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop the servers (a held write is released first)."""
        self.faults.release()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers = []
        self._threads = []

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def adjustments(self) -> list[dict[str, Any]]:
        """Every ContractServiceAdjustments create applied so far, in order."""
        with self.state.lock:
            return [dict(a) for a in self.state.adjustments]

    def units_on(self, contract_service_id: int, day: date) -> int | None:
        """Units of the row covering ``day`` (SPEC §8's row rule), or None when none does."""
        return units_on(self.state, contract_service_id, day)

    def generate(
        self,
        n: int,
        *,
        changed_fraction: float = 0.3,
        first_client_id: int = 1000,
        period_type: int = data.MONTHLY,
        start_day: int = 1,
    ) -> list[dict[str, Any]]:
        """Add ``n`` clients with accounts, Recurring Service contracts, contract services,
        units rows and INFIMA users, ``round(n * changed_fraction)`` of them with an active
        count different from their units; returns their SPEC §6 mappings.

        Contracts are billed every ``period_type`` period (``data.MONTHLY``, ``QUARTERLY``,
        ``SEMI_ANNUAL``, ``YEARLY``) from ``start_day`` of a month a year or more ago.
        """
        return data.generate(
            self.state,
            n,
            changed_fraction=changed_fraction,
            first_client_id=first_client_id,
            period_type=period_type,
            start_day=start_day,
        )

    def generate_connectwise(
        self, n: int, *, changed_fraction: float = 0.3, first_client_id: int = 5000
    ) -> list[dict[str, Any]]:
        """Add ``n`` ConnectWise companies, agreements and INFIMA-product additions with
        matching INFIMA clients, ``round(n * changed_fraction)`` of them with an active count
        different from the addition's quantity; returns their SPEC §10 mappings."""
        return cw_data.generate(
            self.cw,
            self.state,
            n,
            changed_fraction=changed_fraction,
            first_client_id=first_client_id,
        )

    def generate_halo(
        self, n: int, *, changes: int | None = None, first_client_id: int = 8000
    ) -> list[dict[str, Any]]:
        """Add ``n`` Halo clients, each with an INFIMA subscription billed by a recurring-invoice
        line, with matching INFIMA clients, ``changes`` of them (None: 30%) with an active count
        different from the subscription's; returns their SPEC §10 mappings."""
        return halo_data.generate(
            self.halo, self.state, n, changes=changes, first_client_id=first_client_id
        )

    def _record(self, record: RequestRecord) -> None:
        with self._log_lock:
            self.requests.append(record)
