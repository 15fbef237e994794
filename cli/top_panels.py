"""The panels of ``streamer top``: partitions, agents, tables, events, the log and its
groups, help; and how numbers read in them. Each panel is a rich renderable built from a
frame (pure: no clock, no I/O), sized by the rows it may show (``rows_max``: the rest is
counted in a last "… N more" row) and by its width (narrow panels drop their least useful
columns). ``plain=True`` gives the same table without the box, for output that is not a
terminal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from streamer.statistics import EventSnapshot, LogSnapshot
from streamer.statistics_log import STALE_AFTER_S, STATISTICS_TOPIC

from .top_view import (
    TopFrame,
    ViewState,
    agent_rows,
    event_rows,
    join_rows,
    overview_rows,
    partition_rows,
    table_rows,
)

__all__ = [
    "PANEL_CHROME",
    "agents_panel",
    "events_panel",
    "format_duration",
    "format_rate",
    "groups_panel",
    "help_panel",
    "joins_panel",
    "lag_style",
    "log_panel",
    "partitions_panel",
    "sparkline",
    "summed",
    "tables_panel",
]

SPARK = "▁▂▃▄▅▆▇█"
LAG_SECONDS_RED = 10.0  # lag red once it is this many seconds of input at the current rate
LAG_RED_MIN = 1_000  # ... and at least this many events
WINDOWED_JOINS = ("window", "interval", "as-of")  # stream-stream joins: held and late events
PANEL_CHROME = 3  # a panel's top and bottom border, and its table's header row
EVENT_STYLES = {"error": "bold red", "rebalance": "yellow", "state": "cyan"}
MISSING = "–"
T = TypeVar("T")
N = TypeVar("N", int, float)


# -- numbers as text -----------------------------------------------------------------------


def _or_missing(text: Callable[[N], str]) -> Callable[[N | None], str]:
    """``text``, and MISSING for a value not known."""

    def or_missing(value: N | None) -> str:
        return MISSING if value is None else text(value)

    return or_missing


@_or_missing
def _count(value: int) -> str:
    if abs(value) < 100_000_000:
        return f"{value:,}"
    for unit, size in (("G", 1e9), ("M", 1e6)):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:,}"


def _by_size(value: float, specs: Sequence[tuple[float, str]], larger: str) -> str:
    """``value`` in the format spec of the first ``(below, spec)`` it is below, else in
    ``larger``."""
    return format(value, next((spec for below, spec in specs if value < below), larger))


def format_rate(value: float) -> str:
    if value <= 0:
        return "0"
    if value < 100_000:
        return _by_size(value, ((10, ".1f"),), ",.0f")
    return f"{value / 1000:,.0f}k"


@_or_missing
def _ms(value: float) -> str:
    return _by_size(value, ((0.01, ".4f"), (10, ".2f")), ",.0f")


@_or_missing
def _size(value: int) -> str:
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _clock(at_ms: int, utc_offset_s: int) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(at_ms // 1000 + utc_offset_s))


def sparkline(values: Sequence[float], width: int) -> str:
    """The last ``width`` values as bars scaled to their maximum, right-aligned."""
    if width <= 0:
        return ""
    shown = list(values)[-width:]
    top = max(shown, default=0.0)
    bars = "".join(
        SPARK[min(int(v / top * (len(SPARK) - 1) + 0.5), len(SPARK) - 1)] if top > 0 else SPARK[0]
        for v in shown
    )
    return bars.rjust(width)


def summed(series: Sequence[Sequence[float]]) -> list[float]:
    """Series added element by element, aligned at their ends (the latest sample)."""
    length = max((len(s) for s in series), default=0)
    total = [0.0] * length
    for values in series:
        for index, value in enumerate(values, start=length - len(values)):
            total[index] += value
    return total


def lag_style(lag: int | None, rate: float) -> str:
    if lag is None:
        return "dim"
    if lag == 0:
        return "green"
    if lag >= LAG_RED_MIN and lag >= rate * LAG_SECONDS_RED:
        return "bold red"
    return "yellow"


# -- building blocks -------------------------------------------------------------------------


def _table(plain: bool) -> Table:  # plain: the same table, without the panel around it
    return Table(box=None, padding=(0, 1), show_edge=False, expand=True,
                 header_style="bold", pad_edge=False)


def _framed(title: str, body: RenderableType, plain: bool) -> RenderableType:
    if plain:
        return Group(Text(title.upper(), style="bold"), body, Text(""))
    return Panel(body, title=title, title_align="left", border_style="blue", padding=(0, 1))


def _inner(width: int) -> int:
    return width - 4  # a panel's borders and padding (plain tables keep the same columns)


def _more(table: Table, hidden: int, columns: int) -> None:
    if hidden > 0:
        table.add_row(Text(f"… {hidden:,} more", style="dim"),
                      *[""] * (columns - 1))


# -- panels ------------------------------------------------------------------------------------


def partitions_panel(
    frame: TopFrame, state: ViewState, width: int, rows_max: int | None, plain: bool
) -> RenderableType:
    rows = partition_rows(frame, state)
    inner = _inner(width)
    owner = len(frame.workers) > 1 and inner >= 96
    trend = 12 if inner >= 80 else 8 if inner >= 62 else 0
    table = _table(plain)
    table.add_column("TOPIC[P]", ratio=1, min_width=10, no_wrap=True, overflow="ellipsis")
    if owner:
        table.add_column("OWNER", max_width=18, no_wrap=True, overflow="ellipsis")
    for name, size in (("COMMITTED", 11), ("END", 11), ("LAG", 9), ("MSG/S", 7)):
        table.add_column(name, justify="right", min_width=size, no_wrap=True)
    if trend:
        table.add_column("TREND", width=trend, no_wrap=True)
    shown, hidden = _fit(rows, None if rows_max is None else rows_max - 1)
    for p in shown:
        cells: list[RenderableType] = [Text(f"{p.topic}[{p.partition}]")]
        if owner:
            cells.append(Text(p.worker.partition("@")[2]))
        cells += [_count(p.committed_offset), _count(p.end_offset),
                  Text(_count(p.lag), style=lag_style(p.lag, p.rate)), format_rate(p.rate)]
        if trend:
            cells.append(Text(sparkline(p.rate_history, trend), style="cyan"))
        table.add_row(*cells)
    _more(table, hidden, len(table.columns))
    ends = [p.end_offset for p in rows if p.end_offset is not None]
    lags = [p.lag for p in rows if p.lag is not None]
    total_rate = sum(p.rate for p in rows)
    totals: list[RenderableType] = [f"total ({len(rows)})", *([""] if owner else [])]
    totals += ["", _count(sum(ends)) if ends else MISSING,
               Text(_count(sum(lags)) if lags else MISSING,
                    style=lag_style(sum(lags) if lags else None, total_rate)),
               format_rate(total_rate)]
    if trend:
        totals.append(Text(sparkline(summed([p.rate_history for p in rows]), trend),
                           style="cyan"))
    table.add_row(*totals, style="bold", end_section=True)
    title = f"partitions (by {state.sort})"
    if state.filter:
        title += f" · filter {state.filter!r}"
    if state.only_lagging:
        title += " · lagging only"
    return _framed(title, table, plain)


def _fit(rows: Sequence[T], rows_max: int | None) -> tuple[list[T], int]:
    """The rows that fit in ``rows_max`` lines, one of them kept for "… N more"."""
    if rows_max is None or len(rows) <= max(rows_max, 1):
        return list(rows), 0
    keep = max(rows_max - 1, 0)
    return list(rows[:keep]), len(rows) - keep


def agents_panel(frame: TopFrame, width: int, rows_max: int | None,
                  plain: bool) -> RenderableType:
    rows = agent_rows(frame)
    inner = _inner(width)
    out, p50 = inner >= 70, inner >= 56  # what goes first when narrow: OUT, then P50
    table = _table(plain)
    table.add_column("AGENT", ratio=1, min_width=10, no_wrap=True, overflow="ellipsis")
    columns = [("IN", 9), *([("OUT", 9)] if out else []), ("ERR", 5), ("MSG/S", 7),
               *([("P50 MS", 7)] if p50 else []), ("P99 MS", 7)]
    for name, size in columns:
        table.add_column(name, justify="right", min_width=size, no_wrap=True)
    shown, hidden = _fit(rows, rows_max)
    for a in shown:
        cells: list[RenderableType] = [Text(a.name), _count(a.events_in)]
        if out:
            cells.append(_count(a.events_out))
        cells += [Text(_count(a.errors), style="bold red" if a.errors else ""), format_rate(a.rate)]
        if p50:
            cells.append(_ms(a.processing_ms_p50))
        cells.append(_ms(a.processing_ms_p99))
        table.add_row(*cells)
    _more(table, hidden, len(table.columns))
    if not rows:
        table.add_row(Text("no agents", style="dim"), *[""] * (len(table.columns) - 1))
    return _framed("agents", table, plain)


def tables_panel(frame: TopFrame, width: int, rows_max: int | None,
                  plain: bool) -> RenderableType:
    rows = table_rows(frame)
    table = _table(plain)
    table.add_column("TABLE", ratio=1, min_width=8, no_wrap=True, overflow="ellipsis")
    for name, size in (("KEYS", 9), ("SIZE", 9), ("LAG", 7), ("RECOVERY", 10)):
        table.add_column(name, justify="right", min_width=size, no_wrap=True)
    shown, hidden = _fit(rows, rows_max)
    for t in shown:
        if t.recovering:
            done, total = t.recovery
            recovery = Text(f"{done * 100 // max(total, 1)}% of {_count(total)}",
                            style="bold cyan")
        else:
            recovery = Text("ready", style="green")
        lag = t.changelog_lag
        table.add_row(Text(t.name), _count(t.keys), _size(t.bytes_on_disk),
                      Text(_count(lag), style=lag_style(lag, 0.0)), recovery)
    _more(table, hidden, len(table.columns))
    if not rows:
        table.add_row(Text("no tables", style="dim"), "", "", "", "")
    return _framed("tables", table, plain)


def joins_panel(frame: TopFrame, width: int, rows_max: int | None,
                plain: bool) -> RenderableType:
    """Each join: its kind, what it holds (events in open windows; a table join's rows) and
    what it dropped as late."""
    rows = join_rows(frame)
    wide = plain or _inner(width) >= 76  # room for the events taken in
    table = _table(plain)
    table.add_column("JOIN", ratio=1, min_width=8, no_wrap=True, overflow="ellipsis")
    table.add_column("KIND", min_width=5, max_width=17 if wide else 12, no_wrap=True,
                     overflow="ellipsis")
    for name, size in ((("IN", 9),) if wide else ()) + (("HELD", 8), ("LATE", 6),
                                                         ("ROWS", 9)):
        table.add_column(name, justify="right", min_width=size, no_wrap=True)
    shown, hidden = _fit(rows, rows_max)
    for j in shown:
        windowed = j.kind in WINDOWED_JOINS  # holds events, drops late ones
        late = Text(_count(j.late_events), style="bold yellow" if j.late_events else "")
        cells: list[RenderableType] = [Text(j.name), f"{j.kind} {j.how}" if wide else j.kind]
        if wide:
            cells.append(_count(j.events) if windowed or j.kind == "stream-table" else "–")
        cells += [_count(j.buffered) if windowed else "–", late if windowed else "–",
                  _count(j.rows)]
        table.add_row(*cells)
    _more(table, hidden, len(table.columns))
    if not rows:
        table.add_row(Text("no joins", style="dim"), *[""] * (len(table.columns) - 1))
    return _framed("joins", table, plain)


def events_panel(frame: TopFrame, rows_max: int | None, plain: bool) -> RenderableType:
    events = event_rows(frame)
    shown = events if rows_max is None else events[-rows_max:] if rows_max > 0 else []
    lines = [_event_line(frame, event) for event in shown]
    if not lines:
        lines = [Text("no rebalances or errors yet", style="dim")]
    return _framed("events / errors", Group(*lines), plain)


def _event_line(frame: TopFrame, event: EventSnapshot) -> Text:
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(_clock(event.at_ms, frame.utc_offset_s) + " ", style="dim")
    if event.kind == "error":
        label = event.source  # the agent, timer or task that failed
    else:
        label = event.kind if event.source == "worker" else f"{event.kind} {event.source}"
    line.append(label, style=EVENT_STYLES.get(event.kind, ""))
    line.append(": " + event.text)
    if event.count > 1:
        line.append(f" ({event.count}×)", style="bold")
    if event.where:
        line.append(f" at {event.where}", style="dim")
    return line


def log_panel(log: LogSnapshot, state: ViewState, width: int, rows_max: int | None,
               plain: bool, title: str) -> RenderableType:
    rows = overview_rows(log, state)
    inner = _inner(width)
    sizes = inner >= 90 and any(r.partition.size_bytes is not None for r in rows)
    table = _table(plain)
    table.add_column("TOPIC[P]", ratio=1, min_width=10, no_wrap=True, overflow="ellipsis")
    for name, size in (("START", 9), ("END", 11), *([("SIZE", 9)] if sizes else [])):
        table.add_column(name, justify="right", min_width=size, no_wrap=True)
    table.add_column("GROUP", max_width=24, min_width=6, no_wrap=True, overflow="ellipsis")
    for name, size in (("COMMITTED", 11), ("LAG", 9)):
        table.add_column(name, justify="right", min_width=size, no_wrap=True)
    shown, hidden = _fit(rows, rows_max)
    for row in shown:
        p = row.partition
        cells: list[RenderableType] = [Text(f"{p.topic}[{p.partition}]"), _count(p.start_offset),
                                       _count(p.end_offset)]
        if sizes:
            cells.append(_size(p.size_bytes))
        cells += [Text(row.group) if row.group else Text(MISSING, style="dim"),
                  _count(None if row.offset is None else row.offset.committed_offset),
                  Text(_count(row.lag), style=lag_style(row.lag, 0.0))]
        table.add_row(*cells)
    _more(table, hidden + log.partitions_left_out, len(table.columns))
    if not rows:
        table.add_row(Text("no partitions" + (" match" if state.filter else ""), style="dim"),
                      *[""] * (len(table.columns) - 1))
    if state.filter:
        title += f" · filter {state.filter!r}"
    return _framed(title, table, plain)


def groups_panel(log: LogSnapshot, rows_max: int | None, plain: bool) -> RenderableType:
    table = _table(plain)
    table.add_column("GROUP", ratio=1, min_width=8, no_wrap=True, overflow="ellipsis")
    table.add_column("STATE", no_wrap=True)
    for name, size in (("MEMBERS", 7), ("LAG", 9)):
        table.add_column(name, justify="right", min_width=size, no_wrap=True)
    groups = sorted(log.groups, key=lambda g: (-g.lag, g.group))
    shown, hidden = _fit(groups, rows_max)
    for g in shown:
        style = "green" if g.state == "Stable" else "dim" if g.state == "Empty" else "yellow"
        table.add_row(Text(g.group), Text(g.state, style=style), str(g.members),
                      Text(_count(g.lag), style=lag_style(g.lag, 0.0)))
    _more(table, hidden, 4)
    if not groups:
        table.add_row(Text("no consumer groups", style="dim"), "", "", "")
    return _framed("consumer groups", table, plain)


def help_panel() -> RenderableType:
    keys = Table.grid(padding=(0, 2))
    keys.add_column(style="bold cyan", no_wrap=True)
    keys.add_column()
    for key, what in (
        ("q", "quit (Ctrl-C too)"),
        ("p", "pause: keep this frame on screen while the job runs on"),
        ("s", "sort partitions: by lag (most behind first), by rate, by name"),
        ("l", "only partitions with lag, or all"),
        ("/", "filter partitions by a topic[partition] substring (Enter applies, Esc drops)"),
        ("f", "focus: one panel on the whole screen, in turn (Tab too; Esc back)"),
        ("?", "this help; any key closes it"),
        ("", ""),
        ("LAG", "events in the log a worker has not finished: end offset - processed"),
        ("MSG/S", "events processed per second, over the last second"),
        ("P50/P99", "per-event processing time, from the time agents spend per batch"),
        ("HELD", "a stream join's events in open windows (as-of: right values kept)"),
        ("LATE", "a stream join's events dropped: their window had closed"),
        ("", f"workers publish a snapshot a second to {STATISTICS_TOPIC}; silent for "
             f"{STALE_AFTER_S:g} s: gone"),
    ):
        keys.add_row(Text(key), Text(what))
    return Panel(keys, title="help", title_align="left", border_style="cyan")
