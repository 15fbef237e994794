"""The embedded transport's consumer: a group member that reads the log in this process.

Reads are direct calls into :class:`~streamer.log.PartitionLog` on the event loop (a
``pread`` from the page cache, CRC-checked by the log), decoded with aiokafka's C record
reader. Each partition keeps what one read returned (at most ``FETCH_BYTES_MAX`` of whole
batches) as decoded events and hands them out in slices, so a small ``max_records`` never
decodes a batch twice. :meth:`EmbeddedConsumer.fetch` takes from the assigned partitions in
turn, starting one further along on every call, so none starves the others.

Control batches (transaction markers) never reach the app. With
``isolation_level="read_committed"`` a partition is read only up to its last stable offset
(the first offset of its oldest open transaction), and the batches of aborted transactions
are skipped; "latest" then means the last stable offset. The default,
``"read_uncommitted"``, reads up to the high watermark.

Group membership (joins, heartbeats, rebalances, commits) is :mod:`.embedded_group`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from aiokafka.record.memory_records import MemoryRecords

from streamer.log import Log, OffsetOutOfRangeError, PartitionLog
from streamer.log.broker import Broker
from streamer.log.producer_state import AbortedTransaction
from streamer.log.protocol.error_codes import ErrorCode

from ..events import Event, TopicPartition
from .base import ISOLATION_LEVELS, RebalanceListener, TransportConsumer
from .embedded_group import ConsumerGroupError, GroupMember, GroupMemberStatistics

__all__ = [
    "FETCH_BYTES_MAX",
    "EmbeddedConsumer",
    "EmbeddedConsumerStatistics",
    "collect_in_turn",
    "decode_committed",
    "decode_records",
    "readable_end",
]

logger = logging.getLogger("streamer.transport.embedded")

# Bytes read from one partition at a time (Kafka's max.partition.fetch.bytes); at least one
# whole batch is returned even when it is larger.
FETCH_BYTES_MAX = 1 << 20
OFFSET_RESETS = ("earliest", "latest")


@dataclass(slots=True)
class _Buffered:
    """Events decoded from one read of a partition, handed out from ``index`` on."""

    events: list[Event]
    index: int
    next_offset: int  # after the last batch read: the position once every event is taken


@dataclass(frozen=True, slots=True)
class EmbeddedConsumerStatistics:
    group: GroupMemberStatistics
    positions: Mapping[TopicPartition, int]
    buffered_events: int


class EmbeddedConsumer(TransportConsumer):
    """A member of ``group_id`` reading ``topics`` from the broker's log in this process."""

    def __init__(
        self,
        broker: Broker,
        group_id: str,
        topics: Sequence[str],
        listener: RebalanceListener,
        *,
        auto_offset_reset: str,
        client_id: str,
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        heartbeat_interval_ms: int,
        standby_replicas: int = 0,
        isolation_level: str = "read_uncommitted",
    ) -> None:
        if auto_offset_reset not in OFFSET_RESETS:
            raise ValueError(
                f"auto_offset_reset={auto_offset_reset!r}; expected one of {OFFSET_RESETS}"
            )
        self._read_committed = check_isolation_level(isolation_level)
        self._broker = broker
        self._log: Log = broker.log
        self._listener = listener
        self._auto_offset_reset = auto_offset_reset
        self._member = GroupMember(
            broker.groups, group_id, topics,
            client_id=client_id,
            partition_count=broker.partition_count,
            on_revoked=self._revoked,
            on_assigned=self._assigned,
            session_timeout_ms=session_timeout_ms,
            rebalance_timeout_ms=rebalance_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            standby_replicas=standby_replicas,
        )  # fmt: skip
        self._positions: dict[TopicPartition, int] = {}
        self._buffered: dict[TopicPartition, _Buffered] = {}
        self._order: list[TopicPartition] = []  # the assignment, sorted: fetch's turn order
        self._turn = 0
        self._waiting: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def group_id(self) -> str:
        return self._member.group_id

    async def start(self) -> None:
        await self._member.start()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake()
        await self._member.close()
        self._forget(set(self._positions))

    def assignment(self) -> frozenset[TopicPartition]:
        return self._member.assignment

    def standby_partitions(self) -> frozenset[int]:
        return self._member.standby

    def pause(self, partitions: frozenset[TopicPartition]) -> None:
        """Nothing to do: fetch returns nothing until the rebalance, listener included, is
        over (the only time the runtime pauses)."""

    def resume(self, partitions: frozenset[TopicPartition]) -> None:
        """See :meth:`pause`."""

    def seek(self, partition: TopicPartition, offset: int) -> None:
        if partition not in self._positions:
            raise ValueError(f"cannot seek {partition}: not assigned to this consumer")
        if offset < 0:
            raise ValueError(f"cannot seek {partition} to {offset}: offsets are ≥ 0")
        self._positions[partition] = offset
        self._buffered.pop(partition, None)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        await self._member.commit(offsets)

    def statistics(self) -> EmbeddedConsumerStatistics:
        buffered = sum(len(b.events) - b.index for b in self._buffered.values())
        return EmbeddedConsumerStatistics(
            self._member.statistics(), dict(self._positions), buffered
        )

    # -- fetching -------------------------------------------------------------------------

    async def fetch(
        self, timeout_ms: int, max_records: int
    ) -> list[tuple[TopicPartition, list[Event]]]:
        assert max_records > 0, "max_records bounds a fetch"
        self._check_usable()
        if not self._member.stable.is_set():  # rebalancing: nothing is ours to read
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._member.stable.wait(), timeout_ms / 1000)
            return []
        found = self._collect(max_records)
        if found or timeout_ms <= 0:
            return found
        await self._wait_for_data(timeout_ms)
        self._check_usable()
        if not self._member.stable.is_set():
            return []
        return self._collect(max_records)

    def _check_usable(self) -> None:
        if self._closed:
            raise ConsumerGroupError(
                "the consumer is closed", group_id=self.group_id,
                error_code=ErrorCode.UNKNOWN_MEMBER_ID,
            )  # fmt: skip
        self._member.raise_failure()

    def _collect(self, max_records: int) -> list[tuple[TopicPartition, list[Event]]]:
        """Up to ``max_records`` events, partition by partition from this call's turn on."""
        found, self._turn = collect_in_turn(self._order, self._turn, self._take, max_records)
        return found

    def _take(self, tp: TopicPartition, limit: int) -> list[Event]:
        buffered = self._buffered.get(tp)
        if buffered is None or buffered.index == len(buffered.events):
            buffered = self._read(tp)
            if buffered is None:
                return []
        start = buffered.index
        events = buffered.events[start : start + limit]
        buffered.index = start + len(events)
        if buffered.index == len(buffered.events):
            self._positions[tp] = buffered.next_offset
            del self._buffered[tp]
        elif events:
            self._positions[tp] = events[-1].offset + 1
        return events

    def _read(self, tp: TopicPartition) -> _Buffered | None:
        """Read and decode from the position on; None when there is nothing new."""
        partition = self._log.partition(tp.topic, tp.partition)
        position = self._positions[tp]
        end = readable_end(partition, self._read_committed)
        if position >= end:
            if position > partition.log_end_offset:  # bad committed offset, or truncation
                self._positions[tp] = self._reset(tp, "past the end of the log")
            return None
        try:
            read = partition.read(position, FETCH_BYTES_MAX)
        except OffsetOutOfRangeError:  # retention or DeleteRecords moved the start past it
            position = self._positions[tp] = self._reset(tp, "below the log start")
            read = partition.read(position, FETCH_BYTES_MAX)
        if self._read_committed:
            events, next_offset = decode_committed(
                tp, read.records, position, end, partition.aborted_ranges(position, end)
            )
        else:
            events, next_offset = decode_records(tp, read.records, position)
        if next_offset <= position:
            return None
        buffered = _Buffered(events, 0, next_offset)  # events may be empty: control
        self._buffered[tp] = buffered  # batches only, which _take then steps over
        return buffered

    def _reset(self, tp: TopicPartition, why: str) -> int:
        offset = self._reset_offset(tp)
        logger.warning("%s/%d: position %d is %s; resetting to the %s offset %d",
                       tp.topic, tp.partition, self._positions.get(tp, -1), why,
                       self._auto_offset_reset, offset)  # fmt: skip
        return offset

    def _reset_offset(self, tp: TopicPartition) -> int:
        partition = self._log.partition(tp.topic, tp.partition)
        if self._auto_offset_reset == "earliest":
            start: int = partition.log_start_offset
            return start
        return readable_end(partition, self._read_committed)

    async def _wait_for_data(self, timeout_ms: int) -> None:
        """Until an append to an assigned partition, a rebalance, close, or the timeout."""
        assert self._waiting is None, "one fetch at a time"
        self._waiting = asyncio.get_running_loop().create_task(self._park(timeout_ms))
        try:
            await asyncio.wait((self._waiting,))
        finally:
            self._waiting.cancel()
            self._waiting = None

    async def _park(self, timeout_ms: int) -> None:
        # Runs as a task: an append may have come between fetch's look and this task's
        # start, so look again; then wait_for_data registers before it first yields.
        if not self._has_data():
            await self._broker.wait_for_data(self._order, timeout_ms)

    def _has_data(self) -> bool:
        for tp in self._order:
            buffered = self._buffered.get(tp)
            if buffered is not None and buffered.index < len(buffered.events):
                return True
            if self._positions[tp] < readable_end(self._log.partition(*tp), self._read_committed):
                return True
        return False

    def _wake(self) -> None:
        if self._waiting is not None:
            self._waiting.cancel()

    # -- rebalances -----------------------------------------------------------------------

    async def _revoked(self, partitions: frozenset[TopicPartition]) -> None:
        self._wake()
        try:
            await self._listener.on_partitions_revoked(partitions)
        finally:
            self._forget(partitions)

    async def _assigned(self, partitions: frozenset[TopicPartition]) -> None:
        """Positions from the committed offsets (else ``auto_offset_reset``), then the
        listener, which may seek."""
        fetched = self._broker.groups.fetch_offsets(self.group_id, sorted(partitions))
        if fetched.error_code != ErrorCode.NONE:
            raise ConsumerGroupError(
                "reading committed offsets failed", group_id=self.group_id,
                error_code=ErrorCode(fetched.error_code),
            )  # fmt: skip
        for committed in fetched.partitions:
            tp = TopicPartition(committed.topic, committed.partition)
            offset = committed.offset
            self._positions[tp] = offset if offset >= 0 else self._reset_offset(tp)
        self._order = sorted(partitions)
        self._wake()
        await self._listener.on_partitions_assigned(partitions)

    def _forget(self, partitions: frozenset[TopicPartition] | set[TopicPartition]) -> None:
        for tp in partitions:
            self._positions.pop(tp, None)
            self._buffered.pop(tp, None)
        self._order = [tp for tp in self._order if tp not in partitions]


