"""HaloPSA's side of the engine: a subscription's count, set with one absolute POST.

INFIMA's Halo integration keeps one subscription (a ``SoftwareLicence``) per client at the
client's active user count, and Halo bills it through a recurring-invoice line whose quantity
comes from that subscription (SPEC §10). A write sends ``[{"id": L, "client_id": C, "count":
T}]``: the target itself, never a difference; an entry without ``id`` would create a
subscription, so the client refuses to send one. Budget (SPEC §10): one paged read of the
partner's subscriptions, one POST per change; a POST that answers with the saved subscription
is its own verification, so only a write without a readable answer (or an unknown outcome)
is read back, one GET each.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace

from infima_autotask.config import HALO, ClientMapping
from infima_autotask.errors import ApiError, ApiRejected, RequestNotSent, UsageError
from infima_autotask.halo.chain import map_command, subscription_problem, successor
from infima_autotask.halo.client import HaloApi
from infima_autotask.halo.model import Licence
from infima_autotask.landing import Landing
from infima_autotask.psa import PlanContext, Sent, Shown, settle_wait
from infima_autotask.statuses import FAILED, HELD, PLANNED, UNCHANGED, Outcome
from infima_autotask.sync import (
    PlanItem,
    UserCount,
    clamp_target,
    override_guard,
    period_label,
    units_guard,
)

log = logging.getLogger(__name__)

REFUSED = "HaloPSA refused the change"


def plan_halo(
    mapping: ClientMapping,
    count: UserCount | None,
    licence: Licence | None,
    ctx: PlanContext,
    siblings: Sequence[Licence] = (),
) -> PlanItem:
    """Plan one Halo mapping for the month starting ``ctx.day`` (pure).

    ``licence`` is the mapped subscription as read (None: Halo has none with that id);
    ``siblings``: the Halo client's subscriptions, where a successor is looked for. Halo
    keeps one count per subscription and prorates a change itself from the day it is made, so
    ``before`` is the count now, ``effective`` is None and another month than this one is held.
    Halo's price lives on the recurring-invoice line, so the item carries no unit price.
    """
    users = count.users if count is not None else None
    target = clamp_target(users, mapping) if users is not None else None
    owned = licence is not None and licence.client_id == mapping.account_id
    line = licence if owned else None
    before = line.whole_count if line is not None else None
    change = target - before if target is not None and before is not None else None

    def item(status: str, message: str = "") -> PlanItem:
        return PlanItem(
            client_id=mapping.client_id,
            client_name=(count.name if count is not None else "") or mapping.client_name or "",
            contract_id=mapping.contract_id,
            contract_service_id=mapping.contract_service_id,
            service_id=mapping.service_id,
            users=users,
            target=target,
            before=before,
            after=target if status == PLANNED else before,
            change=change,
            unit_price=None,
            unit_cost=None,
            new_unit_cost=None,
            status=status,
            message=message,
            account_name=mapping.account_name or "",
            service_name=(line.name if line is not None else "") or mapping.service_name or "",
            psa=HALO,
            account_id=mapping.account_id,
        )

    if count is None or count.users is None:
        return item(FAILED, (count.error if count is not None else "") or "no user count")
    subscription = mapping.contract_service_id
    problem = subscription_problem(mapping.account_id, subscription, licence, ctx.today)
    if problem is not None or line is None:
        name = (licence.name if licence is not None else None) or mapping.service_name
        found = successor(subscription, name, siblings, ctx.today)
        command = map_command(
            mapping.client_id, mapping.account_id, found.id if found is not None else None
        )
        fix = (
            f"map the client to subscription {found.id} with `{command}`"
            if found is not None
            else f"map the client to its current subscription with `{command}`"
        )
        # The line is not usable: no count of it is shown as "before" (as for Autotask).
        failed = item(FAILED, f"{problem or 'no subscription'}; {fix}")
        return replace(failed, before=None, after=None, change=None)
    if before is None or target is None:
        shown = "no count" if line.count is None else f"count {line.count:g}"
        return item(
            FAILED,
            f"subscription {subscription} shows {shown}, not a whole number; correct it in "
            "HaloPSA, then run sync again",
        )
    # Not lifted by --yes: a write sets today's count, whatever month was asked for.
    if ctx.day != ctx.current:
        return item(
            HELD,
            f"HaloPSA cannot backdate a count: a write takes effect now, not in "
            f"{period_label(ctx.day)}; run sync in that month without --month",
        )
    if target == before:
        return item(UNCHANGED)
    hold = units_guard(before, target, ctx.settings, mapping.client_id) or override_guard(
        mapping, users, target, ctx.settings
    )
    if hold is not None and not ctx.yes:
        return item(HELD, hold)
    return item(PLANNED, "guard lifted by --yes: " + hold.split(";")[0] if hold else "")


class HaloPsa:
    """HaloPSA as the engine sees it (:class:`~infima_autotask.psa.CountPsa`)."""

    key = HALO
    name = "HaloPSA"

    def __init__(self, api: HaloApi) -> None:
        self.api = api
        self.licences: dict[int, Licence] = {}

    def read(self, mappings: Sequence[ClientMapping], lines: Sequence[tuple[int, int]]) -> None:
        # One paged read of every subscription (SPEC §10's budget), inactive ones included so
        # a mapped subscription that ended reads as ended, not as missing.
        self.licences = {lic.id: lic for lic in self.api.licences(include_inactive=True)}

    def plan(self, mapping: ClientMapping, count: UserCount | None, ctx: PlanContext) -> PlanItem:
        siblings = [lic for lic in self.licences.values() if lic.client_id == mapping.account_id]
        return plan_halo(
            mapping, count, self.licences.get(mapping.contract_service_id), ctx, siblings
        )

    def shown(self, contract_id: int, contract_service_id: int) -> Shown | None:
        found = self.licences.get(contract_service_id)
        return None if found is None else Shown(found.whole_count)

    def lines(self) -> HaloLines:
        owners = {lic.id: lic.client_id for lic in self.licences.values()}
        return HaloLines(self.api, owners)


class HaloLines:
    """Subscriptions written with one POST each; the POST's answer is the read-back, else
    one GET each."""

    name = "HaloPSA"

    def __init__(self, api: HaloApi, owners: Mapping[int, int]) -> None:
        self.api = api
        self.owners = dict(owners)  # subscription id -> its Halo client, as read
        self._answers: dict[int, Licence] = {}
        self._lock = threading.Lock()

    def send(self, item: PlanItem) -> Sent:
        if item.target is None:  # planning never plans a write without a target
            raise ValueError(f"client {item.client_id}: a write without a target")
        licence_id = item.contract_service_id
        owner = self.owners.get(licence_id)
        if owner is None:  # never read: planning plans no write for such a line
            raise ValueError(f"client {item.client_id}: subscription {licence_id} was not read")
        with self._lock:
            self._answers.pop(licence_id, None)
        try:
            answer = self.api.set_count(licence_id, owner, item.target)
        except RequestNotSent as exc:  # Ctrl-C while it waited for Halo's rate limit
            return Sent(Outcome.NOT_SENT, exc.message, message=f"{exc.message}; run `sync` again")
        except (ApiRejected, UsageError) as exc:
            errors = exc.errors if isinstance(exc, ApiRejected) else []
            detail = "; ".join([exc.message, *(e for e in errors if e not in exc.message)])
            return Sent(Outcome.REJECTED, detail, message=f"{REFUSED}: {detail}")
        except ApiError as exc:  # timeout, connection, 429, 5xx: unknown
            log.info("client %d: write outcome unknown: %s", item.client_id, exc)
            return Sent(Outcome.UNKNOWN, exc.message, settle=settle_wait(self.api.http, exc))
        if answer is not None:
            with self._lock:
                self._answers[licence_id] = answer
        return Sent(Outcome.SENT)

    def read_back(self, items: Sequence[PlanItem]) -> Mapping[int, Licence | None]:
        found: dict[int, Licence | None] = {}
        for item in items:
            with self._lock:
                answer = self._answers.get(item.contract_service_id)
            found[item.contract_service_id] = (
                answer if answer is not None else self.api.licence(item.contract_service_id)
            )
        return found

    def landing(self, item: PlanItem, found: object) -> Landing:
        if not isinstance(found, Licence):
            return Landing.OTHER
        if found.whole_count == item.target:
            return Landing.LANDED
        if found.whole_count == item.before:
            return Landing.BEFORE
        return Landing.OTHER

    def describe(self, item: PlanItem, found: object, state: Landing) -> str:
        where = f"subscription {item.contract_service_id}"
        if not isinstance(found, Licence):
            return f"HaloPSA no longer shows {where}; check it in HaloPSA"
        shown = "no count" if found.count is None else f"{found.count:g}"
        return (
            f"HaloPSA shows {shown} on {where}, expected {item.target}; someone else may have "
            "changed it: check it in HaloPSA"
        )
