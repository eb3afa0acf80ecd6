"""What the sync engine needs from a PSA, whichever it is (SPEC §10).

The engine speaks only in targets: "make this line show T units (at this unit cost)". A
backend turns that into its own request (Autotask: a signed delta from a fresh read;
ConnectWise: an absolute quantity), sends it once, and reads lines back so the engine can
judge where a write landed with one shared rule (:class:`~infima_autotask.landing.Landing`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from infima_autotask.landing import Landing
from infima_autotask.statuses import Outcome
from infima_autotask.sync import PlanItem


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
