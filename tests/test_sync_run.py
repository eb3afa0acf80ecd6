"""``sync`` through the real CLI, against a requests-mock fake of Autotask (and INFIMA).

Every test checks the writes Autotask received (count and body) and, where it matters, the
exact number of Autotask requests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timezone

import pytest
from conftest import API_KEY, BASE, INFIMA, SECRET, make_config, write_config
from fake_autotask import (
    ACCOUNT,
    ADJUSTMENTS,
    CONTRACT,
    EFFECTIVE,
    PERIOD,
    PICKLIST,
    SERVICE,
    UNITS_QUERY,
    autotask_calls,
    cs_id,
    floor,
    mapping,
    record_intent,
    writes,
)

from infima_autotask.history import History
from infima_autotask.http import HttpClient

pytestmark = pytest.mark.usefixtures("no_backoff")


# -- the happy path -----------------------------------------------------------------------


def test_sync_writes_one_adjustment_per_change_and_verifies(invoke, setup, fake, requests_mock):
    for cid, units in {101: 10, 102: 5, 103: 7}.items():
        fake.add_client(cid, units)
    setup({101: 12, 102: 5, 103: 6})

    result = invoke("sync", "--month", PERIOD)

    assert result.exit_code == 0, result.output
    sent = writes(requests_mock)
    assert sent == [
        {
            "contractID": CONTRACT,
            "contractServiceID": cs_id(101),
            "serviceID": SERVICE,
            "effectiveDate": EFFECTIVE,
            "unitChange": 2,
            "adjustedUnitPrice": 4.5,
            "adjustedUnitCost": 2.25,
        },
        {
            "contractID": CONTRACT,
            "contractServiceID": cs_id(103),
            "serviceID": SERVICE,
            "effectiveDate": EFFECTIVE,
            "unitChange": -1,
            "adjustedUnitPrice": 4.5,
            "adjustedUnitCost": 2.25,
        },
    ]
    calls = autotask_calls(requests_mock)
    assert len(calls) == floor(3, 2) + PICKLIST
    # The first write goes alone and is read back before the second is sent; then one
    # verification read covers every written item.
    urls = [r.url for r in calls[-4:]]
    assert urls == [ADJUSTMENTS, UNITS_QUERY, ADJUSTMENTS, UNITS_QUERY]
    assert [r.json()["filter"][0]["value"] for r in (calls[-3], calls[-1])] == [
        [cs_id(101)],
        [cs_id(101), cs_id(103)],
    ]
    assert fake.row_of(101)["units"] == 12 and fake.row_of(103)["units"] == 6
    assert fake.row_of(101)["price"] == 54.0 and fake.row_of(103)["cost"] == 13.5
    assert result.stdout.splitlines()[0].split() == [
        "Client",
        "Contract",
        "Service",
        "Effective",
        "Users",
        "Before",
        "After",
        "Change",
        "Status",
        "Detail",
    ]
    lines = {line.split()[1]: line.split() for line in result.stdout.splitlines()[2:]}
    assert lines["101"][2:9] == [str(cs_id(101)), "2026-12-01", "12", "10", "12", "+2", "updated"]
    assert lines["102"][2:9] == [str(cs_id(102)), "2026-12-01", "5", "5", "5", "0", "unchanged"]
    assert lines["103"][2:9] == [str(cs_id(103)), "2026-12-01", "6", "7", "6", "-1", "updated"]
    assert result.stderr == (
        "Period 2026-12: 2 updated, 1 unchanged, 0 skipped, 0 held, 0 failed\n"
        "Money change written: +4.50 a period at the unit prices.\n"
    )
    # The Detail of each write: the money it moves, at what unit price, on which line.
    assert "+9.00 at 4.50 a unit; Acme LLC / INFIMA SAT" in result.stdout
    assert SECRET not in result.output and API_KEY not in result.output


def test_threshold_is_read_after_the_batched_reads_and_before_writes(
    invoke, setup, fake, requests_mock
):
    fake.add_client(101, 10)
    setup({101: 11})
    assert invoke("sync", "--month", PERIOD).exit_code == 0
    urls = [r.url.removeprefix(BASE) for r in autotask_calls(requests_mock)]
    assert urls == [
        "Contracts/query",
        "ContractServices/query",
        "Contracts/entityInformation/fields",  # period labels decide the units read's window
        "ContractServiceUnits/query",
        "ThresholdInformation",
        "ContractServiceAdjustments",
        "ContractServiceUnits/query",
    ]


def test_second_run_same_month_writes_nothing(invoke, setup, fake, requests_mock):
    fake.add_client(101, 10)
    fake.add_client(102, 3)
    setup({101: 12, 102: 4})
    assert invoke("sync", "--month", PERIOD).exit_code == 0
    assert len(writes(requests_mock)) == 2
    requests_mock.reset_mock()

    again = invoke("sync", "--month", PERIOD)

    assert again.exit_code == 0
    assert writes(requests_mock) == []
    assert len(autotask_calls(requests_mock)) == floor(2, 0) + PICKLIST
    assert again.stderr == "Period 2026-12: 0 updated, 2 unchanged, 0 skipped, 0 held, 0 failed\n"


def test_cost_only_change_is_written_with_unit_change_zero(invoke, setup, fake, requests_mock):
    fake.add_client(101, 10)
    setup({101: 10}, mappings=[mapping(101, overwrite_cost=True, unit_cost=3.1)])
    result = invoke("sync", "--month", PERIOD)
    assert result.exit_code == 0, result.output
    assert writes(requests_mock) == [
        {
            "contractID": CONTRACT,
            "contractServiceID": cs_id(101),
            "serviceID": SERVICE,
            "effectiveDate": EFFECTIVE,
            "unitChange": 0,
            "adjustedUnitPrice": 4.5,
            "adjustedUnitCost": 3.1,
        }
    ]
    assert "unit cost 2.25 -> 3.10" in result.stdout
    assert fake.row_of(101)["cost"] == 31.0  # extended: 10 units at 3.10


def test_at_most_three_writes_in_flight(invoke, setup, fake, requests_mock, monkeypatch):
    """Counted inside HttpClient.request: requests-mock itself serialises sends."""
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}
    original = HttpClient.request

    def counting(self, method, url, **kwargs):
        if url != ADJUSTMENTS:
            return original(self, method, url, **kwargs)
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        try:
            time.sleep(0.02)
            return original(self, method, url, **kwargs)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(HttpClient, "request", counting)
    for cid in range(101, 109):
        fake.add_client(cid, 10)
    setup(dict.fromkeys(range(101, 109), 11))
    assert invoke("sync", "--month", PERIOD).exit_code == 0
    assert len(writes(requests_mock)) == 8
    assert state["peak"] == 3


# -- dry run ----------------------------------------------------------------------------


def test_dry_run_writes_nothing_and_detailed_exitcode(invoke, setup, fake, requests_mock):
    fake.add_client(101, 10)
    fake.add_client(102, 5)
    setup({101: 12, 102: 5})

    result = invoke("sync", "--month", PERIOD, "--dry-run", "--detailed-exitcode")

    assert result.exit_code == 4
    assert writes(requests_mock) == []
    assert len(autotask_calls(requests_mock)) == floor(2, 0) + PICKLIST  # no verification
    assert "planned" in result.stdout
    assert result.stderr == (
        "Period 2026-12: 1 planned, 1 unchanged, 0 skipped, 0 held, 0 failed "
        "(dry run: nothing written)\n"
        "Money change planned: +9.00 a period at the unit prices.\n"
    )
    plain = invoke("sync", "--month", PERIOD, "--dry-run")
    assert plain.exit_code == 0


def test_detailed_exitcode_needs_dry_run(invoke, setup, fake, requests_mock):
    fake.add_client(101, 10)
    setup({101: 12})
    result = invoke("sync", "--detailed-exitcode")
    assert result.exit_code == 2
    assert "--detailed-exitcode works only with --dry-run" in result.stderr
    assert requests_mock.request_history == []


def test_failed_wins_over_detailed_exitcode(invoke, setup, fake, requests_mock):
    fake.add_client(101, 10)
    fake.add_client(102, 5, cost=None)
    setup({101: 12, 102: 6})
    result = invoke("sync", "--month", PERIOD, "--dry-run", "--detailed-exitcode")
    assert result.exit_code == 1
    assert "the API user cannot see costs: grant cost visibility" in result.stdout


# -- outcomes of a write ----------------------------------------------------------------


@pytest.mark.parametrize("fault", ["reject-400", "reject-500"])
def test_rejection_is_failed_and_never_resent(invoke, setup, fake, requests_mock, fault):
    fake.add_client(101, 10)
    fake.add_client(102, 5)
    fake.faults = [fault]
    setup({101: 12, 102: 6})

    result = invoke("sync", "--month", PERIOD, "--json")

    assert result.exit_code == 1
    sent = writes(requests_mock)
    assert [w["contractServiceID"] for w in sent] == [cs_id(101), cs_id(102)]
    doc = json.loads(result.stdout)
    by_client = {item["client_id"]: item for item in doc["items"]}
    assert by_client[101]["status"] == "failed"
    assert by_client[101]["message"].startswith("Autotask refused the change: ")
    assert by_client[101]["after"] == 10
    assert by_client[102]["status"] == "updated"
    # no re-read for a rejection: the only units reads are the batch and the verification
    unit_reads = [r for r in autotask_calls(requests_mock) if r.url.endswith("Units/query")]
    assert len(unit_reads) == 2
    assert unit_reads[-1].json()["filter"][0]["value"] == [cs_id(102)]


def test_timeout_with_target_already_applied_is_not_resent(invoke, setup, fake, requests_mock):
    fake.add_client(101, 10)
    fake.faults = ["apply-then-timeout"]
    setup({101: 12})

    result = invoke("sync", "--month", PERIOD)

    assert result.exit_code == 0, result.output
    assert len(writes(requests_mock)) == 1
    assert fake.row_of(101)["units"] == 12
    assert "updated" in result.stdout and "confirmed by re-reading" in result.stdout
    unit_reads = [r for r in autotask_calls(requests_mock) if r.url.endswith("Units/query")]
    assert len(unit_reads) == 2  # the batch and the re-read; nothing left to verify


@pytest.mark.parametrize("fault", ["connect-timeout", "bare-500"])
def test_unknown_outcome_not_applied_is_sent_exactly_once_more(
    invoke, setup, fake, requests_mock, fault
):
    fake.add_client(101, 10)
    fake.faults = [fault]
    setup({101: 12})

    result = invoke("sync", "--month", PERIOD)

    assert result.exit_code == 0, result.output
    sent = writes(requests_mock)
    assert len(sent) == 2 and sent[0] == sent[1]
    assert fake.row_of(101)["units"] == 12


def test_unknown_twice_and_still_before_is_failed(invoke, setup, fake, requests_mock):
    fake.add_client(101, 10)
    fake.faults = ["connect-timeout", "connect-timeout"]
    setup({101: 12})
    result = invoke("sync", "--month", PERIOD, "--json")
    assert result.exit_code == 1
    assert len(writes(requests_mock)) == 2
    (item,) = json.loads(result.stdout)["items"]
    assert item["status"] == "failed" and item["message"].startswith("outcome unknown; check")


def test_unknown_outcome_with_other_units_is_failed(invoke, setup, fake, requests_mock):
    fake.add_client(101, 10)
    fake.faults = ["503-other"]
    setup({101: 12})
    result = invoke("sync", "--month", PERIOD, "--json")
    assert result.exit_code == 1
    assert len(writes(requests_mock)) == 1
    (item,) = json.loads(result.stdout)["items"]
    assert item["status"] == "failed"
    assert (
        "Autotask shows 99 units at 445.50/222.75 from 2026-12-01, expected 12 at 54.00/27.00"
        in item["message"]
    )


def test_verification_mismatch_is_failed_with_what_autotask_shows(
    invoke, setup, fake, requests_mock
):
    fake.add_client(101, 10)
    fake.faults = ["verify-mismatch"]
    setup({101: 12})
    result = invoke("sync", "--month", PERIOD, "--json")
    assert result.exit_code == 1
    (item,) = json.loads(result.stdout)["items"]
    assert item["status"] == "failed"
    assert item["message"] == (
        "Autotask shows 12 units at 54.00/9.99 from 2026-12-01, expected 12 at 54.00/27.00"
    )
    assert item["after"] == 10


# -- a killed run ---------------------------------------------------------------------------


def test_pending_intent_already_applied_is_confirmed_and_not_rewritten(
    invoke, setup, fake, requests_mock, state_dir
):
    fake.add_client(101, 12)  # the killed run's write landed
    setup({101: 12})
    intent = record_intent(state_dir, 101, before=10, target=12)

    result = invoke("sync", "--month", PERIOD)

    assert result.exit_code == 0, result.output
    assert writes(requests_mock) == []
    with History(state_dir) as history:
        assert history.pending_intents(PERIOD) == []
        resolved = next(i for i in history.items() if i.id == intent)
    assert (resolved.status, resolved.after, resolved.message) == (
        "updated",
        12,
        "confirmed after an interrupted run",
    )


def test_pending_intent_not_applied_is_failed_then_planned_from_the_current_row(
    invoke, setup, fake, requests_mock, state_dir
):
    fake.add_client(101, 10)
    setup({101: 12})
    intent = record_intent(state_dir, 101, before=10, target=12)

    result = invoke("sync", "--month", PERIOD)

    assert result.exit_code == 0, result.output
    assert [w["unitChange"] for w in writes(requests_mock)] == [2]
    with History(state_dir) as history:
        resolved = next(i for i in history.items() if i.id == intent)
    assert (resolved.status, resolved.message) == ("failed", "not applied by the interrupted run")


def test_pending_intent_with_other_units_is_failed_and_current_row_planned(
    invoke, setup, fake, requests_mock, state_dir
):
    fake.add_client(101, 11)
    setup({101: 12})
    intent = record_intent(state_dir, 101, before=10, target=12)
    assert invoke("sync", "--month", PERIOD).exit_code == 0
    assert [w["unitChange"] for w in writes(requests_mock)] == [1]
    with History(state_dir) as history:
        resolved = next(i for i in history.items() if i.id == intent)
    assert resolved.status == "failed" and resolved.message.endswith("units changed since")


def test_dry_run_never_resolves_intents(invoke, setup, fake, requests_mock, state_dir):
    fake.add_client(101, 12)
    setup({101: 12})
    record_intent(state_dir, 101, before=10, target=12)
    assert invoke("sync", "--month", PERIOD, "--dry-run").exit_code == 0
    with History(state_dir) as history:
        assert len(history.pending_intents(PERIOD)) == 1


# -- selection ------------------------------------------------------------------------------


def test_if_due_skips_clients_already_synced(invoke, setup, fake, requests_mock):
    fake.add_client(101, 10)
    fake.add_client(102, 5, approveAndPostDate="2026-12-02T00:00:00")  # held
    setup({101: 12, 102: 6})
    first = invoke("sync", "--month", PERIOD)
    assert first.exit_code == 1
    requests_mock.reset_mock()

    due = invoke("sync", "--month", PERIOD, "--if-due", "--json")

    assert due.exit_code == 1
    assert [i["client_id"] for i in json.loads(due.stdout)["items"]] == [102]
    assert writes(requests_mock) == []
    # the held client now posted manually: still due until it is synced successfully
    fake.row_of(102).update(units=6, approveAndPostDate=None)
    assert invoke("sync", "--month", PERIOD, "--if-due").exit_code == 0
    requests_mock.reset_mock()
    nothing = invoke("sync", "--month", PERIOD, "--if-due")
    assert nothing.exit_code == 0
    assert nothing.stdout == "" and nothing.stderr == "Period 2026-12: nothing due.\n"
    assert requests_mock.request_history == []


def test_quiet_is_silent_when_all_is_well_and_speaks_otherwise(invoke, setup, fake):
    fake.add_client(101, 10)
    fake.add_client(102, 5)
    setup({101: 12, 102: 5})
    quiet = invoke("sync", "--month", PERIOD, "-q")
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")
    nothing_due = invoke("sync", "--month", PERIOD, "--if-due", "--quiet")
    assert (nothing_due.exit_code, nothing_due.output) == (0, "")
    setup({101: 0, 102: 5})
    loud = invoke("sync", "--month", PERIOD, "--quiet")
    assert loud.exit_code == 1
    assert "held" in loud.stdout and "drop from 12 to 0 units" in loud.stdout
    assert loud.stderr == "Period 2026-12: 0 updated, 1 unchanged, 0 skipped, 1 held, 0 failed\n"


def test_client_option_restricts_and_unmapped_client_is_exit_2(invoke, setup, fake, requests_mock):
    fake.add_client(101, 10)
    fake.add_client(102, 5)
    setup({101: 12, 102: 6})
    only = invoke("sync", "--month", PERIOD, "--client", "102", "--json")
    assert only.exit_code == 0
    assert [i["client_id"] for i in json.loads(only.stdout)["items"]] == [102]
    assert [w["contractServiceID"] for w in writes(requests_mock)] == [cs_id(102)]
    requests_mock.reset_mock()
    unknown = invoke("sync", "--client", "999")
    assert unknown.exit_code == 2
    assert unknown.stderr.startswith("Error: Client 999 is not mapped;")
    assert requests_mock.request_history == []


def test_yes_lifts_the_drop_guard(invoke, setup, fake, requests_mock):
    fake.add_client(101, 10)
    setup({101: 2})
    held = invoke("sync", "--month", PERIOD)
    assert held.exit_code == 1 and writes(requests_mock) == []
    lifted = invoke("sync", "--month", PERIOD, "--yes")
    assert lifted.exit_code == 0
    assert [w["unitChange"] for w in writes(requests_mock)] == [-8]


# -- failures before and during per-client work ---------------------------------------------


def test_threshold_guard_writes_nothing_and_exits_3(invoke, setup, fake, requests_mock, state_dir):
    fake.add_client(101, 10)
    fake.add_client(102, 5)
    fake.used = 7_997  # 7,997 + 2 writes + 1 verification + 1 first-write read > 80 % of 10,000
    setup({101: 12, 102: 6})

    result = invoke("sync", "--month", PERIOD)

    assert result.exit_code == 3
    assert writes(requests_mock) == []
    assert result.stderr.startswith(
        "Error: Autotask API usage is 7997 of 10000 requests this hour; 4 more would pass "
        "max_api_usage_percent (80%). Nothing was written;"
    )
    with History(state_dir) as history:
        run = history.last_run()
    assert run.outcome.startswith("error: Autotask API usage")
    fake.used = 7_996  # exactly at the limit: allowed
    assert invoke("sync", "--month", PERIOD).exit_code == 0
    assert len(writes(requests_mock)) == 2


def test_a_failing_client_does_not_stop_the_others(
    invoke, config_path, fake, requests_mock, stored_creds
):
    """INFIMA API: one client's user list fails; the others are still written (exit 1)."""
    for cid in (101, 102, 103):
        fake.add_client(cid, 10)
    write_config(config_path, make_config([mapping(101), mapping(102), mapping(103)]))
    clients = [{"id": cid, "client_name": f"Client {cid}"} for cid in (101, 102, 103, 104, 105)]
    requests_mock.get(INFIMA + "/v1/clients", json={"items": clients})
    for cid, n in ((101, 11), (103, 9)):
        users = [{"id": i, "status": "active"} for i in range(n)] + [{"id": 99, "status": "x"}]
        requests_mock.get(f"{INFIMA}/v1/clients/{cid}/users", json={"items": users})
    requests_mock.get(f"{INFIMA}/v1/clients/102/users", status_code=404, json={"message": "no"})

    result = invoke("sync", "--month", PERIOD)

    assert result.exit_code == 1
    assert [(w["contractServiceID"], w["unitChange"]) for w in writes(requests_mock)] == [
        (cs_id(101), 1),
        (cs_id(103), -1),
    ]
    line_102 = next(line for line in result.stdout.splitlines() if " 102 " in line)
    assert "failed" in line_102 and "INFIMA users: INFIMA refused" in line_102
    assert result.stderr.splitlines() == [
        "Warning: INFIMA clients without a mapping (not synced): Client 104 (104), "
        "Client 105 (105)",
        "Period 2026-12: 2 updated, 0 unchanged, 0 skipped, 0 held, 1 failed",
        "Money change written: +0.00 a period at the unit prices.",  # +2 and -2 at 4.50
    ]
    # INFIMA budget: one client list plus one user list per synced client; no fetch of 104/105
    infima_calls = [r for r in requests_mock.request_history if r.url.startswith(INFIMA)]
    assert len(infima_calls) == 4
    assert API_KEY not in result.output


