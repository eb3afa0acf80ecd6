"""Planning a ConnectWise mapping for a month (SPEC §10): pure, like ``sync.plan``.

ConnectWise keeps one quantity per addition, not one per billing period: a write takes
effect now. So the item's ``before`` is the addition's quantity, ``effective`` is None, a
month other than the current one is held ("ConnectWise cannot backdate a quantity"), and so
is an agreement whose invoice for the period already exists (``nextInvoiceDate`` after D).
The guards (drop, zero, rise, min_units override) are the Autotask ones, lifted by ``--yes``.
"""

from __future__ import annotations

from datetime import date

from infima_autotask.config import CONNECTWISE, ClientMapping, SyncSettings
from infima_autotask.connectwise.model import Addition, Agreement
from infima_autotask.statuses import FAILED, HELD, PLANNED, UNCHANGED
from infima_autotask.sync import (
    PlanItem,
    UserCount,
    clamp_target,
    money,
    override_guard,
    period_label,
    units_guard,
)

ENDED_STATUSES = ("cancelled", "expired")


def remap(mapping: ClientMapping) -> str:
    """The command that points a ConnectWise mapping at another line."""
    account = mapping.account_id
    return f"infima-autotask map {mapping.client_id} --psa connectwise --account {account}"


def plan_connectwise(
    mapping: ClientMapping,
    *,
    day: date,
    current: date,
    today: date,
    settings: SyncSettings,
    count: UserCount | None,
    agreement: Agreement | None,
    addition: Addition | None,
    yes: bool = False,
) -> PlanItem:
    """Plan one ConnectWise mapping for the month starting ``day``.

    ``current`` is the first day of this month (sync.timezone), ``today`` the date now there;
    ``agreement`` and ``addition`` are the mapping's records as read (None: not found).
    """
    users = count.users if count is not None else None
    target = clamp_target(users, mapping) if users is not None else None
    owned = addition is not None and addition.agreement_id == mapping.contract_id
    line = addition if owned else None
    before = line.whole_quantity if line is not None else None
    price = line.unit_price if line is not None else None
    cost = line.unit_cost if line is not None else None
    configured = mapping.effective_unit_cost(settings)
    overwrite = mapping.effective_overwrite_cost(settings) and configured is not None
    new_cost = configured if overwrite else cost
    change = target - before if target is not None and before is not None else None

    def item(status: str, message: str = "") -> PlanItem:
        return PlanItem(
            client_id=mapping.client_id,
            client_name=(count.name if count is not None else "") or mapping.client_name or "",
            contract_id=mapping.contract_id,
            contract_service_id=mapping.contract_service_id,
            service_id=line.product_id if line is not None else mapping.service_id,
            users=users,
            target=target,
            before=before,
            after=target if status == PLANNED else before,
            change=change,
            unit_price=price,
            unit_cost=cost,
            new_unit_cost=new_cost,
            status=status,
            message=message,
            account_name=mapping.account_name or "",
            service_name=mapping.service_name or "",
            psa=CONNECTWISE,
        )

    if count is None or count.users is None:
        return item(FAILED, (count.error if count is not None else "") or "no user count")
    fix = f"map the client to its current line with `{remap(mapping)}`"
    agreement_id, addition_id = mapping.contract_id, mapping.contract_service_id
    if agreement is None:
        return item(FAILED, f"ConnectWise has no agreement {agreement_id}; {fix}")
    if addition is None:
        return item(
            FAILED, f"ConnectWise has no addition {addition_id} on agreement {agreement_id}; {fix}"
        )
    if line is None:
        return item(
            FAILED,
            f"addition {addition_id} belongs to agreement {addition.agreement_id}, not "
            f"{agreement_id}; {fix}",
        )
    if agreement.cancelled or (agreement.status or "").lower() in ENDED_STATUSES:
        state = "cancelled" if agreement.cancelled else (agreement.status or "").lower()
        return item(FAILED, f"agreement {agreement_id} is {state} in ConnectWise; {fix}")
    if agreement.ended_before(day) and agreement.end is not None:
        return item(
            FAILED,
            f"agreement {agreement_id} ended {agreement.end.isoformat()}, before "
            f"{period_label(day)}; {fix}",
        )
    if line.cancelled_on(today) and line.cancelled is not None:
        return item(
            FAILED,
            f"addition {addition_id} was cancelled in ConnectWise on "
            f"{line.cancelled.isoformat()}; {fix}",
        )
    if before is None or target is None:
        shown = "no quantity" if line.quantity is None else f"quantity {line.quantity:g}"
        return item(
            FAILED,
            f"addition {addition_id} shows {shown}, not a whole number; correct it in "
            "ConnectWise, then run sync again",
        )
    if overwrite and cost is None:
        return item(
            FAILED,
            "ConnectWise does not show this API member the addition's unit cost: grant its "
            "security role cost visibility (Finance > Agreements)",
        )
    # Not lifted by --yes: a write sets today's quantity, whatever month was asked for.
    if day != current:
        return item(
            HELD,
            f"ConnectWise cannot backdate a quantity: a write takes effect now, not in "
            f"{period_label(day)}; run sync in that month without --month",
        )
    planned = item(PLANNED)
    cost_note = f"unit cost {money(cost)} -> {money(new_cost)}" if planned.cost_changes else ""
    if target == before and not cost_note:
        return item(UNCHANGED)
    # Not lifted by --yes: the period's invoice exists; a change now bills from the next one.
    if agreement.next_invoice is not None and agreement.next_invoice > day:
        return item(
            HELD,
            f"agreement {agreement_id} is already invoiced for {period_label(day)} (next "
            f"invoice {agreement.next_invoice.isoformat()}); change it in ConnectWise by hand "
            "if it must be billed this month",
        )
    hold = units_guard(before, target, settings, mapping.client_id) or override_guard(
        mapping, users, target, settings
    )
    if hold is not None and not yes:
        return item(HELD, hold)
    notes = [cost_note] if cost_note else []
    if hold is not None:
        notes.append("guard lifted by --yes: " + hold.split(";")[0])
    return item(PLANNED, "; ".join(notes))
