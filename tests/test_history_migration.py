"""History schema 2: a real version-1 file (as 0.1 wrote it) is migrated in one transaction."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from infima_autotask import history as history_module
from infima_autotask.errors import StateError
from infima_autotask.history import DB_NAME, SCHEMA_VERSION, History, ItemRecord
from infima_autotask.statuses import FINAL, SUCCESS

# The schema of version 1, exactly as infima-autotask 0.1 created it (history._SCHEMA then).
V1_SCHEMA = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    period TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    version TEXT NOT NULL,
    outcome TEXT,
    summary TEXT
);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    period TEXT NOT NULL,
    client_id INTEGER NOT NULL,
    client_name TEXT,
    contract_id INTEGER,
    contract_service_id INTEGER,
    users INTEGER,
    target INTEGER,
    before INTEGER,
    after INTEGER,
    change INTEGER,
    price REAL,
    cost REAL,
    status TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    adjustment_id INTEGER,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX items_period_status ON items(period, status);
CREATE INDEX items_client ON items(client_id, created_at);
CREATE INDEX items_run ON items(run_id);
"""

V1_RUNS = [
    # id, started_at, finished_at, period, dry_run, version, outcome, summary
    (
        1,
        "2026-02-01T06:00:01.000000+00:00",
        "2026-02-01T06:00:09.000000+00:00",
        "2026-02",
        0,
        "0.1.0",
        "ok",
        '{"failed": 1, "updated": 1}',
    ),
    (2, "2026-03-01T05:00:00.000000+00:00", None, "2026-03", 1, "0.1.0", None, None),
    (3, "2026-03-01T06:00:01.000000+00:00", None, "2026-03", 0, "0.1.0", None, None),
]

_ITEM_KEYS = (
    "id, run_id, period, client_id, client_name, contract_id, contract_service_id, users, "
    "target, before, after, change, price, cost, status, message, adjustment_id, created_at, "
    "updated_at"
)
V1_ITEMS = [
    (
        1, 1, "2026-02", 101, "Acme Dental", 29684001, 29685101, 12, 12, 10, 12, 2, 42.0,
        15.0, "updated", "", 555, "2026-02-01T06:00:02.000000+00:00",
        "2026-02-01T06:00:03.000000+00:00",
    ),
    (
        2, 1, "2026-02", 102, "Bäckerei Müller ✓", 29684002, 29685102, 7, 7, 9, 9, -2, None,
        None, "failed", "API rejected: quote 'x'", None, "2026-02-01T06:00:04.000000+00:00",
        "2026-02-01T06:00:04.000000+00:00",
    ),
    (
        3, 2, "2026-03", 101, "Acme Dental", 29684001, 29685101, 13, 13, 12, 13, 1, 3.5, 1.25,
        "planned", "", None, "2026-03-01T05:00:01.000000+00:00",
        "2026-03-01T05:00:01.000000+00:00",
    ),
    (  # the process died between the write and its record
        4, 3, "2026-03", 101, "Acme Dental", 29684001, 29685101, 13, 13, 12, 13, 1, 3.5, 1.25,
        "writing", "", None, "2026-03-01T06:00:02.000000+00:00",
        "2026-03-01T06:00:02.000000+00:00",
    ),
    (
        5, 3, "2026-03", 117, None, None, None, None, None, None, None, None, None, None,
        "held", "not written", None, "2026-03-01T06:00:03.000000+00:00",
        "2026-03-01T06:00:03.000000+00:00",
    ),
]  # fmt: skip


def _make_v1(state: Path, *, extra_sql: str = "") -> Path:
    """A version-1 history database with V1_RUNS and V1_ITEMS, as 0.1 left it."""
    state.mkdir(mode=0o700, exist_ok=True)
    path = state / DB_NAME
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(V1_SCHEMA + extra_sql)
        conn.execute("PRAGMA user_version = 1")
        conn.executemany("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", V1_RUNS)
        marks = ", ".join("?" * len(V1_ITEMS[0]))
        conn.executemany(f"INSERT INTO items ({_ITEM_KEYS}) VALUES ({marks})", V1_ITEMS)  # noqa: S608
    finally:
        conn.close()
    return path


