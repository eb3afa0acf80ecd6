"""Run history (SQLite, ``history.sqlite3``) and the one-sync-at-a-time lock.

Every write is a short transaction so a killed process never leaves a half-written run or
item. Before each Autotask write the sync records an *intent* (status ``writing``) and
completes it afterwards; an intent still ``writing`` on the next run means the process died
between the write and its record, and the next run must re-read Autotask before anything
else. Only the fields below are stored: never a secret.

The schema version is ``PRAGMA user_version``. Opening a database of an older version
migrates it (``_MIGRATIONS``) in the same transaction that checks the version, so a file is
either fully at ``SCHEMA_VERSION`` or untouched; a newer version is refused.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .errors import LockHeldError, StateError
from .fsutil import make_private_dirs
from .statuses import FINAL, SUCCESS, UPDATED, WRITING
from .whole_number import WholeNumberError, parse_whole

if TYPE_CHECKING:
    from .sync import PlanItem

log = logging.getLogger(__name__)

DB_NAME = "history.sqlite3"
LOCK_NAME = "sync.lock"
SCHEMA_VERSION = 4
BUSY_TIMEOUT_MS = 10_000


_FIX_DIR = "Set INFIMA_AUTOTASK_STATE_DIR (or state_dir in the config) to a writable folder."

_SCHEMA = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    period TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    version TEXT NOT NULL,
    outcome TEXT,
    summary TEXT,
    kind TEXT NOT NULL DEFAULT 'sync',
    reverts INTEGER,
    warnings TEXT
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
    updated_at TEXT NOT NULL,
    effective_date TEXT,
    before_cost REAL,
    psa TEXT NOT NULL DEFAULT 'autotask'
);
CREATE INDEX items_period_status ON items(period, status);
CREATE INDEX items_client ON items(client_id, created_at);
CREATE INDEX items_run ON items(run_id);
"""

# The statements taking a database from version N to N + 1. A new column is added last, so
# a migrated database has the same columns, in the same order, as one created by _SCHEMA.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE items ADD COLUMN effective_date TEXT",),
    2: (
        "ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'sync'",
        "ALTER TABLE runs ADD COLUMN reverts INTEGER",
        "ALTER TABLE runs ADD COLUMN warnings TEXT",
        "ALTER TABLE items ADD COLUMN before_cost REAL",
    ),
    3: ("ALTER TABLE items ADD COLUMN psa TEXT NOT NULL DEFAULT 'autotask'",),
}

SYNC_RUN = "sync"
REVERT_RUN = "revert"  # undoes what the run ``reverts`` names (``infima-autotask revert``)


@dataclass(frozen=True)
class ItemRecord:
    """One client's outcome as the sync hands it in.

    ``price`` and ``cost`` are per-unit rates: the unit price, and the unit cost in force
    after the item (the one written when the cost is overwritten). Items stored before
    schema version 2 were not converted. ``effective_date`` is the ISO date (``YYYY-MM-DD``)
    of the write's effective date, ``None`` for an item without one (e.g. ``skipped``).
    """

    client_id: int
    client_name: str | None
    contract_id: int | None
    contract_service_id: int | None
    users: int | None
    target: int | None
    before: int | None
    after: int | None
    change: int | None
    price: float | None
    cost: float | None
    status: str
    message: str = ""
    adjustment_id: int | None = None
    effective_date: str | None = None
    before_cost: float | None = None  # the unit cost before the item (schema 3; revert uses it)
    psa: str = "autotask"  # the PSA of the line (schema 4)

    @classmethod
    def of(cls, item: PlanItem) -> ItemRecord:
        """An item's history row; ``cost`` is the cost in force after it (written ones' too)."""
        return cls(
            client_id=item.client_id,
            client_name=item.client_name or None,
            contract_id=item.contract_id,
            contract_service_id=item.contract_service_id,
            users=item.users,
            target=item.target,
            before=item.before,
            after=item.after,
            change=item.change,
            price=item.rates.price,
            cost=item.rates.cost,
            status=item.status,
            message=item.message,
            adjustment_id=item.adjustment_id,
            effective_date=item.effective.isoformat() if item.effective else None,
            before_cost=item.unit_cost,
            psa=item.psa,
        )


