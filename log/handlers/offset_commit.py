"""OffsetCommit (key 8), v2-7: store a group's consumed positions durably; answered once the
offsets topic has them on disk. A commit with generation -1 and no member id comes from a
consumer outside group management (``assign()``) and is accepted while the group is empty."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from ..protocol.messages.offset_commit import (
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetCommitResponsePartition,
    OffsetCommitResponseTopic,
)

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext


async def handle(
    broker: Broker, context: RequestContext, request: OffsetCommitRequest
) -> OffsetCommitResponse:
    offsets = [
        (topic.name, p.partition_index, p.committed_offset, p.committed_leader_epoch,
         p.committed_metadata)
        for topic in request.topics
        for p in topic.partitions
    ]
    results = await broker.groups.commit_offsets(
        request.group_id,
        request.generation_id_or_member_epoch,
        request.member_id,
        request.group_instance_id,
        offsets,
        request.retention_time_ms,
    )
    by_topic: dict[str, list[OffsetCommitResponsePartition]] = defaultdict(list)
    for result in results:
        by_topic[result.topic].append(
            OffsetCommitResponsePartition(partition_index=result.partition,
                                          error_code=result.error_code)
        )
    return OffsetCommitResponse(
        topics=[OffsetCommitResponseTopic(name=name, partitions=parts)
                for name, parts in by_topic.items()]
    )
