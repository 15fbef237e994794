"""The two inputs of a stream-stream join, read by one agent in event-time order.

A join reads its sides itself, rather than through ``merge``, so that:

- of two waiting events it takes the earlier one, and stream time moves evenly;
- a side whose next event is more than ``sync_ms`` (the join's grace) ahead of the latest
  event of the other side in the same partition waits for the other side, ``max_wait_s`` at
  most (Kafka Streams' ``max.task.idle.ms``): the other topic may just be fetched later (a
  backlog read over Kafka comes topic by topic), and taking the side ahead would make its
  events late. A side that stayed empty that long is idle, and the other one goes on;
- a checkpoint finds each inbox between events exactly when the join is: an event is in
  hand from :meth:`take` until :meth:`finish`, which the join calls once the event's rows
  were handed on. While a checkpoint holds the streams (``inbox.boundary``), only an event
  a side has already read may go on.

A side that reads a topic as it is (the agent's stream, ``topic.stream()``) is walked
straight from its inbox (:class:`InboxSide`); any other (``group_by``, ``through``, ``map``,
``filter``) through its stream's iterator (:class:`StreamSide`), which reads one event ahead.
Sides are compared and synchronised on record timestamps.

Each side's inbox holds the batches of all the partitions its agent instance reads, one
after the other, so events can only be ordered across sides, not across an inbox's
batches: with a backlog in several partitions, one partition's events of one side may
come long before the other side's, behind other partitions' batches. An agent that joins
such input runs one instance per partition (``@app.agent(topic, concurrency=<partitions>)``),
so each instance's sides hold one partition each and are ordered event by event.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from .operators.stream_joins import NO_TIME
from .streams import InboxSource, Stream

if TYPE_CHECKING:
    from .events import Event
    from .inbox import Inbox

__all__ = ["InboxSide", "Sides", "StreamSide"]


class InboxSide:
    """A side read straight from its inbox: nothing is read ahead."""

    reads_ahead = False

    def __init__(self, name: str, inbox: Inbox) -> None:
        self.name = name  # "left" or "right"
        self.inbox = inbox
        self.refill: asyncio.Future[Any] | None = None
        self.last_ms: dict[int, int] = {}  # partition → the latest record time taken
        self.empty_since: float | None = None  # when the other side began waiting for it

    def ready(self) -> bool:
        inbox = self.inbox
        return inbox.index < len(inbox.batch)

    def head(self) -> Event:
        inbox = self.inbox
        return inbox.batch[inbox.index]

    def take(self) -> Event:
        inbox = self.inbox
        index = inbox.index
        inbox.index = index + 1
        event = inbox.batch[index]
        _taken(self, event)
        return event

    def finish(self) -> None:
        inbox = self.inbox
        inbox.done = inbox.index
        if inbox.index >= len(inbox.batch):
            self.waiter()  # acknowledges the batch now, and fetches the next one

    def waiter(self) -> asyncio.Future[Any] | None:
        """What to wait on for this side's next event (None: it has one)."""
        if self.ready():
            return None
        refill = self.refill
        if refill is not None and refill.done():
            refill.result()  # raises what next_batch raised
            refill = None
        if refill is None:
            refill = self.refill = asyncio.ensure_future(self.inbox.next_batch())
        return refill

    def boundary(self) -> asyncio.Event | None:
        return self.inbox.boundary

    def close(self) -> None:
        if self.refill is not None:
            self.refill.cancel()


