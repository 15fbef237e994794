"""ListOffsets (key 2), v1-5: the earliest (-2) or latest (-1) offset of a partition, or the
first offset whose timestamp is at or after a given one.

``read_committed`` (v2+) gets the last stable offset as "latest": the first offset of the
oldest open transaction, else the high watermark. Skipped: -3 (the offset of the largest
timestamp, v7+).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiokafka.record.default_records import DefaultRecordBatch

from ..errors import LogError
from ..partition import PartitionLog
from ..protocol.error_codes import ErrorCode
from ..protocol.messages.fetch import READ_COMMITTED
from ..protocol.messages.list_offsets import (
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    ListOffsetsPartition,
    ListOffsetsPartitionResponse,
    ListOffsetsRequest,
    ListOffsetsResponse,
    ListOffsetsTopicResponse,
)

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext


async def handle(
    broker: Broker, context: RequestContext, request: ListOffsetsRequest
) -> ListOffsetsResponse:
    committed = request.isolation_level == READ_COMMITTED
    return ListOffsetsResponse(
        topics=[
            ListOffsetsTopicResponse(
                name=topic.name,
                partitions=[
                    _lookup(broker, topic.name, wanted, committed) for wanted in topic.partitions
                ],
            )
            for topic in request.topics
        ]
    )


def _lookup(
    broker: Broker, topic: str, wanted: ListOffsetsPartition, committed: bool
) -> ListOffsetsPartitionResponse:
    index = wanted.partition_index
    try:
        partition = broker.partition(topic, index, create=False)
        if wanted.timestamp == LATEST_TIMESTAMP:
            latest = partition.last_stable_offset if committed else partition.high_watermark
            offset, timestamp = latest, -1
        elif wanted.timestamp == EARLIEST_TIMESTAMP:
            offset, timestamp = partition.log_start_offset, -1
        elif wanted.timestamp < 0:
            return ListOffsetsPartitionResponse(
                partition_index=index, error_code=ErrorCode.INVALID_REQUEST
            )
        else:
            offset, timestamp = _by_time(partition, wanted.timestamp)
    except LogError as error:
        return ListOffsetsPartitionResponse(
            partition_index=index, error_code=error.kafka_error_code
        )
    return ListOffsetsPartitionResponse(
        partition_index=index,
        error_code=ErrorCode.NONE,
        timestamp=timestamp,
        offset=offset,
        leader_epoch=partition.leader_epoch,
    )


def _by_time(partition: PartitionLog, timestamp_ms: int) -> tuple[int, int]:
    """The first offset at or after ``timestamp_ms`` and that record's own timestamp;
    (-1, -1) if every record is older, as Kafka answers."""
    offset = partition.offset_for_timestamp(timestamp_ms)
    if offset is None:
        return -1, -1
    batch = DefaultRecordBatch(partition.read(offset, 1).records)
    for record in batch:
        if record.offset == offset:
            return offset, record.timestamp
    return offset, timestamp_ms
