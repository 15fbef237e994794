"""OffsetFetch (key 9), v1-5: a group's committed offsets, for the partitions named or (v2+,
topics null) for every partition the group has committed. -1 means nothing committed."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from ..protocol.error_codes import ErrorCode
from ..protocol.messages.offset_fetch import (
    OffsetFetchRequest,
    OffsetFetchResponse,
    OffsetFetchResponsePartition,
    OffsetFetchResponseTopic,
)

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext


async def handle(
    broker: Broker, context: RequestContext, request: OffsetFetchRequest
) -> OffsetFetchResponse:
    wanted = None
    if request.topics is not None:
        wanted = [(t.name, index) for t in request.topics for index in t.partition_indexes]
    result = broker.groups.fetch_offsets(request.group_id, wanted)
    by_topic: dict[str, list[OffsetFetchResponsePartition]] = defaultdict(list)
    partition_error = result.error_code if context.version < 2 else ErrorCode.NONE
    for found in result.partitions:
        by_topic[found.topic].append(
            OffsetFetchResponsePartition(
                partition_index=found.partition,
                committed_offset=found.offset,
                committed_leader_epoch=found.leader_epoch,
                metadata=found.metadata,
                error_code=partition_error,
            )
        )
    if wanted is not None and result.error_code != ErrorCode.NONE and context.version < 2:
        # v1 has no group-level error: every partition asked for carries it.
        for topic, index in wanted:
            by_topic[topic].append(
                OffsetFetchResponsePartition(partition_index=index, error_code=result.error_code)
            )
    return OffsetFetchResponse(
        topics=[OffsetFetchResponseTopic(name=name, partitions=parts)
                for name, parts in by_topic.items()],
        error_code=result.error_code,
    )
