"""Windowed aggregations in a stream, declared as a chain::

    from streamer.operators import tumbling

    @app.agent(clicks)                       # clicks keyed by page
    async def per_page(stream):
        await stream.window(tumbling(10, grace=5)).count().final().to(counts_topic)

``stream.window(definition)`` picks the windows (:mod:`streamer.operators`: tumbling,
hopping, sliding, session); ``.count()``, ``.sum(fn)``, ``.min(fn)``, ``.max(fn)``,
``.mean(fn)``, ``.reduce(fn)`` or ``.aggregate(init, add, merge, result)`` the aggregation;
``.current()`` (every update, the default) or ``.final()`` (once per window, when it closes)
what comes out: :class:`~streamer.operators.Result` values, which ``.to(topic)`` sends keyed
by the event key with ``{"start_ms", "end_ms", "value", "final"}`` as value.

The aggregation's state is a table of its own (``<app>-<name>-changelog``), partitioned like
the stream's topic, so it is restored like any table and a window survives a restart. The
key is the event's key: re-key first (``group_by``) to aggregate by something else.

Event time is the record's timestamp, or ``timestamp=fn(value)`` (milliseconds). Each
partition has its own watermark (its largest event time). A partition that receives nothing
for ``idle_timeout_s`` of wall time has its watermark moved on by the wall time since its
last event, so its last windows still close and come out (``idle_timeout_s=None``: never).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import orjson

from .agents import CURRENT_INSTANCE
from .errors import StreamerError
from .operators import (
    Aggregate,
    Emit,
    Result,
    WindowDefinition,
    WindowedAggregator,
    aggregate,
    aggregates,
)
from .state import MISSING, CachedStore
from .tables import PartitionRevokedError, Table
from .topics import Topic

if TYPE_CHECKING:
    from .app import App
    from .streams import Stream

__all__ = ["WindowedAggregation", "WindowedStream", "wall_clock", "window_codec"]

logger = logging.getLogger("streamer.windows")




class _TupleKeys:
    """Store keys of windowed state: tuples as JSON arrays, read back as tuples."""

    dumps = staticmethod(orjson.dumps)  # one call per key at every checkpoint

    def loads(self, data: bytes | None) -> Any:
        return None if data is None else _tuples(orjson.loads(data))


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


window_codec = _TupleKeys()


class CachedMapping:
    """A table partition's cached store as the mapping the operators work on."""

    __slots__ = ("cached",)

    def __init__(self, cached: CachedStore) -> None:
        self.cached = cached

    def get(self, key: Any, default: Any = None) -> Any:
        value = self.cached.get(key)
        return default if value is MISSING else value

    def __setitem__(self, key: Any, value: Any) -> None:
        self.cached.set(key, value)

    def __delitem__(self, key: Any) -> None:
        self.cached.delete(key)

    def __contains__(self, key: object) -> bool:
        return self.cached.get(key) is not MISSING

    def items(self) -> Iterator[tuple[Any, Any]]:
        items: Iterator[tuple[Any, Any]] = self.cached.items()
        return items


