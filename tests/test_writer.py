"""The write path on its own: a Writer over real HTTP (requests-mock), a real history file and
an injected wait, with no sync run around it and nothing of the tool patched.

Each test pins one rule of SPEC §8 "Outcomes of a write" through the typed outcome.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from conftest import API_URL, CODE, SECRET, USERNAME
from fake_autotask import FakeAutotask, cs_id, writes

from infima_autotask.autotask import AutotaskApi
from infima_autotask.credentials import AutotaskCredentials
from infima_autotask.history import History
from infima_autotask.http import HttpClient, RetryPolicy
from infima_autotask.psa.autotask import AutotaskLines
from infima_autotask.statuses import PLANNED, Outcome
from infima_autotask.sync import (
    PlanItem,
)
from infima_autotask.writer import Write, Writer

E = date(2026, 12, 1)


def planned(client_id: int, before: int, target: int) -> PlanItem:
    return PlanItem(
        client_id=client_id,
        client_name=f"Client {client_id}",
        contract_id=29684001,
        contract_service_id=cs_id(client_id),
        service_id=30012,
        users=target,
        target=target,
        before=before,
        after=target,
        change=target - before,
        unit_price=4.5,
        unit_cost=2.25,
        new_unit_cost=2.25,
        status=PLANNED,
        effective=E,
    )


@pytest.fixture
def world(requests_mock, tmp_path):
    """A fake Autotask, a real history file with an open run, and a Writer whose waits are
    recorded instead of slept."""
    fake = FakeAutotask().install(requests_mock)
    waits: list[float] = []
    retry = RetryPolicy(base_delay=0.0, max_delay=7.0)
    with (
        HttpClient("Autotask", retry=retry, sleep=lambda s: None) as http,
        History(tmp_path) as history,
    ):
        autotask = AutotaskApi(http, API_URL, AutotaskCredentials(USERNAME, CODE, SECRET))
        run_id = history.start_run(period="2026-12", dry_run=False, version="test")
        window = (E - timedelta(days=1), date(2026, 12, 31))
        writer = Writer(
            AutotaskLines(autotask, zone=None, window=lambda items: window),
            history,
            run_id=run_id,
            wait=waits.append,
        )
        yield fake, writer, waits, history


def test_a_write_accepted_is_sent_once_and_verified(world, requests_mock):
    fake, writer, waits, history = world
    fake.add_client(101, 10)
    write = Write(planned(101, 10, 12))
    writer.write_one(write)
    assert write.outcome is Outcome.SENT
    writer.verify([write])
    assert write.outcome is Outcome.VERIFIED
    assert (write.final.status, write.final.after) == ("updated", 12)
    assert [w["unitChange"] for w in writes(requests_mock)] == [2]
    assert waits == []
    (stored,) = [i for i in history.items() if i.client_id == 101]
    assert (stored.status, stored.after) == ("updated", 12)


def test_a_rejection_is_final_and_never_sent_again(world, requests_mock):
    fake, writer, waits, _ = world
    fake.add_client(101, 10)
    fake.faults = ["reject-400"]
    write = Write(planned(101, 10, 12))
    writer.write_one(write)
    assert write.outcome is Outcome.REJECTED
    assert write.final.status == "failed"
    assert write.final.message.startswith("Autotask refused the change: effectiveDate")
    assert len(writes(requests_mock)) == 1
    assert waits == []


def test_an_unknown_outcome_waits_then_rereads_and_finds_it_applied(world, requests_mock):
    """A gateway timeout after Autotask applied the create: wait (the injected wait hears the
    settle time), re-read, find the target: updated without a second send."""
    fake, writer, waits, _ = world
    fake.add_client(101, 10)
    fake.faults = ["apply-then-timeout"]
    write = Write(planned(101, 10, 12))
    writer.write_one(write)
    assert write.outcome is Outcome.VERIFIED
    assert write.final.status == "updated"
    assert "confirmed by re-reading" in write.final.message
    assert len(writes(requests_mock)) == 1
    assert waits == [7.0]  # the retry policy's longest backoff, within the read timeout


def test_an_unknown_outcome_not_applied_is_sent_exactly_once_more(world, requests_mock):
    fake, writer, waits, _ = world
    fake.add_client(101, 10)
    fake.faults = ["connect-timeout"]
    write = Write(planned(101, 10, 12))
    writer.write_one(write)
    assert write.outcome is Outcome.SENT
    assert [w["unitChange"] for w in writes(requests_mock)] == [2, 2]
    assert fake.row_of(101)["units"] == 12
    assert waits == [7.0]


def test_two_unknown_outcomes_never_make_a_third_send(world, requests_mock):
    fake, writer, _, _ = world
    fake.add_client(101, 10)
    fake.faults = ["bare-500", "bare-500"]
    write = Write(planned(101, 10, 12))
    writer.write_one(write)
    assert write.outcome is Outcome.UNKNOWN
    assert write.final.status == "failed"
    assert "sent twice, neither confirmed" in write.final.message
    assert len(writes(requests_mock)) == 2


def test_an_unknown_outcome_with_someone_elses_change_is_not_resent(world, requests_mock):
    fake, writer, _, _ = world
    fake.add_client(101, 10)
    fake.faults = ["503-other"]
    write = Write(planned(101, 10, 12))
    writer.write_one(write)
    assert write.final.status == "failed"
    assert "99 units" in write.final.message
    assert len(writes(requests_mock)) == 1
