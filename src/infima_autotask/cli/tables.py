"""Tables over typed records: each column knows its header, the cell a table shows and the raw
values it gives a ``--json`` row, so one column list serves both outputs (SPEC §2)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Generic, TypeVar

from infima_autotask.cli._common import emit_json, emit_rows, snake

R = TypeVar("R")


@dataclass(frozen=True)
class Column(Generic[R]):
    """One column of a table of records ``R``.

    ``cell`` is what the table shows (None shows ``-``). ``raw`` gives the column's fields in a
    JSON row: its header in snake_case with a raw value, plus any companions (an ``_id``);
    without it the JSON carries the cell itself, for columns whose cell is already raw.
    """

    header: str
    cell: Callable[[R], Any]
    raw: Callable[[R], dict[str, Any]] | None = None

    def fields(self, record: R) -> dict[str, Any]:
        if self.raw is None:
            return {snake(self.header): self.cell(record)}
        return self.raw(record)


def emit_table(records: Sequence[R], columns: Sequence[Column[R]], *, as_json: bool) -> None:
    """Print records as a table, or as a JSON list of row objects with raw values."""
    if as_json:
        emit_json(
            [{k: v for column in columns for k, v in column.fields(r).items()} for r in records]
        )
        return
    headers = [column.header for column in columns]
    rows = [{column.header: column.cell(r) for column in columns} for r in records]
    emit_rows(rows, headers, as_json=False)


def ref(record_id: int | None, name: str | None) -> str:
    """``29683501 Acme Dental LLC``: an ID and its name, as tables and messages show them
    (``-`` for a line with no such record, e.g. a Halo subscription's contract)."""
    if record_id is None:
        return "-"
    return f"{record_id} {name}" if name else str(record_id)


def ref_column(
    header: str, record_id: Callable[[R], int | None], name: Callable[[R], str | None]
) -> Column[R]:
    """A column showing ``ID name``; its JSON fields are ``<key>_id`` (int or null) and
    ``<key>`` (name)."""
    key = snake(header)
    return Column(
        header,
        lambda r: ref(record_id(r), name(r)),
        lambda r: {f"{key}_id": record_id(r), key: name(r) or None},
    )


def iso(day: date | None) -> str | None:
    """A date as JSON carries it (``YYYY-MM-DD``), or None."""
    return day.isoformat() if day is not None else None
