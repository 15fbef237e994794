"""Where the worker hands events to a stream: batches, a cursor, and acknowledgements.

The worker puts whole fetched batches into an :class:`Inbox` (bounded, so a slow agent
pauses fetching); a stream walks the current batch with a cursor that survives an agent's
restart after an error, and acknowledges a batch once it asks for the next one. The
:class:`OffsetTracker` turns acknowledgements into the offsets that are safe to commit: a
partition's offset advances only over batches every subscriber has finished.
"""

from __future__ import annotations

import asyncio
from collections import deque

from .events import Event, TopicPartition

__all__ = ["BatchAck", "Inbox", "OffsetTracker"]

INBOX_BATCHES_MAX = 8


class BatchAck:
    """One fetched batch of one partition, finished when ``pending`` reaches zero."""

    __slots__ = ("next_offset", "partition", "pending")

    def __init__(self, partition: TopicPartition, next_offset: int, pending: int) -> None:
        self.partition = partition
        self.next_offset = next_offset
        self.pending = pending

    def done(self) -> None:
        self.pending -= 1


class OffsetTracker:
    """Per partition, the offset below which every delivered event is processed."""

    def __init__(self) -> None:
        self._acks: dict[TopicPartition, deque[BatchAck]] = {}
        self._committable: dict[TopicPartition, int] = {}

    def track(self, ack: BatchAck) -> None:
        self._acks.setdefault(ack.partition, deque()).append(ack)

    def committable(self) -> dict[TopicPartition, int]:
        """Offsets processed since the last call, per partition (only those that moved)."""
        moved: dict[TopicPartition, int] = {}
        for partition, acks in self._acks.items():
            while acks and acks[0].pending <= 0:
                moved[partition] = acks.popleft().next_offset
        self._committable.update(moved)
        return moved

    def processed(self) -> dict[TopicPartition, int]:
        self.committable()
        return dict(self._committable)

    def forget(self, partitions: frozenset[TopicPartition]) -> None:
        for partition in partitions:
            self._acks.pop(partition, None)
            self._committable.pop(partition, None)

    def pending_events(self) -> int:
        return sum(len(acks) for acks in self._acks.values())


class Inbox:
    """Batches for one stream source, walked with a resumable cursor."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: asyncio.Queue[tuple[list[Event], BatchAck | None]] = asyncio.Queue(
            INBOX_BATCHES_MAX
        )
        self.batch: list[Event] = []
        self.index = 0
        self._ack: BatchAck | None = None
        self.events_in = 0
        # take() holds acknowledgements until the agent has handled the list it was given.
        self.holding = False
        self.held: list[BatchAck] = []

    async def put(self, events: list[Event], ack: BatchAck | None) -> None:
        await self._queue.put((events, ack))

    def put_nowait(self, events: list[Event], ack: BatchAck | None) -> None:
        self._queue.put_nowait((events, ack))

    async def next_batch(self) -> list[Event]:
        """Acknowledge the batch just walked and wait for the next one."""
        if self._ack is not None:
            if self.holding:
                self.held.append(self._ack)
            else:
                self._ack.done()
            self._ack = None
        events, ack = await self._queue.get()
        self.batch, self.index, self._ack = events, 0, ack
        self.events_in += len(events)
        return events

    def release(self, count: int) -> None:
        """Acknowledge the first ``count`` held batches."""
        for ack in self.held[:count]:
            ack.done()
        del self.held[:count]

    def drop(self, partitions: frozenset[TopicPartition]) -> None:
        """Forget queued batches of partitions this worker no longer owns (rebalance)."""
        kept = []
        while not self._queue.empty():
            events, ack = self._queue.get_nowait()
            if not events or events[0].topic_partition not in partitions:
                kept.append((events, ack))
        for item in kept:
            self._queue.put_nowait(item)

    @property
    def idle(self) -> bool:
        return self._queue.empty() and self.index >= len(self.batch)