def test_infima_client_list_failure_is_exit_3_before_any_autotask_request(
    invoke, config_path, fake, requests_mock, stored_creds
):
    fake.add_client(101, 10)
    write_config(config_path, make_config([mapping(101)]))
    requests_mock.get(INFIMA + "/v1/clients", status_code=401, json={"message": "bad key"})
    result = invoke("sync", "--month", PERIOD)
    assert result.exit_code == 3
    assert result.stderr.startswith("Error: INFIMA rejected the API key")
    assert autotask_calls(requests_mock) == []


def test_batched_read_failure_is_exit_3_and_nothing_written(invoke, setup, fake, requests_mock):
    fake.add_client(101, 10)
    setup({101: 12})
    requests_mock.post(BASE + "ContractServices/query", status_code=503)
    result = invoke("sync", "--month", PERIOD)
    assert result.exit_code == 3
    assert result.stderr.startswith("Error: Autotask is unavailable (HTTP 503")
    assert writes(requests_mock) == []


def test_unmapped_clients_from_a_counts_file_are_listed_only_with_users(
    invoke, setup, fake, counts
):
    fake.add_client(101, 10)
    setup({101: 10})
    counts({101: 10, 104: 3, 105: 0})  # 104 and 105 are in the file but not mapped
    result = invoke("sync", "--month", PERIOD)
    assert result.exit_code == 0
    assert result.stderr.splitlines()[0] == (
        "Warning: INFIMA clients without a mapping (not synced): Client 104 (104)"
    )