def _raw(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _user_version(path: Path) -> int:
    return int(_raw(path, "PRAGMA user_version")[0][0])


def _columns(path: Path, table: str = "items") -> list[tuple[object, ...]]:
    return _raw(path, f"PRAGMA table_info({table})")


def _as_v1_tuple(item: object) -> tuple[object, ...]:
    return tuple(getattr(item, key.strip()) for key in _ITEM_KEYS.split(","))


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def test_version_1_file_is_migrated_keeping_every_row(state: Path) -> None:
    path = _make_v1(state)
    with History(state) as h:
        assert _user_version(path) == SCHEMA_VERSION == 4

        stored = sorted(h.items(), key=lambda i: i.id)
        assert len(stored) == len(V1_ITEMS)
        dry_runs = {run[0]: bool(run[4]) for run in V1_RUNS}
        for row, got in zip(V1_ITEMS, stored, strict=True):
            assert _as_v1_tuple(got) == row  # every column read back intact
            assert got.effective_date is None
            assert got.dry_run is dry_runs[row[1]]

        last = h.last_run()
        assert last is not None and last.id == 3 and last.outcome is None
        # Runs from before schema 3 are syncs, with no warnings kept.
        assert {(r.kind, r.reverts, r.warnings) for r in h.runs()} == {("sync", None, ())}
        assert h.successful_clients("2026-02") == {101}
        assert h.last_items()[102].message == "API rejected: quote 'x'"

        # The intent 0.1 left open is still found, and can be closed.
        [pending] = h.pending_intents("2026-03")
        assert (pending.id, pending.client_id, pending.status) == (4, 101, "writing")
        assert pending.effective_date is None
        h.resolve_intent(pending.id, status="updated", message="found at target")
        assert h.pending_intents("2026-03") == []
        assert h.successful_clients("2026-03") == {101}

        # New items carry their effective date.
        run = h.start_run(period="2026-04", dry_run=False, version="0.2.0")
        new_id = h.record_item(
            run, ItemRecord(101, "Acme", 1, 2, 13, 13, 13, 13, 0, 3.5, 1.25, "unchanged")
        )
        intent = h.record_intent(
            run,
            ItemRecord(
                117, "Brightwater", 3, 4, 20, 20, 18, 20, 2, 4.0, 1.75, "updated",
                effective_date="2026-04-17",
            ),
        )  # fmt: skip
        h.complete_item(intent, status="updated", after=20, message="", adjustment_id=9)
        h.record_item(run, ItemRecord(120, None, 5, 6, 3, 3, 3, 3, None, None, None, "skipped"))
        by_id = {i.id: i for i in h.items(month="2026-04")}
        assert by_id[new_id].effective_date is None
        assert by_id[intent].effective_date == "2026-04-17"
        assert by_id[intent].status == "updated"
        assert h.successful_clients("2026-04") == {101, 117, 120}

    assert _raw(path, "SELECT effective_date FROM items WHERE id = ?", (intent,)) == [
        ("2026-04-17",)
    ]
    assert _raw(path, "SELECT count(*) FROM runs")[0][0] == len(V1_RUNS) + 1


def test_migrated_database_has_the_columns_of_a_new_one(state: Path, tmp_path: Path) -> None:
    path = _make_v1(state)
    History(state).close()
    fresh_state = tmp_path / "fresh"
    History(fresh_state).close()
    fresh = fresh_state / DB_NAME
    assert _user_version(fresh) == 4
    for table in ("runs", "items"):
        assert _columns(path, table) == _columns(fresh, table)
    assert [c[1] for c in _columns(path)][-3:] == ["effective_date", "before_cost", "psa"]
    indexes = "SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name"
    assert _raw(path, indexes) == _raw(fresh, indexes)


def test_opening_twice_is_a_no_op(state: Path) -> None:
    path = _make_v1(state)
    History(state).close()
    schema = _raw(path, "SELECT type, name, sql FROM sqlite_master ORDER BY name")
    rows = _raw(path, "SELECT * FROM items ORDER BY id")
    with History(state) as h:
        assert len(h.items()) == len(V1_ITEMS)
    History(state).close()
    assert _user_version(path) == 4
    assert _raw(path, "SELECT type, name, sql FROM sqlite_master ORDER BY name") == schema
    assert _raw(path, "SELECT * FROM items ORDER BY id") == rows


def test_two_processes_opening_a_version_1_file_at_once(state: Path) -> None:
    path = _make_v1(state)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_it() -> None:
        try:
            start.wait()
            with History(state) as h:
                assert len(h.items()) == len(V1_ITEMS)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _user_version(path) == 4
    assert [c[1] for c in _columns(path)].count("effective_date") == 1


def test_failed_migration_leaves_the_file_at_version_1(state: Path) -> None:
    # A column the migration means to add is already there: ALTER TABLE fails.
    path = _make_v1(state, extra_sql="ALTER TABLE items ADD COLUMN effective_date TEXT;")
    columns = _columns(path)
    rows = _raw(path, "SELECT * FROM items ORDER BY id")
    with pytest.raises(StateError) as info:
        History(state)
    message = str(info.value)
    assert "Cannot upgrade the history database" in message
    assert "from schema 1 to 2" in message
    assert "duplicate column" in message
    assert "left unchanged" in message
    assert _user_version(path) == 1
    assert _columns(path) == columns
    assert _raw(path, "SELECT * FROM items ORDER BY id") == rows


def test_failure_after_a_first_step_rolls_the_whole_migration_back(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _make_v1(state)
    before = _raw(path, "SELECT type, name, sql FROM sqlite_master ORDER BY name")
    steps = (*history_module._MIGRATIONS[1], "ALTER TABLE no_such_table ADD COLUMN x TEXT")
    monkeypatch.setitem(history_module._MIGRATIONS, 1, steps)
    with pytest.raises(StateError, match="no such table"):
        History(state)
    # The first ALTER TABLE succeeded inside the transaction, and was rolled back with it.
    assert _user_version(path) == 1
    assert "effective_date" not in [c[1] for c in _columns(path)]
    assert _raw(path, "SELECT type, name, sql FROM sqlite_master ORDER BY name") == before
    assert len(_raw(path, "SELECT id FROM items")) == len(V1_ITEMS)

    monkeypatch.undo()  # the real migration then succeeds on the same file
    with History(state) as h:
        assert [i.effective_date for i in h.items()] == [None] * len(V1_ITEMS)
    assert _user_version(path) == 4


def test_newer_database_is_still_refused_untouched(state: Path) -> None:
    path = _make_v1(state)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 5")
    conn.close()
    with pytest.raises(StateError, match=r"newer infima-autotask \(schema 5\)"):
        History(state)
    assert _user_version(path) == 5
    assert "effective_date" not in [c[1] for c in _columns(path)]


# -- the new fields --------------------------------------------------------------------


def test_skipped_is_final_and_done_for_the_period(state: Path) -> None:
    assert "skipped" in FINAL
    assert "skipped" in SUCCESS
    with History(state) as h:
        real = h.start_run(period="2026-12", dry_run=False, version="0.2.0")
        h.record_item(real, ItemRecord(1, None, 1, 2, 5, 5, 5, 5, None, 3.0, 1.0, "skipped"))
        dry = h.start_run(period="2026-12", dry_run=True, version="0.2.0")
        h.record_item(dry, ItemRecord(2, None, 1, 3, 5, 5, 5, 5, None, 3.0, 1.0, "skipped"))
        assert h.successful_clients("2026-12") == {1}  # a dry run's skip is not done


@pytest.mark.parametrize(
    "bad", ["2026-3-1", "2026-02-30", "20260301", "2026-03-01T00:00:00", "", "2026-03-01 "]
)
def test_effective_date_must_be_an_iso_date(state: Path, bad: str) -> None:
    with History(state) as h:
        run = h.start_run(period="2026-03", dry_run=False, version="0.2.0")
        record = ItemRecord(1, None, 1, 2, 5, 5, 4, 5, 1, 3.0, 1.0, "updated", effective_date=bad)
        with pytest.raises(ValueError, match="ISO date"):
            h.record_item(run, record)
        with pytest.raises(ValueError, match="ISO date"):
            h.record_intent(run, record)
        assert h.items() == []


def test_item_record_positional_fields_are_unchanged() -> None:
    # New fields go last: existing positional and keyword constructions keep working.
    record = ItemRecord(1, "X", 2, 3, 4, 5, 6, 7, 8, 9.0, 10.0, "updated", "msg", 11)
    assert (record.message, record.adjustment_id, record.effective_date) == ("msg", 11, None)
    assert list(ItemRecord.__dataclass_fields__)[-3:] == ["effective_date", "before_cost", "psa"]
