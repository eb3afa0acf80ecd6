"""History store and sync lock, against real SQLite files and real processes."""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from infima_autotask.errors import LockHeldError, StateError
from infima_autotask.history import (
    DB_NAME,
    LOCK_NAME,
    History,
    HistoryItem,
    ItemRecord,
    RunRecord,
    SyncLock,
    read_span,
)


class Clock:
    """A clock that moves one second per reading, so ordering is deterministic."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 6, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def item(client_id: int = 101, status: str = "updated", **kw) -> ItemRecord:
    fields = dict(
        client_id=client_id,
        client_name=f"Client {client_id}",
        contract_id=29684001,
        contract_service_id=29685000 + client_id,
        users=12,
        target=12,
        before=10,
        after=12,
        change=2,
        price=3.5,
        cost=1.25,
        status=status,
    )
    fields.update(kw)
    return ItemRecord(**fields)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def history(state: Path):
    with History(state, clock=Clock()) as h:
        yield h


# -- runs -----------------------------------------------------------------------------


def test_run_lifecycle(history: History) -> None:
    assert history.last_run() is None
    run_id = history.start_run(period="2026-03", dry_run=False, version="0.1.0")

    running = history.last_run()
    assert running == RunRecord(
        id=run_id,
        started_at="2026-03-01T06:00:01.000000+00:00",
        finished_at=None,
        period="2026-03",
        dry_run=False,
        version="0.1.0",
        outcome=None,
        summary={},
    )

    summary = {"updated": 1, "unchanged": 2, "planned": 0, "held": 0, "failed": 0}
    history.finish_run(run_id, outcome="ok", summary=summary)
    done = history.last_run()
    assert done is not None
    assert done.finished_at == "2026-03-01T06:00:02.000000+00:00"
    assert done.outcome == "ok"
    assert done.summary == summary


def test_last_run_is_newest_of_any_kind(history: History) -> None:
    history.start_run(period="2026-03", dry_run=False, version="0.1.0")
    dry = history.start_run(period="2026-02", dry_run=True, version="0.1.0")
    last = history.last_run()
    assert last is not None and last.id == dry and last.dry_run and last.period == "2026-02"


def test_finish_unknown_run_is_an_error(history: History) -> None:
    with pytest.raises(ValueError, match="no run 42"):
        history.finish_run(42, outcome="ok", summary={})


# -- items ----------------------------------------------------------------------------


def test_record_item_round_trips_every_field(history: History) -> None:
    run_id = history.start_run(period="2026-03", dry_run=False, version="0.1.0")
    record = item(
        status="unchanged",
        message="already 12",
        adjustment_id=None,
        after=10,
        effective_date="2026-03-17",
    )
    item_id = history.record_item(run_id, record)

    [stored] = history.items()
    assert isinstance(stored, HistoryItem)
    assert stored.id == item_id and stored.run_id == run_id
    assert stored.period == "2026-03" and stored.dry_run is False
    assert stored.created_at == stored.updated_at == "2026-03-01T06:00:02.000000+00:00"
    # Every ItemRecord field comes back as handed in.
    assert ItemRecord(**{f: getattr(stored, f) for f in ItemRecord.__dataclass_fields__}) == record


def test_record_item_refuses_writing_status(history: History) -> None:
    run_id = history.start_run(period="2026-03", dry_run=False, version="0.1.0")
    with pytest.raises(ValueError, match="final status"):
        history.record_item(run_id, item(status="writing"))
    assert history.items() == []


def test_record_items_batch(history: History) -> None:
    run_id = history.start_run(period="2026-03", dry_run=False, version="0.1.0")
    ids = history.record_items(run_id, [item(1, "unchanged"), item(2, "held"), item(3, "failed")])
    assert len(ids) == 3 and ids == sorted(ids)
    assert {i.client_id: i.status for i in history.items()} == {
        1: "unchanged",
        2: "held",
        3: "failed",
    }


def test_intent_then_complete(history: History) -> None:
    run_id = history.start_run(period="2026-03", dry_run=False, version="0.1.0")
    item_id = history.record_intent(run_id, item(status="updated"))

    [pending] = history.pending_intents("2026-03")
    assert pending.id == item_id and pending.status == "writing"
    assert history.successful_clients("2026-03") == set()

    history.complete_item(item_id, status="updated", after=12, message="", adjustment_id=777)
    assert history.pending_intents("2026-03") == []
    [done] = history.items()
    assert (done.status, done.after, done.adjustment_id) == ("updated", 12, 777)
    assert done.updated_at > done.created_at
    assert history.successful_clients("2026-03") == {101}


def test_complete_item_only_closes_an_open_intent(history: History) -> None:
    run_id = history.start_run(period="2026-03", dry_run=False, version="0.1.0")
    final_id = history.record_item(run_id, item(status="held"))
    with pytest.raises(ValueError, match="not an open intent"):
        history.complete_item(final_id, status="updated", after=12, message="")
    intent = history.record_intent(run_id, item(202))
    with pytest.raises(ValueError, match="final status"):
        history.complete_item(intent, status="writing", after=12, message="")
    history.complete_item(intent, status="failed", after=10, message="rejected: HTTP 400")
    with pytest.raises(ValueError):  # a second completion would hide the first outcome
        history.complete_item(intent, status="updated", after=12, message="")
    assert [i.status for i in history.items(client_id=202)] == ["failed"]


def test_dry_run_cannot_record_an_intent(history: History) -> None:
    run_id = history.start_run(period="2026-03", dry_run=True, version="0.1.0")
    with pytest.raises(ValueError, match="dry run"):
        history.record_intent(run_id, item())
    assert history.items() == []


def test_pending_intent_survives_a_killed_process(state: Path) -> None:
    with History(state) as first:
        run_id = first.start_run(period="2026-03", dry_run=False, version="0.1.0")
        first.record_intent(run_id, item(101, target=12, before=10, after=12))
        first.record_intent(run_id, item(102, target=5, before=9, after=5))
        # closed without complete_item: the process died after sending the writes

    with History(state) as second:
        pending = second.pending_intents("2026-03")
        assert [(p.client_id, p.status) for p in pending] == [(101, "writing"), (102, "writing")]
        assert second.pending_intents("2026-04") == []

        second.resolve_intent(pending[0].id, status="updated", message="found at target")
        second.resolve_intent(pending[1].id, status="failed", message="units changed by hand")
        assert second.pending_intents("2026-03") == []
        resolved = {i.client_id: i for i in second.items()}
        assert (resolved[101].status, resolved[101].after) == ("updated", 12)
        # SPEC §8: after is `before` for anything but updated/planned
        assert (resolved[102].status, resolved[102].after) == ("failed", 9)
        assert resolved[102].message == "units changed by hand"
        assert second.successful_clients("2026-03") == {101}

        with pytest.raises(ValueError, match="not a pending intent"):
            second.resolve_intent(pending[0].id, status="updated", message="")


def test_pending_intent_survives_sigkill(state: Path) -> None:
    """A real process killed with SIGKILL right after recording its intent."""
    script = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from infima_autotask.history import History, ItemRecord
        h = History(Path(sys.argv[1]))
        run = h.start_run(period="2026-03", dry_run=False, version="0.1.0")
        h.record_intent(run, ItemRecord(7, "X", 1, 2, 3, 3, 1, 3, 2, 1.0, 0.5, "updated"))
        print("recorded", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(state)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "recorded"
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    with History(state) as h:
        assert [(p.client_id, p.status) for p in h.pending_intents("2026-03")] == [(7, "writing")]


def test_successful_clients_per_period(history: History) -> None:
    real = history.start_run(period="2026-03", dry_run=False, version="0.1.0")
    history.record_items(
        real,
        [
            item(1, "updated"),
            item(2, "unchanged"),
            item(3, "failed"),
            item(4, "held"),
            item(9, "skipped", effective_date=None),
        ],
    )
    history.record_intent(real, item(5))  # still writing: outcome unknown
    dry = history.start_run(period="2026-03", dry_run=True, version="0.1.0")
    history.record_items(dry, [item(6, "planned"), item(7, "unchanged")])
    other = history.start_run(period="2026-02", dry_run=False, version="0.1.0")
    history.record_item(other, item(8, "updated"))

    assert history.successful_clients("2026-03") == {1, 2, 9}
    assert history.successful_clients("2026-02") == {8}
    assert history.successful_clients("2026-01") == set()


def test_a_span_of_periods_is_read_oldest_first_bounds_included(state: Path) -> None:
    assert read_span(state, "2025-12", "2026-02") is None  # no file yet: none made to read it
    assert not state.exists()
    with History(state, clock=Clock()) as history:
        runs = {}
        for period in ("2026-03", "2025-11", "2025-12", "2026-01", "2026-02"):
            runs[period] = history.start_run(
                period=period, dry_run=period == "2026-01", version="0"
            )
            history.record_item(runs[period], item(101, "unchanged"))
    span = read_span(state, "2025-12", "2026-02")
    assert span is not None
    assert [run.period for run in span.runs] == ["2025-12", "2026-01", "2026-02"]
    assert [(i.period, i.run_id, i.dry_run) for i in span.items] == [
        ("2025-12", runs["2025-12"], False),
        ("2026-01", runs["2026-01"], True),
        ("2026-02", runs["2026-02"], False),
    ]


def test_held_then_updated_counts_once_successful(history: History) -> None:
    first = history.start_run(period="2026-03", dry_run=False, version="0.1.0")
    history.record_item(first, item(1, "held"))
    assert history.successful_clients("2026-03") == set()
    second = history.start_run(period="2026-03", dry_run=False, version="0.1.0")
    history.record_item(second, item(1, "updated"))
    assert history.successful_clients("2026-03") == {1}


def test_items_filters_order_and_limit(history: History) -> None:
    feb = history.start_run(period="2026-02", dry_run=False, version="0.1.0")
    a = history.record_item(feb, item(1, "updated"))
    b = history.record_item(feb, item(2, "unchanged"))
    mar = history.start_run(period="2026-03", dry_run=True, version="0.1.0")
    c = history.record_item(mar, item(1, "planned"))
    d = history.record_item(mar, item(2, "planned"))

    assert [i.id for i in history.items()] == [d, c, b, a]
    assert [i.id for i in history.items(month="2026-02")] == [b, a]
    assert [i.id for i in history.items(client_id=1)] == [c, a]
    assert [i.id for i in history.items(month="2026-03", client_id=2)] == [d]
    assert [i.id for i in history.items(limit=3)] == [d, c, b]
    assert history.items(limit=0) == []
    assert history.items(month="2025-12") == []
    # dry-run items are listed, and flagged
    assert [i.dry_run for i in history.items()] == [True, True, False, False]
    with pytest.raises(ValueError):
        history.items(limit=-1)


def test_items_same_timestamp_newest_id_first(state: Path) -> None:
    frozen = datetime(2026, 3, 1, tzinfo=timezone.utc)
    with History(state, clock=lambda: frozen) as h:
        run = h.start_run(period="2026-03", dry_run=False, version="0.1.0")
        ids = [h.record_item(run, item(n, "unchanged")) for n in range(3)]
        assert [i.id for i in h.items()] == ids[::-1]


def test_last_items_newest_real_item_per_client(history: History) -> None:
    assert history.last_items() == {}
    feb = history.start_run(period="2026-02", dry_run=False, version="0.1.0")
    history.record_item(feb, item(1, "updated", after=10))
    history.record_item(feb, item(2, "failed"))
    mar = history.start_run(period="2026-03", dry_run=False, version="0.1.0")
    newest_1 = history.record_item(mar, item(1, "unchanged", after=12))
    dry = history.start_run(period="2026-04", dry_run=True, version="0.1.0")
    history.record_item(dry, item(1, "planned"))
    history.record_item(dry, item(3, "planned"))

    last = history.last_items()
    assert set(last) == {1, 2}  # client 3 only appears in a dry run
    assert (last[1].id, last[1].period, last[1].status, last[1].after) == (
        newest_1,
        "2026-03",
        "unchanged",
        12,
    )
    assert (last[2].period, last[2].status) == ("2026-02", "failed")


def test_records_from_worker_threads(history: History) -> None:
    run_id = history.start_run(period="2026-03", dry_run=False, version="0.1.0")

    def work(client_id: int) -> None:
        intent = history.record_intent(run_id, item(client_id))
        history.complete_item(intent, status="updated", after=12, message="")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert history.successful_clients("2026-03") == set(range(20))
    assert history.pending_intents("2026-03") == []


def test_writer_waits_for_another_connection(state: Path) -> None:
    """busy_timeout: a write queued behind another process's transaction waits, not errors."""
    with History(state) as h:
        other = sqlite3.connect(state / DB_NAME, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        timer = threading.Timer(0.3, lambda: other.execute("COMMIT"))
        timer.start()
        try:
            run_id = h.start_run(period="2026-03", dry_run=False, version="0.1.0")
        finally:
            timer.join()
            other.close()
        assert h.last_run() is not None and h.last_run().id == run_id  # type: ignore[union-attr]


def test_reader_sees_committed_work_while_writer_open(state: Path) -> None:
    with History(state) as writer, History(state) as reader:
        run_id = writer.start_run(period="2026-03", dry_run=False, version="0.1.0")
        writer.record_item(run_id, item(1, "updated"))
        assert reader.successful_clients("2026-03") == {1}


# -- the database file ----------------------------------------------------------------


def test_files_modes_schema_and_wal(tmp_path: Path) -> None:
    state = tmp_path / "deep" / "state"
    old = os.umask(0o022)
    try:
        with History(state) as h:
            h.start_run(period="2026-03", dry_run=False, version="0.1.0")
            for suffix in ("-wal", "-shm"):  # SQLite copies the database file's mode
                assert stat.S_IMODE((state / (DB_NAME + suffix)).stat().st_mode) == 0o600
    finally:
        os.umask(old)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / DB_NAME).stat().st_mode) == 0o600
    conn = sqlite3.connect(state / DB_NAME)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert tables == {"runs", "items"}
        columns = [r[1] for r in conn.execute("PRAGMA table_info(items)")]
        assert columns == [
            "id", "run_id", "period", "client_id", "client_name", "contract_id",
            "contract_service_id", "users", "target", "before", "after", "change", "price",
            "cost", "status", "message", "adjustment_id", "created_at", "updated_at",
            "effective_date", "before_cost", "psa",
        ]  # fmt: skip
    finally:
        conn.close()