def test_ended_contract_names_its_renewal(invoke, setup, fake, requests_mock):
    fake.add_client(101, 10)
    fake.contracts[CONTRACT] = {
        "id": CONTRACT,
        "companyID": ACCOUNT,
        "contractType": 7,
        "status": 1,
        "startDate": "2025-11-01T00:00:00",
        "endDate": "2026-10-31T00:00:00",
    }
    fake.contracts[29690011] = {
        "id": 29690011,
        "companyID": ACCOUNT,
        "contractType": 7,
        "status": 1,
        "startDate": "2026-11-01T00:00:00",
        "endDate": "2027-10-31T00:00:00",
    }
    fake.services[29690450] = {"id": 29690450, "contractID": 29690011, "serviceID": SERVICE}
    setup({101: 12})
    result = invoke("sync", "--month", PERIOD, "--json")
    assert result.exit_code == 1
    (item,) = json.loads(result.stdout)["items"]
    assert item["message"] == (
        f"contract {CONTRACT} ended on 2026-10-31; re-map to its renewal with `infima-autotask "
        f"map 101 --account {ACCOUNT} --contract 29690011 --contract-service 29690450`"
    )
    assert writes(requests_mock) == []
    # the renewal look-up is 2 requests, for the failed item only
    assert len(autotask_calls(requests_mock)) == floor(1, 0) + PICKLIST + 2


