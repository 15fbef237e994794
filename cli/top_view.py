"""What ``streamer top`` shows, before any drawing: frames, the view's state, and keys.

A :class:`TopFrame` is everything one screen needs: the live workers of one app (their
snapshots, as read from ``__streamer_workers``), the workers that stopped or went silent,
and, when no worker runs, what the log holds. A :class:`ViewState` is how the user looks at
it (sort, filter, focus, pause); :func:`apply_key` is the only way it changes, a pure
function a test can drive without a terminal. The rows functions merge what several
workers of one app report into the rows the panels draw.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from streamer.statistics import (
    AgentSnapshot,
    EventSnapshot,
    GroupOffsetSnapshot,
    JoinSnapshot,
    LogPartitionSnapshot,
    LogSnapshot,
    PartitionSnapshot,
    TableSnapshot,
    WorkerSnapshot,
)
from streamer.statistics_log import STALE_AFTER_S, is_live

__all__ = [
    "FOCUSES",
    "SORTS",
    "OverviewRow",
    "TopFrame",
    "ViewState",
    "agent_rows",
    "apply_key",
    "build_frame",
    "event_rows",
    "join_rows",
    "overview_rows",
    "partition_rows",
    "table_rows",
]

SORTS = ("lag", "rate", "name")
FOCUSES: tuple[str | None, ...] = (None, "partitions", "agents", "tables", "joins", "events",
                                   "log")
FILTER_CHARS_MAX = 60
EVENTS_MAX = 50  # events kept in a frame (the panels show fewer)
GONE_EVENTS_S = 300  # the events of a worker gone this recently are still shown
ESCAPE, ENTER, BACKSPACE, CTRL_C, TAB = "\x1b", "\r", "\x7f", "\x03", "\t"


@dataclass(frozen=True, slots=True)
class TopFrame:
    """One screen's data; rendering it reads no clock and does no I/O."""

    broker: str
    now_ms: int
    utc_offset_s: int  # the local time zone, for clock times in events
    app: str | None  # the app shown
    other_apps: tuple[str, ...]  # other apps with live workers on the same log
    workers: tuple[WorkerSnapshot, ...]  # live workers of ``app``
    gone: tuple[WorkerSnapshot, ...]  # of ``app``: stopped, or silent for STALE_AFTER_S
    overview: LogSnapshot | None  # what the log holds (read when no worker is live)
    error: str | None = None  # why the log could not be read this time


@dataclass(frozen=True, slots=True)
class ViewState:
    paused: bool = False
    sort: str = "lag"  # one of SORTS
    only_lagging: bool = False
    filter: str = ""  # a topic[partition] substring
    editing: str | None = None  # the filter being typed after "/"
    focus: str | None = None  # one of FOCUSES: that panel takes the whole body
    help: bool = False
    quit: bool = False


def apply_key(state: ViewState, key: str) -> ViewState:
    """The state after ``key`` (one character; Escape is ``"\\x1b"``)."""
    replace = dataclasses.replace
    if state.editing is not None:
        if key in (ENTER, "\n"):
            return replace(state, filter=state.editing.strip(), editing=None)
        if key == ESCAPE:
            return replace(state, editing=None)
        if key in (BACKSPACE, "\b"):
            return replace(state, editing=state.editing[:-1])
        if key == CTRL_C:
            return replace(state, quit=True)
        if key.isprintable():
            return replace(state, editing=(state.editing + key)[:FILTER_CHARS_MAX])
        return state
    if key in ("q", "Q", CTRL_C):
        return replace(state, quit=True)
    if state.help:
        return replace(state, help=False)  # any other key closes the help
    if key in ("p", " "):
        return replace(state, paused=not state.paused)
    if key == "s":
        return replace(state, sort=SORTS[(SORTS.index(state.sort) + 1) % len(SORTS)])
    if key == "l":
        return replace(state, only_lagging=not state.only_lagging)
    if key == "/":
        return replace(state, editing=state.filter)
    if key in ("f", TAB):
        return replace(state, focus=FOCUSES[(FOCUSES.index(state.focus) + 1) % len(FOCUSES)])
    if key == ESCAPE:
        return replace(state, focus=None, filter="")
    if key in ("?", "h"):
        return replace(state, help=True)
    return state


