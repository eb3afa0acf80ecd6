"""Where a write landed, read back in every path: a day late, a day early, a resend refused
as a same-day duplicate, an interrupted run's intent, a line at 0 units.

Each of these was found by review to send a change twice, report it wrongly, or tell the
operator to repeat by hand what Autotask already had; each failed before its fix.
"""

from __future__ import annotations

import json

import pytest
import requests
from fake_autotask import (
    ADJUSTMENTS,
    CONTRACT,
    PERIOD,
    amount,
    cs_id,
    mapping,
    record_intent,
    writes,
)

from infima_autotask.history import History

pytestmark = pytest.mark.usefixtures("no_backoff")

DUPLICATE = "Attempt to insert duplicate data into contract_service_period."


def land_late(fake, client_id: int, change: int, *, day: str = "2026-12-02") -> None:
    """What Autotask does with a write it dated a day late: the row is split at ``day``."""
    row = fake.row_of(client_id)
    units = row["units"] + change
    end = row["endDate"]
    row["endDate"] = f"{day}T00:00:00"
    fake.rows.append(
        {
            **row,
            "id": row["id"] + 50_000,
            "startDate": f"{day}T00:00:00",
            "endDate": end,
            "units": units,
            "price": amount(units, 4.5),
            "cost": amount(units, 2.25),
        }
    )


def only_item(result) -> dict:
    [item] = json.loads(result.stdout)["items"]
    return item


def test_an_unknown_outcome_that_landed_a_day_late_is_never_sent_again(
    invoke, setup, fake, requests_mock
):
    fake.add_client(101, 10)
    setup({101: 12})
    sent = []

    def answer(request, context):
        sent.append(request.json())
        land_late(fake, 101, request.json()["unitChange"])
        raise requests.exceptions.ReadTimeout("read timed out")

    requests_mock.post(ADJUSTMENTS, content=answer)
    result = invoke("sync", "--month", PERIOD, "--json")

    assert len(sent) == 1
    item = only_item(result)
    assert item["status"] == "failed"
    assert "a day after 2026-12-01" in item["message"]


def test_an_interrupted_write_that_landed_a_day_late_is_not_written_again(
    invoke, setup, fake, requests_mock, state_dir
):
    fake.add_client(101, 10)
    setup({101: 12})
    intent = record_intent(state_dir, 101, before=10, target=12)
    land_late(fake, 101, 2)

    result = invoke("sync", "--month", PERIOD, "--json")

    assert writes(requests_mock) == []
    with History(state_dir) as history:
        resolved = next(i for i in history.items() if i.id == intent)
    assert resolved.status == "failed"
    assert "a day after 2026-12-01" in resolved.message
    # 2026-12-01 still shows 10, but a write of +2 there would bill 14 from the 2nd.
    item = only_item(result)
    assert (result.exit_code, item["status"]) == (1, "failed")
    assert "dated 2026-12-02, after 2026-12-01" in item["message"]


def test_a_later_run_never_adds_to_a_write_that_landed_a_day_late(
    invoke, setup, fake, requests_mock
):
    """A daily `--if-due` catch-up after a late landing: the row on the 1st still shows the
    old count; writing the difference there would bill it twice from the 2nd."""
    fake.add_client(101, 10)
    land_late(fake, 101, 2)
    setup({101: 12})
    result = invoke("sync", "--month", PERIOD, "--if-due", "--json")
    assert writes(requests_mock) == []
    assert only_item(result)["status"] == "failed"


def test_an_interrupted_write_that_landed_a_day_early_is_reported(
    invoke, setup, fake, requests_mock, state_dir
):
    fake.add_client(101, 10)
    december = fake.row_of(101)
    november = {**december, "id": 1, "startDate": "2026-11-01T00:00:00"}
    november["endDate"] = "2026-11-30T00:00:00"
    fake.rows.append(november)
    setup({101: 12})
    intent = record_intent(state_dir, 101, before=10, target=12)
    # The killed run's create landed on 30 November: a one-day row, and December changed too.
    fake.rows.append(
        {
            **december,
            "id": 2,
            "startDate": "2026-11-30T00:00:00",
            "endDate": "2026-11-30T00:00:00",
            "units": 12,
            "price": amount(12, 4.5),
            "cost": amount(12, 2.25),
        }
    )
    december.update(units=12, price=amount(12, 4.5), cost=amount(12, 2.25))

    invoke("sync", "--month", PERIOD, "--json")

    with History(state_dir) as history:
        resolved = next(i for i in history.items() if i.id == intent)
    assert resolved.status == "failed"
    assert "a day before 2026-12-01" in resolved.message and "reversed by hand" in resolved.message
    assert writes(requests_mock) == []