# -- the state folder and the lock -----------------------------------------------------------


def test_state_dir_not_writable_refuses_before_any_request(
    invoke, setup, fake, requests_mock, state_dir
):
    fake.add_client(101, 10)
    setup({101: 12})
    state_dir.parent.mkdir(parents=True)
    state_dir.write_text("not a folder")
    result = invoke("sync", "--month", PERIOD)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: The state folder {state_dir} is not a folder.")
    assert writes(requests_mock) == []
    assert requests_mock.request_history == []


def test_second_sync_while_one_holds_the_lock_is_exit_3(
    invoke, setup, fake, requests_mock, state_dir
):
    fake.add_client(101, 10)
    setup({101: 12})
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                from pathlib import Path
                from infima_autotask.history import SyncLock
                with SyncLock(Path({str(state_dir)!r})):
                    print("locked", flush=True)
                    sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = invoke("sync", "--month", PERIOD)
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    assert result.exit_code == 3
    assert result.stderr == (
        f"Error: Another sync is running (PID {holder.pid}); wait for it to finish, "
        "or stop it if it is stuck.\n"
    )
    assert requests_mock.request_history == []
    assert invoke("sync", "--month", PERIOD).exit_code == 0  # released with its holder


# -- output -----------------------------------------------------------------------------------


