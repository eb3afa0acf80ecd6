"""Fault matrix (issue 7, part 1): every fault injected end to end through the sandbox.

Each case runs the real CLI (in-process through click, or the installed console script as a
subprocess where the process must be killed or run twice at once) against the loopback
sandbox, and afterwards checks Autotask's units, the NUMBER of adjustments (zero double
writes), the SPEC §3 exit code, a clear ``Error:``/Detail message, and that the config file,
and so every mapping, is byte for byte unchanged (zero lost mappings).

Faults injected (one matrix case each; ``FAULTS_INJECTED`` counts them and
``test_the_docstring_counts_every_case`` keeps the figure honest):

Reads
  1. 429 storm on a batched read, with Retry-After: retried, run completes.
  2. 429 storm on a batched read, without Retry-After (backoff): run completes.
  3. 429 on a read that never ends: exit 3, nothing written.
  4. 503 on a batched read: retried, run completes.
  5. Connection resets (drop) on a batched read: retried, run completes.
  6. Connection reset on the INFIMA client list: retried, run completes.
  7. A read that times out: retried, run completes.
  8. Zone lookup answering 503 (no API URL configured): retried, run completes.
Writes (ContractServiceAdjustments create)
  9. Applied, answer lost (apply-then-drop): re-read, updated, one adjustment.
 10. Applied, answered 500 bare (apply-then-500-bare): re-read, updated, one adjustment.
 11. Answered 500 with ``errors``: failed, never re-sent (one create, zero adjustments).
 12. Answered 500 bare, not applied: re-read, sent once more, one adjustment.
 13. Answered 429, not applied: re-read, sent once more, one adjustment.
 14. Answered 502, not applied: re-read, sent once more, one adjustment.
 15. Answered 503, not applied: re-read, sent once more, one adjustment.
 16. Connection reset before applying (drop): re-read, sent once more, one adjustment.
 17. Answered 500 bare twice, never applied: failed after exactly two sends.
 18. Timed out, applied late by Autotask: re-read after a wait, updated, one adjustment.
 19. Verification read refused after the write: failed "check Autotask"; next run no write.
 20. Process SIGKILLed between the write and its record: next run writes nothing more.
INFIMA
 21. INFIMA down for every client: exit 3, nothing written.
 22. INFIMA down for one client: that item failed, the others written, exit 1.
 23. INFIMA answering 0 users for a client that has units: held; with --yes written.
Guards and environment
 24. Two ``sync`` runs at once: the second exits 3 naming the holder's PID, sends nothing.
 25. Hourly API threshold nearly used: exit 3, zero writes.
 26. ThresholdInformation read refused: exit 3, zero writes.
 27. Autotask rejecting the credentials (401): exit 3, zero writes.
 28. Keyring unavailable under cron, no env secret: exit 2 naming both fixes; env works.
 29. Config path replaced by a folder: exit 2, no request.
 30. Config file with invalid UTF-8: exit 2, no request.
 31. Config file truncated mid-key: exit 2, no request.
 32. Config file truncated inside a quoted string: exit 2, no request.
 33. State folder under a regular file (history cannot be created): exit 2, no request.
 34. History database path is a folder: exit 2, no request.
 35. Lock file path is a folder: exit 2, no request.
 36. History database damaged (not SQLite): exit 2, no request.

Run them with ``.venv/bin/pytest -q tests/test_faults.py``.
"""

from __future__ import annotations

import inspect
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from sandbox_cli import EXE, subprocess_env

from infima_autotask.cli import cli
from infima_autotask.http import HttpClient, RetryPolicy
from infima_autotask.runtime import Seams
from infima_autotask.sandbox import Sandbox, data

FAULTS_INJECTED = 36

THIS_MONTH = date.today().replace(day=1)
MONTH = THIS_MONTH.strftime("%Y-%m")
ADJ = "ContractServiceAdjustments"

ACME = data.ACME_CLIENT_ID  # 10 units, 12 active users: +2
BIRCH = data.BIRCH_CLIENT_ID  # 25 units, 25 users: unchanged
COBALT = data.COBALT_CLIENT_ID  # 40 units, 31 users: -9
DELTA = data.DELTA_CLIENT_ID  # 8 units, 8 users: unchanged
ALL = (ACME, BIRCH, COBALT, DELTA)
CS = {
    ACME: data.ACME_CONTRACT_SERVICE_ID,
    BIRCH: data.BIRCH_CONTRACT_SERVICE_ID,
    COBALT: data.COBALT_CONTRACT_SERVICE_ID,
    DELTA: data.DELTA_RENEWAL_CONTRACT_SERVICE_ID,
}
SEEDED = {ACME: 10, BIRCH: 25, COBALT: 40, DELTA: 8}
SYNCED = {ACME: 12, BIRCH: 25, COBALT: 31, DELTA: 8}


