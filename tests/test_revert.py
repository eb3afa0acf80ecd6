"""``revert RUN_ID`` end to end: the real CLI against the loopback sandbox (real HTTP).

A sync writes Acme 10 -> 12 and Cobalt 40 -> 31; the revert must put both back with one
compensating adjustment each, dated like the originals, and nothing more however often it
runs or whatever fault meets its writes.
"""

# ruff: noqa: F811 - the sandbox ``world`` fixture is imported from test_faults by name

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from test_faults import (  # noqa: F401
    ACME,
    ADJ,
    ALL,
    COBALT,
    CS,
    SEEDED,
    SYNCED,
    THIS_MONTH,
    World,
    sync,
    world,
)


def synced(world: World, **settings: Any) -> int:
    """A real sync of the seeded clients; the id of its run."""
    world.write_config(ALL, **settings)
    result = sync(world, "--yes")
    assert result.exit_code == 0, result.output
    assert world.units() == SYNCED
    runs = json.loads(world.run("history", "--runs", "--json").stdout)
    run_id: int = runs[0]["run_id"]
    return run_id


def revert(world: World, *args: str) -> Any:
    return world.run("revert", *args)


def items(result: Any) -> dict[int, dict[str, Any]]:
    return {item["client_id"]: item for item in json.loads(result.stdout)["items"]}


def test_a_revert_puts_every_line_back_once_and_a_second_writes_nothing(world: World) -> None:
    run_id = synced(world)
    originals = world.sandbox.adjustments()
    assert len(originals) == 2

    planned = revert(world, str(run_id), "--dry-run", "--json")
    assert planned.exit_code == 0, planned.output
    assert {c: i["status"] for c, i in items(planned).items()} == {
        ACME: "planned",
        COBALT: "planned",
    }
    assert (items(planned)[ACME]["change"], items(planned)[COBALT]["change"]) == (-2, 9)
    assert len(world.sandbox.adjustments()) == 2  # a dry run writes nothing

    done = revert(world, str(run_id), "--yes", "--json")
    assert done.exit_code == 0, done.output
    assert f"Revert of run {run_id}, period {THIS_MONTH:%Y-%m}: 2 updated" in done.stderr
    assert world.units() == SEEDED
    after = world.sandbox.adjustments()
    assert len(after) == 4
    by_line = {a["contractServiceID"]: a for a in after[2:]}
    for original in originals:
        compensating = by_line[original["contractServiceID"]]
        assert compensating["contractServiceID"] == original["contractServiceID"]
        assert compensating["unitChange"] == -original["unitChange"]
        assert compensating["effectiveDate"] == original["effectiveDate"]  # dated like it

    again = revert(world, str(run_id), "--yes", "--json")
    assert again.exit_code == 0, again.output
    assert {c: i["status"] for c, i in items(again).items()} == {
        ACME: "unchanged",
        COBALT: "unchanged",
    }
    assert "already back at 10 units" in items(again)[ACME]["message"]
    assert len(world.sandbox.adjustments()) == 4

    runs = json.loads(world.run("history", "--runs", "--json").stdout)
    assert [(r["kind"], r["reverts"]) for r in runs[:3]] == [
        ("revert", run_id),
        ("revert", run_id),
        ("revert", run_id),
    ]
    assert runs[3]["run_id"] == run_id and runs[3]["kind"] == "sync"


def test_a_line_changed_since_is_not_reverted(world: World) -> None:
    run_id = synced(world)
    state = world.sandbox.state
    with state.lock:  # someone sets Acme's line to 13 by hand after the sync
        row = state.row_covering(CS[ACME], THIS_MONTH)
        assert row is not None
        row.update(units=13, price=13 * 4.5, cost=13 * 2.25)

    result = revert(world, str(run_id), "--yes", "--json")
    assert result.exit_code == 1, result.output
    acme, cobalt = items(result)[ACME], items(result)[COBALT]
    assert acme["status"] == "held"
    assert "changed since run" in acme["message"] and "13 units" in acme["message"]
    assert cobalt["status"] == "updated"
    assert world.units()[ACME] == 13 and world.units()[COBALT] == SEEDED[COBALT]
    assert len(world.sandbox.adjustments()) == 3


def test_a_cost_the_sync_overwrote_is_restored(world: World) -> None:
    """Birch and Delta only had their cost changed (unitChange 0): that is undone too."""
    run_id = synced(world, overwrite_cost=True, unit_cost=3.0)
    written = world.sandbox.adjustments()
    assert sorted((a["unitChange"], a["adjustedUnitCost"]) for a in written) == [
        (-9, 3.0),
        (0, 3.0),
        (0, 3.0),
        (2, 3.0),
    ]
    result = revert(world, str(run_id), "--yes")
    assert result.exit_code == 0, result.output
    reverting = world.sandbox.adjustments()[4:]  # the last three in any order (in parallel)
    assert sorted((a["unitChange"], a["adjustedUnitCost"]) for a in reverting) == [
        (-2, 2.25),
        (0, 2.25),
        (0, 2.25),
        (9, 2.25),
    ]
    assert world.units() == SEEDED
    again = revert(world, str(run_id), "--yes")
    assert again.exit_code == 0 and len(world.sandbox.adjustments()) == 8


