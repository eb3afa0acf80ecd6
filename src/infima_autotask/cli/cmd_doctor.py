"""``doctor``: a thin command over ``doctor.py``."""

from __future__ import annotations

from typing import Any

import click

from infima_autotask.cli._common import ID, Command, get_runtime, json_option, warn
from infima_autotask.cli.tables import Column, emit_table
from infima_autotask.doctor import Check, run_doctor
from infima_autotask.errors import ApiError, UsageError


def check_name(check: Check) -> str:
    """``Autotask connection``, ``client 101: chain``."""
    if check.client_id is None:
        return check.subject
    return f"client {check.client_id}: {check.subject}"


COLUMNS: tuple[Column[Check], ...] = (
    Column("Check", check_name, lambda c: {"check": check_name(c), "client_id": c.client_id}),
    Column("Result", lambda c: c.result),
    Column("Detail", lambda c: c.detail),
)


@click.command(cls=Command)
@click.option(
    "--client",
    "clients",
    type=ID,
    multiple=True,
    metavar="ID",
    help="Only this INFIMA client's mapping (repeatable).",
)
@json_option
def doctor(clients: tuple[int, ...], as_json: bool) -> None:
    """Prove, read-only, what the sync relies on in your own tenant, before the first write.

    Checks both connections and this hour's API usage, the tenant's time zone against
    autotask.timezone and, per mapping, the chain, this month's billing period and the date
    a write gets, the units row, whether its price is extended (units x rate), the unit price
    and cost a write would send, cost visibility, and INFIMA's user status field. Writes
    nothing anywhere. Exit 1 when a check fails, 3 when a connection fails.

    \b
    Example:
      infima-autotask doctor
      infima-autotask doctor --client 101 --json
    """
    report = run_doctor(get_runtime(), clients=clients)
    emit_table(report.checks, COLUMNS, as_json=as_json)
    counts = report.summary
    warn(f"Doctor: {counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail")
    code = report.exit_code
    if code == 3:
        raise ApiError(
            "A connection failed (shown above). Fix it, then run `infima-autotask doctor` again."
        )
    if code == 2:
        raise UsageError(
            "A check could not run (shown above). Fix it, then run `infima-autotask doctor` again."
        )
    if code:
        raise click.exceptions.Exit(code)


COMMANDS: list[Any] = [doctor]
