"""DeleteRecords (key 21), v0-1: move a partition's log start offset up (-1: to the high
watermark); whole segments below it are removed at once, the rest by retention."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..errors import LogError
from ..protocol.error_codes import ErrorCode
from ..protocol.messages.delete_records import (
    DeleteRecordsPartition,
    DeleteRecordsPartitionResult,
    DeleteRecordsRequest,
    DeleteRecordsResponse,
    DeleteRecordsTopicResult,
)

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext


async def handle(
    broker: Broker, context: RequestContext, request: DeleteRecordsRequest
) -> DeleteRecordsResponse:
    topics = []
    for topic in request.topics:
        results = [await _delete(broker, topic.name, wanted) for wanted in topic.partitions]
        topics.append(DeleteRecordsTopicResult(name=topic.name, partitions=results))
    return DeleteRecordsResponse(topics=topics)


async def _delete(
    broker: Broker, topic: str, wanted: DeleteRecordsPartition
) -> DeleteRecordsPartitionResult:
    index = wanted.partition_index
    try:
        partition = broker.partition(topic, index, create=False)
        start = await asyncio.to_thread(partition.delete_records, wanted.offset)
    except LogError as error:
        return DeleteRecordsPartitionResult(partition_index=index,
                                            error_code=error.kafka_error_code)
    return DeleteRecordsPartitionResult(
        partition_index=index, low_watermark=start, error_code=ErrorCode.NONE
    )
