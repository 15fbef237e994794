"""Streams: what an agent iterates, and the operators that shape it.

``async for value in stream`` yields decoded values; ``stream.events()`` yields whole
:class:`~streamer.events.Event` objects; ``stream.current_event`` is the event behind the
value last yielded by it or by a stream made from it with map, filter, flat_map or merge.
Operators return new streams and cost nothing until iterated:

- ``map(fn)``, ``filter(fn)``, ``flat_map(fn)`` (sync or async functions), applied in one loop;
- ``group_by(key)`` and ``through(topic)``: through a topic (an internal repartition topic for
  ``group_by``), so the stream continues from that topic's partitions;
- ``take(n, within=seconds)``: lists of up to ``n`` values, or fewer once ``within`` passed;
- ``merge(*streams)``: events of several topics in one stream;
- ``branch(*predicates)``: one stream per predicate (plus one for the rest);
- ``await stream.to(topic)``: send every value to a topic.

A batch of events is acknowledged (and its offsets become committable) once the stream asks
for the next batch, that is, once the agent has finished every event of it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from .errors import StreamerError
from .events import Event
from .inbox import Inbox
from .serialization import SerializationError

if TYPE_CHECKING:
    from .app import App
    from .operators import WindowDefinition
    from .topics import Topic
    from .windowing import WindowedStream

IDLE_TIMEOUT_S = 30.0  # a partition without events this long: its windows close anyway

__all__ = [
    "PROCESSING",
    "DecodeFailure",
    "EventTracker",
    "Stream",
    "TopicSource",
    "source_topic",
]

_MAP, _FILTER, _FLAT_MAP = 0, 1, 2


class EventTracker:
    """The event an agent instance is working on, whichever of its streams yielded it (one
    derived with operators, merged, re-keyed): the event its error policy acts on."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event: Event | None = None


# Set in each agent instance's task; tasks it starts (take(), gather) share the tracker.
# Pumps (through, group_by, branch) iterate without tracking: their events are upstream.
PROCESSING: ContextVar[EventTracker | None] = ContextVar("streamer_processing", default=None)


class DecodeFailure:
    """Stands in for a value that did not decode; iterating it raises, so the agent's error
    policy decides what happens."""

    __slots__ = ("error",)

    def __init__(self, error: SerializationError) -> None:
        self.error = error


class Source:
    """Where a stream's events come from."""

    inbox: Inbox | None = None  # set for single-inbox sources: the fast path

    def open(self) -> None:
        """Register subscriptions (called when iteration starts)."""

    def events(self) -> AsyncIterator[Event]:
        raise NotImplementedError


