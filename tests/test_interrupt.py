"""Ctrl-C and SIGTERM during a month's writes, as an operator or systemd sends them: a real
signal to the installed console script, running as a subprocess against the sandbox.

What must hold (SPEC §3, exit 130): the requests already in flight finish and are recorded,
nothing queued is sent, the table and an "Interrupted" line say what was done, and the next
`sync` finishes the month without writing anything twice.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from datetime import date

import pytest
import yaml
from sandbox_cli import EXE, env_for, subprocess_env

from infima_autotask.sandbox import Sandbox

MONTH = date.today().strftime("%Y-%m")
CLIENTS = 120
STOP_AFTER = 5  # adjustments seen before the signal is sent


@pytest.fixture
def month_of_writes(tmp_path):
    """A sandbox answering every request 30 ms late, with 120 clients whose count changed."""
    with Sandbox(latency=0.03, seed=False) as sandbox:
        mappings = sandbox.generate(CLIENTS, changed_fraction=1.0)
        config = tmp_path / "config.yaml"
        doc = {"version": 1, "sync": {"max_decrease_percent": 100}, "mappings": mappings}
        config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        env = {
            **subprocess_env(tmp_path / "home"),
            **env_for(sandbox, tmp_path / "state"),
            "INFIMA_AUTOTASK_CONFIG": str(config),
        }
        yield sandbox, env, tmp_path / "state"


def spawn(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(EXE), "sync", "--month", MONTH],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_for_adjustments(sandbox: Sandbox, count: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while len(sandbox.adjustments()) < count:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the writes never started"
        time.sleep(0.005)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_the_writes_sends_nothing_queued(month_of_writes, signum):
    sandbox, env, state = month_of_writes
    proc = spawn(env)
    wait_for_adjustments(sandbox, STOP_AFTER, proc)

    proc.send_signal(signum)
    at_signal = len(sandbox.adjustments())
    out, err = proc.communicate(timeout=60)

    written = len(sandbox.adjustments())
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    # Only creates in flight went out after the signal: at most 3 when it is handled, and the
    # child may start up to 3 more in the moment between our count and its handler (30 ms per
    # request here). A run that kept sending would write all 120.
    assert at_signal <= written <= at_signal + 6 < CLIENTS // 2
    time.sleep(0.2)
    assert len(sandbox.adjustments()) == written  # nothing arrives after the exit
    assert f"Interrupted: {written} of {CLIENTS} changes written; the rest not sent" in err
    assert out.count("not sent: the run was interrupted") == CLIENTS - written
    # Every write that went out was recorded with its outcome; no intent left open.
    with sqlite3.connect(state / "history.sqlite3") as db:
        statuses = dict(db.execute("SELECT status, COUNT(*) FROM items GROUP BY status"))
    assert statuses == {"updated": written, "held": CLIENTS - written}

    # The next run finishes the month: every client once, nothing twice.
    again = subprocess.run(
        [str(EXE), "sync", "--month", MONTH],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert len(sandbox.adjustments()) == CLIENTS
    assert len({a["contractServiceID"] for a in sandbox.adjustments()}) == CLIENTS


def test_a_signal_before_the_writes_sends_nothing(month_of_writes):
    sandbox, env, _ = month_of_writes
    proc = spawn(env)
    deadline = time.monotonic() + 30
    while not any(r.service == "infima" for r in sandbox.requests):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.005)

    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)

    assert proc.returncode == 130
    assert "Interrupted before any write: nothing was sent to Autotask." in err
    assert "Traceback" not in err
    assert sandbox.adjustments() == []


def test_a_signal_during_the_wait_after_an_unknown_outcome_never_resends(month_of_writes):
    """The first create is answered 503 (outcome unknown): the tool waits up to a minute for
    Autotask to settle before re-reading and, if nothing shows, sending once more. A signal in
    that wait must end it at once and send nothing more; the open intent is the next run's."""
    sandbox, env, state = month_of_writes
    sandbox.faults.add("ContractServiceAdjustments", "503")
    proc = spawn(env)
    deadline = time.monotonic() + 60
    while not any(r.path.endswith("ContractServiceAdjustments") for r in sandbox.requests):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(0.3)  # inside the settle wait now

    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    _, err = proc.communicate(timeout=60)

    assert time.monotonic() - started < 10, "the wait was not cut short"
    assert proc.returncode == 130, err
    creates = [r for r in sandbox.requests if r.path.endswith("ContractServiceAdjustments")]
    assert len(creates) == 1 and sandbox.adjustments() == []
    with sqlite3.connect(state / "history.sqlite3") as db:
        open_intents = db.execute("SELECT COUNT(*) FROM items WHERE status = 'writing'")
        assert open_intents.fetchone()[0] == 1  # the next run re-reads it first


# --- HaloPSA: a write waiting its turn under the rate limit -------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_a_halo_write_waits_for_the_rate_limit_sends_it_never(tmp_path, signum):
    """The last command used up Halo's window (287 of 290 slots, kept in the state folder on
    the system's monotonic clock, which every process shares): this run's token and reads
    take the last three, and its one write waits up to five minutes for a slot. A real
    signal ends that wait at once: exit 130, the write is never sent and the subscription
    keeps its count; once the window is free, the next run writes it, once."""
    import json as json_module

    from infima_autotask.runtime import HALO_LEDGER
    from infima_autotask.sandbox import halo_data

    licence = halo_data.KESTREL_LICENCE_ID
    with Sandbox() as sb:
        state = tmp_path / "state"
        state.mkdir()
        ledger = state / HALO_LEDGER
        ledger.write_text(json_module.dumps([time.monotonic()] * 287), encoding="utf-8")
        config = tmp_path / "config.yaml"
        doc = {
            "version": 2,
            "halo": {"url": sb.halo_url, "tenant": None, "client_id": sb.halo_client_id},
            "mappings": [halo_data.seed_mapping()],
        }
        config.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        env = {
            **subprocess_env(tmp_path / "home"),
            **env_for(sb, state),
            "INFIMA_AUTOTASK_CONFIG": str(config),
            "INFIMA_HALO_CLIENT_SECRET": sb.halo_client_secret,
        }
        proc = spawn(env)
        deadline = time.monotonic() + 60
        while not [r for r in sb.requests if r.path.startswith("/api/SoftwareLicence")]:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the subscriptions were never read"
            time.sleep(0.01)
        time.sleep(1.0)  # the write is now waiting for a slot (minutes away)
        sent = time.monotonic()
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, out + err
        assert time.monotonic() - sent < 10  # not the five-minute wait
        assert "Traceback" not in err and "Interrupted" in err
        assert not [r for r in sb.requests if r.method == "POST" and "/api/" in r.path]
        assert sb.halo.count(licence) == 12 and sb.halo.updates == []

        ledger.write_text("[]", encoding="utf-8")  # five minutes later, as it were
        again = subprocess.run(
            [str(EXE), "sync"], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert again.returncode == 0, again.stdout + again.stderr
        assert sb.halo.count(licence) == 14
        assert [u["licence_id"] for u in sb.halo.updates] == [licence]
        assert sb.halo.creates == []