def test_json_document_shape(invoke, setup, fake, seams):
    fake.add_client(101, 10)
    fake.add_client(102, 8, startDate="2026-11-15T00:00:00")  # period not starting on 2026-12-01
    setup({101: 12, 102: 9})
    result = invoke("sync", "--month", PERIOD, "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    common = {
        "account_name": "Acme LLC",
        "contract_id": CONTRACT,
        "service_name": "INFIMA SAT",
        "unit_price": 4.5,
        "unit_cost": 2.25,
    }
    assert doc == {
        "period": "2026-12",
        "dry_run": False,
        "items": [
            {
                **common,
                "client_id": 101,
                "client_name": "Client 101",
                "psa": "autotask",
                "contract_service_id": cs_id(101),
                "effective_date": "2026-12-01",
                "users": 12,
                "target": 12,
                "before": 10,
                "after": 12,
                "change": 2,
                "money_change": 9.0,
                "status": "updated",
                "message": "",
            },
            {
                **common,
                "client_id": 102,
                "client_name": "Client 102",
                "psa": "autotask",
                "contract_service_id": cs_id(102),
                "effective_date": "2026-12-01",
                "users": 9,
                "target": 9,
                "before": 8,
                "after": 8,
                "change": 1,
                "money_change": 0.0,
                "status": "failed",
                "message": f"Autotask shows no billing period of contract service {cs_id(102)} "
                "starting on 2026-12-01 (the row covering it starts 2026-11-15); check the "
                "contract's billing period in Autotask, or set `prorate: true` on the mapping to "
                "write on the 1st (Autotask then prorates)",
            },
        ],
        "summary": {
            "updated": 1,
            "unchanged": 0,
            "planned": 0,
            "skipped": 0,
            "held": 0,
            "failed": 1,
        },
        "warnings": [],
    }
    assert result.stderr == "Period 2026-12: 1 updated, 0 unchanged, 0 skipped, 0 held, 1 failed\n"


