"""The one rule for a usable ConnectWise line (SPEC §10): company, active agreement of that
company, addition of that agreement, not cancelled, the only active addition of its product
on the agreement. ``map``, ``list-mappings --check`` and ``doctor`` all judge with it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from infima_autotask.connectwise.model import Addition, Agreement, Company

# agreementStatus values that mean the agreement bills nothing any more.
_ENDED_STATUSES = frozenset({"cancelled", "expired", "inactive"})


def agreement_problem(agreement: Agreement, today: date) -> str | None:
    """Why ``agreement`` is not active today (cancelled, expired, ended), or None."""
    if agreement.cancelled or (agreement.status or "").casefold() == "cancelled":
        return f"agreement {agreement.id} is cancelled"
    if agreement.ended_before(today):
        return f"agreement {agreement.id} ended on {agreement.end}"
    if (agreement.status or "").casefold() in _ENDED_STATUSES:
        return f"agreement {agreement.id} is {agreement.status}"
    if agreement.start is not None and agreement.start > today:
        return f"agreement {agreement.id} starts on {agreement.start}"
    return None


def active_agreement(agreement: Agreement, today: date) -> bool:
    return agreement_problem(agreement, today) is None


def active_addition(addition: Addition, today: date) -> bool:
    return not addition.cancelled_on(today)


def company_problem(company_id: int, company: Company | None) -> str | None:
    if company is None:
        return f"company {company_id} not found in ConnectWise"
    if company.deleted:
        return f"company {company_id} is in ConnectWise's recycle bin"
    return None


def line_problem(
    company_id: int,
    company: Company | None,
    agreement_id: int,
    agreement: Agreement | None,
    addition_id: int,
    addition: Addition | None,
    siblings: Sequence[Addition],
    today: date,
) -> str | None:
    """What makes this line unusable, or None. ``siblings``: every addition of the
    agreement (the addition itself may be among them)."""
    problem = company_problem(company_id, company)
    if problem is not None:
        return problem
    if agreement is None:
        return f"agreement {agreement_id} not found in ConnectWise"
    if agreement.company_id != company_id:
        owner = agreement.company_id
        return f"agreement {agreement_id} belongs to company {owner}, not {company_id}"
    problem = agreement_problem(agreement, today)
    if problem is not None:
        return problem
    if addition is None or addition.agreement_id != agreement_id:
        return f"addition {addition_id} is not on agreement {agreement_id}"
    if addition.cancelled_on(today):
        return f"addition {addition_id} was cancelled on {addition.cancelled}"
    return duplicate_problem(addition, siblings, today)


def duplicate_problem(addition: Addition, siblings: Sequence[Addition], today: date) -> str | None:
    """Another active addition of the same product on the agreement: a write to one would
    leave the other billing too."""
    others = sorted(
        other.id
        for other in siblings
        if other.id != addition.id
        and other.product_id == addition.product_id
        and active_addition(other, today)
    )
    if not others:
        return None
    ids = ", ".join(str(i) for i in others)
    return (
        f"agreement {addition.agreement_id} has another active addition of product "
        f"{addition.product_identifier or addition.product_id} ({ids}); cancel one in "
        "ConnectWise so one line carries the count"
    )
