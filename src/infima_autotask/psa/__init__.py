"""What the sync engine needs from a PSA, whichever it is (SPEC §10).

The engine speaks only in targets: "make this line show T units (at this unit cost)". A
backend turns that into its own request (Autotask: a signed delta from a fresh read;
ConnectWise and HaloPSA: an absolute count), sends it once, and reads lines back so the engine
can judge where a write landed with one shared rule (:class:`~infima_autotask.landing.Landing`).

Autotask keeps a units row per billing period and has its own batched reads, threshold and
dating (``runner``). The PSAs whose line holds one current count (:class:`CountPsa`) all go
through the same steps, whichever PSA it is: read the mapped lines in batches, plan each
mapping purely, settle a killed run's intents from what the line shows, write through the
shared :class:`~infima_autotask.writer.Writer`, and revert by setting the count back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Protocol

from infima_autotask.config import ClientMapping, SyncSettings
from infima_autotask.errors import ApiError, ApiUnavailable
from infima_autotask.http import HttpClient
from infima_autotask.landing import Landing
from infima_autotask.statuses import Outcome
from infima_autotask.sync import PlanItem, UserCount


@dataclass(frozen=True)
class Sent:
    """What one send of a write came to, as the backend understood the PSA's answer.

    ``detail``: the PSA's own reason for a rejection or an unknown outcome. ``ref``: the PSA's
    id of what was created, when it says. ``settle``: how long to let the PSA finish before
    re-reading an unknown outcome. ``repeat``: the PSA refused the write as a repeat of one
    already applied (Autotask's second adjustment on one day), which after an unknown outcome
    means the first send landed. ``halts``: a rejection that shows the run's writes would all
    go wrong (Autotask dating them into a posted period): nothing more is sent.
    """

    outcome: Outcome
    detail: str = ""
    ref: int | None = None
    settle: float = 0.0
    repeat: bool = False
    message: str = ""  # a rejection in the operator's words (default: the detail)
    halts: bool = False


class LineBackend(Protocol):
    """One PSA's side of the write path: one write per line, and reading lines back."""

    name: str  # as the operator knows it: "Autotask", "ConnectWise"

    def send(self, item: PlanItem) -> Sent:
        """Send the one request that makes ``item``'s line show its target; never retried."""
        ...

    def read_back(self, items: Sequence[PlanItem]) -> Mapping[int, object]:
        """What each item's line shows now, keyed by ``contract_service_id`` (one batch).

        Raises:
            ApiError: the read failed.
        """
        ...

    def landing(self, item: PlanItem, found: object) -> Landing:
        """Where ``item``'s write shows in what :meth:`read_back` found for its line."""
        ...

    def describe(self, item: PlanItem, found: object, state: Landing) -> str:
        """Why ``state`` is not a landed write, in the operator's words, with the fix."""
        ...


@dataclass(frozen=True)
class PlanContext:
    """What planning a count PSA's mapping needs besides the mapping and its line.

    ``day``: the month's first day; ``current``: this month's first day and ``today`` the date
    now, both in sync.timezone (a count PSA's write takes effect now: another month is held).
    """

    day: date
    current: date
    today: date
    settings: SyncSettings
    yes: bool = False


@dataclass(frozen=True)
class Shown:
    """What a count PSA's line shows now: its whole count (None: not a whole number) and the
    unit cost it carries (None where the PSA keeps none)."""

    count: int | None
    unit_cost: float | None = None


class CountPsa(Protocol):
    """A PSA whose line holds one current count (ConnectWise, HaloPSA): one object per run.

    A line is named by two ids as the history keeps them: ``contract_id`` (ConnectWise's
    agreement; 0 on Halo) and ``contract_service_id`` (the addition; the subscription).
    """

    key: str  # the config's word: "connectwise", "halo"
    name: str  # as the operator knows it

    def read(self, mappings: Sequence[ClientMapping], lines: Sequence[tuple[int, int]]) -> None:
        """Read ``mappings``' lines and the further ``lines`` (open intents, a revert's), in
        batches, and keep them for :meth:`plan` and :meth:`shown`.

        Raises:
            ApiError: a read failed.
        """
        ...

    def plan(self, mapping: ClientMapping, count: UserCount | None, ctx: PlanContext) -> PlanItem:
        """The item of one mapping from what :meth:`read` found (pure)."""
        ...

    def shown(self, contract_id: int, contract_service_id: int) -> Shown | None:
        """What a line read by :meth:`read` shows; None: the PSA has no such line."""
        ...

    def lines(self) -> LineBackend:
        """The write backend of this PSA."""
        ...


def settle_ceiling_of(http: HttpClient) -> float:
    """The longest wait for a write whose outcome is unknown (see :func:`settle_wait`)."""
    return min(http.retry.max_delay, http.timeout[1])


def settle_wait(http: HttpClient, exc: ApiError) -> float:
    """How long to let the PSA finish a write whose outcome is unknown before re-reading.

    A write that timed out, lost its connection or got a gateway error may still be running
    behind the gateway; a re-read at once would miss it and the resend would write twice. So
    wait the read loop's longest backoff, capped by the read timeout (60 s: with the 60 s
    already spent on a timeout, longer than ASP.NET's default 110 s execution timeout). A 429
    was refused before any work: only its Retry-After is honoured. A bare 500 is the server's
    own finished answer: no wait.
    """
    ceiling = settle_ceiling_of(http)
    if not isinstance(exc, ApiUnavailable):
        return 0.0
    if exc.status == 429:
        return min(exc.retry_after or 0.0, ceiling)
    if exc.status is None or exc.status in (502, 503, 504):
        return ceiling
    return 0.0