@pytest.fixture
def utc_server():
    """This process's own zone is UTC, as on most servers (cron's month is the server's)."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


def at(seams, when: datetime) -> None:
    """Move the run's clock."""
    seams["clock"] = lambda: when


# 06:00 UTC on 1 December: the README's old cron hour; still 30 November in the Americas.
CRON_HOUR = datetime(2026, 12, 1, 6, 0, tzinfo=timezone.utc)


def test_month_defaults_to_the_current_month_in_the_configured_zone(
    invoke, setup, fake, requests_mock, seams, utc_server
):
    at(seams, datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc))  # 22:00 in New York
    fake.add_client(101, 10)
    setup({101: 12}, sync={"timezone": "Europe/Berlin"})
    assert invoke("sync", "--dry-run").stderr.startswith("Period 2026-12:")
    setup({101: 12}, sync={"timezone": "America/New_York"})
    result = invoke("sync", "--dry-run", "--json")
    assert json.loads(result.stdout)["period"] == "2026-11"
    assert result.exit_code == 1  # no units row covers 2026-11-01 in the fake


def test_a_cron_run_before_midnight_in_the_billing_zone_writes_nothing(
    invoke, setup, fake, requests_mock, seams, utc_server
):
    """UTC server, Los Angeles billing, cron at 06:00 on the 1st: 22:00 on the 30th there.
    Without --month, a real run refuses (exit 2); a dry run warns; nothing is sent."""
    at(seams, CRON_HOUR)
    fake.add_client(101, 10)
    setup({101: 12}, sync={"timezone": "America/Los_Angeles"})

    real = invoke("sync")

    assert real.exit_code == 2
    assert real.stderr.startswith(
        "Error: It is 2026-11-30 22:00 in sync.timezone America/Los_Angeles, so this month is "
        "2026-11 there, but 2026-12 on this server: a sync now would write 2026-11. Nothing "
        "was written."
    )
    assert "CRON_TZ=America/Los_Angeles" in real.stderr and "--month 2026-11" in real.stderr
    assert autotask_calls(requests_mock) == []
    dry = invoke("sync", "--dry-run")
    assert "Warning: It is 2026-11-30 22:00" in dry.stderr
    assert "A real run now would refuse (exit 2)." in dry.stderr
    assert writes(requests_mock) == []

    # After midnight there, the same line syncs December.
    at(seams, datetime(2026, 12, 1, 8, 5, tzinfo=timezone.utc))
    later = invoke("sync")
    assert later.exit_code == 0, later.output
    assert later.stderr.startswith("Period 2026-12:")


