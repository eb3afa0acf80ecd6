"""The sync's INFIMA counting: overlapped with the Autotask reads, bounded, cancelled on failure.

Runs ``run_sync`` against the loopback sandbox with a per-request latency and reads the
sandbox's request log (when each request entered and left the server). No assertion is on
elapsed time: only on the order and overlap of requests, which the latency makes reliable.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from infima_autotask import runner
from infima_autotask.errors import ApiError
from infima_autotask.runner import SyncOptions, run_sync
from infima_autotask.runtime import Runtime
from infima_autotask.sandbox import RequestRecord, Sandbox

LATENCY = 0.03
CLIENTS = 40  # ~120 user pages: several rounds of INFIMA_THREADS


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(latency=LATENCY) as sb:
        yield sb


def make_runtime(sb: Sandbox, tmp_path: Path, mappings: list[dict[str, Any]]) -> Runtime:
    config = {
        "version": 1,
        "state_dir": str(tmp_path / "state"),
        "autotask": {
            "username": sb.username,
            "integration_code": sb.integration_code,
            "api_url": sb.autotask_url,
        },
        "infima": {"api_url": sb.infima_url},
        "mappings": mappings,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    env = {
        "INFIMA_AUTOTASK_SECRET": sb.secret,
        "INFIMA_API_KEY": sb.api_key,
        "HOME": str(tmp_path),
    }
    return Runtime(path, env=env)


def peak(records: list[RequestRecord]) -> int:
    """Most of ``records`` inside the server at one moment."""
    events = sorted([(r.started, 1) for r in records] + [(r.finished, -1) for r in records])
    current = most = 0
    for _, step in events:
        current += step
        most = max(most, current)
    return most


def user_lists(sb: Sandbox) -> list[RequestRecord]:
    return [r for r in sb.requests if r.service == "infima" and "/users" in r.path]


def test_user_counts_overlap_the_batched_reads_and_end_before_the_threshold(sandbox, tmp_path):
    mappings = sandbox.generate(CLIENTS, changed_fraction=0.25)
    runtime = make_runtime(sandbox, tmp_path, mappings)
    try:
        report = run_sync(runtime, SyncOptions(month=sandbox.state.this_month))
    finally:
        runtime.close()

    assert report.summary["updated"] == 10 and report.summary["failed"] == 0
    users = user_lists(sandbox)
    autotask = [r for r in sandbox.requests if r.service == "autotask"]
    client_list = [r for r in sandbox.requests if r.path.startswith("/v1/clients?")]
    reads = [r for r in autotask if r.path.endswith("/query")][:3]
    assert [r.path.rsplit("/", 2)[-2] for r in reads] == [
        "Contracts",
        "ContractServices",
        "ContractServiceUnits",
    ]
    # The client list comes first: its failure must stop the run before anything else.
    assert max(r.finished for r in client_list) <= min(r.started for r in users + autotask)
    # Some user list was in the server while the contracts query was.
    contracts = reads[0]
    assert any(u.started < contracts.finished and contracts.started < u.finished for u in users)
    # Every count is known before the threshold read that checks k, and before any write.
    threshold = next(r for r in autotask if "ThresholdInformation" in r.path)
    writes = [r for r in autotask if r.path.endswith("ContractServiceAdjustments")]
    assert len(writes) == 10
    assert max(u.finished for u in users) <= threshold.started <= min(w.started for w in writes)


def test_user_lists_in_flight_stay_within_the_bound(sandbox, tmp_path):
    mappings = sandbox.generate(CLIENTS, changed_fraction=0.0)
    runtime = make_runtime(sandbox, tmp_path, mappings)
    try:
        run_sync(runtime, SyncOptions(month=sandbox.state.this_month, dry_run=True))
    finally:
        runtime.close()

    users = user_lists(sandbox)
    assert len({r.path.split("?")[0] for r in users}) == CLIENTS  # one list per synced client
    assert 1 < peak(users) <= runner.INFIMA_THREADS == 16
    autotask = [r for r in sandbox.requests if r.service == "autotask"]
    assert peak(autotask) <= 3
    assert all(r.status != 429 for r in sandbox.requests)


def test_a_failed_batched_read_leaves_the_remaining_user_lists_unsent(sandbox, tmp_path):
    mappings = sandbox.generate(CLIENTS, changed_fraction=0.5)
    sandbox.faults.add("Contracts", "500-errors")  # a rejection: not retried
    runtime = make_runtime(sandbox, tmp_path, mappings)
    try:
        with pytest.raises(ApiError):
            run_sync(runtime, SyncOptions(month=sandbox.state.this_month))
    finally:
        runtime.close()

    fetched = {r.path.split("?")[0] for r in user_lists(sandbox)}
    assert 0 < len(fetched) < CLIENTS
    assert sandbox.adjustments() == []
    assert not any("ThresholdInformation" in r.path for r in sandbox.requests)