class WindowedStream:
    """``stream.window(definition)``: pick an aggregation next."""

    def __init__(
        self,
        stream: Stream,
        definition: WindowDefinition,
        *,
        name: str | None,
        timestamp: Callable[[Any], int] | None,
        idle_timeout_s: float | None,
        on_late: Callable[[Any, Any, int], None] | None,
    ) -> None:
        if idle_timeout_s is not None and idle_timeout_s <= 0:
            raise StreamerError("idle_timeout_s must be > 0 (or None: never)")
        self.stream = stream
        self.definition = definition
        self.name = name
        self.timestamp = timestamp
        self.idle_timeout_s = idle_timeout_s
        self.on_late = on_late

    def count(self) -> WindowedAggregation:
        return self.aggregate_with(aggregates.count())

    def sum(self, fn: Callable[[Any], Any] | None = None) -> WindowedAggregation:
        return self.aggregate_with(aggregates.sum(fn))

    def min(self, fn: Callable[[Any], Any] | None = None) -> WindowedAggregation:
        return self.aggregate_with(aggregates.min(fn))

    def max(self, fn: Callable[[Any], Any] | None = None) -> WindowedAggregation:
        return self.aggregate_with(aggregates.max(fn))

    def mean(self, fn: Callable[[Any], Any] | None = None) -> WindowedAggregation:
        return self.aggregate_with(aggregates.mean(fn))

    def reduce(self, fn: Callable[[Any, Any], Any]) -> WindowedAggregation:
        return self.aggregate_with(aggregates.reduce(fn))

    def aggregate(
        self,
        init: Callable[[], Any],
        add: Callable[[Any, Any], Any],
        merge: Callable[[Any, Any], Any] | None = None,
        result: Callable[[Any], Any] | None = None,
        *,
        name: str | None = None,
    ) -> WindowedAggregation:
        """A user aggregate: ``add(acc, value)``; ``merge`` is needed for sliding and
        session windows. Accumulators must be JSON values (they go to the changelog)."""
        return self.aggregate_with(aggregate(init, add, merge, result, name=name))

    def aggregate_with(self, function: Aggregate) -> WindowedAggregation:
        return WindowedAggregation(self, function)


class WindowedAggregation:
    """Window results: iterate them, or ``await ….to(topic)``; see the module docstring."""

    def __init__(self, windowed: WindowedStream, function: Aggregate) -> None:
        self.windowed = windowed
        self.function = function
        self.emit: Emit = "current"
        stream = windowed.stream
        self.app: App = stream.app
        self.table = _state_table(self.app, stream, windowed, function)
        self.late_events = 0

    def current(self) -> WindowedAggregation:
        """Every update of a window, as it happens."""
        self.emit = "current"
        return self

    def final(self) -> WindowedAggregation:
        """Each window once, when it closes, with its whole aggregate."""
        self.emit = "final"
        return self

    async def to(self, topic: Topic) -> None:
        """Send every result to ``topic``, keyed by its key; runs until the stream ends."""
        as_bytes = topic.value_type is bytes
        async for result in self:
            value: Any = {"start_ms": result.start_ms, "end_ms": result.end_ms,
                          "value": result.value, "final": result.final}
            await topic.send(key=result.key, value=orjson.dumps(value) if as_bytes else value,
                             timestamp=max(result.start_ms, 0))

    def __aiter__(self) -> AsyncIterator[Result]:
        return _Run(self).results()


