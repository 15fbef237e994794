"""The worker's side of statistics: what its hooks record between snapshots, and how a
:class:`~streamer.statistics.WorkerSnapshot` of it is assembled.

The worker calls :class:`WorkerActivity`'s hooks where things happen (an assignment, a
revocation, a commit); the statistics publisher (:mod:`streamer.statistics_log`) samples the
rates once a second and takes a :func:`snapshot`, which reads the worker, its agents' inboxes,
the app's tables and recent errors, and the log through a :class:`LogProbe`.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .events import TopicPartition
from .statistics import (
    AgentSnapshot,
    EventSnapshot,
    JoinSnapshot,
    LogSnapshot,
    PartitionSnapshot,
    TablePartitionSnapshot,
    TableSnapshot,
    WorkerSnapshot,
    fold_errors,
    percentiles,
)

if TYPE_CHECKING:
    from .app import RecentError
    from .inbox import Inbox
    from .worker import Worker

__all__ = [
    "LogProbe",
    "WorkerActivity",
    "describe_partitions",
    "routed_assignment",
    "snapshot",
    "worker_id",
]

logger = logging.getLogger("streamer.statistics")

RATE_HISTORY_MAX = 30  # rates kept per series: 30 s of sparkline at one sample a second
WORKER_EVENTS_MAX = 50  # rebalances and state changes a worker remembers
SNAPSHOT_EVENTS_MAX = 20  # events (errors folded) in one snapshot
TABLES_MAX = 64
RATE_DECIMALS = 1  # rates are rounded so a snapshot stays small in JSON


# -- what the worker records between snapshots ----------------------------------------------


_WORKERS_IN_PROCESS = itertools.count(1)


def worker_id(app_id: str) -> str:
    """``<app>@<host>:<pid>``, with ``/n`` for a second worker in the same process."""
    ordinal = next(_WORKERS_IN_PROCESS)
    suffix = "" if ordinal == 1 else f"/{ordinal}"
    return f"{app_id}@{socket.gethostname()}:{os.getpid()}{suffix}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class LogProbe(Protocol):
    """Offsets the worker's transport does not hand it: end offsets, the group's commits,
    and the log's partitions. Embedded: read from the log; Kafka protocol: fetched by
    :meth:`refresh`, once a second, off the processing path."""

    def end_offset(self, partition: TopicPartition) -> int | None: ...

    def group_offset(self, partition: TopicPartition) -> int | None: ...

    def log(self) -> LogSnapshot | None: ...

    async def refresh(self, partitions: Sequence[TopicPartition]) -> None: ...

    async def close(self) -> None: ...


class _Series:
    """Rates computed from a growing count, one per sample, the last ones kept."""

    __slots__ = ("count", "history")

    def __init__(self) -> None:
        self.count: int | None = None
        self.history: deque[float] = deque(maxlen=RATE_HISTORY_MAX)

    def sample(self, count: int | None, elapsed_s: float) -> None:
        if count is not None and self.count is not None and count >= self.count:
            self.history.append(round((count - self.count) / elapsed_s, RATE_DECIMALS))
        else:
            self.history.append(0.0)  # no count yet, or it went back (a seek, a reset)
        self.count = count

    @property
    def rate(self) -> float:
        return self.history[-1] if self.history else 0.0


class WorkerActivity:
    """What a worker's hooks record for its snapshots (rebalances, commits, events) and the
    rates the publisher samples; ``latest`` is the last snapshot it took."""

    def __init__(self, app_id: str) -> None:
        self.worker_id = worker_id(app_id)
        self.host = socket.gethostname()
        self.started_at_ms = _now_ms()
        self.rebalances = 0
        self.committed: dict[TopicPartition, int] = {}
        self.events: deque[EventSnapshot] = deque(maxlen=WORKER_EVENTS_MAX)
        self.probe: LogProbe | None = None  # set by the publisher
        self.latest: WorkerSnapshot | None = None
        self._sampled_at_s: float | None = None
        self._events_in = _Series()
        self._partitions: dict[TopicPartition, _Series] = {}
        self._agents: dict[str, _Series] = {}

    # -- hooks (called by the worker) -----------------------------------------------------

    def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        self.rebalances += 1
        self.note("rebalance", f"assigned {describe_partitions(partitions) or 'nothing'}")

    def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        partitions = list(partitions)
        for partition in partitions:
            self.committed.pop(partition, None)
        self.note("rebalance", f"revoked {describe_partitions(partitions) or 'nothing'}")

    def committed_offsets(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.committed.update(offsets)

    def note(self, kind: str, text: str, *, at_ms: int | None = None) -> None:
        self.events.append(EventSnapshot(at_ms or _now_ms(), kind, "worker", text))

    # -- rates (sampled by the publisher) -------------------------------------------------

    def sample(self, worker: Worker, now_s: float | None = None) -> None:
        """Take one sample of every rate: call it at a steady pace (once a second)."""
        now_s = time.monotonic() if now_s is None else now_s
        elapsed_s = None if self._sampled_at_s is None else now_s - self._sampled_at_s
        if elapsed_s is not None and elapsed_s <= 0:
            return
        self._sampled_at_s = now_s
        processed = worker.processed_offsets()
        partitions = routed_assignment(worker)
        counts: list[tuple[_Series, int | None]] = [(self._events_in, worker.events_in)]
        self._partitions = {tp: self._partitions.get(tp) or _Series() for tp in partitions}
        counts += [(series, processed.get(tp)) for tp, series in self._partitions.items()]
        for agent in worker.app.agents:
            series = self._agents.setdefault(agent.name, _Series())
            counts.append((series, sum(inbox.events_in for inbox in agent.inboxes)))
        for series, count in counts:
            if elapsed_s is None:
                series.count = count  # the first sample only sets where rates start from
            else:
                series.sample(count, elapsed_s)

    def partition_rate(self, partition: TopicPartition) -> tuple[float, tuple[float, ...]]:
        series = self._partitions.get(partition)
        return (0.0, ()) if series is None else (series.rate, tuple(series.history))

    def agent_rate(self, name: str) -> float:
        series = self._agents.get(name)
        return 0.0 if series is None else series.rate

    @property
    def rate(self) -> tuple[float, tuple[float, ...]]:
        return self._events_in.rate, tuple(self._events_in.history)


def describe_partitions(partitions: Iterable[TopicPartition]) -> str:
    """``views[0-3] clicks[1,5]``: partitions by topic, runs of numbers folded."""
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(partitions):
        by_topic.setdefault(topic, []).append(partition)
    return " ".join(f"{topic}[{_runs(numbers)}]" for topic, numbers in by_topic.items())


def _runs(numbers: list[int]) -> str:
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else ",".join(map(str, r)) for r in runs)


# -- assembling a snapshot -------------------------------------------------------------------


def snapshot(worker: Worker, *, now_ms: int | None = None) -> WorkerSnapshot:
    """The worker as it is now. Cheap enough for once a second, not for every event."""
    activity = worker.activity
    now_ms = _now_ms() if now_ms is None else now_ms
    probe = activity.probe
    if probe is None:
        from .statistics_log import local_probe

        probe = local_probe(worker)
    rate, history = activity.rate
    uptime_s = max(time.monotonic() - worker.started_at, 0.0)
    return WorkerSnapshot(
        app=worker.app.id,
        worker=activity.worker_id,
        host=activity.host,
        pid=os.getpid(),
        state=worker.state,
        generation=_generation(worker),
        rebalances=activity.rebalances,
        leader=worker.is_leader(),
        started_at_ms=activity.started_at_ms,
        at_ms=now_ms,
        uptime_s=round(uptime_s, 3),
        events_in=worker.events_in,
        commits=worker.commits,
        rate=rate,
        rate_history=history,
        broker=worker.broker_url,
        address=_address(worker),
        partitions=_partitions(worker, probe),
        agents=tuple(_agent(worker, agent) for agent in worker.app.agents),
        tables=_tables(worker.app),
        events=_events(activity, worker.app.recent_errors),
        log=probe.log() if probe is not None else None,
        joins=_joins(worker.app),
        guarantee=worker.app.processing_guarantee,
        transactions=0 if worker.exactly_once is None else worker.exactly_once.commits,
        aborted_transactions=0 if worker.exactly_once is None else worker.exactly_once.aborts,
    )


def routed_assignment(worker: Worker) -> list[TopicPartition]:
    consumer = worker.consumer
    if consumer is None:
        return []
    routed = set(worker.routed_topics())
    return sorted(tp for tp in consumer.assignment() if tp.topic in routed)


def _generation(worker: Worker) -> int:
    statistics = getattr(worker.consumer, "statistics", None)  # the embedded consumer's
    if statistics is not None:
        group = getattr(statistics(), "group", None)
        generation = getattr(group, "generation_id", None)
        if isinstance(generation, int) and generation >= 0:
            return generation
    return worker.activity.rebalances


def _address(worker: Worker) -> str | None:
    address = getattr(worker.transport, "address", None)
    if isinstance(address, tuple) and len(address) == 2:
        return f"{address[0]}:{address[1]}"
    return None


def _partitions(worker: Worker, probe: LogProbe | None) -> tuple[PartitionSnapshot, ...]:
    activity = worker.activity
    processed = worker.processed_offsets()
    found = []
    for tp in routed_assignment(worker):
        committed = activity.committed.get(tp)
        if committed is None and probe is not None:
            committed = probe.group_offset(tp)
        done = processed.get(tp, committed)
        end = probe.end_offset(tp) if probe is not None else None
        lag = None if end is None else max(end - (done or 0), 0)
        rate, history = activity.partition_rate(tp)
        found.append(PartitionSnapshot(
            tp.topic, tp.partition, activity.worker_id, committed, processed.get(tp), end,
            lag, rate, history,
        ))
    return tuple(found)


def _agent(worker: Worker, agent: Any) -> AgentSnapshot:
    statistics = agent.statistics()
    inboxes: list[Inbox] = list(agent.inboxes)
    for group in agent.extra_inboxes.values():
        inboxes.extend(group)
    samples = [timing for inbox in inboxes for timing in inbox.batch_timings]
    p50, p99 = percentiles(samples, (0.50, 0.99))
    return AgentSnapshot(
        statistics.name, statistics.topic, statistics.concurrency, statistics.events_in,
        statistics.events_out, statistics.errors, worker.activity.agent_rate(agent.name),
        None if p50 is None else round(p50 * 1000, 4),
        None if p99 is None else round(p99 * 1000, 4),
    )


def _tables(app: Any) -> tuple[TableSnapshot, ...]:
    """Each table's ``statistics()``, whatever dataclass it returns: a table-level object
    with ``partitions`` (a sequence or a mapping) of per-partition entries."""
    tables: Mapping[str, Any] = getattr(app, "tables", None) or {}
    found = []
    for name, table in sorted(tables.items())[:TABLES_MAX]:
        describe = getattr(table, "statistics", None)
        if describe is None:
            continue
        try:
            data = _as_dict(describe())
        except Exception:  # a table mid-close must not stop the worker's statistics
            logger.debug("statistics of table %s failed", name, exc_info=True)
            continue
        entries = data.get("partitions") or ()
        if isinstance(entries, Mapping):
            entries = list(entries.values())
        partitions = tuple(_table_partition(_as_dict(entry)) for entry in entries)
        found.append(TableSnapshot(str(data.get("name") or name), partitions))
    return tuple(found)


def _joins(app: Any) -> tuple[JoinSnapshot, ...]:
    """Each join's ``snapshot()`` (``app.joins``: name → the join's meter)."""
    found = []
    for name, meter in sorted(app.joins.items()):
        try:
            found.append(meter.snapshot())
        except Exception:  # a join mid-rebalance must not stop the worker's statistics
            logger.debug("statistics of join %s failed", name, exc_info=True)
    return tuple(found)


def _as_dict(value: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return dict(value)
    return {}


def _table_partition(data: Mapping[str, Any]) -> TablePartitionSnapshot:
    def number(*names: str) -> int | None:
        for name in names:
            value = data.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value  # a negative offset or count means "unknown"
        return None

    role = data.get("role")
    return TablePartitionSnapshot(
        number("partition") or 0, number("keys"), number("bytes_on_disk"),
        number("changelog_offset"), number("changelog_end_offset"),
        bool(data.get("recovering")), number("recovered", "recovered_records", "recovered_keys"),
        number("to_recover"), role if isinstance(role, str) else "active",
    )


def _events(
    activity: WorkerActivity, errors: Iterable[RecentError]
) -> tuple[EventSnapshot, ...]:
    events = [*activity.events, *fold_errors(errors)]
    events.sort(key=lambda event: event.at_ms)
    return tuple(events[-SNAPSHOT_EVENTS_MAX:])
