"""``report`` after a real sync and a real ``revert`` against the loopback sandbox."""

# ruff: noqa: F811 - the sandbox ``world`` fixture is imported from test_faults by name

from __future__ import annotations

import json
from typing import Any

from test_faults import ACME, ALL, BIRCH, COBALT, MONTH, SYNCED, World, sync, world  # noqa: F401


def report(world: World, *args: str) -> dict[str, Any]:
    before = len(world.sandbox.requests)
    result = world.run("report", "--json", *args)
    assert result.exit_code == 0, result.output
    assert len(world.sandbox.requests) == before  # the history alone: no request at all
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_report_follows_a_sync_then_its_revert(world: World) -> None:
    world.write_config(ALL)
    assert sync(world, "--yes").exit_code == 0
    assert world.units() == SYNCED
    run_id = json.loads(world.run("history", "--runs", "--json").stdout)[0]["run_id"]

    synced = {row["client_id"]: row for row in report(world)["rows"]}
    assert synced.keys() == set(ALL)
    assert (synced[ACME]["before"], synced[ACME]["after"], synced[ACME]["change"]) == (10, 12, 2)
    assert (synced[COBALT]["change"], synced[COBALT]["status"]) == (-9, "updated")
    assert (synced[BIRCH]["change"], synced[BIRCH]["money_change"]) == (0, 0.0)
    for row in synced.values():
        assert row["money_change"] == round(row["change"] * row["unit_price"], 2)

    assert world.run("revert", str(run_id), "--yes").exit_code == 0
    assert world.run("revert", str(run_id), "--yes").exit_code == 0  # writes nothing
    document = report(world, "--month", MONTH)
    rows = {row["client_id"]: row for row in document["rows"]}
    for client in (ACME, COBALT):
        row = rows[client]
        assert row["before"] == row["after"] and (row["change"], row["money_change"]) == (0, 0.0)
        assert row["run_kind"] == "revert"
        assert f"reverted run {run_id}" in row["detail"]
    assert (document["totals"]["change"], document["totals"]["money_change"]) == (0, 0.0)