@pytest.mark.parametrize(
    ("month", "named"), [("2026-11", "a past month"), ("2027-01", "a future month")]
)
def test_an_explicit_other_month_is_named_in_the_summary(
    invoke, setup, fake, requests_mock, seams, utc_server, month, named
):
    at(seams, CRON_HOUR)
    fake.add_client(101, 10)
    setup({101: 10}, sync={"timezone": "Europe/London"})
    result = invoke("sync", "--month", month, "--dry-run")
    assert f"Period {month} ({named}):" in result.stderr
    assert "would refuse" not in result.stderr  # --month is on purpose


def test_bad_month_is_a_usage_error(invoke, setup, fake, requests_mock):
    setup({101: 12})
    result = invoke("sync", "--month", "2026-13")
    assert result.exit_code == 2
    assert "expected a month like 2026-12 (YYYY-MM)" in result.stderr
    assert requests_mock.request_history == []


def test_history_records_every_item_of_real_and_dry_runs(invoke, setup, fake, state_dir):
    fake.add_client(101, 10)
    fake.add_client(102, 5)
    setup({101: 12, 102: 5})
    assert invoke("sync", "--month", PERIOD, "--dry-run").exit_code == 0
    assert invoke("sync", "--month", PERIOD).exit_code == 0
    with History(state_dir) as history:
        items = history.items()
        run = history.last_run()
    assert [(i.client_id, i.status, i.dry_run) for i in items] == [
        (101, "updated", False),  # its intent was recorded after the items needing no write
        (102, "unchanged", False),
        (102, "unchanged", True),
        (101, "planned", True),
    ]
    assert items[0].adjustment_id == 900001 and items[0].after == 12
    assert run.outcome == "ok" and run.summary["updated"] == 1


