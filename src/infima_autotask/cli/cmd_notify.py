"""``notify test``: a test message on every configured channel (SPEC §11)."""

from __future__ import annotations

import click

from infima_autotask import notify as notifications
from infima_autotask.cli._common import Command, Group, emit_rows, get_runtime, json_option

COLUMNS = ("Channel", "Target", "Result")


@click.group(cls=Group)
def notify() -> None:
    """Notifications of each sync: a webhook (Teams, Slack, JSON), e-mail, a healthcheck.

    They are set up in the config's `notify` section; a delivery that fails is a warning,
    never a changed exit code.

    \b
    Example:
      infima-autotask notify test
    """


@notify.command("test", cls=Command)
@json_option
def test(as_json: bool) -> None:
    """Send a test message to each configured channel and say whether it arrived.

    The webhook and the e-mail get a test message; the healthcheck gets its success ping.
    Exit 0 when every channel worked, 1 when one did not.

    \b
    Example:
      infima-autotask notify test
      infima-autotask notify test --json
    """
    deliveries = notifications.notifier_for_test(get_runtime()).test()
    rows = [
        {
            "Channel": delivery.channel,
            "Target": delivery.target,
            "Result": "ok" if delivery.delivered else delivery.problem,
        }
        for delivery in deliveries
    ]
    emit_rows(rows, COLUMNS, as_json=as_json)
    if not all(delivery.delivered for delivery in deliveries):
        raise click.exceptions.Exit(1)


COMMANDS = [notify]