@pytest.mark.parametrize("kind", ["apply-then-drop", "500-bare", "503"])
def test_a_fault_during_a_revert_never_writes_twice(world: World, kind: str) -> None:
    run_id = synced(world)
    world.sandbox.faults.add(ADJ, kind)
    result = revert(world, str(run_id), "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert world.units() == SEEDED
    assert len(world.sandbox.adjustments()) == 4  # one compensating adjustment per line


def test_a_rejected_revert_write_is_failed_and_never_resent(world: World) -> None:
    run_id = synced(world)
    world.sandbox.faults.add(ADJ, "500-errors")
    result = revert(world, str(run_id), "--yes", "--json")
    assert result.exit_code == 1, result.output
    statuses = sorted(i["status"] for i in items(result).values())
    assert statuses == ["failed", "updated"]
    assert len(world.sandbox.adjustments()) == 3


def test_revert_refusals(world: World) -> None:
    run_id = synced(world)
    no_terminal = revert(world, str(run_id))
    assert no_terminal.exit_code == 2
    assert "pass --yes" in no_terminal.output
    unknown = revert(world, "999", "--yes")
    assert unknown.exit_code == 2
    assert unknown.stderr.startswith("Error: There is no run 999")
    dry = sync(world, "--dry-run")
    assert dry.exit_code == 0
    dry_id = json.loads(world.run("history", "--runs", "--json").stdout)[0]["run_id"]
    refused = revert(world, str(dry_id), "--yes")
    assert refused.exit_code == 2 and "was a dry run" in refused.stderr
    assert len(world.sandbox.adjustments()) == 2


def test_on_a_terminal_the_revert_is_shown_and_asked_first(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = synced(world)
    monkeypatch.setattr("infima_autotask.cli._common.can_prompt", lambda: True)
    from click.testing import CliRunner

    from infima_autotask.cli import cli

    def ask(answer: str) -> Any:
        return CliRunner().invoke(
            cli, ["revert", str(run_id)], input=answer, env=world.env, obj=world.seams
        )

    declined = ask("n\n")
    assert declined.exit_code == 0, declined.output
    assert "Write these 2 compensating changes to Autotask?" in declined.stderr
    assert "Nothing was written." in declined.stderr
    assert len(world.sandbox.adjustments()) == 2
    agreed = ask("y\n")
    assert agreed.exit_code == 0, agreed.output
    assert world.units() == SEEDED and len(world.sandbox.adjustments()) == 4


def test_after_a_revert_held_on_a_line_the_report_shows_the_write_that_stands(
    world: World,
) -> None:
    """Reviewer's case: run 1 writes Acme 10 -> 12, run 2 (one user excluded) 12 -> 11, then
    `revert 1` holds Acme (changed since) and puts Cobalt back. The report and list-mappings
    must show Acme as run 2 left it (updated, 11 units, 12 users), not the revert's hold."""
    first = synced(world)
    doc = yaml.safe_load(world.config.read_text())
    next(m for m in doc["mappings"] if m["client_id"] == ACME)["exclude_users"] = 1
    world.config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    assert sync(world, "--yes", "--client", str(ACME)).exit_code == 0
    assert world.units()[ACME] == 11

    result = revert(world, str(first), "--yes", "--json")
    assert result.exit_code == 1
    assert items(result)[ACME]["status"] == "held"

    report = json.loads(world.run("report", "--month", f"{THIS_MONTH:%Y-%m}", "--json").stdout)
    rows = {row["client_id"]: row for row in report["rows"]}
    acme, cobalt = rows[ACME], rows[COBALT]
    assert (acme["status"], acme["users"], acme["before"], acme["after"], acme["change"]) == (
        "updated",
        12,
        10,
        11,
        1,
    )
    assert "a revert of run" in acme["detail"] and "left it as it was" in acme["detail"]
    assert (cobalt["status"], cobalt["after"], cobalt["change"], cobalt["users"]) == (
        "unchanged",
        40,
        0,
        31,
    )
    mappings = json.loads(world.run("list-mappings", "--json").stdout)
    last = {row["client_id"]: row["last_sync"] for row in mappings}
    assert (last[ACME]["units"], last[ACME]["status"]) == (11, "updated")
    assert (last[COBALT]["units"], last[COBALT]["status"]) == (40, "updated")