def _fast_retry(max_delay: float = 0.05) -> RetryPolicy:
    # The same loop as in production, with waits short enough for a test. max_delay is also
    # the wait before re-reading a create whose outcome is unknown.
    return RetryPolicy(max_attempts=6, max_total_wait=5.0, base_delay=0.01, max_delay=max_delay)


@dataclass
class World:
    """A sandbox, a config file, a state folder and the environment of a cron-like run."""

    sandbox: Sandbox
    tmp: Path
    config: Path
    state: Path
    env: dict[str, str]
    config_bytes: bytes = b""
    # Retries without the real backoff; tests swap in a shorter timeout where they need one.
    seams: Seams = field(default_factory=lambda: Seams(retry=_fast_retry))

    def write_config(self, clients: tuple[int, ...] = ALL, **sync: Any) -> None:
        mappings = [m for m in data.seed_mappings(THIS_MONTH) if m["client_id"] in clients]
        doc = {
            "version": 1,
            "autotask": {
                "username": self.sandbox.username,
                "integration_code": self.sandbox.integration_code,
                "api_url": self.sandbox.autotask_url,
            },
            "infima": {"api_url": self.sandbox.infima_url},
            "sync": sync,
            "mappings": mappings,
        }
        self.config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        self.config_bytes = self.config.read_bytes()

    def run(self, *args: str, env: dict[str, str] | None = None) -> Result:
        """The real CLI in this process; an unexpected exception fails the test."""
        return CliRunner().invoke(
            cli, list(args), env=env or self.env, obj=self.seams, catch_exceptions=False
        )

    def subprocess_env(self) -> dict[str, str]:
        return {**subprocess_env(self.tmp / "home"), **self.env}

    def spawn(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """The installed console script, running in the background."""
        return subprocess.Popen(
            [str(EXE), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env or self.subprocess_env(),
        )

    def run_process(self, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(EXE), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result

    # -- what Autotask saw --------------------------------------------------------------

    def units(self) -> dict[int, int | None]:
        return {client: self.sandbox.units_on(cs, THIS_MONTH) for client, cs in CS.items()}

    def adjustments(self) -> int:
        return len(self.sandbox.adjustments())

    def creates(self) -> int:
        return sum(
            1
            for r in self.sandbox.requests
            if r.method == "POST" and r.path.split("?")[0].lower().endswith("/" + ADJ.lower())
        )

    def autotask_requests(self) -> int:
        return sum(1 for r in self.sandbox.requests if r.service == "autotask")

    def statuses(self, path: str) -> list[int]:
        """Answer statuses of the Autotask requests whose path contains ``path``."""
        return [r.status for r in self.sandbox.requests if path.lower() in r.path.lower()]

    def assert_mappings_kept(self) -> None:
        if self.config.is_dir():  # the "config is a folder" fault: left as the operator made it
            assert list(self.config.iterdir()) == []
            return
        assert self.config.read_bytes() == self.config_bytes, "the config file changed"

    def history(self) -> list[dict[str, Any]]:
        result = self.run("history", "--json")
        assert result.exit_code == 0, result.output
        rows: list[dict[str, Any]] = json.loads(result.stdout)
        return rows


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    with Sandbox() as sandbox:
        config = tmp_path / "config.yaml"
        state = tmp_path / "state"
        env = {
            "INFIMA_AUTOTASK_CONFIG": str(config),
            "INFIMA_AUTOTASK_STATE_DIR": str(state),
            "INFIMA_AUTOTASK_USERNAME": sandbox.username,
            "INFIMA_AUTOTASK_SECRET": sandbox.secret,
            "INFIMA_AUTOTASK_INTEGRATION_CODE": sandbox.integration_code,
            "INFIMA_API_KEY": sandbox.api_key,
            "INFIMA_API_URL": sandbox.infima_url,
        }
        w = World(sandbox, tmp_path, config, state, env)
        w.write_config()
        yield w
        sandbox.faults.clear()  # lets a held write go before the sandbox stops


def sync(world: World, *args: str) -> Result:
    return world.run("sync", "--month", MONTH, *args)


def sync_acme_with_write_fault(world: World, kind: str, **options: Any) -> Result:
    """Sync Acme alone (10 units, 12 active users: +2) with its create answered by ``kind``."""
    world.write_config((ACME,))
    world.sandbox.faults.add(ADJ, kind, **options)
    return sync(world, "--json")


def item_of(result: Result, client_id: int) -> dict[str, Any]:
    doc = json.loads(result.stdout)
    found: dict[str, Any] = next(i for i in doc["items"] if i["client_id"] == client_id)
    return found


def assert_clean_run(world: World, result: Result) -> None:
    """The fault was absorbed: both changes written once, units at target, exit 0."""
    assert result.exit_code == 0, result.output
    assert "2 updated, 2 unchanged, 0 skipped, 0 held, 0 failed" in result.stderr
    assert world.units() == SYNCED
    assert world.adjustments() == 2
    world.assert_mappings_kept()


def assert_refused_before_writing(world: World, result: Result, code: int, *needles: str) -> None:
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr
    assert world.adjustments() == 0
    assert world.units() == SEEDED
    world.assert_mappings_kept()


# --- reads ---------------------------------------------------------------------------------


def test_429_storm_on_a_read_with_retry_after(world: World) -> None:
    """Fault: the units-row read answers 429 with Retry-After three times in a row.
    Expected: each retry waits the Retry-After; the run completes: 2 updated, exit 0."""
    world.sandbox.faults.add("ContractServiceUnits", "429", times=3, retry_after=0.02)
    result = sync(world)
    assert_clean_run(world, result)
    assert world.statuses("/ContractServiceUnits/query")[:4] == [429, 429, 429, 200]


def test_429_storm_on_a_read_without_retry_after(world: World) -> None:
    """Fault: the contracts read answers 429 without Retry-After four times.
    Expected: exponential backoff, then the run completes: 2 updated, exit 0."""
    world.sandbox.faults.add("Contracts", "429", times=4)
    result = sync(world)
    assert_clean_run(world, result)
    assert world.statuses("/Contracts/query") == [429, 429, 429, 429, 200]


def test_429_on_a_read_that_never_ends(world: World) -> None:
    """Fault: the contract-services read answers 429 forever.
    Expected: retries are bounded; exit 3 with an Error naming Autotask; nothing written."""
    world.sandbox.faults.add("ContractServices", "429", times=-1, retry_after=0.01)
    result = sync(world)
    assert_refused_before_writing(world, result, 3, "Autotask", "HTTP 429")
    assert world.creates() == 0
    assert len(world.statuses("/ContractServices/query")) == _fast_retry().max_attempts


def test_503_on_a_read(world: World) -> None:
    """Fault: the contract-services read answers 503 (HTML) twice.
    Expected: retried; 2 updated, exit 0."""
    world.sandbox.faults.add("ContractServices", "503", times=2)
    result = sync(world)
    assert_clean_run(world, result)
    assert world.statuses("/ContractServices/query") == [503, 503, 200]


def test_connection_resets_on_a_read(world: World) -> None:
    """Fault: the units-row read has its connection reset (no answer) twice.
    Expected: retried; 2 updated, exit 0."""
    world.sandbox.faults.add("ContractServiceUnits", "drop", times=2)
    result = sync(world)
    assert_clean_run(world, result)
    assert world.statuses("/ContractServiceUnits/query")[:3] == [0, 0, 200]


def test_connection_reset_on_the_infima_client_list(world: World) -> None:
    """Fault: INFIMA resets the connection of the client-list read once.
    Expected: retried; 2 updated, exit 0."""
    world.sandbox.faults.add("infima:clients", "drop")
    result = sync(world)
    assert_clean_run(world, result)
    assert world.statuses("/v1/clients?")[:2] == [0, 200]


# --- writes --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["apply-then-drop", "apply-then-500-bare"])
def test_write_applied_and_its_answer_lost(world: World, kind: str) -> None:
    """Fault: Autotask applies the create, then drops the connection / answers a bare 500.
    Expected: the units row is re-read, shows the target: updated, exactly one create and
    one adjustment, exit 0."""
    result = sync_acme_with_write_fault(world, kind)
    assert result.exit_code == 0, result.output
    item = item_of(result, ACME)
    assert item["status"] == "updated"
    assert "confirmed by re-reading" in item["message"]
    assert (world.creates(), world.adjustments(), world.units()[ACME]) == (1, 1, 12)
    world.assert_mappings_kept()


def test_write_rejected_with_errors_is_never_resent(world: World) -> None:
    """Fault: the create is answered 500 with ``{"errors": [...]}`` (a rejection).
    Expected: failed with Autotask's reason, exactly ONE create request, zero adjustments,
    exit 1."""
    result = sync_acme_with_write_fault(world, "500-errors")
    assert result.exit_code == 1, result.output
    item = item_of(result, ACME)
    assert item["status"] == "failed"
    assert item["message"] == "Autotask refused the change: Simulated failure"
    assert "0 updated, 0 unchanged, 0 skipped, 0 held, 1 failed" in result.stderr
    assert (world.creates(), world.adjustments(), world.units()[ACME]) == (1, 0, 10)
    world.assert_mappings_kept()


@pytest.mark.parametrize("kind", ["500-bare", "429", "502", "503", "drop"])
def test_write_with_unknown_outcome_not_applied_is_sent_once_more(world: World, kind: str) -> None:
    """Fault: the create is answered 500 bare / 429 / 502 / 503 / reset WITHOUT being applied.
    Expected: the units row is re-read first, shows ``before``, the create is sent once
    more: two creates, exactly one adjustment, updated, exit 0."""
    result = sync_acme_with_write_fault(world, kind)
    assert result.exit_code == 0, result.output
    assert item_of(result, ACME)["status"] == "updated"
    assert (world.creates(), world.adjustments(), world.units()[ACME]) == (2, 1, 12)
    # The re-read came between the two sends.
    paths = [r.path.split("?")[0] for r in world.sandbox.requests if r.service == "autotask"]
    first = paths.index(f"/atservicesrest/v1.0/{ADJ}")
    assert "ContractServiceUnits/query" in paths[first + 1]
    world.assert_mappings_kept()


def test_write_unknown_twice_fails_after_two_sends(world: World) -> None:
    """Fault: the create is answered 500 bare twice, never applied.
    Expected: sent at most twice, then failed with "check Autotask"; zero adjustments, exit 1."""
    result = sync_acme_with_write_fault(world, "500-bare", times=2)
    assert result.exit_code == 1, result.output
    item = item_of(result, ACME)
    assert item["status"] == "failed"
    assert "check Autotask" in item["message"]
    assert (world.creates(), world.adjustments(), world.units()[ACME]) == (2, 0, 10)
    world.assert_mappings_kept()


def test_sigkill_between_write_and_record(world: World) -> None:
    """Fault: Autotask applies the create and holds its answer; the CLI is SIGKILLed then.
    Expected: the history keeps the intent; the next run re-reads first, writes nothing
    more (one adjustment in all), exits 0 with units at target, and the history shows the
    intent resolved as updated."""
    sb = world.sandbox
    world.write_config((ACME,))
    sb.faults.add(ADJ, "apply-then-hold")
    proc = world.spawn("sync", "--month", MONTH)
    try:
        assert sb.faults.held.wait(30), "the write never reached the sandbox"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        sb.faults.release()
        if proc.poll() is None:  # pragma: no cover - only when the wait above failed
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert world.adjustments() == 1  # applied before the kill
    assert [row["status"] for row in world.history()] == ["writing"]

    again = sync(world)
    assert again.exit_code == 0, again.output
    # The killed run's write is this month's change: reported updated, not unchanged.
    assert "1 updated, 0 unchanged, 0 skipped, 0 held, 0 failed" in again.stderr
    assert "written by an interrupted run; confirmed now" in again.stdout
    assert world.adjustments() == 1  # no second write
    assert world.creates() == 1
    assert world.units()[ACME] == 12
    rows = world.history()
    resolved = [row for row in rows if row["detail"] == "confirmed after an interrupted run"]
    assert [row["status"] for row in resolved] == ["updated"]
    assert not [row for row in rows if row["status"] == "writing"]
    world.assert_mappings_kept()


def test_write_timed_out_and_applied_late(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault: the create gets no answer within the read timeout (0.6 s here); Autotask
    applies it later (0.9 s), as a slow server behind a gateway does.
    Expected: the tool waits before re-reading (SPEC §8's re-read must see the late write),
    finds the target: updated, exactly one create and one adjustment, exit 0. Before the
    fix the re-read came at once, saw ``before`` and re-sent: two adjustments, 14 units."""
    world.seams = Seams(
        http=partial(HttpClient, timeout=(5.0, 0.6)), retry=lambda: _fast_retry(max_delay=5.0)
    )
    result = sync_acme_with_write_fault(world, "timeout", retry_after=0.9)
    assert result.exit_code == 0, result.output
    item = item_of(result, ACME)
    assert item["status"] == "updated"
    assert "confirmed by re-reading" in item["message"]
    time.sleep(0.5)  # a second, late write would have landed by now
    assert (world.creates(), world.adjustments(), world.units()[ACME]) == (1, 1, 12)
    world.assert_mappings_kept()


def test_read_timed_out(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault: the units-row read gets no answer within the read timeout (0.6 s here).
    Expected: retried; 2 updated, exit 0."""
    world.seams = replace(world.seams, http=partial(HttpClient, timeout=(5.0, 0.6)))
    world.sandbox.faults.add("ContractServiceUnits", "timeout", retry_after=0.9)
    result = sync(world)
    assert_clean_run(world, result)


def test_verification_read_refused_after_the_write(world: World) -> None:
    """Fault: the create succeeds, then the batched verification read is refused (500 with
    errors) and keeps being refused.
    Expected: failed, "written (adjustment N) but the verification read failed; check
    Autotask", exit 1, one adjustment; the next run re-reads: unchanged, no second write."""
    sb = world.sandbox
    world.write_config((ACME,))
    sb.faults.add(ADJ, "apply-then-hold")
    proc = world.spawn("sync", "--month", MONTH, "--json")
    try:
        assert sb.faults.held.wait(30), "the write never reached the sandbox"
        sb.faults.add("ContractServiceUnits", "500-errors", times=-1)
    finally:
        sb.faults.release()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, out + err
    assert "Traceback" not in err
    (item,) = json.loads(out)["items"]
    assert item["status"] == "failed"
    assert item["message"].startswith("written (adjustment ")
    assert "verification read failed" in item["message"] and "check Autotask" in item["message"]
    assert world.adjustments() == 1
    sb.faults.clear()
    again = sync(world)
    assert again.exit_code == 0, again.output
    assert "0 updated, 1 unchanged" in again.stderr
    assert world.adjustments() == 1
    assert world.units()[ACME] == 12
    world.assert_mappings_kept()


# --- INFIMA ------------------------------------------------------------------------------


def test_infima_down_for_every_client(world: World) -> None:
    """Fault: INFIMA answers 503 to everything.
    Expected: exit 3 with an Error naming INFIMA; nothing written, nothing sent to Autotask."""
    world.sandbox.faults.infima_down = True
    result = sync(world)
    assert_refused_before_writing(world, result, 3, "INFIMA", "503")
    assert world.autotask_requests() == 0


def test_infima_down_for_one_client(world: World) -> None:
    """Fault: INFIMA answers 503 forever to the user list of Acme only.
    Expected: Acme failed (naming INFIMA), the others synced (Cobalt written), exit 1."""
    world.sandbox.faults.add("infima:users", "503", times=-1, client_id=ACME)
    result = sync(world, "--json")
    assert result.exit_code == 1, result.output
    acme = item_of(result, ACME)
    assert acme["status"] == "failed"
    assert acme["message"].startswith("INFIMA users:") and "503" in acme["message"]
    assert item_of(result, COBALT)["status"] == "updated"
    assert "1 updated, 2 unchanged, 0 skipped, 0 held, 1 failed" in result.stderr
    assert world.adjustments() == 1
    assert world.units() == {**SYNCED, ACME: 10}
    world.assert_mappings_kept()


def test_infima_answers_zero_users_for_a_client_with_units(world: World) -> None:
    """Fault: INFIMA reports 0 active users for Acme, which has 10 units.
    Expected: Acme held (nothing written for it), Cobalt written, exit 1; then with --yes
    Acme is written to 0: one more adjustment, exit 0."""
    sb = world.sandbox
    with sb.state.lock:
        sb.state.infima_clients[ACME].active = 0
    result = sync(world, "--json")
    assert result.exit_code == 1, result.output
    acme = item_of(result, ACME)
    assert acme["status"] == "held"
    assert "--yes" in acme["message"]
    assert world.adjustments() == 1
    assert world.units() == {**SYNCED, ACME: 10}

    confirmed = sync(world, "--yes")
    assert confirmed.exit_code == 0, confirmed.output
    assert "1 updated, 3 unchanged, 0 skipped, 0 held, 0 failed" in confirmed.stderr
    assert world.adjustments() == 2
    assert world.units() == {**SYNCED, ACME: 0}
    world.assert_mappings_kept()


# --- guards and environment ------------------------------------------------------------------


def test_two_syncs_at_once(world: World) -> None:
    """Fault: a second ``sync`` starts while the first is in the middle of its write.
    Expected: the second exits 3 naming the holder's PID and sends nothing; the first
    finishes: one adjustment, exit 0."""
    sb = world.sandbox
    world.write_config((ACME,))
    sb.faults.add(ADJ, "apply-then-hold")
    first = world.spawn("sync", "--month", MONTH)
    try:
        assert sb.faults.held.wait(30), "the first sync never reached its write"
        sent = len(sb.requests)
        second = sync(world)
        assert len(sb.requests) == sent  # refused before any request
    finally:
        sb.faults.release()
        out, err = first.communicate(timeout=30)
    assert second.exit_code == 3, second.output
    assert second.stderr.startswith("Error: Another sync is running")
    assert f"PID {first.pid}" in second.stderr
    assert first.returncode == 0, out + err
    assert "Traceback" not in err
    assert world.adjustments() == 1
    assert world.units()[ACME] == 12
    world.assert_mappings_kept()


def test_hourly_threshold_nearly_used(world: World) -> None:
    """Fault: other integrations used 7,999 of the 10,000 hourly requests (limit 80 %).
    Expected: exit 3 naming max_api_usage_percent; zero creates, zero adjustments."""
    sb = world.sandbox
    with sb.state.lock:
        sb.state.threshold_used_offset = 7_999
    result = sync(world)
    assert_refused_before_writing(world, result, 3, "max_api_usage_percent", "Nothing was written")
    assert world.creates() == 0


def test_threshold_read_refused(world: World) -> None:
    """Fault: ThresholdInformation answers 500 with errors (so usage is unknown).
    Expected: exit 3 naming Autotask, zero creates, zero adjustments."""
    world.sandbox.faults.add("ThresholdInformation", "500-errors")
    result = sync(world)
    assert_refused_before_writing(world, result, 3, "Autotask", "ThresholdInformation")
    assert world.creates() == 0


def test_autotask_rejects_the_credentials(world: World) -> None:
    """Fault: the Autotask secret was rotated (every request answered 401).
    Expected: exit 3, an Error saying what to check and to run connect; zero adjustments."""
    world.env["INFIMA_AUTOTASK_SECRET"] = "rotated-" + world.sandbox.secret[:6]
    result = sync(world)
    assert_refused_before_writing(world, result, 3, "rejected", "infima-autotask connect")
    assert world.creates() == 0


def test_zone_lookup_unavailable_for_a_moment(world: World) -> None:
    """Fault: no API URL configured (cron with env credentials), and the zone lookup
    answers 503 twice.
    Expected: retried; 2 updated, exit 0."""
    doc = yaml.safe_load(world.config_bytes)
    doc["autotask"]["api_url"] = None
    world.config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    world.config_bytes = world.config.read_bytes()
    world.env["INFIMA_AUTOTASK_ZONE_URL"] = world.sandbox.zone_url
    world.sandbox.faults.add("zoneInformation", "503", times=2)
    result = sync(world)
    assert_clean_run(world, result)
    assert world.statuses("/zoneInformation") == [503, 503, 200]


def test_keyring_unavailable_under_cron(world: World) -> None:
    """Fault: no usable keyring (cron, no D-Bus) and no secret in the environment.
    Expected: exit 2, an Error naming both fixes (environment variables, a file keyring),
    nothing sent to Autotask; with the environment credentials the same run works."""
    cron = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(world.tmp),
        "SHELL": "/bin/sh",
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        "INFIMA_AUTOTASK_CONFIG": str(world.config),
        "INFIMA_AUTOTASK_STATE_DIR": str(world.state),
        "INFIMA_API_URL": world.sandbox.infima_url,
    }
    bare = world.run_process("sync", "--month", MONTH, env=cron)
    assert bare.returncode == 2, bare.stderr
    assert bare.stderr.startswith("Error: Could not read the OS keyring")
    assert "INFIMA_AUTOTASK_SECRET" in bare.stderr and "keyrings.cryptfile" in bare.stderr
    assert world.autotask_requests() == 0

    with_env = world.run_process("sync", "--month", MONTH, env={**cron, **world.env})
    assert with_env.returncode == 0, with_env.stderr
    assert world.adjustments() == 2
    assert world.units() == SYNCED
    world.assert_mappings_kept()


def _folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _invalid_utf8(path: Path) -> None:
    path.write_bytes(path.read_bytes().replace(b"Acme Dental", b"Acme D\xe9ntal\xff"))


def _truncated_mid_key(path: Path) -> None:
    text = path.read_bytes()
    cut = text.index(b"contract_service_id", text.index(b"Birch")) + len(b"contract_ser")
    path.write_bytes(text[:cut])


def _truncated_in_a_string(path: Path) -> None:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["mappings"][1]["note"] = "renewal due: check with Tom"
    text = yaml.safe_dump(doc, sort_keys=False, default_style='"').encode()
    path.write_bytes(text[: text.index(b"check with")])


@pytest.mark.parametrize(
    ("breakage", "needle"),
    [
        (_folder, "folder"),
        (_invalid_utf8, "UTF-8"),
        (_truncated_mid_key, "YAML"),
        (_truncated_in_a_string, "YAML"),
    ],
    ids=["folder", "invalid-utf8", "truncated-mid-key", "truncated-in-string"],
)
def test_config_file_broken(world: World, breakage: Callable[[Path], None], needle: str) -> None:
    """Fault: the config path is a folder / invalid UTF-8 / YAML cut off mid-key or mid-string.
    Expected: exit 2, an Error naming the file, no traceback, zero requests to Autotask."""
    breakage(world.config)
    if world.config.is_file():
        world.config_bytes = world.config.read_bytes()
    result = sync(world)
    assert_refused_before_writing(world, result, 2, str(world.config))
    assert needle.lower() in result.stderr.lower(), result.stderr
    assert world.sandbox.requests == []


def _state_under_a_file(world: World) -> None:
    blocker = world.tmp / "not-a-folder"
    blocker.write_text("a file where a folder should be\n", encoding="utf-8")
    world.env["INFIMA_AUTOTASK_STATE_DIR"] = str(blocker / "state")


def _history_is_a_folder(world: World) -> None:
    (world.state / "history.sqlite3").mkdir(parents=True)


def _lock_is_a_folder(world: World) -> None:
    (world.state / "sync.lock").mkdir(parents=True)


def _history_is_garbage(world: World) -> None:
    world.state.mkdir()
    (world.state / "history.sqlite3").write_bytes(b"not a database, " * 512)


@pytest.mark.parametrize(
    ("breakage", "needle"),
    [
        (_state_under_a_file, "not-a-folder"),
        (_history_is_a_folder, "history.sqlite3"),
        (_lock_is_a_folder, "sync.lock"),
        (_history_is_garbage, "damaged"),
    ],
    ids=["state-under-a-file", "history-is-a-folder", "lock-is-a-folder", "history-damaged"],
)
def test_state_folder_unusable(
    world: World, breakage: Callable[[World], None], needle: str
) -> None:
    """Fault: the history (or lock) cannot be used: the state folder's parent is a file, the
    database or lock path is a folder, or the database is damaged.
    Expected: exit 2 naming the problem and the fix, BEFORE any request: zero requests,
    zero adjustments."""
    breakage(world)
    result = sync(world)
    assert_refused_before_writing(world, result, 2, needle)
    assert "INFIMA_AUTOTASK_STATE_DIR" in result.stderr or "Move it aside" in result.stderr
    assert world.sandbox.requests == []


# --- the figure the README quotes --------------------------------------------------------


def test_the_docstring_counts_every_case() -> None:
    """The numbered list above, FAULTS_INJECTED and the collected cases agree."""
    listed = re.findall(r"^\s*(\d+)\. ", __doc__ or "", flags=re.MULTILINE)
    assert [int(n) for n in listed] == list(range(1, FAULTS_INJECTED + 1))
    cases = 0
    for name, func in inspect.getmembers(sys.modules[__name__], inspect.isfunction):
        if not name.startswith("test_") or name == "test_the_docstring_counts_every_case":
            continue
        marks = [m for m in getattr(func, "pytestmark", []) if m.name == "parametrize"]
        cases += len(marks[0].args[1]) if marks else 1
    assert cases == FAULTS_INJECTED