def collect_in_turn(
    order: Sequence[TopicPartition],
    turn: int,
    take: Callable[[TopicPartition, int], list[Event]],
    max_records: int,
) -> tuple[list[tuple[TopicPartition, list[Event]]], int]:
    """Up to ``max_records`` events from the partitions in ``order``, starting at the
    ``turn``-th one (so none starves the others); returns them and the next turn."""
    if not order:
        return [], turn
    start = turn % len(order)
    found: list[tuple[TopicPartition, list[Event]]] = []
    remaining = max_records
    for tp in [*order[start:], *order[:start]]:
        events = take(tp, remaining)
        if events:
            found.append((tp, events))
            remaining -= len(events)
            if remaining <= 0:
                break
    return found, start + 1


def check_isolation_level(isolation_level: str) -> bool:
    """Whether ``isolation_level`` is "read_committed"; ValueError if it is neither."""
    if isolation_level not in ISOLATION_LEVELS:
        raise ValueError(
            f"isolation_level={isolation_level!r}; expected one of {ISOLATION_LEVELS}"
        )
    return isolation_level == "read_committed"


def readable_end(partition: PartitionLog, read_committed: bool) -> int:
    """Where a reader stops: the last stable offset (read_committed) or the high
    watermark."""
    offset: int = partition.last_stable_offset if read_committed else partition.high_watermark
    return offset


