"""Replaying a partition of one of the log's own compacted topics (committed offsets,
transaction state) record by record, as their coordinators do when they load."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from aiokafka.record.default_records import DefaultRecordBatch

from .batch import split_batches

if TYPE_CHECKING:
    from .partition import PartitionLog

__all__ = ["replay_records"]

logger = logging.getLogger("streamer.log")

_READ_BYTES = 1 << 20  # per read


def replay_records(partition: PartitionLog, undecodable: Callable[[], None]) -> Iterator[Any]:
    """Every record from the log start to the end, in offset order (aiokafka's decoded
    records: ``.offset``, ``.key``, ``.value``). Control batches are passed over; a batch
    that does not decode is logged, reported to ``undecodable`` and skipped."""
    offset = partition.log_start_offset
    while offset < partition.log_end_offset:
        data = partition.read(offset, _READ_BYTES).records
        if not data:
            return  # only compacted-away offsets remain up to the end
        for position, header in split_batches(data):
            if not header.is_control and header.records_count > 0:
                batch = data[position : position + header.size]
                for record in _decoded(partition, batch, undecodable):
                    if record.offset >= offset:  # the first batch may start earlier
                        yield record
            offset = max(offset, header.next_offset)


def _decoded(partition: PartitionLog, batch: bytes, undecodable: Callable[[], None]
             ) -> list[Any]:
    try:
        return list(DefaultRecordBatch(batch))
    except Exception as error:  # each codec raises its own types: aiokafka's, cramjam's
        undecodable()
        logger.warning("%s: skipped a batch that does not decode: %s", partition.name, error)
        return []
