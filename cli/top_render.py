"""Drawing ``streamer top``: pure functions from a frame and a view state to rich renderables.

:func:`render` reads no clock and does no I/O: the same frame, state and size always give
the same text, which is what the golden tests compare. Three shapes of one frame:

- the full screen (``height`` given): header, a notice line when there is news, the panels
  (:mod:`.top_panels`) sized to fit (side by side from ``WIDE_MIN`` columns, stacked below),
  events, a key bar;
- ``--once`` on a terminal (``height=None``): the panels at their natural height;
- ``plain=True`` (stdout is not a terminal): titled tables without boxes, for logs and grep.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.layout import Layout
from rich.text import Text

from streamer.statistics import LogSnapshot, WorkerSnapshot
from streamer.statistics_log import STATISTICS_TOPIC

from .top_panels import (
    PANEL_CHROME,
    agents_panel,
    events_panel,
    format_duration,
    format_rate,
    groups_panel,
    help_panel,
    joins_panel,
    log_panel,
    partitions_panel,
    sparkline,
    summed,
    tables_panel,
)
from .top_view import TopFrame, ViewState, agent_rows, event_rows, join_rows, table_rows

__all__ = ["WIDE_MIN", "render", "render_header", "render_key_bar"]

WIDE_MIN = 140  # columns from which panels sit side by side (below, they are stacked)
EVENT_ROWS_MAX = 4  # lines of the events panel on the full screen
NATURAL_ROWS_MAX = 40  # table rows printed by --once and plain output before "N more"
NATURAL_EVENTS_MAX = 10
STATE_STYLES = {
    "running": "bold green", "rebalancing": "bold yellow", "recovering": "bold cyan",
    "starting": "bold blue", "stopping": "bold red", "stopped": "bold red",
}


# -- header, notice, key bar -----------------------------------------------------------------


def _state_of(workers: Sequence[WorkerSnapshot]) -> Text:
    states: dict[str, int] = {}
    for worker in workers:
        states[worker.state] = states.get(worker.state, 0) + 1
    text = Text()
    for index, (state, count) in enumerate(sorted(states.items())):
        if index:
            text.append(" ")
        text.append(state.upper() + (f" {count}" if len(states) > 1 else ""),
                    style=STATE_STYLES.get(state, "bold"))
    return text


def render_header(frame: TopFrame, state: ViewState, width: int) -> Text:
    """One line; the least useful parts are dropped until it fits ``width``."""
    pieces: list[tuple[int, Text]] = []  # (priority: higher stays longer, text)
    workers = frame.workers
    if workers:
        count = len(workers)
        rate = sum(w.rate for w in workers)
        history = summed([w.rate_history for w in workers])
        pieces += [
            (9, Text(f" {frame.app} ", style="bold reverse")),
            (8, Text(f"{count} worker{'s' if count > 1 else ''}")),
            (9, _state_of(workers)),
            (5, Text(f"gen {max(w.generation for w in workers)}")),
            (4, Text(f"rebalances {sum(w.rebalances for w in workers)}")),
            (6, Text(f"up {format_duration(max(w.uptime_s for w in workers))}")),
            (7, Text.assemble("in/s ", (sparkline(history, 12), "cyan"), f" {format_rate(rate)}")),
        ]
        if any(w.guarantee == "exactly_once" for w in workers):
            aborted = sum(w.aborted_transactions for w in workers)
            pieces.append((7, Text("exactly-once", style="bold magenta")))
            pieces.append((3, Text.assemble(
                f"{sum(w.transactions for w in workers):,} txns",
                (f" {aborted:,} aborted", "bold yellow") if aborted else "",
            )))
        if frame.other_apps:
            pieces.append((2, Text(f"+{len(frame.other_apps)} other apps (--app)",
                                   style="dim")))
    else:
        pieces += [(9, Text(" streamer top ", style="bold reverse")),
                   (8, Text("no worker running", style="bold yellow"))]
    pieces.append((1, Text(f"log {frame.broker}", style="dim")))
    if state.paused:
        pieces.append((10, Text(" PAUSED ", style="bold reverse yellow")))
    while pieces:
        line = Text("  ").join(text for _, text in pieces)
        if line.cell_len <= width:
            return line
        pieces.remove(min(pieces, key=lambda piece: piece[0]))
    return Text()


def _notice(frame: TopFrame) -> Text | None:
    if frame.error:
        return Text(f" cannot read the log: {frame.error}", style="bold red", no_wrap=True,
                    overflow="ellipsis")
    if frame.workers:
        return None
    text = Text(no_wrap=True, overflow="ellipsis")
    if frame.gone:
        last = frame.gone[0]
        ago = format_duration((frame.now_ms - last.at_ms) / 1000)
        what = "stopped" if last.state == "stopped" else "went silent"
        text.append(f" {last.worker} {what} {ago} ago. ", style="yellow")
    else:
        text.append(f" No worker publishes statistics to {STATISTICS_TOPIC} here "
                    "(streamer worker MODULE:APP starts one). ", style="yellow")
    text.append("The log holds:", style="dim")
    return text


def render_key_bar(state: ViewState, width: int) -> Text:
    if state.editing is not None:
        return Text.assemble((" filter: ", "bold"), state.editing, ("█", "blink"),
                             ("  Enter", "bold reverse"), " apply  ",
                             ("Esc", "bold reverse"), " cancel")
    keys = [
        ("q", "quit"), ("p", "resume" if state.paused else "pause"), ("s", f"sort:{state.sort}"),
        ("l", "all" if state.only_lagging else "lagging"),
        ("/", f"filter:{state.filter}" if state.filter else "filter"),
        ("f", f"focus:{state.focus}" if state.focus else "focus"), ("?", "help"),
    ]
    bar = Text(no_wrap=True, overflow="ellipsis")
    for key, what in keys:
        bar.append(" ")
        bar.append(key, style="bold reverse")
        bar.append(f" {what} ")
    bar.truncate(width)
    return bar


# -- the screen --------------------------------------------------------------------------------


def render(
    frame: TopFrame, state: ViewState | None = None, *, width: int, height: int | None = None,
    plain: bool = False,
) -> RenderableType:
    """The frame as the full screen (``height`` given), or at natural height."""
    state = state or ViewState()
    header = render_header(frame, state, width)
    notice = _notice(frame)
    top: list[RenderableType] = [header, *([notice] if notice is not None else [])]
    if height is None:
        return Group(*top, *_natural(frame, state, width, plain))
    layout = Layout()
    body_h = height - len(top) - 1
    parts = [Layout(line, size=1) for line in top]
    parts.append(_body(frame, state, width, max(body_h, 1)))
    parts.append(Layout(render_key_bar(state, width), size=1))
    layout.split_column(*parts)
    return layout


def _natural(frame: TopFrame, state: ViewState, width: int, plain: bool) -> list[RenderableType]:
    rows = NATURAL_ROWS_MAX
    if not frame.workers:
        log = frame.overview or LogSnapshot((), ())
        return [log_panel(log, state, width, rows, plain, "log"),
                groups_panel(log, rows, plain)]
    panels = [partitions_panel(frame, state, width, rows + 1, plain),
              agents_panel(frame, width, rows, plain)]
    if table_rows(frame):
        panels.append(tables_panel(frame, width, rows, plain))
    if join_rows(frame):
        panels.append(joins_panel(frame, width, rows, plain))
    panels.append(events_panel(frame, NATURAL_EVENTS_MAX, plain))
    return panels


def _body(frame: TopFrame, state: ViewState, width: int, height: int) -> Layout:
    if state.help:
        return Layout(help_panel())
    if state.focus is not None:
        return Layout(_focused(frame, state, state.focus, width, height))
    if not frame.workers:
        return _overview_body(frame, state, width, height)
    events = len(event_rows(frame))
    events_h = min(max(events, 1), EVENT_ROWS_MAX if height >= 24 else 2) + 2
    if height - events_h < 8:
        events_h = 0
    main = _worker_main(frame, state, width, height - events_h)
    if not events_h:
        return main
    body = Layout()
    body.split_column(main, Layout(events_panel(frame, events_h - 2, False), size=events_h))
    return body


def _state_slot(frame: TopFrame, width: int, height: int) -> Layout:
    """The tables panel, with the joins panel under it when there are joins."""
    joins = len(join_rows(frame))
    tables = len(table_rows(frame))
    if not joins:
        return Layout(tables_panel(frame, width, height - PANEL_CHROME, False))
    if not tables:
        return Layout(joins_panel(frame, width, height - PANEL_CHROME, False))
    need_tables, need_joins = tables + PANEL_CHROME, joins + PANEL_CHROME
    least = PANEL_CHROME + 1  # a panel with one line of rows
    least_joins = least + (joins > 1)  # a join's row, and "… N more"
    joins_h = min(need_joins,
                  max(least_joins, height - max(least, min(need_tables, height // 2))))
    slot = Layout()
    slot.split_column(
        Layout(tables_panel(frame, width, height - joins_h - PANEL_CHROME, False)),
        Layout(joins_panel(frame, width, joins_h - PANEL_CHROME, False), size=joins_h),
    )
    return slot


def _worker_main(frame: TopFrame, state: ViewState, width: int, height: int) -> Layout:
    agents = len(agent_rows(frame))
    joins = len(join_rows(frame))
    tables = len(table_rows(frame)) + (joins + PANEL_CHROME if joins else 0)
    main = Layout()
    if width >= WIDE_MIN:
        right_w = min(max(56, width * 2 // 5), 80)
        left_w = width - right_w
        tables_h = min(tables + PANEL_CHROME, max(height // 2, PANEL_CHROME + 1)) if tables else 0
        agents_h = height - tables_h
        right = Layout()
        right_parts = [Layout(agents_panel(frame, right_w, agents_h - PANEL_CHROME, False))]
        if tables_h:
            slot = _state_slot(frame, right_w, tables_h)
            slot.size = tables_h
            right_parts.append(slot)
        right.split_column(*right_parts)
        main.split_row(
            Layout(partitions_panel(frame, state, left_w, height - PANEL_CHROME, False),
                   size=left_w),
            right,
        )
        return main
    agents_h = min(agents + PANEL_CHROME, max(height // 3, PANEL_CHROME + 1))
    # The tables' slot: a quarter of the height, or room for two panels when joins share it.
    least = 2 * PANEL_CHROME + 3 if joins else PANEL_CHROME + 1
    tables_h = min(tables + PANEL_CHROME, max(height // 4, least)) if tables else 0
    partitions_h = height - agents_h - tables_h
    parts = [Layout(partitions_panel(frame, state, width, partitions_h - PANEL_CHROME, False)),
             Layout(agents_panel(frame, width, agents_h - PANEL_CHROME, False), size=agents_h)]
    if tables_h:
        slot = _state_slot(frame, width, tables_h)
        slot.size = tables_h
        parts.append(slot)
    main.split_column(*parts)
    return main


def _overview_body(frame: TopFrame, state: ViewState, width: int, height: int) -> Layout:
    log = frame.overview or LogSnapshot((), ())
    body = Layout()
    if width >= WIDE_MIN:
        right_w = max(44, width // 3)
        body.split_row(
            Layout(log_panel(log, state, width - right_w, height - PANEL_CHROME, False, "log"),
                   size=width - right_w),
            Layout(groups_panel(log, height - PANEL_CHROME, False)),
        )
        return body
    groups_h = min(len(log.groups) + PANEL_CHROME, max(height // 3, PANEL_CHROME + 1))
    body.split_column(
        Layout(log_panel(log, state, width, height - groups_h - PANEL_CHROME, False, "log")),
        Layout(groups_panel(log, groups_h - PANEL_CHROME, False), size=groups_h),
    )
    return body


def _focused(frame: TopFrame, state: ViewState, focus: str, width: int,
             height: int) -> RenderableType:
    rows = height - PANEL_CHROME
    if focus == "partitions" and frame.workers:
        return partitions_panel(frame, state, width, rows, False)
    if focus == "agents":
        return agents_panel(frame, width, rows, False)
    if focus == "tables":
        return tables_panel(frame, width, rows, False)
    if focus == "joins":
        return joins_panel(frame, width, rows, False)
    if focus == "events":
        return events_panel(frame, height - 2, False)
    log = frame.overview if not frame.workers else _workers_log(frame)
    return log_panel(log or LogSnapshot((), ()), state, width, rows, False, "log")


def _workers_log(frame: TopFrame) -> LogSnapshot | None:
    """The log as the workers see it (the first one that reports it)."""
    return next((w.log for w in frame.workers if w.log is not None), None)
