"""The embedded transport's partition reader: changelogs read straight from the log.

No group: the caller assigns partitions with the offsets to read from (a store's changelog
position), reads until the end offsets it asked for (restoring) or keeps reading (standby
replicas, global tables). Reads are the consumer's: a ``pread`` of whole batches, decoded by
aiokafka's record reader, control batches skipped. With ``isolation_level="read_committed"``
it reads up to each partition's last stable offset, skips aborted transactions, and
:meth:`EmbeddedReader.end_offsets` answers last stable offsets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from streamer.log import OffsetOutOfRangeError
from streamer.log.broker import Broker

from ..events import Event, TopicPartition
from .base import PartitionReader
from .embedded_consumer import (
    FETCH_BYTES_MAX,
    check_isolation_level,
    collect_in_turn,
    decode_committed,
    decode_records,
    readable_end,
)

__all__ = ["EmbeddedReader"]


class EmbeddedReader(PartitionReader):
    def __init__(self, broker: Broker, *, isolation_level: str = "read_uncommitted") -> None:
        self._read_committed = check_isolation_level(isolation_level)
        self._broker = broker
        self._positions: dict[TopicPartition, int] = {}
        self._turn = 0

    async def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        log = self._broker.log
        return {
            tp: readable_end(log.partition(tp.topic, tp.partition), self._read_committed)
            for tp in partitions
        }

    def assign(self, positions: Mapping[TopicPartition, int]) -> None:
        self._positions.update(positions)

    def unassign(self, partitions: Sequence[TopicPartition]) -> None:
        for tp in partitions:
            self._positions.pop(tp, None)

    def assigned(self) -> frozenset[TopicPartition]:
        return frozenset(self._positions)

    async def position(self, partition: TopicPartition) -> int:
        # A fetch that found nothing has stepped over control batches and gaps already.
        return self._positions[partition]

    async def fetch(
        self, timeout_ms: int, max_records: int
    ) -> list[tuple[TopicPartition, list[Event]]]:
        found = self._collect(max_records)
        if found or timeout_ms <= 0:
            return found
        if not self._positions:
            await asyncio.sleep(timeout_ms / 1000)
            return []
        await self._broker.wait_for_data(sorted(self._positions), timeout_ms)
        return self._collect(max_records)

    def _collect(self, max_records: int) -> list[tuple[TopicPartition, list[Event]]]:
        found, self._turn = collect_in_turn(sorted(self._positions), self._turn, self._read,
                                            max_records)
        return found

    def _read(self, tp: TopicPartition, limit: int) -> list[Event]:
        partition = self._broker.log.partition(tp.topic, tp.partition)
        position = self._positions[tp]
        end = readable_end(partition, self._read_committed)
        while position < end:
            try:
                read = partition.read(position, FETCH_BYTES_MAX)
            except OffsetOutOfRangeError:  # compaction or retention moved the start past it
                position = partition.log_start_offset
                continue
            if self._read_committed:
                aborted = partition.aborted_ranges(position, end)
                events, next_offset = decode_committed(tp, read.records, position, end, aborted)
            else:
                events, next_offset = decode_records(tp, read.records, position)
            if len(events) > limit:  # take whole-batch prefixes only up to the limit
                events = events[:limit]
                next_offset = events[-1].offset + 1
            self._positions[tp] = next_offset
            if events:
                return events
            if next_offset <= position:
                break
            position = next_offset  # only control batches (or compacted gaps): go on
        return []

    async def close(self) -> None:
        self._positions.clear()
