"""TxnOffsetCommit (key 28), v0-3 (v3 flexible): a consumer group's offsets, committed in a
producer's transaction: held by the transaction coordinator, applied to the group when the
transaction commits, dropped when it aborts.

v3 (KIP-447) names the group member the producer commits for; a member the group no longer
knows at that generation gets ILLEGAL_GENERATION or UNKNOWN_MEMBER_ID (FENCED_INSTANCE_ID
for a replaced static member), so a worker that lost its partitions cannot commit them. A
fenced producer is answered INVALID_PRODUCER_EPOCH at every version (the code Kafka's group
coordinator answers with, which every client reads as fenced).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from ..errors import LogError
from ..protocol.messages.txn_offset_commit import (
    TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
    TxnOffsetCommitResponsePartition,
    TxnOffsetCommitResponseTopic,
)
from ..transactions.errors import response_code

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext


async def handle(
    broker: Broker, context: RequestContext, request: TxnOffsetCommitRequest
) -> TxnOffsetCommitResponse:
    offsets = [
        (topic.name, p.partition_index, p.committed_offset, p.committed_leader_epoch,
         p.committed_metadata)
        for topic in request.topics
        for p in topic.partitions
    ]  # fmt: skip
    try:
        results = await broker.transactions.txn_offset_commit(
            request.transactional_id, request.group_id, request.producer_id,
            request.producer_epoch, offsets, generation_id=request.generation_id,
            member_id=request.member_id, group_instance_id=request.group_instance_id,
        )  # fmt: skip
        codes: list[int] = [result.error_code for result in results]
    except LogError as error:
        codes = [response_code(error, producer_fenced=False)] * len(offsets)
    by_topic: dict[str, list[TxnOffsetCommitResponsePartition]] = defaultdict(list)
    for (topic, partition, *_), code in zip(offsets, codes, strict=True):
        by_topic[topic].append(
            TxnOffsetCommitResponsePartition(partition_index=partition, error_code=code)
        )
    return TxnOffsetCommitResponse(
        topics=[TxnOffsetCommitResponseTopic(name=name, partitions=parts)
                for name, parts in by_topic.items()]
    )  # fmt: skip
