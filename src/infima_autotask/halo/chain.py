"""The one rule for a usable HaloPSA line (SPEC §10): an active client, a subscription
(``SoftwareLicence``) of that client, active today; and whether a recurring-invoice line bills
it. ``map``, ``list-mappings --check`` and ``doctor`` all judge with it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from infima_autotask.halo.model import HaloClient, Licence, RecurringLine

PROG = "infima-autotask"

# Halo bills a subscription's count only through a recurring-invoice line whose quantity is
# calculated from it (a manual step in Halo: SPEC §10).
NOT_BILLED = (
    "the count will not be billed: add a line whose quantity comes from this subscription "
    "(Halo's recurring invoice settings)"
)

# A successor by name: only a subscription whose name says it is INFIMA's.
_INFIMA = "infima"


def client_problem(client_id: int, client: HaloClient | None) -> str | None:
    if client is None:
        return f"client {client_id} not found in HaloPSA"
    if client.inactive:
        return f"client {client_id} is inactive in HaloPSA"
    return None


def licence_problem(licence: Licence, today: date) -> str | None:
    """Why ``licence`` is not active today (deleted, an ended status, ended), or None."""
    if licence.active_on(today):
        return None
    if licence.deleted:
        return f"subscription {licence.id} is deleted"
    if licence.end_date is not None and licence.end_date < today:
        return f"subscription {licence.id} ended on {licence.end_date}"
    status = (licence.status or "").strip()
    if status and status.casefold() != "active":
        return f"subscription {licence.id} is {status}"
    return f"subscription {licence.id} is inactive"


def line_problem(
    client_id: int,
    client: HaloClient | None,
    licence_id: int,
    licence: Licence | None,
    today: date,
) -> str | None:
    """What makes this line unusable, or None."""
    return client_problem(client_id, client) or subscription_problem(
        client_id, licence_id, licence, today
    )


def subscription_problem(
    client_id: int, licence_id: int, licence: Licence | None, today: date
) -> str | None:
    """What makes the subscription unusable for that client, or None (``sync`` judges with
    this alone: it reads subscriptions, not clients)."""
    if licence is None:
        return f"subscription {licence_id} not found in HaloPSA"
    if licence.client_id != client_id:
        return f"subscription {licence_id} belongs to client {licence.client_id}, not {client_id}"
    return licence_problem(licence, today)


def billing_lines(licence_id: int, lines: Sequence[RecurringLine]) -> list[RecurringLine]:
    """The active recurring-invoice lines that take their quantity from the subscription."""
    return [line for line in lines if not line.inactive and licence_id in line.licence_ids]


def billing_warning(licence_id: int, lines: Sequence[RecurringLine]) -> str | None:
    """:data:`NOT_BILLED` when no active recurring-invoice line bills the subscription."""
    return None if billing_lines(licence_id, lines) else NOT_BILLED


def successor(
    licence_id: int, name: str | None, licences: Sequence[Licence], today: date
) -> Licence | None:
    """The subscription that replaces ``licence_id`` (inactive or gone): the only active one of
    the client with the same name, else the only active one whose name contains "INFIMA".
    ``licences``: the client's subscriptions."""
    active = sorted(
        (lic for lic in licences if lic.id != licence_id and lic.active_on(today)),
        key=lambda lic: lic.id,
    )
    wanted = (name or "").strip().casefold()
    same = [lic for lic in active if wanted and lic.name.strip().casefold() == wanted]
    if same:
        return same[0] if len(same) == 1 else None
    infima = infima_named(active)
    return infima[0] if len(infima) == 1 else None


def infima_named(licences: Sequence[Licence]) -> list[Licence]:
    """The subscriptions whose name contains "INFIMA" (any case)."""
    return [lic for lic in licences if _INFIMA in lic.name.casefold()]


def candidates(licences: Sequence[Licence], today: date) -> list[Licence]:
    """What ``map`` offers when --subscription is left out: the client's active subscriptions
    named for INFIMA, else all its active ones (a client bills Microsoft 365 and the like
    from subscriptions too)."""
    active = sorted((lic for lic in licences if lic.active_on(today)), key=lambda lic: lic.id)
    return infima_named(active) or active


def map_command(client_id: int, account_id: int, subscription_id: int | None = None) -> str:
    """The exact ``map`` command for a Halo line (without ``--subscription``: choose again)."""
    command = f"{PROG} map {client_id} --psa halo --account {account_id}"
    return command if subscription_id is None else f"{command} --subscription {subscription_id}"