def test_existing_folder_is_left_alone_and_reopen_keeps_data(state: Path) -> None:
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)  # noqa: S103 - a folder the operator made; History must not change it
    with History(state) as h:
        h.start_run(period="2026-03", dry_run=False, version="0.1.0")
    with History(state) as h:
        assert h.last_run() is not None
    assert stat.S_IMODE(state.stat().st_mode) == 0o755


def test_newer_schema_is_refused(state: Path) -> None:
    History(state).close()
    conn = sqlite3.connect(state / DB_NAME)
    conn.execute("PRAGMA user_version = 5")
    conn.close()
    with pytest.raises(StateError, match="newer infima-autotask"):
        History(state)


def test_state_dir_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.write_text("not a folder")
    with pytest.raises(StateError) as info:
        History(path)
    assert str(path) in info.value.message and "INFIMA_AUTOTASK_STATE_DIR" in info.value.message


def test_state_dir_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    path = tmp_path / "file" / "sub"
    with pytest.raises(StateError, match="Cannot create the state folder") as info:
        History(path)
    assert str(path) in info.value.message


def test_database_path_is_a_folder(state: Path) -> None:
    (state / DB_NAME).mkdir(parents=True)
    with pytest.raises(StateError, match="Cannot use the history database") as info:
        History(state)
    assert str(state / DB_NAME) in info.value.message