class _Run:
    """One iteration of a windowed aggregation: an aggregator per partition."""

    def __init__(self, aggregation: WindowedAggregation) -> None:
        self.aggregation = aggregation
        windowed = aggregation.windowed
        self.table = aggregation.table
        self.timestamp = windowed.timestamp
        self.idle_timeout_s = windowed.idle_timeout_s
        self.aggregators: dict[int, tuple[CachedStore, WindowedAggregator]] = {}
        self.last_event: dict[int, tuple[int, float]] = {}  # partition → (event ms, wall s)
        self.clock = wall_clock(aggregation.app)
        self.instance = CURRENT_INSTANCE.get()  # the agent instance iterating this

    def aggregator(self, partition: int) -> WindowedAggregator:
        cached = self.table.active.get(partition)
        if cached is None:
            raise PartitionRevokedError(
                f"window state {self.table.name!r}: partition {partition} is no longer "
                "this worker's"
            )
        entry = self.aggregators.get(partition)
        if entry is not None and entry[0] is cached:
            return entry[1]
        windowed = self.aggregation.windowed
        aggregator = WindowedAggregator(
            windowed.definition, self.aggregation.function, store=CachedMapping(cached),
            emit=self.aggregation.emit, on_late=self._late(windowed.on_late),
        )  # fmt: skip
        aggregator.restore()  # a new or reassigned partition: state from its store
        self.aggregators[partition] = (cached, aggregator)
        return aggregator

    def _late(self, handler: Callable[[Any, Any, int], None] | None
              ) -> Callable[[Any, Any, int], None]:
        def late(key: Any, value: Any, timestamp_ms: int) -> None:
            self.aggregation.late_events += 1
            self.table.late_events += 1
            if handler is not None:
                handler(key, value, timestamp_ms)
            else:
                logger.debug("late event for %r at %d ms: every window closed", key,
                             timestamp_ms)

        return late

    async def results(self) -> AsyncIterator[Result]:
        stream = self.aggregation.windowed.stream
        events = stream.events()
        timestamp = self.timestamp
        idle_s = self.idle_timeout_s
        pending: asyncio.Future[Any] | None = None
        try:
            while True:
                inbox = stream.source.inbox
                if pending is None and idle_s is not None and not _ready(inbox):
                    pending = asyncio.ensure_future(anext(events))
                if pending is not None:
                    assert idle_s is not None
                    done, _ = await asyncio.wait({pending}, timeout=min(idle_s / 4, 1.0))
                    if not done:
                        for result in self._close_idle(idle_s):
                            yield result
                        continue
                    event, pending = pending.result(), None
                else:
                    event = await anext(events)
                partition = event.partition
                time_ms = event.timestamp if timestamp is None else timestamp(event.value)
                if idle_s is not None:
                    self.last_event[partition] = (time_ms, self.clock())
                for result in self.aggregator(partition).add(event.key, event.value, time_ms):
                    yield result
        finally:
            if pending is not None:
                pending.cancel()

    def _close_idle(self, idle_s: float) -> list[Result]:
        """Move idle partitions' watermarks on by the wall time since their last event (or
        since this run found them idle: a partition restored with open windows and no new
        event closes them too)."""
        now = self.clock()
        for partition in sorted(self.table.active):
            if partition not in self.last_event and (
                    self.instance is None or self.instance.serves(partition)):
                watermark_ms = self.aggregator(partition).watermark_ms
                if watermark_ms is not None:
                    self.last_event[partition] = (watermark_ms, now)
        results: list[Result] = []
        for partition, (time_ms, wall_s) in list(self.last_event.items()):
            if now - wall_s < idle_s or partition not in self.table.active:
                continue
            aggregator = self.aggregator(partition)
            results.extend(aggregator.advance(time_ms + int((now - wall_s) * 1000)))
        return results


def _ready(inbox: Any) -> bool:
    """True when the stream's inbox has an event waiting (the fast path); False when
    reading may block, or the source has no single inbox."""
    if inbox is None:
        return False
    return bool(inbox.ready)


def wall_clock(app: App) -> Callable[[], float]:
    """Seconds by the worker's clock (a test's manual clock, else the system's)."""
    worker = app.worker
    if worker is not None:
        return lambda: worker.time_ms() / 1000
    return time.time


def _state_table(
    app: App, stream: Stream, windowed: WindowedStream, function: Aggregate
) -> Table:
    from .streams import source_topic

    topic = source_topic(stream)
    if windowed.name is not None:
        label = windowed.name
    elif topic is not None:
        label = f"{topic.name}-{_describe(windowed.definition)}-{function.name}"
    else:
        raise StreamerError("window(...): name the aggregation (name=...): it names its "
                            "state table")
    return app.state_table(label, key_type=window_codec, copartition_with=topic)


def _describe(definition: WindowDefinition) -> str:
    """``tumbling-10000ms`` and so on: part of the state table's name."""
    from .operators import HoppingWindows, SessionWindows, SlidingWindows, TumblingWindows

    if isinstance(definition, TumblingWindows):
        return f"tumbling-{definition.size_ms}ms"
    if isinstance(definition, HoppingWindows):
        return f"hopping-{definition.size_ms}ms-{definition.step_ms}ms"
    if isinstance(definition, SlidingWindows):
        return f"sliding-{definition.size_ms}ms"
    assert isinstance(definition, SessionWindows)
    return f"session-{definition.gap_ms}ms"
