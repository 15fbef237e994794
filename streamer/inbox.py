"""Where the worker hands events to a stream: batches, a cursor, and acknowledgements.

The worker puts whole fetched batches into an :class:`Inbox` (bounded, so a slow agent
pauses fetching); a stream walks the current batch with a cursor that survives an agent's
restart after an error, and acknowledges a batch once it asks for the next one. The
:class:`OffsetTracker` turns acknowledgements into the offsets that are safe to commit: a
partition's offset advances only over batches every subscriber has finished.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from .events import Event, TopicPartition

__all__ = ["BatchAck", "Inbox", "OffsetTracker"]

INBOX_BATCHES_MAX = 8
# Processing-time samples kept per inbox (one per batch walked): the recent past, bounded.
BATCH_TIMINGS_MAX = 256


class BatchAck:
    """One fetched batch of one partition, finished when ``pending`` reaches zero."""

    __slots__ = ("inbox", "next_offset", "partition", "pending", "revoked")

    def __init__(self, partition: TopicPartition, next_offset: int, pending: int) -> None:
        self.partition = partition
        self.next_offset = next_offset
        self.pending = pending
        # The one inbox it went to, when only one stream reads its topic: a checkpoint can
        # then commit the part of the batch that stream has finished.
        self.inbox: Inbox | None = None
        # Its partition moved away (rebalance): a stream skips it, the next owner reads it.
        self.revoked = False

    def done(self) -> None:
        self.pending -= 1


class OffsetTracker:
    """Per partition, the offset below which every delivered event is processed."""

    def __init__(self) -> None:
        self._acks: dict[TopicPartition, deque[BatchAck]] = {}
        self._committable: dict[TopicPartition, int] = {}
        self._moved: dict[TopicPartition, int] = {}  # since the last committable() call

    def track(self, ack: BatchAck) -> None:
        self._acks.setdefault(ack.partition, deque()).append(ack)

    def _advance(self) -> None:
        for partition, acks in self._acks.items():
            while acks and acks[0].pending <= 0:
                offset = acks.popleft().next_offset
                self._committable[partition] = offset
                self._moved[partition] = offset

    def committable(self) -> dict[TopicPartition, int]:
        """Offsets processed since the last call, per partition (only those that moved),
        including the finished part of a batch being walked."""
        self._advance()
        for partition, acks in self._acks.items():
            if acks:
                offset = _finished_offset(acks[0])
                if offset > self._committable.get(partition, -1):
                    self._committable[partition] = self._moved[partition] = offset
        moved, self._moved = self._moved, {}
        return moved

    def processed(self) -> dict[TopicPartition, int]:
        """Every partition's processed offset; reading it leaves :meth:`committable` alone
        (statistics read it every second, and a checkpoint must still commit the move)."""
        self._advance()
        return dict(self._committable)

    def forget(self, partitions: frozenset[TopicPartition]) -> None:
        for partition in partitions:
            for ack in self._acks.pop(partition, ()):
                ack.revoked = True
            self._committable.pop(partition, None)
            self._moved.pop(partition, None)

    def pending_events(self) -> int:
        return sum(len(acks) for acks in self._acks.values())


def _finished_offset(ack: BatchAck) -> int:
    """The offset below which a batch's events are finished, or -1: known only for a batch
    that its one inbox is walking (not held by take())."""
    inbox = ack.inbox
    if inbox is None or not inbox.walking(ack) or inbox.holding or inbox.done == 0:
        return -1
    offset: int = inbox.batch[inbox.done - 1].offset + 1
    return offset


class Inbox:
    """Batches for one stream source, walked with a resumable cursor."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: asyncio.Queue[tuple[list[Event], BatchAck | None]] = asyncio.Queue(
            INBOX_BATCHES_MAX
        )
        self.batch: list[Event] = []
        self.index = 0
        self.done = 0
        # Set by a checkpoint: the stream waits on it between two events, so the checkpoint
        # sees every event either finished or not started (see Worker.checkpoint).
        self.boundary: asyncio.Event | None = None
        self.read_ahead = False  # merged with other sources: read one event ahead
        self._ack: BatchAck | None = None
        self.events_in = 0
        # take() holds acknowledgements until the agent has handled the list it was given.
        self.holding = False
        self.held: list[BatchAck] = []
        # Processing time, measured per batch and never per event (the walk is the hot
        # path): (seconds from handing a batch to the stream until it asked for the next,
        # divided by the batch's events; the batch's events). That is wall time, so it also
        # counts what the agent awaited (sends, other tasks on the loop) while on the batch.
        self.batch_timings: deque[tuple[float, int]] = deque(maxlen=BATCH_TIMINGS_MAX)
        self._handed_at = 0.0  # perf_counter() when the current batch was handed over

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
        walked = len(self.batch)
        if walked and self._handed_at:
            self.batch_timings.append(((time.perf_counter() - self._handed_at) / walked, walked))
            self._handed_at = 0.0  # once per batch, even if the wait below is interrupted
        events, ack = await self._queue.get()
        while ack is not None and ack.revoked:  # put while its partition was being revoked
            events, ack = await self._queue.get()
        self.batch, self.index, self._ack = events, 0, ack
        self.done = 0  # events of the batch the stream has finished
        self.events_in += len(events)
        self._handed_at = time.perf_counter()
        return events

    def release(self, count: int) -> None:
        """Acknowledge the first ``count`` held batches."""
        for ack in self.held[:count]:
            ack.done()
        del self.held[:count]

    def drop(self, partitions: frozenset[TopicPartition]) -> None:
        """Forget queued batches of partitions this worker no longer owns (rebalance), and
        the rest of the batch being walked if it is one of theirs."""
        if self.batch and self.batch[0].topic_partition in partitions:
            self.index = len(self.batch)
        kept = []
        while not self._queue.empty():
            events, ack = self._queue.get_nowait()
            if not events or events[0].topic_partition not in partitions:
                kept.append((events, ack))
        for item in kept:
            self._queue.put_nowait(item)

    def walking(self, ack: BatchAck) -> bool:
        """True when the batch being walked is ``ack``'s."""
        return self._ack is ack

    @property
    def between_events(self) -> bool:
        """No event is half processed: every event handed out is finished."""
        return self.done >= self.index or self.holding or self.read_ahead

    @property
    def ready(self) -> bool:
        """An event can be had without waiting."""
        return self.index < len(self.batch) or not self._queue.empty()

    @property
    def idle(self) -> bool:
        return self._queue.empty() and self.index >= len(self.batch)