def test_corrupt_database(state: Path) -> None:
    state.mkdir()
    (state / DB_NAME).write_bytes(os.urandom(4096))
    with pytest.raises(StateError, match="damaged") as info:
        History(state)
    assert str(state / DB_NAME) in info.value.message
    assert "Move it aside" in info.value.message


_OPEN_SCRIPT = """
import sys
from pathlib import Path
from infima_autotask.errors import StateError
from infima_autotask.history import History
try:
    History(Path(sys.argv[1])).close()
except StateError as exc:
    print("StateError:", exc.message)
else:
    print("opened")
"""


@pytest.fixture
def unprivileged():
    """Run the open script as an ordinary user: root ignores file modes."""
    folder = Path(tempfile.mkdtemp())
    user = []
    if os.geteuid() == 0:
        os.chmod(folder, 0o755)  # noqa: S103 - nobody must reach it, unlike pytest's tmp_path
        user = [65534]
    yield folder, user
    shutil.rmtree(folder, ignore_errors=True)


def _open_as(folder_args: tuple[Path, list[int]], state: Path) -> str:
    """Open History as an ordinary user; returns "opened" or "StateError: <message>"."""
    _, user = folder_args
    if not user:
        try:
            History(state).close()
        except StateError as exc:
            return f"StateError: {exc.message}"
        return "opened"
    try:
        result = subprocess.run(
            [sys.executable, "-c", _OPEN_SCRIPT, str(state)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            user=user[0],
            group=user[0],
            extra_groups=[],
        )
    except OSError as exc:
        pytest.skip(
            f"root ignores file modes, and user {user[0]} cannot run the interpreter: {exc}"
        )
    if result.returncode != 0:
        pytest.skip(f"root ignores file modes, and user {user[0]} cannot run the interpreter here")
    return result.stdout.strip()


def _chown(path: Path, user: list[int]) -> None:
    if user:
        os.chown(path, user[0], user[0])


def test_read_only_folder_fails_at_open(unprivileged) -> None:
    folder, user = unprivileged
    state = folder / "state"
    state.mkdir()
    _chown(state, user)
    os.chmod(state, 0o500)
    assert _open_as(unprivileged, state).startswith(
        "StateError: Cannot create the history database"
    )
    assert _open_as(unprivileged, state / "sub").startswith(
        "StateError: Cannot create the state folder"
    )


def test_read_only_database_fails_at_open(unprivileged) -> None:
    folder, user = unprivileged
    state = folder / "state"
    state.mkdir()
    _chown(state, user)
    assert _open_as(unprivileged, state) == "opened"
    db = state / DB_NAME
    _chown(db, user)
    os.chmod(db, 0o400)
    out = _open_as(unprivileged, state)
    assert out.startswith("StateError: Cannot use the history database")
    assert "readonly" in out


# -- the lock -------------------------------------------------------------------------

_HOLD_SCRIPT = """
import sys
from pathlib import Path
from infima_autotask.history import SyncLock
with SyncLock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def holder(state: Path):
    """Another process holding the lock until its stdin is closed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_SCRIPT, str(state)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    proc.stdin.close()
    proc.stdout.close()


def test_lock_held_by_another_process_names_its_pid(state: Path, holder) -> None:
    with pytest.raises(LockHeldError) as info, SyncLock(state):
        pytest.fail("took a lock another process holds")
    assert info.value.message == (
        f"Another sync is running (PID {holder.pid}); wait for it to finish, "
        "or stop it if it is stuck."
    )
    assert info.value.exit_code == 3

    holder.stdin.close()  # the holder leaves its with-block and exits
    holder.wait(timeout=10)
    with SyncLock(state) as lock:
        assert (state / LOCK_NAME).read_text().strip() == str(os.getpid())
        assert lock.path == state / LOCK_NAME


def test_lock_freed_when_holder_is_killed(state: Path, holder) -> None:
    holder.kill()  # SIGKILL: no cleanup runs; the kernel drops the flock
    holder.wait(timeout=10)
    assert (state / LOCK_NAME).read_text().strip() == str(holder.pid)  # stale PID stays
    with SyncLock(state):
        assert (state / LOCK_NAME).read_text().strip() == str(os.getpid())


def test_lock_released_after_with_block(state: Path) -> None:
    with SyncLock(state):
        pass
    assert stat.S_IMODE((state / LOCK_NAME).stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    # another open file description can take it: nothing is left held
    fd = os.open(state / LOCK_NAME, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
    with SyncLock(state):
        pass


def test_lock_released_when_block_raises(state: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), SyncLock(state):
        raise RuntimeError("boom")
    with SyncLock(state):
        pass


def test_lock_holder_without_readable_pid(state: Path) -> None:
    state.mkdir()
    fd = os.open(state / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"garbage")
        with pytest.raises(LockHeldError, match=r"Another sync is running \(another process\);"):
            SyncLock(state).__enter__()
    finally:
        os.close(fd)


def test_lock_in_state_dir_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StateError, match="state folder"), SyncLock(tmp_path / "file" / "sub"):
        pass


def test_lock_file_cannot_be_created(state: Path) -> None:
    (state / LOCK_NAME).mkdir(parents=True)  # a folder where the lock file should be
    with pytest.raises(StateError, match="Cannot create the lock file") as info, SyncLock(state):
        pass
    assert str(state / LOCK_NAME) in info.value.message


def test_lock_check_is_quick(state: Path, holder) -> None:
    """LOCK_NB: a second sync fails at once instead of queueing behind the first."""
    started = time.monotonic()
    with pytest.raises(LockHeldError), SyncLock(state):
        pass
    assert time.monotonic() - started < 1