# The items table's own columns are ItemRecord's fields, by name and in order: a new field is
# a new column (and a migration), nothing else.
_ITEM_FIELDS = tuple(f.name for f in fields(ItemRecord))
_ITEM_COLUMNS = ", ".join(_ITEM_FIELDS)
_SELECT_ITEMS = (
    f"SELECT {', '.join('i.' + name for name in _ITEM_FIELDS)}, "  # noqa: S608 - fixed names
    "i.id, i.run_id, i.period, r.dry_run, i.created_at, i.updated_at "
    "FROM items i JOIN runs r ON r.id = i.run_id"
)


@dataclass(frozen=True, kw_only=True)
class HistoryItem(ItemRecord):
    """A stored item, with its run's period and dry-run flag."""

    id: int
    run_id: int
    period: str
    dry_run: bool
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class RunRecord:
    """One stored sync run; ``finished_at``/``outcome`` stay ``None`` while it runs."""

    id: int
    started_at: str
    finished_at: str | None
    period: str
    dry_run: bool
    version: str
    outcome: str | None
    summary: dict[str, int]
    kind: str = SYNC_RUN
    reverts: int | None = None
    warnings: tuple[str, ...] = ()


_SELECT_RUNS = (
    "SELECT id, started_at, finished_at, period, dry_run, version, outcome, summary, kind, "
    "reverts, warnings FROM runs"
)


def _to_run(row: tuple[Any, ...]) -> RunRecord:
    rid, started, finished, period, dry_run, version, outcome, summary, kind, reverts, warns = row
    return RunRecord(
        id=rid,
        started_at=started,
        finished_at=finished,
        period=period,
        dry_run=bool(dry_run),
        version=version,
        outcome=outcome,
        summary={str(k): int(v) for k, v in json.loads(summary).items()} if summary else {},
        kind=kind,
        reverts=reverts,
        warnings=tuple(json.loads(warns)) if warns else (),
    )


def display_time(stamp: str) -> str:
    """A stored time as every command shows it: ``2026-12-01T06:00:00Z`` (naive is UTC)."""
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _ensure_dir(state_dir: Path) -> None:
    """Create the state folder (mode 0700) when missing.

    Raises:
        StateError: the folder cannot be created, or the path is not a folder.
    """
    if state_dir.is_dir():
        return
    if state_dir.exists():
        raise StateError(f"The state folder {state_dir} is not a folder. {_FIX_DIR}")
    try:
        make_private_dirs(state_dir)
    except FileExistsError:
        if not state_dir.is_dir():
            raise StateError(f"The state folder {state_dir} is not a folder. {_FIX_DIR}") from None
    except OSError as exc:
        raise StateError(
            f"Cannot create the state folder {state_dir}: {exc.strerror or exc}. {_FIX_DIR}"
        ) from exc


def _db_error(path: Path, exc: sqlite3.Error) -> StateError:
    text = str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and ("not a database" in text or "malformed" in text):
        return StateError(
            f"The history database {path} is damaged ({text}). Move it aside (history starts "
            "afresh) or restore it from a backup, then run again."
        )
    if "locked" in text:
        return StateError(
            f"The history database {path} stayed locked by another program for "
            f"{BUSY_TIMEOUT_MS // 1000} s ({text}). Try again when it has finished."
        )
    return StateError(
        f"Cannot use the history database {path}: {text}. Check that the file and its folder "
        f"are writable by this user. {_FIX_DIR}"
    )