class InboxSource(Source):
    """An agent's own topic: the worker fills the inbox."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    def events(self) -> AsyncIterator[Event]:
        assert self.inbox is not None, "open() the source first"
        return _walk(self.inbox)


class TopicSource(InboxSource):
    """Another topic read by the same agent: subscribed when the stream is first iterated."""

    def __init__(self, app: App, topic: Topic) -> None:
        self.app = app
        self.topic = topic
        self.inbox = None

    def open(self) -> None:
        if self.inbox is None:
            self.inbox = self.app.subscribe(self.topic)


_PLAIN_SOURCES = (InboxSource, TopicSource)


class _MergedSource(Source):
    def __init__(self, sources: list[Source]) -> None:
        self.sources = sources

    def open(self) -> None:
        for source in self.sources:
            source.open()
            if source.inbox is not None:
                # Merging reads each source one event ahead: a checkpoint cannot wait for
                # such an inbox to be between events (see Inbox.between_events).
                source.inbox.read_ahead = True

    async def events(self) -> AsyncIterator[Event]:
        iterators = [source.events() for source in self.sources]
        waiting = {asyncio.ensure_future(anext(it)): it for it in iterators}
        try:
            while waiting:
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    iterator = waiting.pop(future)
                    yield future.result()
                    waiting[asyncio.ensure_future(anext(iterator))] = iterator
        finally:
            for future in waiting:
                future.cancel()


class _ThroughSource(TopicSource):
    """A stream re-keyed (or not) through a topic: a pump writes the parent's values to the
    topic while this source reads the topic back, from the partitions this worker owns."""

    def __init__(
        self, app: App, parent: Stream, topic: Topic, key: Callable[[Any], Any] | None
    ) -> None:
        super().__init__(app, topic)
        self.parent = parent
        self.key = key

    def open(self) -> None:
        super().open()
        self.parent.source.open()

    async def events(self) -> AsyncIterator[Event]:
        pump = asyncio.ensure_future(self._pump())
        try:
            async for event in _race(super().events(), pump):
                yield event
        finally:
            pump.cancel()

    async def _pump(self) -> None:
        parent, topic, key = self.parent, self.topic, self.key
        async for value in parent.pumped():
            event = parent.current_event
            assert event is not None
            await topic.send(
                key=event.key if key is None else key(value),
                value=value,
                headers=event.headers,
                timestamp=event.timestamp,
            )


async def _race(events: AsyncIterator[Event], pump: asyncio.Future[None]) -> AsyncIterator[Event]:
    """``events``, but a failure of ``pump`` surfaces here instead of going unnoticed."""
    while True:
        following = asyncio.ensure_future(anext(events))
        racing: set[asyncio.Future[Any]] = {following, pump}
        done, _ = await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
        if following not in done:
            following.cancel()
            pump.result()  # raises the pump's error
            raise StreamerError("the stream's pump stopped")
        yield following.result()


class Stream:
    """An async iterable of values; see the module docstring."""

    def __init__(
        self,
        app: App,
        source: Source,
        ops: tuple[tuple[int, Callable[[Any], Any], bool], ...] = (),
        value_type: Any = None,
    ) -> None:
        self.app = app
        self.source = source
        self.ops = ops
        self.value_type = value_type
        self.current_event: Event | None = None
        # The stream this one was made from by map, filter, flat_map or merge: its
        # current_event follows this one's, so the agent's own stream names the event too.
        self.derived_from: Stream | None = None

    def _with(self, kind: int, fn: Callable[[Any], Any]) -> Stream:
        is_async = inspect.iscoroutinefunction(fn)
        derived = Stream(self.app, self.source, (*self.ops, (kind, fn, is_async)),
                         self.value_type)
        derived.derived_from = self
        return derived

    # -- operators ------------------------------------------------------------------------

    def map(self, fn: Callable[[Any], Any]) -> Stream:
        return self._with(_MAP, fn)

    def filter(self, fn: Callable[[Any], Any]) -> Stream:
        return self._with(_FILTER, fn)

    def flat_map(self, fn: Callable[[Any], Iterable[Any] | Awaitable[Iterable[Any]]]) -> Stream:
        return self._with(_FLAT_MAP, fn)

    def group_by(
        self,
        key: Callable[[Any], Any] | str,
        *,
        name: str | None = None,
        partitions: int | None = None,
    ) -> Stream:
        """Re-key the stream through an internal topic ``<app>-<name>-repartition``, so each
        key's events meet in one partition (and one worker)."""
        key_fn = _key_function(key)
        label = name or (key if isinstance(key, str) else getattr(key, "__name__", ""))
        if not label or label == "<lambda>":
            raise StreamerError("group_by with a lambda needs name=...: it names the topic")
        topic = self.app.internal_topic(f"{label}-repartition", self, partitions=partitions)
        return Stream(self.app, _ThroughSource(self.app, self, topic, key_fn), (),
                      self.value_type)

    def through(self, topic: Topic) -> Stream:
        """Write every value to ``topic`` and continue from that topic's partitions."""
        return Stream(self.app, _ThroughSource(self.app, self, topic, None), (),
                      topic.value_type)

    def merge(self, *others: Stream) -> Stream:
        if self.ops or any(other.ops for other in others):
            raise StreamerError("merge streams before applying operators to them")
        sources = [self.source, *(other.source for other in others)]
        merged = Stream(self.app, _MergedSource(sources), (), self.value_type)
        merged.derived_from = self
        return merged

    def branch(self, *predicates: Callable[[Any], bool]) -> list[Stream]:
        """One stream per predicate, in order, and a last one for values no predicate
        took; each value goes to the first branch whose predicate holds. Iterate every
        branch (e.g. in tasks): a branch nobody reads holds the others back."""
        queues: list[asyncio.Queue[tuple[Any, Event]]] = [
            asyncio.Queue(1024) for _ in range(len(predicates) + 1)
        ]
        started: list[asyncio.Future[None]] = []

        async def pump() -> None:
            async for value in self.pumped():
                event = self.current_event
                for index, predicate in enumerate(predicates):
                    if predicate(value):
                        await queues[index].put((value, event))  # type: ignore[arg-type]
                        break
                else:
                    await queues[-1].put((value, event))  # type: ignore[arg-type]

        def start() -> None:
            if not started:
                started.append(asyncio.ensure_future(pump()))

        return [Stream(self.app, _BranchSource(self.source, queue, start, started))
                for queue in queues]

    def take(self, count: int, *, within: float) -> _Batches:
        """Lists of up to ``count`` values; a shorter list once ``within`` seconds passed
        since its first value."""
        if count < 1 or within <= 0:
            raise StreamerError("take() needs count ≥ 1 and within > 0")
        return _Batches(self, count, within)

    def window(
        self,
        definition: WindowDefinition,
        *,
        name: str | None = None,
        timestamp: Callable[[Any], int] | None = None,
        idle_timeout_s: float | None = IDLE_TIMEOUT_S,
        on_late: Callable[[Any, Any, int], None] | None = None,
    ) -> WindowedStream:
        """Aggregate per key in windows (see :mod:`streamer.windowing`), e.g.
        ``stream.window(tumbling(10)).count().final()``."""
        from .windowing import WindowedStream

        return WindowedStream(self, definition, name=name, timestamp=timestamp,
                              idle_timeout_s=idle_timeout_s, on_late=on_late)

    # -- joins (streamer/table_joins.py, streamer/stream_joins.py) -------------------------

    def join(self, other: Any, **options: Any) -> Any:
        """Join with a table (lookup: ``how="inner"|"left"``, see :mod:`streamer.table_joins`)
        or with another stream (windowed: ``within=``, ``how="inner"|"left"|"outer"``, see
        :mod:`streamer.stream_joins`)."""
        from .tables import Table

        if isinstance(other, Table):
            from .table_joins import join_stream_table

            return join_stream_table(self, other, **options)
        from .stream_joins import join_streams

        return join_streams(self, other, **options)

    def interval_join(self, other: Stream, **options: Any) -> Any:
        """Flink's interval join (see :mod:`streamer.stream_joins`)."""
        from .stream_joins import interval_join

        return interval_join(self, other, **options)

    def asof_join(self, other: Stream, **options: Any) -> Any:
        """Each event with the other stream's latest value at or before its time (see
        :mod:`streamer.stream_joins`)."""
        from .stream_joins import asof_join

        return asof_join(self, other, **options)

    async def to(self, topic: Topic) -> None:
        """Send every value to ``topic``, keyed like the event it came from. Runs until the
        stream ends."""
        async for value in self:
            event = self.current_event
            assert event is not None
            await topic.send(key=event.key, value=value, headers=event.headers,
                             timestamp=event.timestamp)

    # -- iteration ------------------------------------------------------------------------

    def events(self) -> AsyncIterator[Event]:
        """Whole events (after this stream's filters; ``map`` results replace the value)."""
        return self._iterate(events=True)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate(events=False)

    def pumped(self) -> AsyncIterator[Any]:
        """Values for a pump (through, group_by, branch): not the agent's current event."""
        return self._iterate(events=False, track=False)

    async def _iterate(self, *, events: bool, track: bool = True) -> AsyncIterator[Any]:
        self.source.open()
        ops = self.ops
        # Synchronous map/filter chains (the usual case) run in a plain loop; async
        # functions and flat_map go through _apply, an async generator per event.
        simple = all(not is_async and kind != _FLAT_MAP for kind, _, is_async in ops)
        tracker = PROCESSING.get() if track else None
        inbox = self.source.inbox if type(self.source) in _PLAIN_SOURCES else None
        events_in = _walk(inbox) if inbox is not None else self.source.events()
        async for event in events_in:
            value = event.value
            self.current_event = event
            origin = self.derived_from
            while origin is not None:
                origin.current_event = event
                origin = origin.derived_from
            if tracker is not None:
                tracker.event = event
            if value.__class__ is DecodeFailure:
                raise value.error
            if simple:
                for kind, fn, _ in ops:
                    if kind == _MAP:
                        value = fn(value)
                    elif not fn(value):
                        break
                else:
                    if not events:
                        yield value
                    elif ops:  # a copy: the event is shared with every agent of its topic
                        yield dataclasses.replace(event, value=value)
                    else:
                        yield event
                continue
            async for result in _apply(ops, 0, value):
                if events:
                    # A copy: the event is shared with every agent of its topic, and a
                    # retry runs it again from its original value.
                    yield dataclasses.replace(event, value=result)
                else:
                    yield result