# -- frames --------------------------------------------------------------------------------


def build_frame(
    broker: str,
    snapshots: Mapping[str, WorkerSnapshot],
    *,
    app: str | None,
    now_ms: int,
    utc_offset_s: int = 0,
    overview: LogSnapshot | None = None,
    error: str | None = None,
    stale_after_s: float = STALE_AFTER_S,
) -> TopFrame:
    """The frame for ``app`` (None: the first app with live workers, else the app last
    seen) from every worker's latest snapshot."""
    live = [s for s in snapshots.values() if is_live(s, now_ms, stale_after_s)]
    apps = sorted({s.app for s in live})
    chosen = app
    if chosen is None:
        recent = sorted(snapshots.values(), key=lambda s: s.at_ms)
        chosen = apps[0] if apps else (recent[-1].app if recent else None)
    workers = tuple(sorted((s for s in live if s.app == chosen), key=lambda s: s.worker))
    gone = tuple(sorted(
        (s for s in snapshots.values() if s.app == chosen and s not in workers),
        key=lambda s: -s.at_ms,
    ))
    return TopFrame(broker, now_ms, utc_offset_s, chosen,
                    tuple(a for a in apps if a != chosen), workers, gone, overview, error)


# -- rows: what the panels draw -------------------------------------------------------------


def _matches(state: ViewState, topic: str, partition: int) -> bool:
    return not state.filter or state.filter.lower() in f"{topic}[{partition}]".lower()


def partition_rows(frame: TopFrame, state: ViewState) -> list[PartitionSnapshot]:
    """The partitions the app's live workers own, filtered and sorted as ``state`` says
    (by lag: the most behind first). A partition two snapshots claim (mid-rebalance)
    is shown as the newer one says."""
    newest: dict[tuple[str, int], tuple[int, PartitionSnapshot]] = {}
    for worker in frame.workers:
        for partition in worker.partitions:
            key = (partition.topic, partition.partition)
            if key not in newest or newest[key][0] < worker.at_ms:
                newest[key] = (worker.at_ms, partition)
    rows = [
        p for _, p in newest.values()
        if _matches(state, p.topic, p.partition) and (not state.only_lagging or (p.lag or 0) > 0)
    ]
    if state.sort == "lag":
        rows.sort(key=lambda p: (-(p.lag or 0), p.topic, p.partition))
    elif state.sort == "rate":
        rows.sort(key=lambda p: (-p.rate, p.topic, p.partition))
    else:
        rows.sort(key=lambda p: (p.topic, p.partition))
    return rows


def agent_rows(frame: TopFrame) -> list[AgentSnapshot]:
    """One row per agent: counts and rates summed over the workers; processing times are
    the worst worker's (percentiles of different workers do not add up)."""
    merged: dict[str, AgentSnapshot] = {}
    for worker in frame.workers:
        for agent in worker.agents:
            seen = merged.get(agent.name)
            if seen is None:
                merged[agent.name] = agent
                continue
            merged[agent.name] = dataclasses.replace(
                seen,
                events_in=seen.events_in + agent.events_in,
                events_out=seen.events_out + agent.events_out,
                errors=seen.errors + agent.errors,
                rate=seen.rate + agent.rate,
                processing_ms_p50=_worst(seen.processing_ms_p50, agent.processing_ms_p50),
                processing_ms_p99=_worst(seen.processing_ms_p99, agent.processing_ms_p99),
            )
    return list(merged.values())


def _worst(a: float | None, b: float | None) -> float | None:
    values = [v for v in (a, b) if v is not None]
    return max(values) if values else None


