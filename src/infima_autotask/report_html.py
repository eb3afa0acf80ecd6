"""The monthly report as one self-contained HTML page (SPEC §11).

It must open from a mail attachment: no external asset of any kind (no stylesheet link,
script, font or image by URL), inline CSS only, no JavaScript. The chart is inline SVG: one
sparkline row per client (seats over twelve months, each row on its own scale, the report
month's value written beside it), so 5 clients and 300 read alike. Every text is escaped:
client names come from INFIMA.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from infima_autotask import __version__
from infima_autotask.history import display_time
from infima_autotask.report import (
    COLUMNS,
    Report,
    Series,
    cell_text,
    row_cells,
    totals_cells,
)

_NUMERIC = {"Client ID", "Users", "Before", "After", "Change", "Unit price", "Money change"}
_SIGNED = {"Change", "Money change"}

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2328;
       margin: 24px; font-size: 14px; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 28px 0 6px; }
p.meta { color: #59636e; margin: 0 0 16px; }
p.note { background: #fff8c5; border: 1px solid #d4a72c; padding: 8px 10px; }
table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #d1d9e0; padding: 4px 8px; text-align: left;
         vertical-align: top; }
th { background: #f6f8fa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tfoot td { font-weight: bold; border-top: 2px solid #1f2328; }
td.status-held, td.status-failed, td.status-writing { color: #9a3412; font-weight: bold; }
td.detail { color: #59636e; max-width: 36em; }
svg text { font-family: inherit; font-size: 11px; fill: #1f2328; }
svg .month { fill: #59636e; }
svg .band { fill: #f6f8fa; }
svg .series path { fill: none; stroke: #0969da; stroke-width: 1.5; }
svg .series circle { fill: #0969da; }
svg .series circle.now { fill: #1f2328; }
svg .none { fill: #8c959f; }
"""

# Chart geometry (px).
_LABEL_W = 230
_COL_W = 44
_VALUE_W = 64
_HEAD_H = 34
_ROW_H = 22
_MARGIN = 5  # above and below a sparkline inside its row
_NAME_CHARS = 34
# Fixed English names: calendar.month_abbr follows the process locale, the page does not.
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def to_html(report: Report) -> str:
    """The report as a standalone HTML page."""
    title = f"INFIMA seats in Autotask: report for {report.period}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">Generated {escape(display_time(report.generated_at.isoformat()))} '
        f"by infima-autotask {escape(__version__)} from its run history. Per client: active "
        "INFIMA users, the contract service's units before the month's first run and after "
        "its last, the change and the money it moves at the unit price (per billing period), "
        "the status and the day the change is dated.</p>",
        *(f'<p class="note">{escape(note)}</p>' for note in report.notes),
        _table(report),
        f"<h2>Seats per client, {escape(report.months[0])} to {escape(report.months[-1])}</h2>",
        '<p class="meta">Units after each month\'s last real run (a gap: no run that month). '
        "Each row has its own scale; the number is the seats of "
        f"{escape(report.period)}.</p>",
        _chart(report),
        '<p class="meta">Money change: change x unit price, rounded to the cent. A reverted '
        "change stays in Autotask's records as two adjustments.</p>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def _tr(cells: dict[str, Any], tag: str = "td") -> str:
    out = []
    for header in COLUMNS:
        classes = []
        if header in _NUMERIC:
            classes.append("num")
        if header == "Status" and cells[header]:
            classes.append(f"status-{cells[header]}")
        if header == "Detail":
            classes.append("detail")
        attr = f' class="{escape(" ".join(classes))}"' if classes else ""
        out.append(f"<{tag}{attr}>{escape(cell_text(header, cells[header]))}</{tag}>")
    return "<tr>" + "".join(out) + "</tr>"


def _table(report: Report) -> str:
    numeric = ' class="num"'
    head = "".join(
        f"<th{numeric if header in _NUMERIC else ''}>{escape(header)}</th>" for header in COLUMNS
    )
    body = "\n".join(_tr(row_cells(row)) for row in report.rows)
    return (
        f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n"
        f"<tfoot>{_tr(totals_cells(report))}</tfoot>\n</table>"
    )