async def _walk(inbox: Inbox) -> AsyncIterator[Event]:
    """An inbox's events, one by one, from its cursor on."""
    while True:
        batch = inbox.batch
        index = inbox.index
        if index >= len(batch):
            await inbox.next_batch()
            continue
        inbox.index = index + 1
        yield batch[index]
        inbox.done = index + 1  # asked for the next one: finished with this one
        if inbox.boundary is not None:  # a checkpoint waits for streams to be between events
            await inbox.boundary.wait()


async def _apply(
    ops: tuple[tuple[int, Callable[[Any], Any], bool], ...], start: int, value: Any
) -> AsyncIterator[Any]:
    for index in range(start, len(ops)):
        kind, fn, is_async = ops[index]
        result = fn(value)
        if is_async:
            result = await result
        if kind == _MAP:
            value = result
        elif kind == _FILTER:
            if not result:
                return
        else:
            for item in result:
                async for out in _apply(ops, index + 1, item):
                    yield out
            return
    yield value


class _BranchSource(Source):
    def __init__(
        self,
        parent: Source,
        queue: asyncio.Queue[tuple[Any, Event]],
        start: Callable[[], None],
        started: list[asyncio.Future[None]],
    ) -> None:
        self.parent = parent
        self.queue = queue
        self.start = start
        self.started = started

    def open(self) -> None:
        self.parent.open()

    async def events(self) -> AsyncIterator[Event]:
        self.start()
        pump = self.started[0]
        while True:
            getting = asyncio.ensure_future(self.queue.get())
            racing: set[asyncio.Future[Any]] = {getting, pump}
            done, _ = await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
            if getting not in done:
                getting.cancel()
                pump.result()
                return
            value, event = getting.result()
            yield Event(event.topic, event.partition, event.offset, event.timestamp,
                        event.key, value, event.headers, event.raw_key, event.raw_value)