class History:
    """The run history in ``state_dir/history.sqlite3``."""

    def __init__(self, state_dir: Path, *, clock: Callable[[], datetime] = _utc_now) -> None:
        """Open (creating) the database and prove it is writable.

        Raises:
            StateError: the folder or database cannot be created, opened or written.
        """
        self.path = Path(state_dir) / DB_NAME
        self._clock = clock
        self._lock = threading.Lock()
        _ensure_dir(Path(state_dir))
        self._create_file()
        try:
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE in _tx).
            conn = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise _db_error(self.path, exc) from exc
        self._conn: sqlite3.Connection | None = conn
        try:
            self._setup(conn)
        except sqlite3.Error as exc:
            self.close()
            raise _db_error(self.path, exc) from exc
        except StateError:
            self.close()
            raise

    def _create_file(self) -> None:
        # Create it ourselves so it is 0600 from the first byte (SQLite would use the umask);
        # SQLite gives the -wal and -shm files the same permissions.
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return
        except OSError as exc:
            if exc.errno == errno.EISDIR:
                return  # reported by sqlite3.connect below, with the usual message
            raise StateError(
                f"Cannot create the history database {self.path}: {exc.strerror or exc}. {_FIX_DIR}"
            ) from exc
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)

    def _setup(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("history database %s: journal mode %s instead of WAL", self.path, mode)
        # An intent must survive a power cut, or the next run could write twice.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        with self._tx() as cur:
            version = cur.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"The history database {self.path} was written by a newer infima-autotask "
                    f"(schema {version}). Upgrade infima-autotask."
                )
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        cur.execute(statement)
            elif version < SCHEMA_VERSION:
                self._migrate(cur, version)
            # Always write, even when nothing changed: opening must fail now, not halfway
            # through a sync after Autotask has been written to.
            cur.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _migrate(self, cur: sqlite3.Cursor, version: int) -> None:
        """Bring a database of `version` to SCHEMA_VERSION, inside the caller's transaction.

        Raises:
            StateError: a step failed; the transaction is rolled back, the file unchanged.
        """
        for step in range(version, SCHEMA_VERSION):
            try:
                for statement in _MIGRATIONS[step]:
                    cur.execute(statement)
            except sqlite3.Error as exc:
                if "locked" in str(exc):
                    raise  # the usual "stayed locked" message
                raise StateError(
                    f"Cannot upgrade the history database {self.path} from schema {step} to "
                    f"{step + 1} ({exc}); it was left unchanged. Move it aside (history starts "
                    "afresh) or restore it from a backup, then run again."
                ) from exc
        log.info(
            "history database %s upgraded from schema %d to %d", self.path, version, SCHEMA_VERSION
        )

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction; rolled back on any exception."""
        conn = self._connection()
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.rollback()
            raise
        else:
            cur.execute("COMMIT")
        finally:
            cur.close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("History is closed")
        return self._conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            try:
                with self._tx() as cur:
                    yield cur
            except sqlite3.Error as exc:
                raise _db_error(self.path, exc) from exc

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._connection().execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise _db_error(self.path, exc) from exc

    def _now(self) -> str:
        return self._clock().astimezone(timezone.utc).isoformat(timespec="microseconds")

    def close(self) -> None:
        """Close the database (safe to call twice)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> History:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- runs ---------------------------------------------------------------------------

    def start_run(
        self,
        *,
        period: str,
        dry_run: bool,
        version: str,
        kind: str = SYNC_RUN,
        reverts: int | None = None,
    ) -> int:
        """Record the start of a run (a sync, or a revert of run ``reverts``); returns its id."""
        with self._write() as cur:
            cur.execute(
                "INSERT INTO runs (started_at, period, dry_run, version, kind, reverts) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (self._now(), period, int(dry_run), version, kind, reverts),
            )
            return _rowid(cur)

    def add_run_warning(self, run_id: int, text: str) -> None:
        """Keep a warning with its run (a notification that could not be delivered)."""
        with self._write() as cur:
            row = cur.execute("SELECT warnings FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise ValueError(f"no run {run_id}")
            warnings = [*json.loads(row[0] or "[]"), text]
            cur.execute("UPDATE runs SET warnings = ? WHERE id = ?", (json.dumps(warnings), run_id))

    def runs(self, *, month: str | None = None, limit: int | None = None) -> list[RunRecord]:
        """Runs, newest first (of one period when ``month`` is given)."""
        tail = " WHERE period = ?" if month is not None else ""
        params: list[Any] = [month] if month is not None else []
        tail += " ORDER BY started_at DESC, id DESC"
        if limit is not None:
            tail += " LIMIT ?"
            params.append(limit)
        return [_to_run(row) for row in self._read(_SELECT_RUNS + tail, params)]

    def run(self, run_id: int) -> RunRecord | None:
        rows = self._read(_SELECT_RUNS + " WHERE id = ?", (run_id,))
        return _to_run(rows[0]) if rows else None

    def run_items(self, run_id: int) -> list[HistoryItem]:
        """The items of one run, in the order they were recorded."""
        return self._items("WHERE i.run_id = ? ORDER BY i.id", (run_id,))

    def finish_run(self, run_id: int, *, outcome: str, summary: Mapping[str, int]) -> None:
        """Record a run's end, its outcome and its per-status counts."""
        with self._write() as cur:
            cur.execute(
                "UPDATE runs SET finished_at = ?, outcome = ?, summary = ? WHERE id = ?",
                (self._now(), outcome, json.dumps(dict(summary), sort_keys=True), run_id),
            )
            if cur.rowcount != 1:
                raise ValueError(f"no run {run_id}")

    def last_run(self) -> RunRecord | None:
        """The newest run of any kind, or ``None``."""
        runs = self.runs(limit=1)
        return runs[0] if runs else None

    # -- items --------------------------------------------------------------------------

    def record_item(self, run_id: int, item: ItemRecord) -> int:
        """Record a final item (one that needed no write); returns its id."""
        return self.record_items(run_id, [item])[0]

    def record_items(self, run_id: int, items: Iterable[ItemRecord]) -> list[int]:
        """Record several final items in one transaction; returns their ids in order."""
        items = list(items)
        for item in items:
            if item.status not in FINAL:
                raise ValueError(f"not a final status: {item.status!r}")
            _check_effective_date(item)
        with self._write() as cur:
            period, _ = self._run_info(cur, run_id)
            return [self._insert(cur, run_id, period, item, item.status) for item in items]

    def record_intent(self, run_id: int, item: ItemRecord) -> int:
        """Record, before a write is sent, that it is about to be (status ``writing``)."""
        _check_effective_date(item)
        with self._write() as cur:
            period, dry_run = self._run_info(cur, run_id)
            if dry_run:
                raise ValueError(f"run {run_id} is a dry run: it writes nothing")
            return self._insert(cur, run_id, period, item, WRITING)

    def complete_item(
        self,
        item_id: int,
        *,
        status: str,
        after: int | None,
        message: str,
        adjustment_id: int | None = None,
    ) -> None:
        """Close an intent of this run with the outcome of its write."""
        if status not in FINAL:
            raise ValueError(f"not a final status: {status!r}")
        with self._write() as cur:
            cur.execute(
                "UPDATE items SET status = ?, after = ?, message = ?, adjustment_id = ?, "
                "updated_at = ? WHERE id = ? AND status = ?",
                (status, after, message, adjustment_id, self._now(), item_id, WRITING),
            )
            if cur.rowcount != 1:
                raise ValueError(f"item {item_id} is not an open intent")

    def pending_intents(self, period: str) -> list[HistoryItem]:
        """Intents of ``period`` still ``writing``: their write's outcome is unknown."""
        return self._items(
            "WHERE i.period = ? AND i.status = ? AND r.dry_run = 0 ORDER BY i.id",
            (period, WRITING),
        )

    def resolve_intent(self, item_id: int, *, status: str, message: str) -> None:
        """Close a pending intent once Autotask has been re-read.

        ``after`` follows SPEC §8: the target when ``updated``, else ``before``.
        """
        if status not in FINAL:
            raise ValueError(f"not a final status: {status!r}")
        with self._write() as cur:
            cur.execute(
                "UPDATE items SET status = ?, message = ?, updated_at = ?, "
                "after = CASE WHEN ? = 'updated' THEN target ELSE before END "
                "WHERE id = ? AND status = ?",
                (status, message, self._now(), status, item_id, WRITING),
            )
            if cur.rowcount != 1:
                raise ValueError(f"item {item_id} is not a pending intent")

    def successful_clients(self, period: str) -> set[int]:
        """Clients done for ``period``: an item of a SUCCESS status in a real run."""
        return {client for client, _ in self.successful_lines(period)}

    def successful_lines(self, period: str) -> set[tuple[int, int | None]]:
        """(client, contract service) pairs done for ``period`` in a real run: a client
        re-mapped to another line since is due again."""
        marks = ", ".join("?" for _ in SUCCESS)
        rows = self._read(
            "SELECT DISTINCT i.client_id, i.contract_service_id FROM items i "  # noqa: S608
            f"JOIN runs r ON r.id = i.run_id WHERE i.period = ? AND r.dry_run = 0 "
            f"AND i.status IN ({marks})",
            (period, *SUCCESS),
        )
        return {(int(row[0]), None if row[1] is None else int(row[1])) for row in rows}

    def items(
        self, *, month: str | None = None, client_id: int | None = None, limit: int | None = None
    ) -> list[HistoryItem]:
        """Stored items, newest first; dry-run items included (flagged ``dry_run``)."""
        clauses: list[str] = []
        params: list[Any] = []
        if month is not None:
            clauses.append("i.period = ?")
            params.append(month)
        if client_id is not None:
            clauses.append("i.client_id = ?")
            params.append(client_id)
        sql = ("WHERE " + " AND ".join(clauses) + " " if clauses else "") + (
            "ORDER BY i.created_at DESC, i.id DESC"
        )
        if limit is not None:
            if limit < 0:
                raise ValueError("limit must not be negative")
            sql += " LIMIT ?"
            params.append(limit)
        return self._items(sql, params)

    def runs_between(self, first: str, last: str) -> list[RunRecord]:
        """Runs of the periods ``first`` to ``last`` (``YYYY-MM``, both included), oldest first."""
        return [
            _to_run(row)
            for row in self._read(
                _SELECT_RUNS + " WHERE period BETWEEN ? AND ? ORDER BY started_at, id",
                (first, last),
            )
        ]

    def items_between(self, first: str, last: str) -> list[HistoryItem]:
        """Items of the periods ``first`` to ``last`` (both included), oldest first; dry-run
        items included (flagged ``dry_run``)."""
        return self._items(
            "WHERE i.period BETWEEN ? AND ? ORDER BY i.created_at, i.id", (first, last)
        )

    def last_items(self) -> dict[int, HistoryItem]:
        """The newest item of a real (not dry) run for each client: a sync's, or a revert's
        that wrote (a revert that left a line as it was says nothing about the line)."""
        found: dict[int, HistoryItem] = {}
        for item in self._items(
            "WHERE i.id IN (SELECT id FROM (SELECT i2.id, ROW_NUMBER() OVER ("
            "PARTITION BY i2.client_id ORDER BY i2.created_at DESC, i2.id DESC) AS n "
            "FROM items i2 JOIN runs r2 ON r2.id = i2.run_id WHERE r2.dry_run = 0 "
            "AND (r2.kind != ? OR i2.status IN (?, ?))) WHERE n = 1)",
            (REVERT_RUN, UPDATED, WRITING),
        ):
            found[item.client_id] = item
        return found

    # -- helpers ------------------------------------------------------------------------

    def _run_info(self, cur: sqlite3.Cursor, run_id: int) -> tuple[str, bool]:
        row = cur.execute("SELECT period, dry_run FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise ValueError(f"no run {run_id}")
        return str(row[0]), bool(row[1])

    def _insert(
        self, cur: sqlite3.Cursor, run_id: int, period: str, item: ItemRecord, status: str
    ) -> int:
        now = self._now()
        values = [status if name == "status" else getattr(item, name) for name in _ITEM_FIELDS]
        marks = ", ".join("?" for _ in range(len(values) + 4))
        cur.execute(
            f"INSERT INTO items (run_id, period, {_ITEM_COLUMNS}, created_at, updated_at) "  # noqa: S608
            f"VALUES ({marks})",
            (run_id, period, *values, now, now),
        )
        return _rowid(cur)

    def _items(self, tail: str, params: Iterable[Any]) -> list[HistoryItem]:
        return [_to_item(row) for row in self._read(f"{_SELECT_ITEMS} {tail}", params)]


def _check_effective_date(item: ItemRecord) -> None:
    value = item.effective_date
    if value is None:
        return
    try:
        valid = isinstance(value, str) and date.fromisoformat(value).isoformat() == value
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(f"effective_date must be an ISO date (YYYY-MM-DD), got {value!r}")


def _rowid(cur: sqlite3.Cursor) -> int:
    rowid = cur.lastrowid
    if rowid is None:  # pragma: no cover - an INSERT always sets it
        raise RuntimeError("INSERT returned no row id")
    return rowid


def _to_item(row: tuple[Any, ...]) -> HistoryItem:
    """A row of :data:`_SELECT_ITEMS` as a stored item."""
    stored = dict(zip(_ITEM_FIELDS, row, strict=False))
    item_id, run_id, period, dry_run, created_at, updated_at = row[len(_ITEM_FIELDS) :]
    return HistoryItem(
        **stored,
        id=item_id,
        run_id=run_id,
        period=period,
        dry_run=bool(dry_run),
        created_at=created_at,
        updated_at=updated_at,
    )


class SyncLock:
    """One sync at a time: an exclusive ``flock`` on ``state_dir/sync.lock``.

    The kernel drops the lock when the holder exits, however it dies, so a stale lock file
    never blocks the next run. The holder's PID is written into the file for the message.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LOCK_NAME
        self._state_dir = Path(state_dir)
        self._fd: int | None = None

    def __enter__(self) -> SyncLock:
        """Take the lock.

        Raises:
            LockHeldError: another process holds it.
            StateError: the lock file cannot be created or locked.
        """
        if self._fd is not None:
            raise RuntimeError("SyncLock is already held by this object")
        _ensure_dir(self._state_dir)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(
                f"Cannot create the lock file {self.path}: {exc.strerror or exc}. {_FIX_DIR}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"PID {holder}" if holder is not None else "another process"
            raise LockHeldError(
                f"Another sync is running ({who}); wait for it to finish, "
                "or stop it if it is stuck."
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StateError(f"Cannot lock {self.path}: {exc.strerror or exc}. {_FIX_DIR}") from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            # The lock itself holds; only the PID in the message would be missing.
            log.warning("could not write the PID into %s: %s", self.path, exc.strerror or exc)
        self._fd = fd
        log.debug("sync lock taken: %s", self.path)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        log.debug("sync lock released: %s", self.path)


def _read_pid(fd: int) -> int | None:
    try:
        return parse_whole(os.pread(fd, 32, 0).decode("ascii", "replace"), low=1, spaces=True)
    except (OSError, WholeNumberError):
        return None


def read_items(
    state_dir: Path,
    *,
    month: str | None = None,
    client_id: int | None = None,
    limit: int | None = None,
) -> list[HistoryItem]:
    """Past sync items, newest first; none when there is no history file yet (the state
    folder is not created just to read it)."""
    if not (state_dir / DB_NAME).is_file():
        return []
    with History(state_dir) as history:
        return history.items(month=month, client_id=client_id, limit=limit)


def read_runs(
    state_dir: Path, *, month: str | None = None, limit: int | None = None
) -> list[RunRecord]:
    """Past runs, newest first; none when there is no history file yet."""
    if not (state_dir / DB_NAME).is_file():
        return []
    with History(state_dir) as history:
        return history.runs(month=month, limit=limit)


@dataclass(frozen=True)
class PeriodSpan:
    """The runs and items of a span of periods, oldest first."""

    runs: list[RunRecord]
    items: list[HistoryItem]


def read_span(state_dir: Path, first: str, last: str) -> PeriodSpan | None:
    """Runs and items of the periods ``first`` to ``last`` (``YYYY-MM``, both included);
    ``None`` when there is no history file yet (nothing is created just to read it)."""
    if not (state_dir / DB_NAME).is_file():
        return None
    with History(state_dir) as history:
        return PeriodSpan(history.runs_between(first, last), history.items_between(first, last))