def table_rows(frame: TopFrame) -> list[TableSnapshot]:
    """One row per table, with the partitions of every worker."""
    merged: dict[str, TableSnapshot] = {}
    for worker in frame.workers:
        for table in worker.tables:
            seen = merged.get(table.name)
            merged[table.name] = table if seen is None else TableSnapshot(
                table.name, seen.partitions + table.partitions
            )
    return [merged[name] for name in sorted(merged)]


def join_rows(frame: TopFrame) -> list[JoinSnapshot]:
    """One row per join, its numbers summed over every worker."""
    merged: dict[str, JoinSnapshot] = {}
    for worker in frame.workers:
        for join in worker.joins:
            seen = merged.get(join.name)
            merged[join.name] = join if seen is None else dataclasses.replace(
                seen, partitions=seen.partitions + join.partitions,
                events=seen.events + join.events, buffered=seen.buffered + join.buffered,
                late_events=seen.late_events + join.late_events, rows=seen.rows + join.rows,
            )
    return [merged[name] for name in sorted(merged)]


def event_rows(frame: TopFrame) -> list[EventSnapshot]:
    """Every live worker's recent events, and those of workers gone in the last
    ``GONE_EVENTS_S`` with the news that they went, oldest first; errors reported by several
    workers folded into one with their counts added. With several workers, a worker's own
    events name it."""
    recent = [w for w in frame.gone if frame.now_ms - w.at_ms <= GONE_EVENTS_S * 1000]
    several = len(frame.workers) + len(recent) > 1
    events: list[EventSnapshot] = [
        EventSnapshot(w.at_ms, "state", _short_worker(w.worker),
                      "stopped" if w.state == "stopped" else "went silent")
        for w in recent
    ]
    errors: dict[tuple[str, str], EventSnapshot] = {}
    for worker in (*frame.workers, *recent):
        for event in worker.events:
            if event.kind == "error":
                key = (event.source, event.text)
                seen = errors.get(key)
                if seen is not None:
                    latest = event if event.at_ms >= seen.at_ms else seen
                    event = dataclasses.replace(latest, count=seen.count + event.count)
                errors[key] = event
            elif several and event.source == "worker":
                events.append(dataclasses.replace(event, source=_short_worker(worker.worker)))
            else:
                events.append(event)
    events.extend(errors.values())
    events.sort(key=lambda e: e.at_ms)
    return events[-EVENTS_MAX:]


def _short_worker(worker: str) -> str:
    """``live-clicks@host:123`` → ``host:123``."""
    return worker.partition("@")[2] or worker


@dataclass(frozen=True, slots=True)
class OverviewRow:
    """A partition of the log, with one group's commit on it (or none)."""

    partition: LogPartitionSnapshot
    group: str | None
    offset: GroupOffsetSnapshot | None

    @property
    def lag(self) -> int | None:
        return None if self.offset is None else self.offset.lag


def overview_rows(overview: LogSnapshot, state: ViewState) -> list[OverviewRow]:
    """kcat -L with lag: every partition, once per group that committed on it (once with
    no group when none did), filtered and sorted as ``state`` says."""
    commits: dict[tuple[str, int], list[tuple[str, GroupOffsetSnapshot]]] = {}
    for group in overview.groups:
        for offset in group.offsets:
            commits.setdefault((offset.topic, offset.partition), []).append((group.group, offset))
    rows: list[OverviewRow] = []
    for partition in overview.partitions:
        if not _matches(state, partition.topic, partition.partition):
            continue
        found = commits.get((partition.topic, partition.partition))
        pairs: Iterable[tuple[str | None, GroupOffsetSnapshot | None]] = found or [(None, None)]
        rows.extend(OverviewRow(partition, group, offset) for group, offset in pairs)
    if state.only_lagging:
        rows = [row for row in rows if (row.lag or 0) > 0]
    if state.sort == "lag":
        rows.sort(key=lambda r: (-(r.lag or 0), r.partition.topic, r.partition.partition))
    else:  # no rates in the log's own numbers: "rate" sorts by name too
        rows.sort(key=lambda r: (r.partition.topic, r.partition.partition, r.group or ""))
    return rows
