"""Autotask's side of the write path: a signed adjustment computed from a fresh read.

Only this backend turns a target into a delta (``unitChange`` = target - the units the
fresh read showed, planned in ``sync.py``). Autotask keeps units per billing period, so where
a write landed is judged on the dated units rows (:mod:`infima_autotask.landing`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import date

from infima_autotask.autotask import AutotaskApi
from infima_autotask.errors import ApiError, ApiRejected
from infima_autotask.landing import Landing, item_landing, landing_message
from infima_autotask.model import UnitsRow, read_units_rows
from infima_autotask.plan_file import adjustment_body
from infima_autotask.psa import Sent, settle_ceiling_of, settle_wait
from infima_autotask.statuses import Outcome
from infima_autotask.sync import PlanItem, exact

log = logging.getLogger(__name__)

ADJUSTMENTS = "ContractServiceAdjustments"

REFUSED = "Autotask refused the change"
MOVED = "Autotask moved the date of the change"
DUPLICATE_DATE = "duplicate data into contract_service_period"
POSTED_PERIOD = "already approved and posted"


class AutotaskLines:
    """Contract Service units written with ContractServiceAdjustments, read as units rows."""

    name = "Autotask"

    def __init__(
        self,
        autotask: AutotaskApi,
        *,
        zone: str | None,
        window: Callable[[Sequence[PlanItem]], tuple[date, date]],
    ) -> None:
        self.autotask = autotask
        self.zone = zone  # the tenant's zone: the day the effectiveDate lands on
        self.window = window  # the units-read window covering these items' E - 1 .. E (+ 1)

    def send(self, item: PlanItem) -> Sent:
        body = adjustment_body(item, self.zone)
        try:
            ref = self.autotask.create(ADJUSTMENTS, body)
        except ApiRejected as exc:
            detail = "; ".join(exc.errors) or exc.message
            return Sent(
                Outcome.REJECTED,
                detail,
                message=refusal(item, detail),
                repeat=DUPLICATE_DATE in detail.lower(),
                # Planning saw E's period open: Autotask dated the write into another one.
                halts=POSTED_PERIOD in detail.lower() and item.effective is not None,
            )
        except ApiError as exc:  # timeout, connection, 429, 5xx without errors: unknown
            # Not a warning: the re-read settles it, and the item's status and Detail report
            # it; a warning line would break --quiet on a run that ends all updated.
            log.info("client %d: write outcome unknown: %s", item.client_id, exc)
            return Sent(Outcome.UNKNOWN, exc.message, settle=settle_seconds(self.autotask, exc))
        return Sent(Outcome.SENT, ref=ref)

    def read_back(self, items: Sequence[PlanItem]) -> Mapping[int, list[UnitsRow]]:
        ids = [item.contract_service_id for item in items]
        return read_units_rows(self.autotask, ids, *self.window(items))

    def landing(self, item: PlanItem, found: object) -> Landing:
        return item_landing(item, _rows(found))

    def describe(self, item: PlanItem, found: object, state: Landing) -> str:
        return landing_message(state, _rows(found), item)


def _rows(found: object) -> list[UnitsRow]:
    return [row for row in found if isinstance(row, UnitsRow)] if isinstance(found, list) else []


def refusal(item: PlanItem, detail: str) -> str:
    """The message of a rejected write; a same-day duplicate says it needs a person, and a
    refusal to touch a posted period (planning saw E's period open) says the date moved."""
    if POSTED_PERIOD in detail.lower() and item.effective is not None:
        return (
            f"{MOVED}: Autotask refused it as a change to an approved and posted period "
            f"({detail}), but the period from {item.effective.isoformat()} is open, so "
            "Autotask dated it earlier; nothing was written. Set autotask.timezone to the "
            "tenant's time zone (`infima-autotask doctor` shows it), then run sync again"
        )
    if DUPLICATE_DATE in detail.lower():
        day = item.effective.isoformat() if item.effective else "that day"
        return (
            f"{REFUSED}: it already has an adjustment of contract service "
            f"{item.contract_service_id} dated {day} and takes no second one ({detail}); make "
            "this change by hand in Autotask"
        )
    return f"{REFUSED}: {detail}"


def settle_ceiling(autotask: AutotaskApi) -> float:
    """The longest wait for a create whose outcome is unknown (see :func:`settle_seconds`)."""
    return settle_ceiling_of(autotask.http)


def settle_seconds(autotask: AutotaskApi, exc: ApiError) -> float:
    """How long to let Autotask finish a create whose outcome is unknown before re-reading
    (:func:`infima_autotask.psa.settle_wait`)."""
    return settle_wait(autotask.http, exc)


def threshold_problem(autotask: AutotaskApi, k: int, share: float) -> str | None:
    """Why ``k`` writes would pass ``share`` percent of this hour's API threshold (SPEC §8), or
    None. Read on every run, even without writes, so the request count is the SPEC §9 floor."""
    threshold = autotask.threshold()
    # The writes, their batched verification and the first write's own read-back.
    need = k + math.ceil(k / 500) + 1
    # Exact: in floats 57 / 100 * 10000 is 5699.999..., refusing a run that stays at 57%.
    if not k or (threshold.used + need) * 100 <= exact(share) * threshold.limit:
        return None
    return (
        f"Autotask API usage is {threshold.used} of {threshold.limit} requests this hour; "
        f"{need} more would pass max_api_usage_percent ({share:g}%)."
    )
