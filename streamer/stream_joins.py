"""Stream-stream joins in an agent: windowed, interval and as-of::

    @app.agent(orders)                                 # both topics keyed by order id
    async def match(stream):
        joined = stream.join(payments.stream(), within=600, how="left")
        async for order, payment in joined:           # payment is None: unpaid in 10 min
            ...

- ``stream.join(other, within=s)`` (or ``before=s, after=s``): Kafka Streams' ``JoinWindows``.
  A left event at ``t`` joins every right event of its key with
  ``t - before ≤ t_right ≤ t + after`` (``within`` sets both; ``before``/``after`` given
  with it override one side). ``how="inner"`` (pairs only), ``"left"`` (also each left event
  that found no partner, with ``None``), ``"outer"`` (and each such right event).
- ``stream.interval_join(other, lower=s, upper=s)``: Flink's interval join,
  ``lower ≤ t_right - t_left ≤ upper`` (either may be negative): the same join with
  ``before = -lower`` and ``after = upper``.
- ``stream.asof_join(other)``: each left event at once, with the right value of its key
  that was current at its time (the latest right event with ``t_right ≤ t``); ``how="inner"``
  drops left events without one, ``"left"`` gives them ``None``. A right tombstone (value
  None) ends its key's value from its time on. Right values more than ``grace`` (default 7
  days, as in quixstreams) behind stream time are forgotten, except each key's latest.

What comes out, and when (windowed and interval joins; the exact rules are in
:mod:`streamer.operators.stream_joins`): stream time is, per partition, the largest event
time seen on either side. A pair comes out as soon as its second event arrives, if the first
one's window is still open; an event's window closes once stream time passes its time plus
how far its window reaches ahead (``after`` for a left event, ``before`` for a right one)
plus ``grace``. An event whose window is already closed when it arrives is *late*: dropped,
counted in the state table's ``late_events`` (``streamer top`` shows them), logged at debug.
An unmatched event of a ``left``/``outer`` join comes out with ``None`` on the other side
when its window closes, never earlier, and never also joins later. A partition that gets no
event for ``idle_timeout_s`` of wall time has its stream time moved on by the wall time
since its last event, so its last windows close and unmatched events come out when input
stops (``idle_timeout_s=None``: never; keep it longer than any pause of the input, a
restart included, or events after the pause are late). Events with a ``None`` key or value
(tombstones) are ignored (as Kafka Streams does), except right tombstones of an as-of join.

The two sides are read in event-time order: of two waiting events the earlier goes first,
and a side more than ``grace`` ahead of the other side's latest event waits for the other
side up to ``max_wait_s`` (default 0.5 s; Kafka Streams' ``max.task.idle.ms``), as the other
topic may only be fetched later (see :mod:`streamer.stream_join_sides`). So ``grace`` is
also how far the two topics may drift apart in event time without events being late. An
agent instance orders events within each side's inbox as they come, partition batch after
partition batch: to read a backlog of several partitions, run one instance per partition
(``@app.agent(topic, concurrency=<partitions>)``); an instance that joins a second partition
warns once.

The result is a :class:`~streamer.streams.Stream` of joined values, keyed by the join key:
``joiner(left, right)``, or the tuple ``(left, right)`` with ``None`` for a missing side; its
events are timed ``max(t_left, t_right)`` (as-of: ``t_left``; unmatched: the event's own
time), so ``.map``, ``.filter``, ``.to(topic)`` and ``async for`` work on it as on any
stream. Event times are record timestamps, or ``timestamp=fn(left_value)`` and
``other_timestamp=fn(right_value)`` in milliseconds; durations are seconds.

Both inputs are read by the one agent (each side is the agent's stream, ``topic.stream()``,
or a stream after ``group_by``/``through``/``map``/``filter``), and must be co-partitioned:
the worker checks it at startup and stops with a
:class:`~streamer.copartition.CopartitionError` that says what to repartition. The buffered
events of both sides are a state table (``<app>-<name>-changelog``), partitioned like the
inputs, restored like any table after a restart or a rebalance, and cleaned as windows
close. Processing is at least once: after a crash, events since the last commit are joined
again, so pairs may come out twice; an unmatched row never turns into a wrong one (an event
processed again keeps the match it had).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from .agents import CURRENT_INSTANCE
from .copartition import require_copartitioned
from .errors import StreamerError
from .events import Event
from .operators import AsofJoiner, JoinRow, WindowJoiner
from .operators.stream_joins import LEFT_TAG, RIGHT_TAG, JoinStatistics
from .serialization import Codec, codec_for
from .state import MISSING, CachedStore
from .statistics import JoinSnapshot
from .stream_join_sides import Side, Sides, StreamSide
from .streams import IDLE_TIMEOUT_S, PROCESSING, DecodeFailure, Source, Stream, source_topic
from .tables import PartitionRevokedError, Table
from .windowing import wall_clock, window_codec

if TYPE_CHECKING:
    from .app import App
    from .topics import Topic

__all__ = ["ASOF_GRACE_S", "asof_join", "interval_join", "join_streams"]

logger = logging.getLogger("streamer.joins")

ASOF_GRACE_S = 7 * 24 * 3600.0  # quixstreams' default: a week of right values per key
MAX_WAIT_S = 0.5  # a side more than the grace ahead waits this long for the other at most
YIELD_EVERY = 256  # events between two turns given to the event loop (the worker's fetches)

Joiner = Callable[[Any, Any], Any]
Timestamp = Callable[[Any], int]


class _Operator(Protocol):
    late_events: int

    @property
    def stream_time_ms(self) -> int | None: ...

    def add(self, side: Any, key: Any, value: Any, timestamp_ms: int, *, seq: Any
            ) -> list[JoinRow]: ...

    def restore(self) -> None: ...

    def statistics(self) -> JoinStatistics: ...


# -- the API (Stream.join, Stream.interval_join, Stream.asof_join) -----------------------------


@dataclass(frozen=True, slots=True)
class _Options:
    """What every join takes besides its window."""

    joiner: Joiner | None
    name: str | None
    timestamps: tuple[Timestamp | None, Timestamp | None]  # left, right
    max_wait_s: float


def join_streams(
    stream: Stream,
    other: Stream,
    *,
    within: float | None = None,
    before: float | None = None,
    after: float | None = None,
    grace: float = 0.0,
    how: str = "inner",
    joiner: Joiner | None = None,
    name: str | None = None,
    timestamp: Timestamp | None = None,
    other_timestamp: Timestamp | None = None,
    idle_timeout_s: float | None = IDLE_TIMEOUT_S,
    max_wait_s: float = MAX_WAIT_S,
) -> Stream:
    """``stream.join(other, within=...)``: see the module docstring."""
    if within is None and (before is None or after is None):
        raise StreamerError("join(other_stream): give within= (seconds), or both before= and "
                            "after=; to join a table, pass the Table itself")
    before_ms = _ms("before", within if before is None else before, negative=True)
    after_ms = _ms("after", within if after is None else after, negative=True)
    options = _options(joiner, name, timestamp, other_timestamp, max_wait_s)
    return _windowed(stream, other, "join", (before_ms, after_ms), grace, how,
                     idle_timeout_s, options)


def interval_join(
    stream: Stream,
    other: Stream,
    *,
    lower: float,
    upper: float,
    grace: float = 0.0,
    how: str = "inner",
    joiner: Joiner | None = None,
    name: str | None = None,
    timestamp: Timestamp | None = None,
    other_timestamp: Timestamp | None = None,
    idle_timeout_s: float | None = IDLE_TIMEOUT_S,
    max_wait_s: float = MAX_WAIT_S,
) -> Stream:
    """``stream.interval_join(other, lower=..., upper=...)``: see the module docstring."""
    lower_ms, upper_ms = _ms("lower", lower, negative=True), _ms("upper", upper, negative=True)
    if lower_ms > upper_ms:
        raise StreamerError(f"interval_join: lower ({lower} s) must be ≤ upper ({upper} s)")
    options = _options(joiner, name, timestamp, other_timestamp, max_wait_s)
    return _windowed(stream, other, "interval_join", (-lower_ms, upper_ms), grace, how,
                     idle_timeout_s, options)


def asof_join(
    stream: Stream,
    other: Stream,
    *,
    how: str = "inner",
    grace: float = ASOF_GRACE_S,
    joiner: Joiner | None = None,
    name: str | None = None,
    timestamp: Timestamp | None = None,
    other_timestamp: Timestamp | None = None,
    max_wait_s: float = MAX_WAIT_S,
) -> Stream:
    """``stream.asof_join(other)``: see the module docstring."""
    grace_ms = _ms("grace", grace)
    AsofJoiner(grace_ms=grace_ms, how=how, store={})  # checks the arguments now
    options = _options(joiner, name, timestamp, other_timestamp, max_wait_s)
    topics = _topics(stream, other, "asof_join")

    def operator(store: _StagedStore) -> _Operator:
        joins: _Operator = AsofJoiner(grace_ms=grace_ms, how=how, store=store)
        return joins

    label = f"{topics[0].name}-{topics[1].name}-asof"
    return _joined(stream, other, topics, (label, "as-of", how), operator, grace_ms, None,
                   options)


def _windowed(stream: Stream, other: Stream, what: str, window_ms: tuple[int, int],
              grace: float, how: str, idle_timeout_s: float | None, options: _Options
              ) -> Stream:
    before_ms, after_ms = window_ms
    grace_ms = _ms("grace", grace)
    WindowJoiner(before_ms=before_ms, after_ms=after_ms, grace_ms=grace_ms, how=how,
                 store={})  # checks the arguments now, in the agent that builds the join
    if idle_timeout_s is not None and idle_timeout_s <= 0:
        raise StreamerError(f"{what}: idle_timeout_s must be > 0 (or None: never)")
    topics = _topics(stream, other, what)

    def operator(store: _StagedStore) -> _Operator:
        joins: _Operator = WindowJoiner(before_ms=before_ms, after_ms=after_ms,
                                        grace_ms=grace_ms, how=how, store=store)
        return joins

    label = f"{topics[0].name}-{topics[1].name}-join-{before_ms}ms-{after_ms}ms"
    kind = "window" if what == "join" else "interval"
    return _joined(stream, other, topics, (label, kind, how), operator, grace_ms,
                   idle_timeout_s, options)


def _options(joiner: Joiner | None, name: str | None, timestamp: Timestamp | None,
             other_timestamp: Timestamp | None, max_wait_s: float) -> _Options:
    if isinstance(max_wait_s, bool) or not isinstance(max_wait_s, int | float) \
            or max_wait_s < 0:
        raise StreamerError(f"join: max_wait_s is a number of seconds ≥ 0, not {max_wait_s!r}")
    return _Options(joiner, name, (timestamp, other_timestamp), float(max_wait_s))


def _ms(name: str, seconds: Any, *, negative: bool = False) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise StreamerError(f"join: {name} is a number of seconds, not {seconds!r}")
    if seconds < 0 and not negative:
        raise StreamerError(f"join: {name} must be ≥ 0 seconds, got {seconds}")
    return round(seconds * 1000)


def _topics(stream: Stream, other: Any, what: str) -> tuple[Topic, Topic]:
    if not isinstance(other, Stream):
        raise StreamerError(f"{what}: the other side is a stream (topic.stream(), or a table "
                            f"for stream.join(table)), not {type(other).__name__}")
    found = (source_topic(stream), source_topic(other))
    if found[0] is None or found[1] is None:
        raise StreamerError(
            f"{what}: each side must read one topic: the agent's stream, topic.stream(), or a "
            "stream after group_by/through; join the topics of a merge one at a time"
        )
    return found[0], found[1]


def _joined(stream: Stream, other: Stream, topics: tuple[Topic, Topic],
            described: tuple[str, str, str], operator: Callable[[_StagedStore], _Operator],
            grace_ms: int, idle_timeout_s: float | None, options: _Options) -> Stream:
    """``described``: the join's default name, its kind and how (for statistics)."""
    label, kind, how = described
    app = stream.app
    left_topic, right_topic = topics
    require_copartitioned(app, f"join of {left_topic.name} with {right_topic.name}",
                          [left_topic, right_topic])
    table = app.state_table(options.name or label, key_type=window_codec,
                            copartition_with=left_topic)
    # Buffered values go to the changelog with their own topic's codec (or as JSON once
    # map/filter made them something else).
    table.value_codec = _StateValues(_codec(stream, left_topic), _codec(other, right_topic))
    meter = app.joins.get(table.name)
    if not isinstance(meter, _JoinMeter):  # one per join, whatever instances build it
        meter = app.joins[table.name] = _JoinMeter(table, kind, how)
    plan = _Plan(app, (stream, other), left_topic, table, operator, options, grace_ms,
                 idle_timeout_s, meter)
    return Stream(app, _JoinSource(plan))


