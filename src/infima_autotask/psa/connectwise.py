"""ConnectWise's side of the write path: one absolute PATCH of an agreement addition.

A write sends the target itself (JSON Patch ``replace`` of ``quantity``, and ``unitCost``
when it changes), never a difference: ConnectWise keeps one quantity per addition, so where a
write landed is judged on the addition's quantity alone. Budget (SPEC §10): one read of each
distinct agreement and one of each addition, one PATCH per change; a PATCH that answers with
the updated addition is its own verification, so only a write without a readable answer (or
an unknown outcome) is read back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from infima_autotask.billing import same_rate
from infima_autotask.config import CONNECTWISE, ClientMapping
from infima_autotask.connectwise.client import MAX_IN_FLIGHT, ConnectWiseApi
from infima_autotask.connectwise.model import Addition, Agreement
from infima_autotask.errors import ApiError, ApiRejected, UsageError
from infima_autotask.landing import Landing
from infima_autotask.psa import PlanContext, Sent, Shown, settle_wait
from infima_autotask.psa.connectwise_plan import plan_connectwise
from infima_autotask.statuses import Outcome
from infima_autotask.sync import PlanItem, UserCount, money

log = logging.getLogger(__name__)

REFUSED = "ConnectWise refused the change"


def read_lines(
    api: ConnectWiseApi, mappings: Sequence[ClientMapping]
) -> tuple[dict[int, Agreement | None], dict[int, Addition | None]]:
    """Each distinct agreement of ``mappings`` (by id) and each mapping's addition (by
    addition id); None where ConnectWise has no such record. At most two requests in flight.

    Raises:
        ApiError: a read failed.
    """
    agreement_ids = list(dict.fromkeys(m.contract_id for m in mappings))
    lines = list(dict.fromkeys((m.contract_id, m.contract_service_id) for m in mappings))
    with ThreadPoolExecutor(MAX_IN_FLIGHT, thread_name_prefix="connectwise-read") as pool:
        agreements = dict(zip(agreement_ids, pool.map(api.agreement, agreement_ids), strict=True))
        found = pool.map(lambda line: api.addition(*line), lines)
        additions = {addition_id: a for (_, addition_id), a in zip(lines, found, strict=True)}
    return agreements, additions


class ConnectWisePsa:
    """ConnectWise as the engine sees it (:class:`~infima_autotask.psa.CountPsa`)."""

    key = CONNECTWISE
    name = "ConnectWise"

    def __init__(self, api: ConnectWiseApi) -> None:
        self.api = api
        self.agreements: dict[int, Agreement | None] = {}
        self.additions: dict[int, Addition | None] = {}

    def read(self, mappings: Sequence[ClientMapping], lines: Sequence[tuple[int, int]]) -> None:
        self.agreements, self.additions = read_lines(self.api, mappings)
        for agreement_id, addition_id in lines:  # outside the mappings: one GET each
            if addition_id not in self.additions:
                self.additions[addition_id] = self.api.addition(agreement_id, addition_id)

    def plan(self, mapping: ClientMapping, count: UserCount | None, ctx: PlanContext) -> PlanItem:
        return plan_connectwise(
            mapping,
            day=ctx.day,
            current=ctx.current,
            today=ctx.today,
            settings=ctx.settings,
            count=count,
            agreement=self.agreements.get(mapping.contract_id),
            addition=self.additions.get(mapping.contract_service_id),
            yes=ctx.yes,
        )

    def shown(self, contract_id: int, contract_service_id: int) -> Shown | None:
        found = self.additions.get(contract_service_id)
        if found is None or found.agreement_id != contract_id:
            return None
        return Shown(found.whole_quantity, found.unit_cost)

    def lines(self) -> ConnectWiseLines:
        return ConnectWiseLines(self.api)


class ConnectWiseLines:
    """Agreement additions written with one PATCH each; the PATCH's answer is the read-back,
    else one GET each."""

    name = "ConnectWise"

    def __init__(self, api: ConnectWiseApi) -> None:
        self.api = api
        self._answers: dict[int, Addition] = {}  # the PATCH's own answer, by addition id
        self._lock = threading.Lock()

    def send(self, item: PlanItem) -> Sent:
        if item.target is None:  # planning never plans a write without a target
            raise ValueError(f"client {item.client_id}: a write without a target")
        cost = item.new_unit_cost if item.cost_changes else None
        with self._lock:
            self._answers.pop(item.contract_service_id, None)
        try:
            answer = self.api.patch_addition(
                item.contract_id, item.contract_service_id, quantity=item.target, unit_cost=cost
            )
        except (ApiRejected, UsageError) as exc:
            errors = exc.errors if isinstance(exc, ApiRejected) else []
            detail = "; ".join([exc.message, *(e for e in errors if e not in exc.message)])
            return Sent(Outcome.REJECTED, detail, message=f"{REFUSED}: {detail}")
        except ApiError as exc:  # timeout, connection, 429, 5xx without errors: unknown
            log.info("client %d: write outcome unknown: %s", item.client_id, exc)
            return Sent(Outcome.UNKNOWN, exc.message, settle=settle_wait(self.api.http, exc))
        if answer is not None:
            with self._lock:
                self._answers[item.contract_service_id] = answer
        return Sent(Outcome.SENT)

    def read_back(self, items: Sequence[PlanItem]) -> Mapping[int, Addition | None]:
        found: dict[int, Addition | None] = {}
        for item in items:
            with self._lock:
                # Kept until the next send of that addition (which drops it first), so the
                # first write's second check with the batch costs no GET (SPEC §10's budget);
                # a re-read after an unknown outcome finds none and asks ConnectWise.
                answer = self._answers.get(item.contract_service_id)
            found[item.contract_service_id] = (
                answer
                if answer is not None
                else self.api.addition(item.contract_id, item.contract_service_id)
            )
        return found

    def landing(self, item: PlanItem, found: object) -> Landing:
        if not isinstance(found, Addition):
            return Landing.OTHER
        quantity = found.whole_quantity
        if quantity == item.target and same_rate(found.unit_cost, item.new_unit_cost):
            return Landing.LANDED
        if quantity == item.before and same_rate(found.unit_cost, item.unit_cost):
            return Landing.BEFORE
        return Landing.OTHER

    def describe(self, item: PlanItem, found: object, state: Landing) -> str:
        where = f"addition {item.contract_service_id} (agreement {item.contract_id})"
        if not isinstance(found, Addition):
            return f"ConnectWise no longer shows {where}; check it in ConnectWise"
        shown = "no quantity" if found.quantity is None else f"{found.quantity:g}"
        text = f"ConnectWise shows {shown} on {where}, expected {item.target}"
        if not same_rate(found.unit_cost, item.new_unit_cost):
            text += f" at unit cost {money(item.new_unit_cost)} (it shows {money(found.unit_cost)})"
        return text + "; someone else may have changed it: check it in ConnectWise"
