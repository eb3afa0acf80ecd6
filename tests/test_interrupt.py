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
