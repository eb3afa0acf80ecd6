"""Loopback simulators of the Autotask REST API and the INFIMA Reporting API.

``Sandbox`` runs both on 127.0.0.1 (random ports) for the ``demo`` command, end-to-end
tests and benchmarks::

    with Sandbox() as sandbox:
        requests.get(sandbox.zone_url, params={"user": sandbox.username})
        sandbox.faults.add("ContractServiceAdjustments", "apply-then-drop")
        sandbox.units_on(data.ACME_CONTRACT_SERVICE_ID, date.today().replace(day=1))

Seed IDs are constants in ``infima_autotask.sandbox.data``. Tenant behaviour is switched on
``sandbox.state``: ``tenant_timezone`` and ``date_rule`` (how an adjustment's effectiveDate
becomes a date), ``refuse_duplicate_dates`` and ``null_item_id``.
"""

from __future__ import annotations

import secrets
import string
import threading
from datetime import date
from types import TracebackType
from typing import Any

from . import data
from ._http import Fault, Faults, RequestRecord, SandboxServer
from .autotask import AutotaskHandler, InFlight, units_on
from .data import InfimaClient, SandboxState
from .infima import InfimaHandler

__all__ = [
    "Fault",
    "Faults",
    "InfimaClient",
    "RequestRecord",
    "Sandbox",
    "SandboxState",
    "data",
]


def _tracking_identifier() -> str:
    # Autotask generates a 27-character code for a custom integration.
    alphabet = string.ascii_uppercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(27))


class Sandbox:
    """Both simulated APIs, their data, injected faults and a request log."""

    username: str = "sync-api@sandbox.example"

    def __init__(
        self, *, today: date | None = None, latency: float = 0.0, seed: bool = True
    ) -> None:
        self.secret = secrets.token_urlsafe(24)
        self.integration_code = _tracking_identifier()
        self.api_key = secrets.token_urlsafe(32)
        self.latency = latency
        self.state = SandboxState(today=today or date.today())
        if seed:
            data.seed(self.state)
        self.faults = Faults()
        self.requests: list[RequestRecord] = []
        self.zone_url = ""
        self.autotask_url = ""
        self.infima_url = ""
        self._log_lock = threading.Lock()
        self._in_flight = InFlight()
        self._servers: list[SandboxServer] = []
        self._threads: list[threading.Thread] = []

    def __repr__(self) -> str:
        return f"Sandbox(autotask_url={self.autotask_url!r}, infima_url={self.infima_url!r})"

    def start(self) -> Sandbox:
        """Start both servers on random loopback ports; returns self."""
        if self._servers:
            return self
        autotask = SandboxServer(AutotaskHandler, self)
        infima = SandboxServer(InfimaHandler, self)
        self._servers = [autotask, infima]
        base = f"http://127.0.0.1:{autotask.port}/atservicesrest/"
        self.autotask_url = base
        self.zone_url = f"{base}v1.0/zoneInformation"
        self.infima_url = f"http://127.0.0.1:{infima.port}"
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
        """Stop both servers (a held write is released first)."""
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

    def _record(self, record: RequestRecord) -> None:
        with self._log_lock:
            self.requests.append(record)