def test_progress_bar_only_when_stderr_is_a_terminal(invoke, setup, fake, monkeypatch):
    fake.add_client(101, 10)
    setup({101: 12})
    plain = invoke("sync", "--month", PERIOD, "--dry-run")
    assert "Counting INFIMA users" not in plain.stderr
    monkeypatch.setattr("infima_autotask.cli._common.show_progress", lambda: True)
    shown = invoke("sync", "--month", PERIOD)
    assert shown.exit_code == 0
    assert "Counting INFIMA users" in shown.stderr and "Writing to Autotask" in shown.stderr
    assert shown.stderr.endswith(
        "Period 2026-12: 1 updated, 0 unchanged, 0 skipped, 0 held, 0 failed\n"
        "Money change written: +9.00 a period at the unit prices.\n"
    )
    assert "Writing" not in shown.stdout


def test_an_invalid_integration_code_is_rejected_credentials(invoke, setup, fake, requests_mock):
    """Autotask answers a wrong tracking identifier with HTTP 500, not 401."""
    fake.add_client(101, 10)
    setup({101: 12})
    requests_mock.post(
        BASE + "Contracts/query", status_code=500, json={"errors": ["IntegrationCode is invalid."]}
    )

    result = invoke("sync", "--month", PERIOD)

    assert result.exit_code == 3
    assert result.stderr.startswith("Error: Autotask rejected the integration code")
    assert "API Tracking Identifier" in result.stderr and "connect" in result.stderr
    assert writes(requests_mock) == []


def test_company_zero_is_a_real_account(invoke, setup, fake, requests_mock):
    """Every tenant's own organization is company 0: a contract of it can be synced."""
    fake.add_client(101, 10)
    fake.contracts[CONTRACT]["companyID"] = 0
    setup({101: 12}, mappings=[mapping(101, account_id=0)])
    result = invoke("sync", "--month", PERIOD)
    assert result.exit_code == 0, result.output
    assert [w["unitChange"] for w in writes(requests_mock)] == [2]


def test_a_counts_file_with_an_impossible_count_is_an_error_line_not_a_traceback(
    invoke, config_path, fake, stored_creds, tmp_path, requests_mock
):
    """99999999999999999999 users ended in an OverflowError after the run had begun."""
    counts = tmp_path / "counts.csv"
    counts.write_text(
        "client_id,active_users,client_name\n"
        "101,99999999999999999999,Acme\n"
        "102,5\n"  # client_name is optional on every row
        "103,x,Cobalt\n",
        encoding="utf-8",
    )
    fake.add_client(101, 10)
    write_config(
        config_path,
        make_config([mapping(101), mapping(102)], infima={"counts_file": str(counts)}),
    )

    result = invoke("sync", "--month", PERIOD)

    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"Error: Counts file {counts} has 2 bad row(s)")
    assert lines[1:] == [
        "  line 2: active_users must be a whole number >= 0, got '99999999999999999999'",
        "  line 4: active_users must be a whole number >= 0, got 'x'",
    ]
    assert writes(requests_mock) == []


def test_a_plan_made_before_midnight_in_the_billing_zone_is_refused_too(
    invoke, setup, fake, requests_mock, seams, utc_server, tmp_path
):
    """A dry run warned; its plan carries the wrong month: `--plan` must not write it."""
    at(seams, CRON_HOUR)
    fake.add_client(101, 10)
    setup({101: 12}, sync={"timezone": "America/Los_Angeles"})
    plan = tmp_path / "plan.json"
    invoke("sync", "--dry-run", "--plan-out", str(plan))

    result = invoke("sync", "--plan", str(plan))

    assert result.exit_code == 2
    assert result.stderr.startswith("Error: It is 2026-11-30 22:00 in sync.timezone")
    assert writes(requests_mock) == []


def test_a_billing_zone_ahead_of_the_server_writes_its_month(
    invoke, setup, fake, requests_mock, seams, utc_server
):
    """20:00 UTC on 30 November is 07:00 on 1 December in Sydney: December has begun there."""
    at(seams, datetime(2026, 11, 30, 20, 0, tzinfo=timezone.utc))
    fake.add_client(101, 10)
    setup({101: 12}, sync={"timezone": "Australia/Sydney"})
    result = invoke("sync")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("Period 2026-12:")
    assert len(writes(requests_mock)) == 1