def _short(name: str) -> str:
    return name if len(name) <= _NAME_CHARS else name[: _NAME_CHARS - 1] + "\u2026"


def _month_labels(months: Sequence[str]) -> str:
    labels = []
    for k, month in enumerate(months):
        year, number = month.split("-")
        x = _LABEL_W + _COL_W * k + _COL_W / 2
        labels.append(
            f'<text class="month" x="{x:.1f}" y="14" text-anchor="middle">'
            f"{_MONTH_NAMES[int(number) - 1]}</text>"
        )
        if k == 0 or number == "01":
            labels.append(
                f'<text class="month" x="{x:.1f}" y="28" text-anchor="middle">{escape(year)}</text>'
            )
    return "".join(labels)


def _hover(label: str, months: Sequence[str], seats: Sequence[int | None]) -> str:
    """The row's figures, shown when the pointer rests on it: ``101 Acme: 2026-11 10, ...``."""
    known = [
        f"{month} {value}" for month, value in zip(months, seats, strict=True) if value is not None
    ]
    return f"{label}: {', '.join(known)}" if known else label


def _sparkline(series: Series, index: int, months: Sequence[str]) -> str:
    top = _HEAD_H + index * _ROW_H
    name = series.client_name or f"Client {series.client_id}"
    label = f"{series.client_id} {name}"
    known = [seats for seats in series.seats if seats is not None]
    low, high = (min(known), max(known)) if known else (0, 0)
    y_top, y_bottom = top + _MARGIN, top + _ROW_H - _MARGIN

    def y(seats: int) -> float:
        if high == low:
            return (y_top + y_bottom) / 2
        return y_bottom - (seats - low) / (high - low) * (y_bottom - y_top)

    path: list[str] = []
    dots: list[str] = []
    last = len(series.seats) - 1
    pen_down = False
    for k, seats in enumerate(series.seats):
        if seats is None:
            pen_down = False
            continue
        x = _LABEL_W + _COL_W * k + _COL_W / 2
        path.append(f"{'L' if pen_down else 'M'}{x:.1f} {y(seats):.1f}")
        pen_down = True
        now = ' class="now"' if k == last else ""
        dots.append(f'<circle{now} cx="{x:.1f}" cy="{y(seats):.1f}" r="{3 if k == last else 2}"/>')
    current = series.seats[last]
    value = (
        f'<text x="{_LABEL_W + _COL_W * len(series.seats) + 8}" y="{top + 15}">{current}</text>'
        if current is not None
        else f'<text class="none" x="{_LABEL_W + _COL_W * len(series.seats) + 8}" '
        f'y="{top + 15}">-</text>'
    )
    band = (
        f'<rect class="band" x="0" y="{top}" width="100%" height="{_ROW_H}"/>'
        if index % 2 == 0
        else ""
    )
    return (
        f'<g class="series" data-client-id="{series.client_id}">'
        f"<title>{escape(_hover(label, months, series.seats))}</title>{band}"
        f'<text x="4" y="{top + 15}">{escape(_short(label))}</text>'
        f'<path d="{" ".join(path)}"/>{"".join(dots)}{value}</g>'
    )


def _chart(report: Report) -> str:
    if not report.series:
        return '<p class="meta">No seats were written in these twelve months.</p>'
    width = _LABEL_W + _COL_W * len(report.months) + _VALUE_W
    height = _HEAD_H + _ROW_H * len(report.series) + 4
    rows = "\n".join(
        _sparkline(series, index, report.months) for index, series in enumerate(report.series)
    )
    label = f"Seats per client, {report.months[0]} to {report.months[-1]}"
    return (
        f'<svg role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" style="max-width: 100%; height: auto" '
        f'aria-label="{escape(label)}">\n<title>{escape(label)}</title>\n'
        f"{_month_labels(report.months)}\n{rows}\n</svg>"
    )
