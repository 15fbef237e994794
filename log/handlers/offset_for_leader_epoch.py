"""OffsetForLeaderEpoch (key 23), v2-3: the end offset of a leader epoch, which consumers
ask for after a leader change to detect a truncated log (KIP-320).

One node: every partition has had a single leader epoch, so the answer to any epoch up to
the current one is the log end offset.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import LogError
from ..protocol.error_codes import ErrorCode
from ..protocol.messages.offset_for_leader_epoch import (
    EpochEndOffset,
    OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
    OffsetForLeaderPartition,
    OffsetForLeaderTopicResult,
)

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext


async def handle(
    broker: Broker, context: RequestContext, request: OffsetForLeaderEpochRequest
) -> OffsetForLeaderEpochResponse:
    return OffsetForLeaderEpochResponse(
        topics=[
            OffsetForLeaderTopicResult(
                topic=topic.topic,
                partitions=[_end_offset(broker, topic.topic, p) for p in topic.partitions],
            )
            for topic in request.topics
        ]
    )


def _end_offset(broker: Broker, topic: str, wanted: OffsetForLeaderPartition) -> EpochEndOffset:
    index = wanted.partition
    try:
        partition = broker.partition(topic, index, create=False)
    except LogError as error:
        return EpochEndOffset(error_code=error.kafka_error_code, partition=index)
    epoch = partition.leader_epoch
    if wanted.current_leader_epoch > epoch:
        return EpochEndOffset(error_code=ErrorCode.UNKNOWN_LEADER_EPOCH, partition=index)
    if 0 <= wanted.current_leader_epoch < epoch:
        return EpochEndOffset(error_code=ErrorCode.FENCED_LEADER_EPOCH, partition=index)
    if wanted.leader_epoch > epoch:
        return EpochEndOffset(error_code=ErrorCode.NONE, partition=index)  # undefined: -1, -1
    return EpochEndOffset(error_code=ErrorCode.NONE, partition=index, leader_epoch=epoch,
                          end_offset=partition.log_end_offset)