class _JoinMeter:
    """What statistics show of a stream join: its served partitions' operators, summed."""

    def __init__(self, table: Table, kind: str, how: str) -> None:
        self.table = table
        self.kind = kind
        self.how = how
        self.operators: dict[int, _Operator] = {}  # partition → its latest operator

    def snapshot(self) -> JoinSnapshot:
        served = sorted(self.table.active)
        found = [operator.statistics() for operator in
                 (self.operators.get(partition) for partition in served) if operator]
        return JoinSnapshot(
            self.table.name, self.kind, self.how, len(served),
            events=sum(s.events for s in found),
            buffered=sum(s.buffered_events for s in found),
            late_events=sum(s.late_events for s in found),
            rows=sum(s.rows for s in found),
        )


def _codec(stream: Stream, topic: Topic) -> Codec:
    return codec_for(dict) if stream.ops else topic.value_codec


@dataclass(frozen=True, slots=True)
class _Plan:
    app: App
    sides: tuple[Stream, Stream]
    left_topic: Topic
    table: Table
    operator: Callable[[_StagedStore], _Operator]
    options: _Options
    grace_ms: int  # also how far a side may run ahead of the other (see Sides)
    idle_timeout_s: float | None  # None: as-of joins, which close nothing
    meter: _JoinMeter