def test_a_resend_refused_as_a_same_day_duplicate_is_the_first_send_landing(
    invoke, setup, fake, requests_mock
):
    """Attempt 1 times out and shows only after the re-read; the resend is refused as a
    duplicate. The change is there: never tell the operator to enter it by hand."""
    fake.add_client(101, 10)
    fake.add_client(102, 5)
    setup({101: 12, 102: 6})
    sent = []

    def answer(request, context):
        body = request.json()
        sent.append(body)
        if len(sent) == 1:
            raise requests.exceptions.ReadTimeout("read timed out")
        if len(sent) == 2:
            fake._apply(body)  # attempt 1 becomes visible only now
            context.status_code = 500
            return json.dumps({"errors": [DUPLICATE]}).encode()
        fake._apply(body)
        return json.dumps({"itemId": 5}).encode()

    requests_mock.post(ADJUSTMENTS, content=answer)
    result = invoke("sync", "--month", PERIOD, "--json")

    items = {i["client_id"]: i for i in json.loads(result.stdout)["items"]}
    assert items[101]["status"] == "updated"
    assert "refused as a same-day duplicate" in items[101]["message"]
    assert "by hand" not in items[101]["message"]
    assert fake.row_of(101)["units"] == 12 and items[102]["status"] == "updated"


def test_a_cost_change_on_a_line_at_zero_units_is_not_sent_every_month(
    invoke, setup, fake, requests_mock
):
    fake.add_client(101, 0, price=4.5, cost=2.25)
    setup({101: 0}, mappings=[mapping(101, overwrite_cost=True, unit_cost=3.0)])

    first = invoke("sync", "--month", PERIOD, "--json")
    again = invoke("sync", "--month", PERIOD, "--json")

    assert writes(requests_mock) == []
    assert first.exit_code == again.exit_code == 0
    assert only_item(first)["status"] == "unchanged"
    assert "not written: the line has 0 units" in only_item(first)["message"]


def test_a_rounded_row_keeps_the_listed_unit_price(invoke, setup, fake, requests_mock):
    """3 x 0.995 shows 2.98; 2.98 / 3 would be a new price of 0.9933."""
    fake.add_client(101, 3, price=0.995, cost=0.4)
    setup({101: 4})
    assert invoke("sync", "--month", PERIOD).exit_code == 0
    assert [w["adjustedUnitPrice"] for w in writes(requests_mock)] == [0.995]


def test_prorate_on_a_contract_starting_mid_month_writes_on_its_start(
    invoke, setup, fake, requests_mock
):
    fake.add_client(101, 10, startDate="2026-12-15T00:00:00")
    fake.contracts[CONTRACT]["startDate"] = "2026-12-15T00:00:00"
    setup({101: 12}, mappings=[mapping(101, prorate=True)])

    result = invoke("sync", "--month", PERIOD, "--json")

    assert result.exit_code == 0, result.output
    item = only_item(result)
    assert (item["status"], item["effective_date"]) == ("updated", "2026-12-15")
    assert [w["effectiveDate"] for w in writes(requests_mock)] == ["2026-12-15T12:00:00Z"]


def test_a_write_dated_the_last_day_that_lands_a_day_late_is_caught(
    invoke, setup, fake, requests_mock
):
    """Billed from the 31st: E is the month's last day, so E + 1 is next month; the read
    back reaches it."""
    fake.add_client(101, 10, startDate="2026-12-31T00:00:00", endDate="2027-01-30T00:00:00")
    fake.contracts[CONTRACT]["startDate"] = "2026-01-31T00:00:00"

    def answer(request, context):
        land_late(fake, 101, request.json()["unitChange"], day="2027-01-01")
        return json.dumps({"itemId": 7}).encode()

    requests_mock.post(ADJUSTMENTS, content=answer)
    setup({101: 12})
    result = invoke("sync", "--month", PERIOD, "--json")

    item = only_item(result)
    assert item["effective_date"] == "2026-12-31"
    assert item["status"] == "failed" and "a day after 2026-12-31" in item["message"]
    assert cs_id(101) == item["contract_service_id"]
