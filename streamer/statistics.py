"""Snapshots: what a running worker is doing, as frozen data.

Each part of a worker describes itself here: the worker (state, generation, uptime, input
rate, processing guarantee and transactions), each partition it owns (committed, processed
and end offsets, lag, events/s), each agent (events in and out, errors, processing time),
each table (keys, bytes on disk, changelog lag, recovery), each join (buffered and late
events, rows out), the log (partitions, offsets, sizes) and recent events (rebalances, state
changes, errors folded with a count).
:func:`streamer.statistics_worker.snapshot` assembles one :class:`WorkerSnapshot` of a
worker; :mod:`streamer.statistics_log` publishes one a second to the log's
``__streamer_workers`` topic and reads them back; ``streamer top`` renders them and
``streamer worker --metrics-port`` serves them to Prometheus: three views of one snapshot.

::

    snap = worker.statistics()       # a WorkerSnapshot, now
    data = to_json(snap)             # the record value in __streamer_workers
    assert from_json(data) == snap

What the numbers mean:

- ``processed_offset``: the offset below which every event of the partition was processed
  (every agent reading it is done with it); ``committed_offset`` trails it by up to a
  commit interval. ``lag`` is ``end_offset - processed_offset``: events in the log this
  worker has not finished. Before a newly assigned partition's first batch is done, lag
  counts from the group's committed offset.
- ``rate``: events/s over the last sampling interval (one second while the publisher runs);
  ``rate_history`` holds one rate per interval, oldest first, for sparklines.
- ``processing_ms_p50``/``p99``: per-event processing time, measured per batch (see
  :class:`~streamer.inbox.Inbox`): the wall time an agent spent on a batch over its events,
  weighted by events, over each inbox's last batches. It includes what the agent awaited.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from .errors import StreamerError
from .events import TopicPartition

if TYPE_CHECKING:
    from .app import RecentError

__all__ = [
    "SCHEMA_VERSION",
    "AgentSnapshot",
    "EventSnapshot",
    "GroupOffsetSnapshot",
    "GroupSnapshot",
    "JoinSnapshot",
    "LogPartitionSnapshot",
    "LogSnapshot",
    "PartitionSnapshot",
    "SnapshotFormatError",
    "TablePartitionSnapshot",
    "TableSnapshot",
    "WorkerSnapshot",
    "fold_errors",
    "from_json",
    "percentiles",
    "to_json",
]

SCHEMA_VERSION = 1
LOG_PARTITIONS_MAX = 512  # log partitions in one snapshot; the rest are counted


class SnapshotFormatError(StreamerError):
    """A snapshot record that does not decode (another schema version, or not ours)."""


# -- the snapshot ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartitionSnapshot:
    """A partition a worker owns (of a topic its agents read)."""

    topic: str
    partition: int
    worker: str  # the owner's worker id
    committed_offset: int | None
    processed_offset: int | None
    end_offset: int | None  # the high watermark; None: not known (yet)
    lag: int | None
    rate: float
    rate_history: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class AgentSnapshot:
    name: str
    topic: str
    concurrency: int
    events_in: int
    events_out: int  # values an agent written as a generator yielded to its sinks
    errors: int
    rate: float
    processing_ms_p50: float | None  # None: no batch finished yet
    processing_ms_p99: float | None


@dataclass(frozen=True, slots=True)
class TablePartitionSnapshot:
    partition: int
    keys: int | None
    bytes_on_disk: int | None
    changelog_offset: int | None  # the store's position in its changelog
    changelog_end_offset: int | None  # None: not known
    recovering: bool
    recovered: int | None  # changelog records restored so far ...
    to_recover: int | None  # ... of these
    role: str = "active"  # "active", "standby" (a replica kept warm) or "global"

    @property
    def changelog_lag(self) -> int | None:
        if self.changelog_offset is None or self.changelog_end_offset is None:
            return None
        return max(self.changelog_end_offset - self.changelog_offset, 0)


@dataclass(frozen=True, slots=True)
class TableSnapshot:
    """A table's partitions on one worker (or several, merged); the totals count the
    partitions it serves, not its standby replicas."""

    name: str
    partitions: tuple[TablePartitionSnapshot, ...]

    @property
    def served(self) -> tuple[TablePartitionSnapshot, ...]:
        return tuple(p for p in self.partitions if p.role != "standby")

    @property
    def keys(self) -> int:
        return sum(p.keys or 0 for p in self.served)

    @property
    def bytes_on_disk(self) -> int:
        return sum(p.bytes_on_disk or 0 for p in self.served)

    @property
    def changelog_lag(self) -> int | None:
        lags = [p.changelog_lag for p in self.served]
        known = [lag for lag in lags if lag is not None]
        return sum(known) if known else None

    @property
    def recovering(self) -> bool:
        return any(p.recovering for p in self.served)

    @property
    def recovery(self) -> tuple[int, int]:
        """(records restored, records to restore) over the partitions still recovering."""
        recovering = [p for p in self.served if p.recovering]
        return (sum(p.recovered or 0 for p in recovering),
                sum(p.to_recover or 0 for p in recovering))


@dataclass(frozen=True, slots=True)
class JoinSnapshot:
    """A join on one worker (or several, merged). Stream-stream joins (``kind`` "window",
    "interval", "as-of") count since their partitions were assigned; a "stream-table" join
    counts lookups (``events``) and rows out since start; table joins ("table", "foreign
    key") have only ``rows``, the joined table's rows."""

    name: str  # the join's state table (stream joins) or the joined table
    kind: str
    how: str
    partitions: int  # served here
    events: int = 0  # events taken in
    buffered: int = 0  # events in open windows (as-of: right values kept)
    late_events: int = 0  # dropped: their window had closed
    rows: int = 0  # rows out (table joins: rows of the joined table)


@dataclass(frozen=True, slots=True)
class LogPartitionSnapshot:
    topic: str
    partition: int
    start_offset: int | None
    end_offset: int | None  # the high watermark
    size_bytes: int | None  # None: a remote log (Kafka protocol) does not say


@dataclass(frozen=True, slots=True)
class GroupOffsetSnapshot:
    topic: str
    partition: int
    committed_offset: int
    lag: int | None  # the partition's end offset minus the committed one


@dataclass(frozen=True, slots=True)
class GroupSnapshot:
    group: str
    state: str  # Kafka's: Stable, PreparingRebalance, CompletingRebalance, Empty, Dead
    members: int
    offsets: tuple[GroupOffsetSnapshot, ...]

    @property
    def lag(self) -> int:
        return sum(offset.lag or 0 for offset in self.offsets)


@dataclass(frozen=True, slots=True)
class LogSnapshot:
    """What a log holds: partitions with their offsets, and consumer groups with their lag."""

    partitions: tuple[LogPartitionSnapshot, ...]
    groups: tuple[GroupSnapshot, ...]
    partitions_left_out: int = 0  # past LOG_PARTITIONS_MAX

    def topics(self) -> list[str]:
        return sorted({p.topic for p in self.partitions})


@dataclass(frozen=True, slots=True)
class EventSnapshot:
    """Something that happened: a rebalance, a state change, an error (folded: ``count``
    occurrences among the app's recent errors, the last at ``at_ms``, in ``where``)."""

    at_ms: int
    kind: str  # "rebalance", "state", "error"
    source: str  # "worker", or the agent, timer or task that failed
    text: str
    where: str = ""
    count: int = 1


@dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    app: str
    worker: str  # "<app>@<host>:<pid>": the key of its records in __streamer_workers
    host: str
    pid: int
    state: str  # starting, recovering, running, rebalancing, stopping, stopped
    generation: int  # the group's generation (embedded log), else assignments received
    rebalances: int  # assignments received since start, the first included
    leader: bool  # runs the app's on_leader timers
    started_at_ms: int
    at_ms: int  # when this snapshot was taken (wall clock)
    uptime_s: float
    events_in: int
    commits: int
    rate: float  # events/s fetched and handed to agents
    rate_history: tuple[float, ...]
    broker: str
    address: str | None  # HOST:PORT where this worker serves its embedded log
    partitions: tuple[PartitionSnapshot, ...]
    agents: tuple[AgentSnapshot, ...]
    tables: tuple[TableSnapshot, ...]
    events: tuple[EventSnapshot, ...]
    log: LogSnapshot | None
    joins: tuple[JoinSnapshot, ...] = ()
    guarantee: str = "at_least_once"  # the app's processing_guarantee
    transactions: int = 0  # exactly once: transactions committed since start ...
    aborted_transactions: int = 0  # ... and aborted
    schema: int = SCHEMA_VERSION

    @property
    def assigned(self) -> tuple[TopicPartition, ...]:
        return tuple(TopicPartition(p.topic, p.partition) for p in self.partitions)


# -- JSON --------------------------------------------------------------------------------------


def to_json(snap: WorkerSnapshot) -> bytes:
    return orjson.dumps(snap)


def from_json(data: bytes | str) -> WorkerSnapshot:
    """Raises :class:`SnapshotFormatError` for anything but a snapshot of this schema."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise SnapshotFormatError(f"not JSON: {error}") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA_VERSION:
        found = document.get("schema") if isinstance(document, dict) else type(document)
        raise SnapshotFormatError(f"not a snapshot of schema {SCHEMA_VERSION} ({found!r})")
    return _decode(WorkerSnapshot, document)  # type: ignore[no-any-return]


_HINTS: dict[type, dict[str, Any]] = {}


def _decode(kind: Any, value: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin is types.UnionType or origin is typing.Union:
        if value is None:
            return None
        (kind,) = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        return _decode(kind, value)
    if origin is tuple:
        if not isinstance(value, list):
            raise SnapshotFormatError(f"expected a list, found {value!r:.60}")
        item = typing.get_args(kind)[0]
        return tuple(_decode(item, element) for element in value)
    if dataclasses.is_dataclass(kind):
        return _decode_dataclass(kind, value)
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind in (int, str, bool) and type(value) is kind:
        return value
    raise SnapshotFormatError(f"expected {getattr(kind, '__name__', kind)}, found {value!r:.60}")


def _decode_dataclass(kind: Any, value: Any) -> Any:
    if not isinstance(value, dict):
        raise SnapshotFormatError(f"expected an object for {kind.__name__}, found {value!r:.60}")
    hints = _HINTS.get(kind)
    if hints is None:
        hints = _HINTS[kind] = typing.get_type_hints(kind)
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(kind):
        if field.name in value:
            fields[field.name] = _decode(hints[field.name], value[field.name])
        elif field.default is dataclasses.MISSING:
            raise SnapshotFormatError(f"{kind.__name__} without {field.name!r}")
    return kind(**fields)  # unknown names are ignored: a newer worker may add fields


# -- folding and summarising ---------------------------------------------------------------


def fold_errors(errors: Iterable[RecentError]) -> list[EventSnapshot]:
    """Errors oldest first → one event per (source, error text), with how often it
    happened, when last and where; ordered by their last occurrence."""
    folded: dict[tuple[str, str], EventSnapshot] = {}
    for error in errors:
        key = (error.source, error.error)
        earlier = folded.pop(key, None)  # re-inserted: the dict keeps last-occurrence order
        folded[key] = EventSnapshot(
            error.at_ms, "error", error.source, error.error, error.where,
            (earlier.count if earlier is not None else 0) + 1,
        )
    return list(folded.values())


def percentiles(
    samples: Sequence[tuple[float, int]], quantiles: Sequence[float]
) -> list[float | None]:
    """Weighted quantiles of ``(value, weight)`` samples: the smallest value with at least
    that share of the total weight at or below it; None without samples."""
    total = sum(weight for _, weight in samples)
    if total <= 0:
        return [None for _ in quantiles]
    ordered = sorted(samples)
    found: list[float | None] = []
    for quantile in quantiles:
        wanted = quantile * total
        seen = 0
        for value, weight in ordered:
            seen += weight
            if seen >= wanted:
                found.append(value)
                break
        else:
            found.append(ordered[-1][0])
    return found