class _JoinSource(Source):
    """Where a joined stream's events come from: both sides, through one operator per
    partition."""

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan

    def open(self) -> None:
        for side in self.plan.sides:
            side.source.open()

    def events(self) -> AsyncIterator[Event]:
        return _Run(self.plan).events()


# -- one iteration: an operator per partition ----------------------------------------------------


class _Run:
    """One iteration of a joined stream."""

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        self.table = plan.table
        self.sides = Sides(*plan.sides, sync_ms=plan.grace_ms,
                           max_wait_s=plan.options.max_wait_s)
        self.operators: dict[int, tuple[CachedStore, _Operator, _StagedStore]] = {}
        self.idle_s = plan.idle_timeout_s
        self.last_event: dict[int, tuple[int, float]] = {}  # partition → (stream ms, wall s)
        self.clock = wall_clock(plan.app)
        self.tracker = PROCESSING.get()
        self.instance = CURRENT_INSTANCE.get()
        self.joiner = plan.options.joiner
        self.timestamps = dict(zip(("left", "right"), plan.options.timestamps, strict=True))
        self.asof = plan.idle_timeout_s is None  # where a right tombstone ends its key's value
        # A side's record bytes encode its values unless map/filter made them others.
        self.raw_ok = {"left": not plan.sides[0].ops, "right": not plan.sides[1].ops}

    async def events(self) -> AsyncIterator[Event]:
        sides = self.sides
        idle_check_s = None if self.idle_s is None else min(self.idle_s / 4, 1.0)
        taken = 0
        try:
            while True:
                side = sides.next()
                if side is None:
                    if await sides.wait(idle_check_s):  # nothing came: idle partitions
                        for closing, outputs in self._close_idle():
                            for output in outputs:
                                yield output
                            closing.apply()
                    continue
                event = side.take()
                staged, outputs = self._process(side, event)
                for output in outputs:
                    yield output
                if staged is not None:
                    staged.apply()  # the event's rows are handed on: its state may be saved
                side.finish()
                taken += 1
                if taken % YIELD_EVERY == 0:  # let the worker fetch (another side may wait)
                    await asyncio.sleep(0)
        finally:
            sides.close()

    def _process(self, side: Side, event: Event) -> tuple[_StagedStore | None, list[Event]]:
        if self.tracker is not None:
            self.tracker.event = event
        value, key = event.value, event.key
        if value.__class__ is DecodeFailure:
            raise value.error
        if side.__class__ is StreamSide:
            _check_one_value(side, event)
        name = side.name
        if key is None or (value is None and not (name == "right" and self.asof)):
            return None, []  # nothing to join on (Kafka Streams skips these too)
        timestamp = self.timestamps[name]
        time_ms = event.timestamp if timestamp is None else timestamp(value)
        operator, staged = self._operator(event.partition)
        staged.origin = (value, event.raw_value if self.raw_ok[name] else None)
        late = operator.late_events
        rows = operator.add(name, key, value, time_ms, seq=event.offset)
        if operator.late_events != late:
            self.table.late_events += 1
            logger.debug("late %s event dropped: %s[%d] offset %d, key %r at %d ms", name,
                         event.topic, event.partition, event.offset, key, time_ms)
        if self.idle_s is not None:
            self.last_event[event.partition] = (time_ms if operator.stream_time_ms is None
                                                else operator.stream_time_ms, self.clock())
        if not rows:
            return staged, []
        joiner, raw_key, raw_value = self.joiner, event.raw_key, event.raw_value
        topic, partition, offset = event.topic, event.partition, event.offset
        return staged, [
            Event(topic, partition, offset, row.timestamp_ms, row.key,
                  (row.left, row.right) if joiner is None else joiner(row.left, row.right),
                  (), raw_key, raw_value)
            for row in rows
        ]

    def _output(self, row: JoinRow, topic: str, partition: int) -> Event:
        """A row made without an event (an idle partition's windows closing)."""
        joiner = self.joiner
        value = (row.left, row.right) if joiner is None else joiner(row.left, row.right)
        return Event(topic, partition, -1, row.timestamp_ms, row.key, value)

    def _operator(self, partition: int) -> tuple[_Operator, _StagedStore]:
        cached = self.table.active.get(partition)
        if cached is None:
            raise PartitionRevokedError(
                f"join state {self.table.name!r}: partition {partition} is no longer this "
                "worker's"
            )
        entry = self.operators.get(partition)
        if entry is not None and entry[0] is cached:
            return entry[1], entry[2]
        staged = _StagedStore(cached)
        operator = self.plan.operator(staged)
        operator.restore()  # a new or reassigned partition: its state from its store
        self.operators[partition] = (cached, operator, staged)
        self.plan.meter.operators[partition] = operator
        if len(self.operators) == 2:
            self._warn_shared(sorted(self.operators))
        return operator, staged

    def _warn_shared(self, partitions: list[int]) -> None:
        """Once per run: this instance reads several partitions of each side, one batch
        after another, so with a backlog one side of a partition can run ahead of the other
        by more than the grace, and the other side's events are then late (dropped)."""
        instance = self.instance
        where = "this agent" if instance is None else f"agent {instance.agent.name!r}"
        logger.warning(
            "join %r: %s reads partitions %s in one instance, batch after batch: with a "
            "backlog, one side of a partition can get more than the grace (%.0f s) ahead of "
            "the other, whose events are then dropped as late (as-of: matched too early). "
            "Run one instance per partition: @app.agent(topic, concurrency=<partitions>).",
            self.table.name, where, ", ".join(map(str, partitions)), self.plan.grace_ms / 1000)

    def _close_idle(self) -> list[tuple[_StagedStore, list[Event]]]:
        """Move idle partitions' stream time on by the wall time since their last event (or
        since this run found them idle: a partition restored with open windows and no new
        event closes them too)."""
        assert self.idle_s is not None
        now = self.clock()
        for partition in sorted(self.table.active):
            if partition not in self.last_event and (
                    self.instance is None or self.instance.serves(partition)):
                stream_time_ms = self._operator(partition)[0].stream_time_ms
                if stream_time_ms is not None:
                    self.last_event[partition] = (stream_time_ms, now)
        closed = []
        for partition, (time_ms, wall_s) in list(self.last_event.items()):
            if now - wall_s < self.idle_s or partition not in self.table.active:
                continue
            operator, staged = self._operator(partition)
            assert isinstance(operator, WindowJoiner)
            rows = operator.advance(time_ms + int((now - wall_s) * 1000))
            topic = self.plan.left_topic.name
            closed.append((staged, [self._output(row, topic, partition) for row in rows]))
        return closed