def decode_records(tp: TopicPartition, records: bytes, position: int) -> tuple[list[Event], int]:
    """Events at or after ``position`` from whole batches, and the offset after the last
    batch. Control batches (transaction markers) are skipped."""
    topic, partition = tp
    events: list[Event] = []
    extend = events.extend
    next_offset = position
    batches = MemoryRecords(records)
    while (batch := batches.next_batch()) is not None:
        next_offset = batch.next_offset
        if batch.is_control_batch:
            continue
        if batch.base_offset >= position:
            extend([
                Event(topic, partition, r.offset, r.timestamp, r.key, r.value,
                      tuple(r.headers))
                for r in batch
            ])  # fmt: skip
        else:  # the batch holding the position: skip what was already read
            extend([
                Event(topic, partition, r.offset, r.timestamp, r.key, r.value,
                      tuple(r.headers))
                for r in batch
                if r.offset >= position
            ])  # fmt: skip
    return events, next_offset


def decode_committed(
    tp: TopicPartition,
    records: bytes,
    position: int,
    end: int,
    aborted: Sequence[AbortedTransaction],
) -> tuple[list[Event], int]:
    """:func:`decode_records` for read_committed: only the batches below ``end`` (the last
    stable offset), without those of the ``aborted`` transactions (a transactional batch of
    producer P inside one of P's aborted ranges)."""
    topic, partition = tp
    events: list[Event] = []
    next_offset = position
    batches = MemoryRecords(records)
    while (batch := batches.next_batch()) is not None:
        if batch.base_offset >= end:
            break
        next_offset = batch.next_offset
        if batch.is_control_batch:
            continue
        if batch.is_transactional and _aborted(batch.producer_id, batch.base_offset, aborted):
            continue
        events.extend([
            Event(topic, partition, r.offset, r.timestamp, r.key, r.value, tuple(r.headers))
            for r in batch
            if r.offset >= position
        ])  # fmt: skip
    return events, next_offset


def _aborted(producer_id: int, offset: int, aborted: Sequence[AbortedTransaction]) -> bool:
    return any(
        entry.producer_id == producer_id and entry.first_offset <= offset <= entry.last_offset
        for entry in aborted
    )