class StreamSide:
    """A side read through its stream's iterator, one event ahead: an event it holds is
    already begun as far as its inbox can tell."""

    reads_ahead = True

    def __init__(self, name: str, stream: Stream) -> None:
        self.name = name
        self.stream = stream
        self.iterator = stream.events()
        self.next: asyncio.Future[Event] | None = None
        self.last_ms: dict[int, int] = {}
        self.empty_since: float | None = None
        self.last_position: tuple[str, int, int] | None = None

    def ready(self) -> bool:
        return self.next is not None and self.next.done()

    def head(self) -> Event:
        assert self.next is not None
        return self.next.result()

    def take(self) -> Event:
        assert self.next is not None
        event = self.next.result()
        self.next = None
        _taken(self, event)
        return event

    def finish(self) -> None:
        self.waiter()  # asking for the next event is what finishes this one

    def waiter(self) -> asyncio.Future[Event] | None:
        if self.next is None:
            self.next = asyncio.ensure_future(anext(self.iterator))
        return None if self.next.done() else self.next

    def boundary(self) -> asyncio.Event | None:
        inbox = self.stream.source.inbox
        return None if inbox is None else inbox.boundary

    def close(self) -> None:
        if self.next is not None:
            self.next.cancel()


Side = InboxSide | StreamSide


def _taken(side: Side, event: Event) -> None:
    last_ms = side.last_ms
    if event.timestamp > last_ms.get(event.partition, NO_TIME):
        last_ms[event.partition] = event.timestamp
    side.empty_since = None


def side_of(name: str, stream: Stream) -> Side:
    source = stream.source
    source.open()
    plain = isinstance(source, InboxSource) and type(source).events is InboxSource.events
    if plain and not stream.ops and source.inbox is not None:
        return InboxSide(name, source.inbox)
    return StreamSide(name, stream)


class Sides:
    """Both sides of a join, and which one goes next; see the module docstring."""

    def __init__(self, left: Stream, right: Stream, *, sync_ms: int, max_wait_s: float
                 ) -> None:
        self.left, self.right = side_of("left", left), side_of("right", right)
        self.sync_ms = sync_ms
        self.max_wait_s = max_wait_s
        self.holding_until: float | None = None  # one side waits for the other until then

    def next(self) -> Side | None:
        """The side whose event comes next, or None: wait (:meth:`wait`)."""
        left, right = self.left, self.right
        self.holding_until = None
        if self.boundary() is not None:
            # A checkpoint holds the streams between events: only an event a side has
            # already read may go on (it is under way as far as its inbox can tell).
            for side in (left, right):
                if side.reads_ahead and side.ready():
                    return side
            return None
        if left.ready():
            if right.ready():  # the earlier one first, so stream time moves evenly
                return right if right.head().timestamp < left.head().timestamp else left
            return None if self._held(left, right) else left
        if right.ready():
            return None if self._held(right, left) else right
        return None

    def _held(self, ready: Side, empty: Side) -> bool:
        """Whether ``ready``'s next event waits for ``empty``: it is more than ``sync_ms``
        ahead of the latest event ``empty`` gave in its partition, and ``empty`` has been
        waited for less than ``max_wait_s``."""
        head = ready.head()
        if head.timestamp <= empty.last_ms.get(head.partition, NO_TIME) + self.sync_ms:
            return False
        now = time.monotonic()
        if empty.empty_since is None:
            empty.empty_since = now
        until = empty.empty_since + self.max_wait_s
        if now >= until:
            return False
        self.holding_until = until
        return True

    def boundary(self) -> asyncio.Event | None:
        return self.left.boundary() or self.right.boundary()

    async def wait(self, timeout: float | None) -> bool:
        """Wait for an event (during a checkpoint, for its end or an event already read);
        True when ``timeout`` passed without one."""
        boundary = self.boundary()
        held: asyncio.Future[Any] | None = None
        if boundary is not None:
            held = asyncio.ensure_future(boundary.wait())
            waits = {held, *(side.next for side in (self.left, self.right)
                             if isinstance(side, StreamSide) and side.next is not None)}
        else:
            waits = {w for side in (self.left, self.right) if (w := side.waiter()) is not None}
        holding = self.holding_until is not None and (
            timeout is None or self.holding_until - time.monotonic() < timeout)
        if holding:
            assert self.holding_until is not None
            timeout = max(self.holding_until - time.monotonic(), 0.0)
        try:
            done, _ = await asyncio.wait(waits, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            if held is not None:
                held.cancel()
        return not done and not holding

    def close(self) -> None:
        self.left.close()
        self.right.close()