def _check_one_value(side: StreamSide, event: Event) -> None:
    """The offset tells a side's events apart in the join's state: one value per record."""
    position = (event.topic, event.partition, event.offset)
    if position == side.last_position:
        raise StreamerError(
            f"join: {event.topic}[{event.partition}] offset {event.offset} gave two values "
            "(flat_map before the join?): join first, then flat_map the result"
        )
    side.last_position = position


# -- the state table -----------------------------------------------------------------------------


class _Held:
    """A buffered event in the state table's cache: the operator's ``[..., value]``, the
    side whose codec writes ``value`` to the changelog, and the record's own bytes of
    ``value`` when they are that encoding (nothing to encode again)."""

    __slots__ = ("items", "raw", "tag")

    def __init__(self, tag: str, items: list[Any], raw: bytes | None = None) -> None:
        self.tag = tag
        self.items = items
        self.raw = raw


class _StagedStore:
    """A join operator's store over a table partition's cache. Reads and writes go to the
    cache, except deletes, which wait until :meth:`apply`, called once the rows of the event
    that made them are handed on: a delete is a window closing, and a checkpoint (which
    takes the cache's changes) must not save it before its row was sent. Any other change
    saved early is redone identically by the event's replay after a crash."""

    __slots__ = ("cached", "deletes", "origin")

    def __init__(self, cached: CachedStore) -> None:
        self.cached = cached
        self.deletes: dict[Any, None] = {}
        # The event being processed: its value and, when they encode it, its record's bytes.
        self.origin: tuple[Any, bytes | None] = (None, None)

    def get(self, key: Any, default: Any = None) -> Any:
        value = self.cached.get(key)
        if value is MISSING:
            return default
        return value.items if value.__class__ is _Held else value

    def __setitem__(self, key: Any, value: Any) -> None:
        if self.deletes and key in self.deletes:
            del self.deletes[key]
        if key.__class__ is tuple:  # ("L" or "R", key, time, ...): a buffered event
            origin = self.origin
            raw = origin[1] if value[-1] is origin[0] else None
            self.cached.set(key, _Held(key[0], value, raw))
        else:
            self.cached.set(key, value)

    def __delitem__(self, key: Any) -> None:
        self.deletes[key] = None

    def __contains__(self, key: object) -> bool:
        return self.cached.get(key) is not MISSING

    def items(self) -> Iterator[tuple[Any, Any]]:
        for key, value in self.cached.items():
            yield key, value.items if value.__class__ is _Held else value

    def apply(self) -> None:
        if self.deletes:
            delete = self.cached.delete
            for key in self.deletes:
                delete(key)
            self.deletes.clear()