class _Batches:
    """``stream.take(n, within=s)``: an async iterable of lists."""

    def __init__(self, stream: Stream, count: int, within: float) -> None:
        self.stream = stream
        self.count = count
        self.within = within

    async def __aiter__(self) -> AsyncIterator[list[Any]]:
        loop = asyncio.get_running_loop()
        self.stream.source.open()
        inbox = self.stream.source.inbox
        if inbox is not None:
            inbox.holding = True  # batches count as done once their list was handled
        values = aiter(self.stream)
        buffer: list[Any] = []
        deadline = 0.0
        following: asyncio.Future[Any] | None = None
        try:
            while True:
                if following is None:
                    following = asyncio.ensure_future(anext(values))
                timeout = max(deadline - loop.time(), 0) if buffer else None
                done, _ = await asyncio.wait({following}, timeout=timeout)
                if done:
                    buffer.append(following.result())
                    following = None
                    if len(buffer) == 1:
                        deadline = loop.time() + self.within
                    if len(buffer) < self.count:
                        continue
                held = len(inbox.held) if inbox is not None else 0
                yield buffer
                buffer = []
                if inbox is not None:
                    inbox.release(held)
        finally:
            if following is not None:
                following.cancel()


def source_topic(stream: Stream) -> Topic | None:
    """The topic a stream reads (through ``through``/``group_by``, its topic), if one."""
    source = stream.source
    if isinstance(source, TopicSource):
        return source.topic
    if isinstance(source, InboxSource):
        from .agents import CURRENT_INSTANCE

        instance = CURRENT_INSTANCE.get()
        return instance.agent.topic if instance is not None else None
    return None


def _key_function(key: Callable[[Any], Any] | str) -> Callable[[Any], Any]:
    if callable(key):
        return key
    field = key

    def by_field(value: Any) -> Any:
        if isinstance(value, dict):
            return value[field]
        return getattr(value, field)

    by_field.__name__ = field
    return by_field