class _StateValues:
    """The state table's value codec. A buffered event: ``b"v"`` (``b"n"`` when its value
    is None), its side (``L`` or ``R``), how many flags come before the value (one digit),
    each flag as ``1`` or ``0`` (a window entry's "matched"), then the value in its topic's
    codec. Anything else (stream time): ``b"j"`` and JSON."""

    def __init__(self, left: Codec, right: Codec) -> None:
        self.codecs = {LEFT_TAG: left, RIGHT_TAG: right}

    def dumps(self, value: Any) -> bytes | None:
        if value.__class__ is not _Held:
            return b"j" + orjson.dumps(value)
        items, tag = value.items, value.tag
        if len(items) == 2:  # a window join's [matched, value]
            head = _HEADS[tag][1 if items[0] else 0]
        else:
            flags = items[:-1]
            head = f"{tag}{len(flags)}{''.join('1' if f else '0' for f in flags)}".encode()
        if items[-1] is None:
            return b"n" + head
        payload = value.raw
        if payload is None:
            payload = self.codecs[tag].dumps(items[-1])
        return b"v" + head + (payload or b"")

    def loads(self, data: bytes | None) -> Any:
        if data is None:
            return None
        if data[:1] == b"j":
            return orjson.loads(data[1:])
        tag, count = chr(data[1]), data[2] - _ZERO
        fields: list[Any] = [data[3 + n] != _ZERO for n in range(count)]
        if data[:1] == b"n":
            return _Held(tag, [*fields, None])
        return _Held(tag, [*fields, self.codecs[tag].loads(data[3 + count:])])


_ZERO = ord("0")
_HEADS = {tag: (f"{tag}10".encode(), f"{tag}11".encode()) for tag in (LEFT_TAG, RIGHT_TAG)}
